"""GDAL settings for reading files where they are: the cloud defaults, and how they are entered.

GDAL reads its settings where the read happens (a dask worker thread or process, an indexing thread),
so every task that opens a file enters :func:`gdal_env` itself, and :func:`href_env` adds the
credentials of the ``auth`` profile matching the href.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import rasterio
import rasterio.env

from mosaic.auth import Profile, access_for, refresh_refused, reveal_options
from mosaic.io.fetch import RANGE_GAP

__all__ = ["CLOUD_DEFAULTS", "gdal_env", "href_env", "options_env", "with_access"]

T = TypeVar("T")

CLOUD_DEFAULTS: Mapping[str, str] = {
    # A bounded block cache (MB): handles stay open per thread, and with GDAL's default (5% of RAM)
    # every block ever decoded stays cached, so each read lands in fresh memory (page faults that
    # cost more than the decoding). Blocks shared by neighbouring windows stay cached.
    "GDAL_CACHEMAX": "64",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # GDAL reads remote files in chunks of this size, doubled while a read goes on sequentially: 4 KB
    # (GDAL's default is 16 KB) wastes less past the end of a window (overview200 over HTTP: 1.03 ->
    # 0.79 MB, same requests), while the header still comes in one 16 KB request at open
    "CPL_VSIL_CURL_CHUNK_SIZE": "4096",
    "GDAL_INGESTED_BYTES_AT_OPEN": "16384",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # One request at a time per read, so max_concurrency bounds what the server sees (GDAL's default,
    # PARALLEL, fetches the block ranges of one window as simultaneous requests).
    "GDAL_HTTP_MULTIRANGE": "SERIAL",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours (counted, with jitter)
    # mosaic's own (GDAL ignores them): before a remote read, its tiles are fetched as byte ranges
    # merged across gaps of up to this many bytes (GDAL merges only contiguous tiles)...
    "MOSAIC_RANGE_GAP": str(RANGE_GAP),
    # ...and at most MOSAIC_PREFETCH_BYTES ahead of one read (unset: GDAL's cache size over twice the
    # concurrency, so what is fetched ahead is not evicted before its read; "0": no fetching ahead)
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.vrt",
}
"""GDAL settings entered inside every read task and every file opened to index it; a user's own
settings (``gdal_options``) override them."""


@contextmanager
def gdal_env(options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()) -> Iterator[None]:
    """Enter the cloud defaults and the user's overrides (inside each task, in the worker running it)."""
    merged: dict[str, Any] = dict(CLOUD_DEFAULTS)
    merged.update(reveal_options(options))
    cachemax = merged.get("GDAL_CACHEMAX")
    if isinstance(cachemax, str) and cachemax.isdigit():
        merged["GDAL_CACHEMAX"] = int(cachemax)  # rasterio's Env takes this one as an integer (MB)
    with options_env(merged):
        yield


@contextmanager
def options_env(options: Mapping[str, Any]) -> Iterator[None]:
    """A nested rasterio Env holding ``options``, undone on exit.

    rasterio's ``Env(**options)`` refuses GDAL's ``AWS_*`` credential options (it wants a boto3 session),
    so those are set inside the Env with ``rasterio.env.setenv``, which does not check.
    """
    aws = {k: v for k, v in options.items() if k.startswith("AWS_")}
    with rasterio.Env(**{k: v for k, v in options.items() if k not in aws}):
        if aws:
            rasterio.env.setenv(**aws)
        yield


@contextmanager
def href_env(href: str, auth: Sequence[Profile] = ()) -> Iterator[str]:
    """Enter the GDAL credentials of the ``auth`` profile matching ``href``; yields the href to open.

    Nothing is entered if no profile matches; the href is signed where a profile or a signer signs it
    (at read time only).
    """
    access = access_for(href, auth) if auth else None
    if access is None or not access.options:
        yield href if access is None else access.href
        return
    with options_env(access.options):
        yield access.href


def with_access(href: str, auth: Sequence[Profile], use: Callable[[str], T]) -> T:
    """``use(href to open)`` inside the credentials of ``href``'s profile; once more after a refusal.

    A refusal (an expired token, keys since replaced) of credentials that refresh themselves, or of a
    signed href, marks them stale and calls ``use`` again with fresh ones, once.
    """
    from mosaic.io.limits import is_auth_failure

    for second in (False, True):
        access = access_for(href, auth) if auth else None
        try:
            with options_env(access.options) if access is not None and access.options else nullcontext():
                return use(access.href if access is not None else href)
        except OSError as exc:  # (RasterioIOError is one)
            if second or access is None or not is_auth_failure(exc) or not refresh_refused(access):
                raise
            _forget(access.href)
    raise AssertionError("unreachable")


def _forget(href: str) -> None:
    """Drop GDAL's record of a failed open of ``href`` (it would answer the retry from it)."""
    from mosaic.io.paths import gdal_path
    from mosaic.io.read import _forget as forget

    forget(gdal_path(href))
