"""Fixtures with real servers on 127.0.0.1 (a pytest plugin, registered in ``tests/conftest.py``).

- ``http_server``: a fresh :class:`servers.RangeServer` per test, serving the demo collection's root
  (``server.url("S32-seam12-20240601/B02.tif")``, ``server.vsicurl(...)``).
- ``http_server_pair``: two such servers (``origin``, ``other``) for redirect tests.
- ``seaweedfs``: one SeaweedFS S3 server per session, with the demo collection's files uploaded to
  ``bucket-a`` (alice), ``bucket-b`` (bob) and ``public`` (anonymous read) under their relative paths.
- ``azurite``: one Azurite (Azure Blob emulator, from the npm registry: ``make azurite``) per session,
  the demo collection's files in container ``data``. Skipped only where Node.js is missing.

GDAL's ``/vsicurl/`` cache is process-wide and keyed by URL, and ports are reused: the HTTP fixtures
clear it before and after each test so no test sees another's sizes or blocks. A server that cannot
start fails the test with weed's log: the servers are part of the dev install, never a reason to skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest

from servers import Azurite, AzuriteError, RangeServer, SeaweedFS, SeaweedFSError, clear_gdal_http_cache

__all__ = ["azurite", "http_server", "http_server_pair", "seaweedfs"]


@pytest.fixture
def http_server(demo_collection: tuple[Path, list[pystac.Item]]) -> Iterator[RangeServer]:
    """A fresh RangeServer serving the demo collection's root (no latency, faults or rules)."""
    clear_gdal_http_cache()
    with RangeServer(demo_collection[0]) as server:
        yield server
    clear_gdal_http_cache()


@pytest.fixture
def http_server_pair(
    demo_collection: tuple[Path, list[pystac.Item]],
) -> Iterator[tuple[RangeServer, RangeServer]]:
    """Two RangeServers on different ports serving the demo root: ``(origin, other)``."""
    clear_gdal_http_cache()
    with RangeServer(demo_collection[0]) as origin, RangeServer(demo_collection[0]) as other:
        yield origin, other
    clear_gdal_http_cache()


@pytest.fixture(scope="session")
def seaweedfs(
    tmp_path_factory: pytest.TempPathFactory, demo_collection: tuple[Path, list[pystac.Item]]
) -> Iterator[SeaweedFS]:
    """SeaweedFS S3 with the demo collection in ``bucket-a``, ``bucket-b`` and ``public``.

    Users (``seaweedfs.users[name]``): ``admin`` (all buckets), ``alice`` (``bucket-a``), ``bob``
    (``bucket-b``); ``anonymous`` (``gdal_options(None)``) reads ``public``. Objects sit at the files'
    paths relative to the demo root: ``seaweedfs.url("bucket-a", "S32-seam12-20240601/B02.tif")``.
    """
    root = demo_collection[0]
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        for bucket in server.buckets:
            server.upload_tree(root, bucket)
    except SeaweedFSError as exc:
        server.stop()
        pytest.fail(str(exc), pytrace=False)
    except Exception as exc:
        server.stop()
        pytest.fail(f"setting up SeaweedFS failed: {exc!r}\n{server.log_tail()}", pytrace=False)
    try:
        yield server
    finally:
        clear_gdal_http_cache()  # closes GDAL's keep-alive connections, which delay weed's graceful stop
        server.stop()


@pytest.fixture(scope="session")
def azurite(
    tmp_path_factory: pytest.TempPathFactory, demo_collection: tuple[Path, list[pystac.Item]]
) -> Iterator[Azurite]:
    """Azurite's Blob service with the demo collection in container ``data`` (at the relative paths)."""
    import shutil

    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: Azurite (the Azure Storage emulator) cannot run here")
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    try:
        server.start()
        server.upload_tree(demo_collection[0], "data")
    except AzuriteError as exc:
        server.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        clear_gdal_http_cache()
        server.stop()
