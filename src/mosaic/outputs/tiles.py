"""Web map tiles: a tile is a chunk on a Web Mercator grid, planned and read like any other chunk.

:func:`tile_geobox` gives the grid of an XYZ tile (EPSG:3857, the OSM/Google tiling scheme);
:func:`render_tile` plans it (only the scenes whose footprints touch it, at the right overview),
refuses tiles that would need more than ``max_scenes`` scenes, reads it eagerly through the same
limiter, credentials and retries as :func:`mosaic.load`, and encodes it: PNG or WebP (one band with a
colormap, or three bands as RGB, nodata transparent) or ``.npy`` (the raw values). The server
(:mod:`mosaic.serve`) only routes requests here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from odc.geo.geobox import GeoBox

from mosaic.errors import InvalidInputError, NoDataError

if TYPE_CHECKING:
    from mosaic.planning.planner import Plan

__all__ = [
    "FORMATS",
    "WEB_MERCATOR",
    "TileResult",
    "TileStyle",
    "TooManyScenesError",
    "check_bands",
    "default_rescale",
    "plan_tile",
    "render_tile",
    "tile_bounds",
    "tile_geobox",
]

WEB_MERCATOR = "EPSG:3857"
HALF_WORLD = 20037508.342789244
"""Half the width of the Web Mercator square, in metres (pi x the WGS 84 semi-major axis)."""
MAX_ZOOM = 24
FORMATS: Mapping[str, str] = {"png": "image/png", "webp": "image/webp", "npy": "application/octet-stream"}
"""Tile formats and their media types."""


class TooManyScenesError(NoDataError):
    """A tile would need more scenes than the server reads for one tile (zoom in)."""


@dataclass(frozen=True, slots=True)
class TileStyle:
    """How tiles are drawn and what they read: the server's defaults, overridden per request.

    ``bands``: one band (drawn with ``colormap``) or three (RGB); ``rescale``: the values mapped to 0 and
    255, per band or one pair for all; ``time``: what :func:`mosaic.load` takes (None: every scene,
    fused by ``method`` in index order).
    """

    bands: tuple[str, ...] | None = None
    rescale: tuple[tuple[float, float], ...] | None = None
    colormap: str = "viridis"
    method: str = "first"
    resampling: str = "nearest"
    time: Any = None
    tile_size: int = 256
    max_scenes: int = 64
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Further keyword arguments for :func:`mosaic.plan` (``auth``, ``max_concurrency``, ``nodata``...)."""


@dataclass(frozen=True, slots=True)
class TileResult:
    """An encoded tile: its bytes and media type, and how many scenes it read (0: nothing there)."""

    content: bytes
    media_type: str
    scenes: int


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of XYZ tile ``z/x/y`` in Web Mercator metres."""
    _check_tile(z, x, y)
    size = 2 * HALF_WORLD / 2**z
    left, top = -HALF_WORLD + x * size, HALF_WORLD - y * size
    return left, top - size, left + size, top


def tile_geobox(z: int, x: int, y: int, size: int = 256) -> GeoBox:
    """The ``size`` x ``size`` pixel grid of XYZ tile ``z/x/y`` (EPSG:3857)."""
    left, bottom, right, top = tile_bounds(z, x, y)
    return GeoBox.from_bbox((left, bottom, right, top), WEB_MERCATOR, shape=(size, size))


def _check_tile(z: int, x: int, y: int) -> None:
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidInputError(f"tile zoom {z} is outside 0..{MAX_ZOOM}")
    n = 2**z
    if not (0 <= x < n and 0 <= y < n):
        raise InvalidInputError(f"tile {z}/{x}/{y} does not exist: x and y must be in 0..{n - 1} at zoom {z}")


def plan_tile(index: Any, z: int, x: int, y: int, style: TileStyle) -> Plan | None:
    """The plan of one tile (None: no scene touches it), as a chunk of :func:`mosaic.load` on its grid.

    Depends on the tile and on the style's bands, time, method and resampling (and its ``extra``), not on
    how the tile is drawn, so a server caches it across colormaps, ranges and formats.

    Raises:
        InvalidInputError: no such tile, or a style that does not fit the index.
    """
    from mosaic.planning.planner import make_plan

    try:
        return make_plan(
            index=index,
            geobox=tile_geobox(z, x, y, style.tile_size),
            time=style.time,
            bands=list(style.bands) if style.bands else None,
            groupby=None,
            method=style.method,
            resampling=style.resampling,
            chunks=style.tile_size,
            **style.extra,
        )
    except NoDataError:
        return None


def render_tile(
    index: Any,
    z: int,
    x: int,
    y: int,
    fmt: str,
    style: TileStyle,
    bands: Sequence[str] = ("band",),
    plan: Callable[[], Plan | None] | None = None,
) -> TileResult:
    """Plan, read and encode one tile (see the module's docstring).

    ``bands`` is what :func:`check_bands` said the style selects (an empty ``.npy`` tile has one layer
    per band); ``plan`` gives the tile's plan (a server's cache), else :func:`plan_tile` makes it.

    Raises:
        InvalidInputError: no such tile or format, or a style that does not fit the bands.
        TooManyScenesError: more than ``style.max_scenes`` scenes touch the tile.
        ReadError: a scene's read failed (its message names the scene).
    """
    from mosaic.api import to_dataset

    if fmt not in FORMATS:
        raise InvalidInputError(f"tile format {fmt!r} is not one of {', '.join(FORMATS)}")
    the_plan = plan() if plan is not None else plan_tile(index, z, x, y, style)
    if the_plan is None:
        return _empty(fmt, len(bands), tile_geobox(z, x, y, style.tile_size))
    if len(the_plan.scenes) > style.max_scenes:
        raise TooManyScenesError(
            f"tile {z}/{x}/{y} touches {len(the_plan.scenes)} scenes, more than "
            f"max_scenes={style.max_scenes}: zoom in, narrow the time, or raise max_scenes"
        )
    import dask.threaded

    ds = to_dataset(the_plan).compute(scheduler=dask.threaded.get)
    names = [b.name for b in the_plan.bands]
    arrays = [ds[name].values[0] for name in names]
    nodata = [ds[name].attrs.get("nodata") for name in names]
    if fmt == "npy":
        return TileResult(_npy(np.stack(arrays)), FORMATS[fmt], len(the_plan.scenes))
    rgba = to_rgba(arrays, nodata, style)
    return TileResult(_image(rgba, fmt), FORMATS[fmt], len(the_plan.scenes))


def check_bands(records: Sequence[Any], fmt: str, style: TileStyle) -> tuple[str, ...]:
    """The output bands ``style`` selects over ``records`` (one row per asset suffices), checked.

    Raises:
        InvalidInputError: an unknown band, or an image (PNG, WebP) of other than 1 or 3 bands.
    """
    from mosaic.planning.bands import band_specs

    specs = band_specs(
        records,
        bands=list(style.bands) if style.bands else None,
        method=style.method,
        dtype=None,
        nodata=None,
        resampling=style.resampling,
        mixed_scales=set(),
    )
    if fmt != "npy" and len(specs) not in (1, 3):
        raise InvalidInputError(
            f"a tile image draws 1 band (with a colormap) or 3 (RGB), got {len(specs)} "
            f"({', '.join(s.name for s in specs)}): pass bands=..."
        )
    return tuple(s.name for s in specs)


def _empty(fmt: str, nbands: int, geobox: GeoBox) -> TileResult:
    """A tile no scene touches: transparent (images) or all NaN (``.npy``), with 0 scenes read."""
    shape = geobox.shape.yx
    if fmt == "npy":
        return TileResult(_npy(np.full((nbands, *shape), np.nan, dtype=np.float32)), FORMATS[fmt], 0)
    return TileResult(_image(np.zeros((*shape, 4), dtype=np.uint8), fmt), FORMATS[fmt], 0)


def to_rgba(arrays: Sequence[np.ndarray], nodata: Sequence[Any], style: TileStyle) -> np.ndarray:
    """8-bit RGBA of one band (through ``style.colormap``) or three (RGB); no data is transparent."""
    if len(arrays) not in (1, 3):
        raise InvalidInputError(
            f"a tile image draws 1 band (with a colormap) or 3 (RGB), got {len(arrays)}: pass bands=..."
        )
    rescale = style.rescale or ()
    if len(rescale) not in (0, 1, len(arrays)):
        raise InvalidInputError(f"rescale gives {len(rescale)} ranges for {len(arrays)} bands")
    valid = np.ones(arrays[0].shape, dtype=bool)
    scaled = []
    for i, (values, nd) in enumerate(zip(arrays, nodata, strict=True)):
        data = values.astype(np.float64)
        ok = np.isfinite(data)
        if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
            ok &= values != nd
        valid &= ok
        lo, hi = rescale[i if len(rescale) > 1 else 0] if rescale else _dtype_range(values.dtype)
        span = hi - lo if hi != lo else 1.0
        scaled.append(np.clip((data - lo) / span, 0.0, 1.0))
    if len(scaled) == 1:
        import matplotlib

        rgba = matplotlib.colormaps[style.colormap](np.nan_to_num(scaled[0]), bytes=True)
    else:
        rgba = np.empty((*valid.shape, 4), dtype=np.uint8)
        for i in range(3):
            rgba[..., i] = np.round(np.nan_to_num(scaled[i]) * 255)
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def _dtype_range(dtype: np.dtype[Any]) -> tuple[float, float]:
    """The range drawn when neither the request nor the server gives one: 0-255 for bytes, else 0-1."""
    return (0.0, 255.0) if dtype == np.uint8 else (0.0, 1.0)


def default_rescale(index: Any, style: TileStyle) -> tuple[tuple[float, float], ...] | None:
    """2-98% of each band's values over the whole index, from one small overview read (None: no data).

    Taken once when a server starts, so every tile is drawn with the same ranges (a range per tile
    would show the tiles' seams). The read is a 256 x 256 grid over the index's extent; an index whose
    extent touches more than ``style.max_scenes`` scenes gets no default (pass ``rescale``).
    """
    import shapely

    from mosaic.api import to_dataset
    from mosaic.planning.planner import make_plan

    west, south, east, north = (float(v) for v in shapely.total_bounds(index.footprints))
    south, north = max(south, -85.0), min(north, 85.0)
    try:
        plan = make_plan(
            (west, south, east, north),
            WEB_MERCATOR,
            style.time,
            index=index,
            shape=(256, 256),
            bands=list(style.bands) if style.bands else None,
            groupby=None,
            method=style.method,
            chunks=256,
            **style.extra,
        )
    except NoDataError:
        return None
    if len(plan.scenes) > style.max_scenes:
        return None
    import dask.threaded

    ds = to_dataset(plan).compute(scheduler=dask.threaded.get)
    ranges = []
    for band in plan.bands:
        values = ds[band.name].values.astype(np.float64)
        ok = np.isfinite(values) & (values != band.nodata if band.nodata is not None else True)
        if not ok.any():
            return None
        lo, hi = np.percentile(values[ok], [2, 98])
        ranges.append((float(lo), float(hi)))
    return tuple(ranges)


def _image(rgba: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    if fmt == "webp":
        Image.fromarray(rgba, "RGBA").save(out, format="WEBP", lossless=True)
    else:
        Image.fromarray(rgba, "RGBA").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()
