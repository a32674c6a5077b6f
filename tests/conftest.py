"""Shared fixtures: the demo collection (generated once per session) and its tile index."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dask
import pystac
import pytest

from mosaic import TileIndex
from mosaic import synthetic as syn
from mosaic.io import runtime

pytest_plugins = ["remote_fixtures"]  # real HTTP and S3 servers on 127.0.0.1 (tests/servers.py)

# On Python 3.11 dask's worker profiler can deadlock a worker process with the garbage collector
# (CPython gh-106883, dask/distributed#8616): every LocalCluster of the suite runs without it, as
# `mosaic regrid --workers` does (docs/cluster.md).
dask.config.set({"distributed.worker.profile.enabled": False})


JUPYTER_KERNEL = "mosaic-tests"
"""The kernelspec :func:`jupyter_path` holds (``NotebookClient(kernel_name=JUPYTER_KERNEL)``)."""


@pytest.fixture(scope="session")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data folder (for ``JUPYTER_PATH``) with one kernelspec: an ipykernel of this interpreter.

    Its kernels draw with Matplotlib's Agg backend, as the notebooks' figures are checked, not shown.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / JUPYTER_KERNEL
    spec.mkdir(parents=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mosaic tests",
        "language": "python",
        "env": {"MPLBACKEND": "Agg"},
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return root


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
