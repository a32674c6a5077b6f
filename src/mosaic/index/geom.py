"""Footprint geometry: from a scene's native CRS to lon/lat and back, correct at the antimeridian and poles.

Every footprint the index stores is in lon/lat (EPSG:4326, x = longitude in [-180, 180]) and is split at
the antimeridian, as the STAC and GeoJSON specs ask. A native polygon is densified before it is
reprojected, so straight edges in a projected CRS become the curves they are on the sphere. Splitting
and pole enclosure are delegated to the `antimeridian` package; whether a footprint encloses a pole is
decided here, exactly, by testing the pole's position in the native CRS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import antimeridian
import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.enums import TransformDirection
from pyproj.exceptions import CRSError
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from mosaic.errors import InvalidInputError

__all__ = [
    "LONLAT",
    "areal",
    "as_geometry",
    "bbox_to_lonlat",
    "centre_lon",
    "densify",
    "geometry_bounds",
    "grid_outline",
    "lonlat_to_crs",
    "normalize_lonlat",
    "to_lonlat",
    "transformer",
]

LONLAT = CRS.from_epsg(4326)
_DENSIFY_POINTS = 64  # vertices added along each side of a footprint before reprojection
_POLE_EPS = 1e-9
_INVERSE = TransformDirection.INVERSE


@lru_cache(maxsize=256)
def _crs(value: str) -> CRS:
    return CRS.from_user_input(value)


@lru_cache(maxsize=256)
def transformer(src: str, dst: str) -> Transformer:
    """A cached pyproj transformer from ``src`` to ``dst`` (x/y order): creating one costs ~1 ms.

    For the way back, use this one with ``direction=TransformDirection.INVERSE`` rather than a second
    transformer: the same operation, inverted.
    """
    return Transformer.from_crs(_crs(src), _crs(dst), always_xy=True)


def _wkt(crs: CRS | str) -> str:
    """The CRS as WKT: one exact, hashable key for the caches above, whatever form it came in."""
    return crs.to_wkt() if isinstance(crs, CRS) else _crs(crs).to_wkt()


def grid_outline(transform: Sequence[float], shape: tuple[int, int]) -> Polygon:
    """The outline of a pixel grid (affine coefficients a..f, (height, width)) in its own CRS."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    h, w = shape
    return Polygon(
        [(a * col + b * row + c, d * col + e * row + f) for col, row in ((0, 0), (w, 0), (w, h), (0, h))]
    )


def densify(geom: BaseGeometry, points_per_side: int = _DENSIFY_POINTS) -> BaseGeometry:
    """Insert vertices so that the longest ring edge is at most 1/points_per_side of the geometry's size."""
    minx, miny, maxx, maxy = geom.bounds
    span = max(maxx - minx, maxy - miny)
    if span <= 0:
        return geom
    return shapely.segmentize(geom, span / points_per_side)


def _contains_pole(native: Polygon, crs: str, lat: float) -> bool:
    """Whether the pole at latitude ``lat`` (+-90) lies inside ``native`` (in its own CRS)."""
    with np.errstate(all="ignore"):
        x, y = transformer(crs, "EPSG:4326").transform(0.0, lat, errcheck=False, direction=_INVERSE)
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    return bool(native.buffer(0).contains(shapely.Point(x, y)))


def _ring_to_lonlat(coords: np.ndarray, crs: str) -> np.ndarray:
    lon, lat = transformer(crs, "EPSG:4326").transform(coords[:, 0], coords[:, 1], errcheck=False)
    out = np.column_stack([lon, lat])
    if not np.isfinite(out).all():
        raise InvalidInputError(
            f"footprint cannot be expressed in lon/lat: some of its corners lie outside the valid area of "
            f"{_crs(crs).to_string()}"
        )
    return out


def _polygon_to_lonlat(native: Polygon, crs: str) -> BaseGeometry:
    north = _contains_pole(native, crs, 90.0)
    south = _contains_pole(native, crs, -90.0)
    shell = _ring_to_lonlat(np.asarray(native.exterior.coords), crs)
    result = _fix_ring(shell, north=north, south=south)
    for hole in native.interiors:
        result = result.difference(_fix_ring(_ring_to_lonlat(np.asarray(hole.coords), crs)))
    return result


def _fix_ring(lonlat: np.ndarray, *, north: bool = False, south: bool = False) -> BaseGeometry:
    """A lon/lat ring as a valid (multi)polygon, split at +-180 and closed over an enclosed pole."""
    poly = Polygon(lonlat)
    lon = lonlat[:, 0]
    on_seam = np.abs(lon) >= 180.0
    # a jump between two vertices on +-180 runs along the seam (e.g. a box's pole edge), not across it
    crosses = bool(np.any((np.abs(np.diff(lon)) > 180.0) & ~(on_seam[:-1] & on_seam[1:])))
    if not (crosses or north or south):
        return shapely.make_valid(shapely.geometry.polygon.orient(poly, 1.0))
    if not (north or south) and not shapely.is_ccw(Polygon(_unwrap(lonlat)).exterior):
        poly = Polygon(lonlat[::-1])  # winding is only meaningful on continuous longitudes
    fixed = antimeridian.fix_polygon(
        poly, force_north_pole=north, force_south_pole=south, fix_winding=False, great_circle=False
    )
    return shapely.make_valid(fixed)


def _unwrap(lonlat: np.ndarray) -> np.ndarray:
    """The ring with longitudes made continuous (no jump over 180 degrees between vertices).

    Vertices are shifted by whole multiples of 360, so a closed ring stays exactly closed.
    """
    step = np.diff(lonlat[:, 0])
    turns = np.where(step > 180.0, -1, np.where(step < -180.0, 1, 0))
    out = lonlat.copy()
    out[1:, 0] = lonlat[1:, 0] + 360.0 * np.cumsum(turns)
    return out


def _polygons(geom: BaseGeometry) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom]
    if isinstance(geom, MultiPolygon):
        return list(geom.geoms)
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


def areal(geom: BaseGeometry) -> Polygon | MultiPolygon:
    """Keep only the areal parts of ``geom`` (make_valid may add stray lines and points)."""
    parts = [p for p in _polygons(geom) if not p.is_empty and p.area > 0]
    if not parts:
        return MultiPolygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def to_lonlat(
    geom: BaseGeometry, crs: CRS | str, *, points_per_side: int = _DENSIFY_POINTS
) -> Polygon | MultiPolygon:
    """Reproject a polygonal footprint from ``crs`` to lon/lat, split at the antimeridian.

    The geometry is densified first. A footprint that encloses a pole (a polar stereographic scene
    centred on it, for instance) comes back as a polygon reaching latitude +-90 over all longitudes.

    Args:
        geom: a Polygon or MultiPolygon in the coordinates of ``crs``.
        crs: the footprint's CRS (anything pyproj accepts).
        points_per_side: densification; vertices added along each side before reprojection.
    """
    crs_key = _wkt(crs)
    if _crs(crs_key).is_geographic and _crs(crs_key).equals(LONLAT, ignore_axis_order=True):
        return normalize_lonlat(geom)
    parts = [
        _polygon_to_lonlat(densify(p, points_per_side), crs_key) for p in _polygons(shapely.force_2d(geom))
    ]
    if not parts:
        raise InvalidInputError(f"footprint has no area: {geom.wkt[:80]}")
    return areal(shapely.union_all(parts))


def normalize_lonlat(geom: BaseGeometry) -> Polygon | MultiPolygon:
    """Make a lon/lat geometry follow our convention: valid, counter-clockwise, split at +-180.

    Accepts GeoJSON-style footprints that cross the antimeridian in either form found in the wild:
    longitudes beyond 180 (e.g. 179 to 181) or a ring that jumps from +179 to -179.
    """
    fixed = []
    for poly in _polygons(shapely.force_2d(geom)):  # footprints are 2-D; Z would confuse the splitter
        ring = np.asarray(poly.exterior.coords)
        if ring[:, 0].max() > 180.0 or ring[:, 0].min() < -180.0:
            ring = ring.copy()
            ring[:, 0] = (ring[:, 0] + 180.0) % 360.0 - 180.0
        fixed.append(_fix_ring(ring))
        for hole in poly.interiors:
            fixed[-1] = fixed[-1].difference(_fix_ring(np.asarray(hole.coords)))
    if not fixed:
        raise InvalidInputError(f"footprint has no area: {geom.wkt[:80]}")
    return areal(shapely.union_all(fixed))


def bbox_to_lonlat(bbox: Sequence[float], crs: CRS | str = "EPSG:4326") -> Polygon | MultiPolygon:
    """A query box as a lon/lat footprint.

    In lon/lat, a box whose ``minx`` exceeds its ``maxx`` crosses the antimeridian (GeoJSON's
    convention), e.g. ``(170, -20, -170, -10)``. In a projected CRS the box is densified and reprojected
    like any footprint, so a box around a pole in EPSG:3413 becomes a polar cap.
    """
    if len(bbox) != 4:
        raise InvalidInputError(f"bbox must be (minx, miny, maxx, maxy), got {tuple(bbox)!r}")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidInputError(f"bbox has a non-finite value: {tuple(bbox)!r}")
    if miny > maxy:
        raise InvalidInputError(f"bbox miny {miny} is greater than maxy {maxy}")
    try:
        target = _crs(_wkt(crs))
    except (CRSError, TypeError) as exc:
        raise InvalidInputError(f"bbox_crs {crs!r} is not a CRS pyproj understands ({exc})") from exc
    if target.equals(LONLAT, ignore_axis_order=True):
        if miny < -90 or maxy > 90:
            raise InvalidInputError(f"bbox latitudes must lie within [-90, 90], got {tuple(bbox)!r}")
        if minx > maxx:  # crosses the antimeridian
            return MultiPolygon([box(minx, miny, 180.0, maxy), box(-180.0, miny, maxx, maxy)])
        if maxx - minx >= 360.0:
            return box(-180.0, miny, 180.0, maxy)
        return normalize_lonlat(box(minx, miny, maxx, maxy))
    if minx > maxx:
        raise InvalidInputError(f"bbox minx {minx} is greater than maxx {maxx}")
    return to_lonlat(box(minx, miny, maxx, maxy), target)


def lonlat_to_crs(
    geom: BaseGeometry, crs: CRS | str, *, points_per_side: int = _DENSIFY_POINTS
) -> BaseGeometry:
    """Reproject a lon/lat footprint (split at the antimeridian) into ``crs``.

    Each part is densified and reprojected on its own and the parts are unioned, so the two halves of
    a footprint split at +-180 join again in a CRS where they are neighbours (UTM zone 1 or 60, a polar
    projection). Points that ``crs`` cannot represent make the result raise.
    """
    key = _wkt(crs)
    tr = transformer(key, "EPSG:4326")
    parts = []
    for poly in _polygons(geom):
        dense = densify(poly, points_per_side)
        parts.append(
            shapely.transform(
                dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1], direction=_INVERSE))
            )
        )
    if not parts:
        return Polygon()
    out = shapely.union_all([shapely.make_valid(p) for p in parts])
    if not np.isfinite(shapely.get_coordinates(out)).all():
        raise InvalidInputError(f"footprint cannot be represented in {_crs(key).to_string()}")
    return out


def centre_lon(footprint: BaseGeometry) -> float:
    """Longitude of a lon/lat footprint's centre, also for one split at the antimeridian."""
    parts = list(getattr(footprint, "geoms", [footprint]))
    if len(parts) > 1 and min(p.bounds[0] for p in parts) <= -180 and max(p.bounds[2] for p in parts) >= 180:
        shifted = [shapely.affinity.translate(p, 360) if p.bounds[2] <= 0 else p for p in parts]
        lon: float = shapely.union_all(shifted).centroid.x
        return (lon + 180) % 360 - 180
    return float(footprint.centroid.x)


def as_geometry(value: Any, crs: Any = "EPSG:4326") -> tuple[Polygon | MultiPolygon, str]:
    """A user's area as a polygonal shapely geometry and the CRS it is in.

    Accepts a shapely geometry (in ``crs``), a GeoJSON geometry, Feature or FeatureCollection dict
    (in ``crs``; GeoJSON itself is lon/lat), anything with ``__geo_interface__`` (a geopandas
    GeoSeries or GeoDataFrame, whose own ``crs`` wins), or an odc-geo ``Geometry`` (its own CRS).

    Raises:
        InvalidInputError: naming the value, when it is not polygonal or has no area.
    """
    own_crs = getattr(value, "crs", None)
    if hasattr(value, "geom") and own_crs is not None:  # odc.geo.geom.Geometry
        value = value.geom
    if isinstance(value, BaseGeometry):
        geom: BaseGeometry = value
    else:
        mapping = value if isinstance(value, Mapping) else getattr(value, "__geo_interface__", None)
        if not isinstance(mapping, Mapping):
            raise InvalidInputError(
                f"geopolygon must be a shapely geometry, a GeoJSON dict or an object with "
                f"__geo_interface__, got {type(value).__name__}"
            )
        try:
            geom = _from_geojson(mapping)
        except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as exc:
            raise InvalidInputError(f"geopolygon is not valid GeoJSON ({type(exc).__name__}: {exc})") from exc
    polygons = _polygons(shapely.force_2d(geom))
    if not polygons or shapely.union_all(polygons).area <= 0:
        raise InvalidInputError(f"geopolygon must be a polygon with an area, got {geom.geom_type}")
    area = polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)
    return area, _wkt(own_crs if own_crs is not None else crs)


def _from_geojson(mapping: Mapping[str, Any]) -> BaseGeometry:
    kind = mapping.get("type")
    if kind == "FeatureCollection":
        return shapely.union_all([_from_geojson(f) for f in mapping["features"]])
    if kind == "Feature":
        return _from_geojson(mapping["geometry"])
    return shapely.geometry.shape(mapping)


def geometry_bounds(geom: BaseGeometry, crs: CRS | str) -> tuple[float, float, float, float]:
    """The bounding box of ``geom``; in lon/lat, one with minx > maxx when it is split at +-180."""
    if _crs(_wkt(crs)).equals(LONLAT, ignore_axis_order=True):
        parts = [p.bounds for p in _polygons(geom)]
        east = [b for b in parts if b[2] >= 180.0]
        west = [b for b in parts if b[0] <= -180.0]
        if east and west and len(parts) > 1:
            ys = [v for b in parts for v in (b[1], b[3])]
            minx = min(b[0] for b in parts if b[0] > -180.0)
            maxx = max(b[2] for b in parts if b[2] < 180.0)
            return (minx, min(ys), maxx, max(ys))
    minx, miny, maxx, maxy = geom.bounds
    return (minx, miny, maxx, maxy)
