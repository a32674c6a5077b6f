"""The output grid of a request: its CRS, extent, pixel alignment and chunking.

A request names an area in some CRS and a target CRS; this module turns that into an odc-geo
``GeoBox`` and fixes the chunk shape. A box across the antimeridian stays one contiguous grid in lon/lat.

Pixel alignment follows odc-geo's ``anchor``: by default pixel *edges* fall on multiples of the
resolution (``"edge"``, like ``gdalwarp -tap``); ``"center"`` puts pixel centres there; ``(fx, fy)``
puts edges at ``(k + fx) * resolution``; the planner turns ``"native"`` into the fraction of the
selected scenes' own grid. The grid covers the whole request box: where odc-geo's
``GeoBox.from_bbox`` lets a box edge within 1% of a pixel of a grid line fall outside the grid
(``tol=0.01``), mosaic adds that row or column (its tolerance is 1e-9 of a pixel), so the same request
can be one pixel larger here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS

from mosaic.errors import InvalidInputError
from mosaic.geom import LONLAT, bbox_to_lonlat, centre_lon, lonlat_to_crs

__all__ = [
    "DEFAULT_CHUNK",
    "anchor_phase",
    "chunk_shape",
    "geobox_of",
    "make_geobox",
    "target_bounds",
    "target_crs",
]

DEFAULT_CHUNK = 2048
_NAMED_ANCHORS = {"edge": (0.0, 0.0), "default": (0.0, 0.0), "center": (0.5, 0.5), "centre": (0.5, 0.5)}


def anchor_phase(anchor: Any) -> tuple[float, float] | None:
    """Where pixel edges fall, as fractions of a pixel past multiples of the resolution (x, y).

    ``"edge"`` is (0, 0), ``"center"`` (0.5, 0.5), a number or an (x, y) pair (or odc-geo's ``XY``)
    gives the fractions; None for ``"native"``, which only the planner can resolve.

    Raises:
        InvalidInputError: an unknown name, or fractions outside [0, 1).
    """
    if isinstance(anchor, str):
        key = anchor.strip().lower()
        if key == "native":
            return None
        if key in _NAMED_ANCHORS:
            return _NAMED_ANCHORS[key]
        raise InvalidInputError(
            f"anchor {anchor!r}: give 'edge', 'center', 'native', or (x, y) pixel fractions in [0, 1)"
        )
    if hasattr(anchor, "xy") and not isinstance(anchor, tuple):  # odc.geo.XY
        anchor = anchor.xy
    try:
        fx, fy = (float(anchor), float(anchor)) if isinstance(anchor, (int, float)) else map(float, anchor)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"anchor {anchor!r}: give 'edge', 'center', 'native', or (x, y) pixel fractions in [0, 1)"
        ) from None
    if not (0.0 <= fx < 1.0 and 0.0 <= fy < 1.0):
        raise InvalidInputError(f"anchor {anchor!r}: pixel fractions must lie in [0, 1)")
    return (fx, fy)


def target_crs(value: Any, bbox: Sequence[float] | None, bbox_crs: Any) -> CRS:
    """The target CRS; ``"utm"`` is the UTM zone of the bbox centre."""
    if isinstance(value, str) and value.lower() == "utm":
        if bbox is None:
            raise InvalidInputError("crs='utm' needs a bbox to pick the zone from")
        area = bbox_to_lonlat(bbox, bbox_crs)
        lon, lat = centre_lon(area), area.centroid.y
        zone = min(60, int((lon + 180) // 6) + 1)
        return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
    try:
        return CRS.from_user_input(value)
    except Exception as exc:
        raise InvalidInputError(f"crs {value!r} is not a CRS pyproj understands ({exc})") from exc


def target_bounds(bbox: Sequence[float], bbox_crs: Any, crs: CRS) -> tuple[float, float, float, float]:
    """The request box in target CRS units; a box across the antimeridian stays contiguous in lon/lat."""
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if CRS.from_user_input(bbox_crs).equals(crs):
        return (minx, miny, maxx + (360.0 if crs.is_geographic and minx > maxx else 0.0), maxy)
    area = bbox_to_lonlat(bbox, bbox_crs)
    if not crs.equals(LONLAT, ignore_axis_order=True):
        return tuple(lonlat_to_crs(area, crs).bounds)
    parts = [p.bounds for p in getattr(area, "geoms", [area])]
    if min(b[0] for b in parts) <= -180 and max(b[2] for b in parts) >= 180 and len(parts) > 1:
        west = min(b[0] for b in parts if b[0] > -180)
        east = max(b[2] for b in parts if b[0] <= -180) + 360.0
        return (west, min(b[1] for b in parts), east, max(b[3] for b in parts))
    return tuple(area.bounds)


def make_geobox(
    bbox: Sequence[float] | None,
    crs: Any,
    *,
    resolution: float | tuple[float, float] | None,
    shape: tuple[int, int] | None,
    geobox: GeoBox | None,
    like: Any,
    bbox_crs: Any,
    default_resolution: Callable[[CRS], float] | None = None,
    anchor: tuple[float, float] | Callable[[CRS, float, float], tuple[float, float]] = (0.0, 0.0),
) -> GeoBox:
    """The output grid, its pixel edges at ``(k + anchor) * resolution`` (``gdalwarp -tap`` by default).

    ``anchor`` may be a callable from (target CRS, x resolution, y resolution) to the fractions, for
    anchors that depend on the data (``"native"``).
    """
    if like is not None:
        geobox = geobox_of(like)
    if geobox is not None:
        if not isinstance(geobox, GeoBox):
            raise InvalidInputError(f"geobox must be an odc-geo GeoBox, got {type(geobox).__name__}")
        return geobox
    if bbox is None or crs is None:
        raise InvalidInputError("give bbox and crs (with resolution or shape), or geobox=, or like=")
    target = target_crs(crs, bbox, bbox_crs)
    minx, miny, maxx, maxy = target_bounds(bbox, bbox_crs, target)
    if shape is not None:
        ny, nx = (int(v) for v in shape)
        if ny <= 0 or nx <= 0:
            raise InvalidInputError(f"shape must be positive, got {shape}")

        return GeoBox((ny, nx), Affine((maxx - minx) / nx, 0, minx, 0, -(maxy - miny) / ny, maxy), target)
    if resolution is None:
        if default_resolution is None:
            raise InvalidInputError("give resolution= (in target CRS units) or shape=")
        resolution = default_resolution(target)
    rx, ry = cast("tuple[float, float]", (resolution, resolution) if np.isscalar(resolution) else resolution)
    rx, ry = abs(float(rx)), abs(float(ry))
    if not (rx > 0 and ry > 0):
        raise InvalidInputError(f"resolution must be positive, got {resolution}")
    fx, fy = anchor(target, rx, ry) if callable(anchor) else anchor
    ox, oy = fx * rx, fy * ry
    x0, x1 = math.floor((minx - ox) / rx + 1e-9) * rx + ox, math.ceil((maxx - ox) / rx - 1e-9) * rx + ox
    y0, y1 = math.floor((miny - oy) / ry + 1e-9) * ry + oy, math.ceil((maxy - oy) / ry - 1e-9) * ry + oy
    nx, ny = max(1, round((x1 - x0) / rx)), max(1, round((y1 - y0) / ry))

    return GeoBox((ny, nx), Affine(rx, 0, x0, 0, -ry, y1), target)


def geobox_of(like: Any) -> GeoBox:
    """The grid of ``like``: a GeoBox itself, or an xarray object's (via odc-geo)."""
    if isinstance(like, GeoBox):
        return like
    gbox = getattr(getattr(like, "odc", None), "geobox", None)
    if gbox is None:
        raise InvalidInputError("like= must be an xarray object with a CRS and a regular x/y grid")
    return gbox  # type: ignore[no-any-return]


def chunk_shape(chunks: Any, shape: tuple[int, int]) -> tuple[int, int]:
    """(y, x) chunk size from an int, a pair or a {"y":, "x":} mapping, capped at the grid's shape."""
    if chunks is None:
        chunks = DEFAULT_CHUNK
    if isinstance(chunks, int):
        cy = cx = chunks
    elif isinstance(chunks, Mapping):
        cy, cx = int(chunks.get("y", DEFAULT_CHUNK)), int(chunks.get("x", DEFAULT_CHUNK))
    else:
        cy, cx = (int(v) for v in chunks)
    if cy <= 0 or cx <= 0:
        raise InvalidInputError(f"chunks must be positive, got {chunks!r}")
    return (min(cy, shape[0]), min(cx, shape[1]))
