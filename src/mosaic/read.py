"""The reader: fetch one planned window and warp it into one output chunk with GDAL.

A :class:`~mosaic.planner.Read` names the file, band, overview level and window; this module opens the
file (reusing a per-thread handle), reads the window through the limiter (with retries), turns nodata
and masked pixels into NaN, and warps the window onto the chunk grid with ``rasterio.warp.reproject``
(GDAL's warper). Results are floating point with NaN where there is no data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioDeprecationWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from mosaic.errors import ReadError
from mosaic.limits import ReadLimiter, retry_call
from mosaic.planner import Read
from mosaic.runtime import handle_cache

__all__ = ["CLOUD_DEFAULTS", "WARP_TOLERANCE", "gdal_env", "read_window", "warp_read"]

CLOUD_DEFAULTS: Mapping[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 1024 * 1024),
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours (counted, with jitter)
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.vrt",
}
"""GDAL settings entered inside every read task; a user's own settings override them."""


def gdal_env(options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()) -> rasterio.Env:
    """A rasterio Env with the cloud defaults and the user's overrides, to enter inside each task."""
    merged: dict[str, Any] = dict(CLOUD_DEFAULTS)
    merged.update(dict(options))
    cachemax = merged.get("GDAL_CACHEMAX")
    if isinstance(cachemax, str) and cachemax.isdigit():
        merged["GDAL_CACHEMAX"] = int(cachemax)  # rasterio's Env takes this one as an integer (MB)
    return rasterio.Env(**merged)


@lru_cache(maxsize=64)
def _crs(text: str) -> CRS:
    return CRS.from_user_input(text)


def _open(read: Read) -> Any:
    if read.overview >= 0:
        return rasterio.open(read.href, overview_level=read.overview)
    return rasterio.open(read.href)


def read_window(read: Read, limiter: ReadLimiter) -> tuple[np.ndarray, Affine]:
    """Read ``read``'s window as float (NaN = no data) and return it with its transform.

    All I/O happens inside one limiter slot; transient failures are retried (each retry counted).

    Raises:
        ReadError: naming the scene and href, when the read fails for good.
    """
    key = (read.href, read.overview)
    cache = handle_cache()
    row, col, h, w = read.window
    decimated = read.overview < 0 and read.factor > 1

    def attempt() -> tuple[np.ndarray, np.ndarray | None, float | None, Affine]:
        with limiter.slot():
            try:
                src = cache.get(key, lambda: _open(read))
                if decimated:  # window is in a virtual overview grid: read full res, GDAL decimates
                    f = read.factor
                    window = Window(
                        col * f, row * f, min(w * f, src.width - col * f), min(h * f, src.height - row * f)
                    )
                    out = (max(1, math.ceil(window.height / f)), max(1, math.ceil(window.width / f)))
                else:
                    window, out = Window(col, row, w, h), (h, w)
                data = src.read(read.band, window=window, out_shape=out)
                flags = src.mask_flag_enums[read.band - 1]
                masked = MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
                mask = src.read_masks(read.band, window=window, out_shape=out) if masked else None
                transform = src.window_transform(window) @ Affine.scale(
                    window.width / out[1], window.height / out[0]
                )
                return data, mask, src.nodata, transform
            except Exception:
                cache.drop(key)  # a retry reopens the file
                raise

    try:
        data, mask, file_nodata, transform = retry_call(attempt, limiter=limiter)
    except (RasterioIOError, OSError, IndexError) as exc:
        limiter.record_failure()
        raise ReadError(
            read.href, f"reading band {read.band}, window {read.window} failed: {exc}", scene_id=read.scene
        ) from exc
    return _to_float(data, mask, read.nodata if read.nodata is not None else file_nodata), transform


def _to_float(data: np.ndarray, mask: np.ndarray | None, nodata: float | None) -> np.ndarray:
    """The pixels as float32 (float64 for wide types) with NaN wherever there is no data."""
    wide = (data.dtype.kind in "iu" and data.dtype.itemsize > 2) or data.dtype == np.float64
    out = data.astype(np.float64 if wide else np.float32)
    if nodata is not None and not math.isnan(nodata):
        out[data == nodata] = np.nan
    if mask is not None:
        out[mask == 0] = np.nan
    return out


WARP_TOLERANCE = 0.001
"""Largest error, in pixels, GDAL's approximate transformer may make while warping.

GDAL's default (0.125 px, as ``gdalwarp -et``) interpolates coordinates along each output scanline, so
a nearest-neighbour choice can flip with the extent of the output, that is with the chunking (about
4% of pixels at 20 m). At 0.001 px, results are the same however the output is chunked, at no
measurable cost; ``gdalwarp -et 0`` agrees with them to within that error.
"""


def warp_read(
    read: Read,
    *,
    dst_affine: Affine,
    dst_shape: tuple[int, int],
    dst_crs: str,
    resampling: str,
    limiter: ReadLimiter,
) -> np.ndarray:
    """Read ``read`` and warp it onto the destination grid with GDAL; NaN where the scene has no data."""
    if read.window[2] == 0 or read.window[3] == 0:
        return np.full(dst_shape, np.nan, dtype=np.float32)
    src, transform = read_window(read, limiter)
    height, width = src.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        # WarpedVRT over a writable MEM dataset: rasterio 1.4 warns, but this is the only way it offers to
        # warp an in-memory window with an explicit error threshold (reproject() ignores `tolerance`).
        warnings.simplefilter("ignore", RasterioDeprecationWarning)
        with rasterio.open(
            "/vsimem/mosaic-window.mem",
            "w",
            driver="MEM",
            width=width,
            height=height,
            count=1,
            dtype=src.dtype.name,
            crs=_crs(read.crs),
            transform=transform,
            nodata=np.nan,
        ) as mem:
            mem.write(src, 1)
            with WarpedVRT(
                mem,
                crs=_crs(dst_crs),
                transform=dst_affine,
                width=dst_shape[1],
                height=dst_shape[0],
                resampling=Resampling[resampling],
                src_nodata=np.nan,
                nodata=np.nan,
                dtype=src.dtype.name,
                tolerance=WARP_TOLERANCE,
            ) as vrt:
                return vrt.read(1)
