"""The reader: fetch one planned window and warp it into one output chunk with GDAL.

A :class:`~mosaic.planner.Read` names the file, band, overview level and window; this module opens the
file (reusing a per-thread handle), reads the window through the limiter (with retries), turns nodata
and masked pixels into NaN, and puts the window onto the chunk grid: pasted when the two grids differ
by whole pixels only, else warped by GDAL (a ``WarpedVRT`` over a read-only in-memory dataset).
Results are floating point with NaN where there is no data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, cast

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
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


def _open(href: str, overview: int) -> Any:
    if overview >= 0:
        return rasterio.open(href, overview_level=overview)
    return rasterio.open(href)


def _level_window(read: Read, src: Any) -> tuple[int, Window]:
    """For a decimated read (overviews unknown at planning), the real overview and its window.

    The plan's window is in a virtual grid decimated by ``read.factor``; the file's own overview with
    the largest factor not above it is read 1:1 (no second resampling), with its exact transform.
    """
    factors = src.overviews(read.band)
    level = max((i for i, f in enumerate(factors) if f <= read.factor), default=-1)
    row, col, h, w = read.window
    f = read.factor
    r0, c0, r1, c1 = row * f, col * f, min((row + h) * f, src.height), min((col + w) * f, src.width)
    if level < 0:
        return -1, Window(c0, r0, c1 - c0, r1 - r0)
    ov_h, ov_w = math.ceil(src.height / factors[level]), math.ceil(src.width / factors[level])
    sy, sx = ov_h / src.height, ov_w / src.width
    top, left = math.floor(r0 * sy), math.floor(c0 * sx)
    bottom, right = min(ov_h, math.ceil(r1 * sy)), min(ov_w, math.ceil(c1 * sx))
    return level, Window(left, top, right - left, bottom - top)


def read_window(
    read: Read, limiter: ReadLimiter, *, native_nodata: float | None = None
) -> tuple[np.ndarray, Affine]:
    """Read ``read``'s window and return it with its transform.

    The pixels come as float with NaN where there is no data or, with ``native_nodata``, in the file's
    own dtype with that value where there is no data. All I/O happens inside one limiter slot;
    transient failures are retried (each retry counted).

    Raises:
        ReadError: naming the scene and href, when the read fails for good.
    """
    cache = handle_cache()
    row, col, h, w = read.window

    def attempt() -> tuple[np.ndarray, np.ndarray | None, float | None, Affine]:
        key = (read.href, read.overview)
        with limiter.slot():
            try:
                src = cache.get(key, lambda: _open(read.href, read.overview))
                window = Window(col, row, w, h)
                if read.overview < 0 and read.factor > 1:
                    level, window = _level_window(read, src)
                    if level >= 0:
                        key = (read.href, level)
                        src = cache.get(key, lambda: _open(read.href, level))
                data = src.read(read.band, window=window)
                flags = src.mask_flag_enums[read.band - 1]
                masked = MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
                mask = src.read_masks(read.band, window=window) if masked else None
                return data, mask, src.nodata, src.window_transform(window)
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
    nodata = read.nodata if read.nodata is not None else file_nodata
    if native_nodata is None:
        return _to_float(data, mask, nodata), transform
    if nodata is not None and nodata != native_nodata:
        data[data == nodata] = native_nodata
    if mask is not None:
        data[mask == 0] = native_nodata
    return data, transform


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
4% of pixels at 20 m). At 0.001 px, results are the same however the output is chunked and
``gdalwarp -et 0`` agrees with them to within that error; a cross-CRS warp costs about 45% more
than at 0.125 px (same-CRS reads are pasted, not warped).
"""


def _paste(
    src: np.ndarray, transform: Affine, dst_affine: Affine, dst_shape: tuple[int, int], fill: float
) -> np.ndarray | None:
    """``src`` placed on the destination grid if the grids differ by whole pixels only, else None."""
    if tuple(transform)[:2] != tuple(dst_affine)[:2] or tuple(transform)[3:5] != tuple(dst_affine)[3:5]:
        return None
    col, row = ~dst_affine @ (transform.c, transform.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    col, row = round(col), round(row)
    out = np.full(dst_shape, fill, dtype=src.dtype)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + src.shape[0], dst_shape[0]), min(col + src.shape[1], dst_shape[1])
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = src[r0 - row : r1 - row, c0 - col : c1 - col]
    return out


_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def _mem_path(array: np.ndarray, transform: Affine) -> str:
    """A GDAL ``MEM:::`` path to a read-only dataset over ``array`` (which must outlive its use).

    Its CRS is given to the warper separately (``src_crs``): a WKT does not survive the path syntax.
    """
    gdal_type = _GDAL_TYPES[array.dtype.name]
    gt = "/".join(
        repr(float(v)) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e)
    )
    return (
        f"MEM:::DATAPOINTER={array.ctypes.data},PIXELS={array.shape[1]},LINES={array.shape[0]},BANDS=1,"
        f"DATATYPE={gdal_type},GEOTRANSFORM={gt}"
    )


def warp_read(
    read: Read,
    *,
    dst_affine: Affine,
    dst_shape: tuple[int, int],
    dst_crs: str,
    resampling: str,
    limiter: ReadLimiter,
    native: tuple[str, float] | None = None,
) -> np.ndarray:
    """Read ``read`` and put it on the destination grid (pasted or warped).

    Returns float with NaN where there is no data or, with ``native=(dtype, nodata)``, the source dtype
    with that nodata value (for ``first``/``last`` with nearest, which never need a float).
    """
    fill = np.nan if native is None else native[1]
    if read.window[2] == 0 or read.window[3] == 0:
        return np.full(dst_shape, fill, dtype=np.float32 if native is None else native[0])
    src, transform = read_window(read, limiter, native_nodata=None if native is None else native[1])
    if _same_crs(read.crs, dst_crs):
        pasted = _paste(src, transform, dst_affine, dst_shape, fill)
        if pasted is not None:
            return pasted
    src = np.ascontiguousarray(src)
    with rasterio.Env(GDAL_MEM_ENABLE_OPEN="YES"), rasterio.open(_mem_path(src, transform)) as mem:
        with WarpedVRT(
            mem,
            src_crs=_crs(read.crs),
            crs=_crs(dst_crs),
            transform=dst_affine,
            width=dst_shape[1],
            height=dst_shape[0],
            resampling=Resampling[resampling],
            src_nodata=fill,
            nodata=fill,
            dtype=src.dtype.name,
            tolerance=WARP_TOLERANCE,
        ) as vrt:
            return cast(np.ndarray, vrt.read(1))


@lru_cache(maxsize=256)
def _same_crs(a: str, b: str) -> bool:
    return a == b or _crs(a) == _crs(b)
