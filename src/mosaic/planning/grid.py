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

Guards on what a request asks for live here too: :func:`check_grid` refuses grids of more than
``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`) or with pixels more than
:data:`MIN_RESOLUTION_RATIO` times finer than the finest selected scene (a resolution in the wrong
units), and :func:`warn_area_of_use` warns when the request reaches far beyond the target CRS's area
of use. Both run before anything sized by the grid is allocated.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry import box

from mosaic.errors import CRSAreaWarning, GridSizeError, InvalidInputError
from mosaic.index.geom import LONLAT, bbox_to_lonlat, centre_lon, lonlat_to_crs

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

    from mosaic.planning.records import SceneAsset

__all__ = [
    "AREA_OF_USE_MARGIN",
    "DEFAULT_CHUNK",
    "DEFAULT_MAX_PIXELS",
    "MIN_RESOLUTION_RATIO",
    "anchor_phase",
    "check_bbox",
    "check_grid",
    "check_max_pixels",
    "chunk_shape",
    "geobox_of",
    "make_geobox",
    "metres_per_unit",
    "parse_crs",
    "target_bounds",
    "target_crs",
    "warn_area_of_use",
    "whole_number",
]

DEFAULT_CHUNK = 2048
DEFAULT_MAX_PIXELS = 10**11
"""Largest output grid (pixels of one band and time step) planned without ``max_pixels=``: 316,000
pixels square, 200 GB per band in uint16."""
MIN_RESOLUTION_RATIO = 100
"""Output pixels finer than 1/100 of the finest selected scene's are refused as a likely unit slip."""
AREA_OF_USE_MARGIN = 5.0
"""Degrees a request may reach beyond its CRS's area of use before :class:`CRSAreaWarning` (a UTM
grid 5 degrees past its zone has a scale error of about 1%)."""
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


def parse_crs(value: Any, what: str = "crs") -> CRS:
    """A CRS from anything pyproj reads (``"EPSG:32632"``, 32632, WKT, PROJ, a pyproj or odc-geo CRS).

    Raises:
        InvalidInputError: naming the argument (``what``), when pyproj does not know the value.
    """
    if value is None or isinstance(value, bool):
        raise InvalidInputError(f"{what} must be a CRS (e.g. 'EPSG:4326'), got {value!r}")
    try:
        return CRS.from_user_input(value)
    except (CRSError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} {value!r} is not a CRS pyproj understands ({exc})") from exc


def check_bbox(bbox: Any, what: str = "bbox") -> tuple[float, float, float, float]:
    """``bbox`` as four finite floats (minx, miny, maxx, maxy) with an extent in y and in x.

    ``minx > maxx`` passes: in lon/lat it crosses the antimeridian (other CRSs refuse it later).

    Raises:
        InvalidInputError: not four numbers, a NaN or infinite one, or an empty box.
    """
    wrong = f"{what} must be four numbers (minx, miny, maxx, maxy), got {bbox!r}"
    if isinstance(bbox, (str, bytes)) or not isinstance(bbox, Sequence | np.ndarray):
        raise InvalidInputError(wrong)
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InvalidInputError(wrong) from None
    if len(values) != 4:
        raise InvalidInputError(wrong)
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{what} has a non-finite value: {tuple(bbox)!r}")
    minx, miny, maxx, maxy = values
    if miny >= maxy:
        raise InvalidInputError(f"{what} miny ({miny:g}) must be below maxy ({maxy:g})")
    if minx == maxx:
        raise InvalidInputError(f"{what} minx and maxx are equal ({minx:g}): the box has no width")
    return (minx, miny, maxx, maxy)


def target_crs(value: Any, bbox: Sequence[float] | None, bbox_crs: Any) -> CRS:
    """The target CRS; ``"utm"`` is the UTM zone of the bbox centre."""
    if isinstance(value, str) and value.lower() == "utm":
        if bbox is None:
            raise InvalidInputError("crs='utm' needs a bbox to pick the zone from")
        area = bbox_to_lonlat(bbox, bbox_crs)
        lon, lat = centre_lon(area), area.centroid.y
        zone = min(60, int((lon + 180) // 6) + 1)
        return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
    return parse_crs(value)


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
        ny, nx = _shape(shape)

        return GeoBox((ny, nx), Affine((maxx - minx) / nx, 0, minx, 0, -(maxy - miny) / ny, maxy), target)
    if resolution is None:
        if default_resolution is None:
            raise InvalidInputError("give resolution= (in target CRS units) or shape=")
        resolution = default_resolution(target)
    rx, ry = _resolution(resolution)
    fx, fy = anchor(target, rx, ry) if callable(anchor) else anchor
    ox, oy = fx * rx, fy * ry
    x0, x1 = math.floor((minx - ox) / rx + 1e-9) * rx + ox, math.ceil((maxx - ox) / rx - 1e-9) * rx + ox
    y0, y1 = math.floor((miny - oy) / ry + 1e-9) * ry + oy, math.ceil((maxy - oy) / ry - 1e-9) * ry + oy
    nx, ny = max(1, round((x1 - x0) / rx)), max(1, round((y1 - y0) / ry))

    return GeoBox((ny, nx), Affine(rx, 0, x0, 0, -ry, y1), target)


def _resolution(value: Any) -> tuple[float, float]:
    """(x, y) pixel sizes from one number or an (x, y) pair; signs dropped (odc-geo's y is negative)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        pair = (value, value) if np.isscalar(value) else tuple(value)
        rx, ry = (abs(float(v)) for v in pair)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"resolution must be a pixel size in target CRS units, or an (x, y) pair of them, got {value!r}"
        ) from None
    if not (math.isfinite(rx) and math.isfinite(ry) and rx > 0 and ry > 0):
        raise InvalidInputError(f"resolution must be positive and finite, got {value!r}")
    return rx, ry


def _shape(value: Any) -> tuple[int, int]:
    """(height, width) as positive whole numbers."""
    try:
        ny, nx = (whole_number(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"shape must be (height, width) in whole pixels, got {value!r}") from None
    if ny <= 0 or nx <= 0:
        raise InvalidInputError(f"shape must be positive, got {value!r}")
    return ny, nx


def whole_number(value: Any) -> int:
    """A whole number (an int, a NumPy integer, or a float with no fraction) as an int."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a size")
    if isinstance(value, numbers.Integral):
        return operator.index(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(float(value))
    raise TypeError(f"{value!r} is not a whole number")


def geobox_of(like: Any) -> GeoBox:
    """The grid of ``like``: a GeoBox itself, or an xarray object's (via odc-geo)."""
    if isinstance(like, GeoBox):
        return like
    gbox = getattr(getattr(like, "odc", None), "geobox", None)
    if gbox is None:
        raise InvalidInputError("like= must be an xarray object with a CRS and a regular x/y grid")
    return gbox  # type: ignore[no-any-return]


def chunk_shape(chunks: Any, shape: tuple[int, int]) -> tuple[int, int]:
    """(y, x) chunk size from an int, a pair or a {"y":, "x":} mapping, capped at the grid's shape.

    Raises:
        InvalidInputError: not whole numbers of pixels, or not positive.
    """
    if chunks is None:
        chunks = DEFAULT_CHUNK
    try:
        if isinstance(chunks, Mapping):
            cy, cx = (whole_number(chunks.get(k, DEFAULT_CHUNK)) for k in ("y", "x"))
        elif isinstance(chunks, (str, bytes)):
            raise TypeError
        elif isinstance(chunks, Sequence):
            cy, cx = (whole_number(v) for v in chunks)
        else:
            cy = cx = whole_number(chunks)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f'chunks must be a whole number of pixels, a (y, x) pair or {{"y": Y, "x": X}}, got {chunks!r}'
        ) from None
    if cy <= 0 or cx <= 0:
        raise InvalidInputError(f"chunks must be positive, got {chunks!r}")
    return (min(cy, shape[0]), min(cx, shape[1]))


# ------------------------------------------------------------------------------------------ guards


_METRES_PER_DEGREE = 111_320.0


@lru_cache(maxsize=256)
def _unit_facts(crs: str) -> tuple[float, str, bool]:
    """Metres per unit of a CRS's first axis, the unit's name, and whether the CRS is geographic."""
    parsed = CRS.from_user_input(crs)
    axis = parsed.axis_info[0] if parsed.axis_info else None
    if parsed.is_geographic:  # a degree is 111,320 m (at the equator); other angle units in proportion
        per_degree = (axis.unit_conversion_factor if axis is not None else math.pi / 180.0) / (
            math.pi / 180.0
        )
        return _METRES_PER_DEGREE * per_degree, "degrees" if axis is None else _plural(axis.unit_name), True
    if axis is None:
        return 1.0, "metres", False
    return axis.unit_conversion_factor, _plural(axis.unit_name), False


def _plural(unit: str) -> str:
    return {"metre": "metres", "degree": "degrees", "foot": "feet", "US survey foot": "US survey feet"}.get(
        unit, f"{unit} units"
    )


def metres_per_unit(crs: Any) -> float:
    """Ground metres per unit of ``crs`` (a degree is ~111 km: at the equator, for a geographic CRS)."""
    return _unit_facts(_crs_key(crs))[0]


def _crs_key(crs: Any) -> str:
    if isinstance(crs, str):
        return crs
    to_wkt = getattr(crs, "to_wkt", None)
    return str(to_wkt()) if callable(to_wkt) else str(crs)


def _metres(value: float) -> str:
    """A ground distance for people: ``"22 m"``, ``"1.1 cm"``, ``"3.2 km"``."""
    if value >= 1000:
        return f"{value / 1000:.3g} km"
    if value >= 1:
        return f"{value:.3g} m"
    if value >= 0.01:
        return f"{value * 100:.3g} cm"
    return f"{value * 1000:.3g} mm"


def check_max_pixels(max_pixels: Any) -> float | None:
    """``max_pixels`` validated: None (no guard) or a positive number.

    Raises:
        InvalidInputError: anything else.
    """
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Real):
        value = math.nan
    else:
        value = float(max_pixels)
    if not value > 0:
        raise InvalidInputError(
            f"max_pixels must be a positive number of pixels (e.g. 1e12), or None for no limit; "
            f"got {max_pixels!r}"
        )
    return value


def check_grid(
    gbox: GeoBox,
    scenes: Sequence[SceneAsset],
    *,
    max_pixels: float | None = DEFAULT_MAX_PIXELS,
    dtypes: Sequence[Any] = (),
) -> None:
    """Refuse a grid larger than ``max_pixels`` or much finer than the scenes; None lifts both checks.

    Args:
        gbox: the output grid.
        scenes: the selected scenes (their resolution and CRS give the finest source pixel).
        max_pixels: the most pixels (height x width) the grid may have; None: no check at all.
        dtypes: the output bands' dtypes, for the size in bytes the message gives.

    Raises:
        GridSizeError: naming the grid's size and, where it is one, the likely unit mistake.
    """
    limit = check_max_pixels(max_pixels)
    if limit is None:
        return
    ny, nx = (int(v) for v in gbox.shape)
    crs = cast("Any", gbox.crs)
    wkt = crs.to_wkt()
    per_unit, unit, geographic = _unit_facts(wkt)
    rx, ry = abs(float(gbox.resolution.x)), abs(float(gbox.resolution.y))
    size = _size_text(ny, nx, dtypes)
    name = _crs_name(wkt)
    lift = "pass max_pixels=None (--max-pixels none) to plan it anyway"
    finest = _finest(scenes)
    if finest is not None:
        finest_m, scene = finest
        pixel_m = min(rx, ry) * per_unit
        if pixel_m * MIN_RESOLUTION_RATIO < finest_m:
            res = f"{rx:g}" if rx == ry else f"({rx:g}, {ry:g})"
            slip = f"resolution {res} is in {unit} for {name}"
            if not geographic and min(rx, ry) < 1.0:  # a number that reads as degrees
                degree = _unit_facts("EPSG:4326")[0]
                slip += f": did you mean degrees? {res} degrees is about {_metres(min(rx, ry) * degree)}"
            raise GridSizeError(
                f"{slip}. In {unit}, its pixels ({_metres(pixel_m)}) are {_count(finest_m / pixel_m)} times "
                f"finer than the finest selected scene's ({_metres(finest_m)}, {scene}) and the grid would "
                f"be {size}; give the resolution in {unit}, or {lift}"
            )
    if ny * nx > limit:
        raise GridSizeError(
            f"the output grid would be {size} in {name} at {rx:g} x {ry:g} {unit}, more than "
            f"max_pixels={_count(limit)}; check the resolution's units ({unit}) and the area, or give a "
            f"larger max_pixels (--max-pixels), or {lift}"
        )


def _finest(scenes: Sequence[SceneAsset]) -> tuple[float, str] | None:
    """The finest pixel of the scenes in ground metres, and the scene that has it (None: unknown)."""
    best: tuple[float, str] | None = None
    for rec in scenes:
        if not rec.resolution or not rec.crs:
            continue
        try:
            metres = min(abs(float(v)) for v in rec.resolution) * metres_per_unit(rec.crs)
        except (CRSError, ValueError):
            continue
        if metres > 0 and (best is None or metres < best[0]):
            best = (metres, f"{rec.id} [{rec.asset}]")
    return best


def _size_text(ny: int, nx: int, dtypes: Sequence[Any]) -> str:
    """``"1,000,000 x 670,000 pixels (6.7e+11; 1.2 TiB per band and time step as uint16)"``."""
    from mosaic._repr import human_bytes

    kinds = []
    for d in dtypes:
        try:
            kinds.append(np.dtype(d))
        except TypeError:
            continue
    text = f"{ny:,} x {nx:,} pixels ({_count(ny * nx)}"
    if kinds:
        widest = max(kinds, key=lambda d: d.itemsize)
        text += f"; {human_bytes(ny * nx * widest.itemsize)} per band and time step as {widest.name}"
    return text + ")"


def _count(n: float) -> str:
    """``6.7e11`` for big counts, ``12,000`` for small ones."""
    return f"{n:,.0f}" if n < 1e6 else f"{n:.2g}".replace("e+", "e")


@lru_cache(maxsize=64)
def _crs_name(wkt: str) -> str:
    """``"EPSG:32632 (WGS 84 / UTM zone 32N)"``, or the CRS's name alone."""
    parsed = CRS.from_user_input(wkt)
    code = parsed.to_authority(min_confidence=90)
    return f"{':'.join(code)} ({parsed.name})" if code else parsed.name


def warn_area_of_use(crs: Any, area_ll: BaseGeometry | None, *, stacklevel: int = 3) -> None:
    """Warn (:class:`CRSAreaWarning`) when ``area_ll`` reaches far beyond ``crs``'s area of use.

    "Far" is more than :data:`AREA_OF_USE_MARGIN` degrees past it; a CRS without an area of use (a
    PROJ string, a custom WKT) is never warned about.
    """
    if area_ll is None or area_ll.is_empty:
        return
    try:
        aou = CRS.from_user_input(_crs_key(crs)).area_of_use
    except CRSError:
        return
    if aou is None:
        return
    covered = _widened(aou.west, aou.south, aou.east, aou.north, AREA_OF_USE_MARGIN)
    outside = area_ll.difference(covered)
    if outside.is_empty or outside.area < 1e-9 * max(area_ll.area, 1e-12):
        return
    w, s, e, n = (round(v, 2) for v in area_ll.bounds)
    warnings.warn(
        f"the request (lon {w}..{e}, lat {s}..{n}) reaches more than {AREA_OF_USE_MARGIN:g} degrees "
        f"beyond the area of use of {_crs_name(_crs_key_wkt(crs))}: {aou.name.split('.')[0]} "
        f"(lon {aou.west:g}..{aou.east:g}, lat {aou.south:g}..{aou.north:g}); the grid is distorted "
        "there: choose a CRS for the area (crs='utm' picks the UTM zone of its centre)",
        CRSAreaWarning,
        stacklevel=stacklevel,
    )


def _crs_key_wkt(crs: Any) -> str:
    return CRS.from_user_input(_crs_key(crs)).to_wkt()


def _widened(west: float, south: float, east: float, north: float, margin: float) -> BaseGeometry:
    """An area of use (west > east crosses the antimeridian) widened by ``margin`` degrees, in -180..180."""
    south, north = max(-90.0, south - margin), min(90.0, north + margin)
    if east < west:
        east += 360.0
    west, east = west - margin, east + margin
    if east - west >= 360.0:
        return box(-180.0, south, 180.0, north)
    parts = [box(west + k, south, east + k, north) for k in (-360.0, 0.0, 360.0)]
    return shapely.union_all(parts).intersection(box(-180.0, -90.0, 180.0, 90.0))
