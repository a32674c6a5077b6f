"""Shared fixtures: the demo collection (generated once per session) and its tile index."""

from __future__ import annotations

from pathlib import Path

import dask
import pystac
import pytest

from mosaic import TileIndex, runtime
from mosaic import synthetic as syn

pytest_plugins = ["remote_fixtures"]  # real HTTP and S3 servers on 127.0.0.1 (tests/servers.py)

# On Python 3.11 dask's worker profiler can deadlock a worker process with the garbage collector
# (CPython gh-106883, dask/distributed#8616): every LocalCluster of the suite runs without it, as
# `mosaic regrid --workers` does (docs/cluster.md).
dask.config.set({"distributed.worker.profile.enabled": False})


@pytest.fixture(scope="session")
def demo_collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pystac.Item]]:
    """The embedded demo collection, written once into a session temp folder."""
    root = tmp_path_factory.mktemp("demo")
    return root, syn.demo_collection(root)


@pytest.fixture(scope="session")
def demo_index(demo_collection: tuple[Path, list[pystac.Item]]) -> TileIndex:
    """The demo collection's tile index, built from its STAC Items."""
    return TileIndex.from_stac(demo_collection[1])


@pytest.fixture(autouse=True)
def _fresh_runtime():
    """Each test starts with fresh limiters and no cached dataset handles."""
    runtime.reset()
    yield
    runtime.reset()
