"""Window maths of the planner: which chunks a scene touches, and which source pixels each needs.

A lattice of points along every chunk edge of the target grid is transformed into each source CRS
once (one vectorised pyproj call per CRS, not per scene and chunk); per chunk, the extreme source
coordinates give the source window and the edge lengths the local scale, which picks the overview.
All windows of one scene are then computed in one NumPy pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import shapely
from odc.geo.geobox import GeoBox
from pyproj import CRS
from pyproj.enums import TransformDirection

from mosaic.errors import InvalidInputError
from mosaic.geom import LONLAT, densify, grid_outline, lonlat_to_crs, to_lonlat, transformer
from mosaic.records import SceneAsset

if TYPE_CHECKING:
    from odc.geo.crs import CRS as GeoCRS

__all__ = [
    "WindowFinder",
    "chunk_boxes",
    "chunk_targets",
    "footprint_in_target",
    "grid_in_target",
    "scene_windows",
]

_INVERSE = TransformDirection.INVERSE
_LATTICE = 8  # at most this many points per chunk edge are transformed into each source CRS


def _lattice_pixels(n: int, chunk: int, count: int, samples: int) -> np.ndarray:
    """Pixel positions along one axis: ``samples`` + 1 per chunk (chunk edges shared)."""
    pos = []
    for i in range(count):
        start, stop = i * chunk, min((i + 1) * chunk, n)
        pts = np.linspace(start, stop, samples + 1)
        pos.append(pts if i == 0 else pts[1:])
    return np.concatenate(pos)


def _block_reduce(a: np.ndarray, ny: int, nx: int, s: int, func: Callable[..., np.ndarray]) -> np.ndarray:
    """Reduce the lattice to one value per chunk, over each chunk's (s+1)^2 points (NaN ignored)."""
    pair = np.fmin if func is np.nanmin else np.fmax
    rows = a.shape[0]
    cols = pair(func(a[:, :-1].reshape(rows, nx, s), axis=2), a[:, s::s])
    return cast(np.ndarray, pair(func(cols[:-1].reshape(ny, s, nx), axis=1), cols[s::s]))


class WindowFinder:
    """Source windows and local scales of every chunk, per source CRS (transforms cached per CRS)."""

    def __init__(self, gbox: GeoBox, chunks: tuple[int, int]):
        self.gbox = gbox
        self.chunks = chunks
        ny, nx = gbox.shape
        self.grid = (math.ceil(ny / chunks[0]), math.ceil(nx / chunks[1]))
        # sample points along each chunk edge: dense enough to follow curved edges, fewer for tiny chunks
        self.s = s = int(np.clip(min(chunks) // 16, 2, _LATTICE))
        rows = _lattice_pixels(ny, chunks[0], self.grid[0], s)
        cols = _lattice_pixels(nx, chunks[1], self.grid[1], s)
        cc, rr = np.meshgrid(cols, rows)
        aff = gbox.affine
        self.tx = aff.a * cc + aff.b * rr + aff.c
        self.ty = aff.d * cc + aff.e * rr + aff.f
        self.chunk_px = (np.diff(rows[::s]), np.diff(cols[::s]))
        self._cache: dict[str, tuple[np.ndarray, ...]] = {}

    def bounds(self, crs: str) -> tuple[np.ndarray, ...]:
        """Per chunk: source-CRS xmin, xmax, ymin, ymax, and source units per target pixel."""
        if crs not in self._cache:
            tr = transformer(cast("GeoCRS", self.gbox.crs).to_wkt(), crs)
            with np.errstate(all="ignore"):
                sx, sy = tr.transform(self.tx, self.ty, errcheck=False)
            bad = ~(np.isfinite(sx) & np.isfinite(sy))
            sx, sy = np.where(bad, np.nan, sx), np.where(bad, np.nan, sy)
            ny, nx = self.grid
            s = self.s
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN chunks: outside the source CRS
                xmin, xmax = _block_reduce(sx, ny, nx, s, np.nanmin), _block_reduce(sx, ny, nx, s, np.nanmax)
                ymin, ymax = _block_reduce(sy, ny, nx, s, np.nanmin), _block_reduce(sy, ny, nx, s, np.nanmax)
                # local scale: length of the chunk's top and left edges in source units per target pixel
                top = (
                    np.hypot(sx[:-1:s, s::s] - sx[:-1:s, :-1:s], sy[:-1:s, s::s] - sy[:-1:s, :-1:s])
                    / self.chunk_px[1][None, :]
                )
                left = (
                    np.hypot(sx[s::s, :-1:s] - sx[:-1:s, :-1:s], sy[s::s, :-1:s] - sy[:-1:s, :-1:s])
                    / self.chunk_px[0][:, None]
                )
                scale = np.sqrt(top * left)
            self._cache[crs] = (xmin, xmax, ymin, ymax, scale)
        return self._cache[crs]


def scene_windows(
    rec: SceneAsset, bounds: tuple[np.ndarray, ...], scale: np.ndarray, margin: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows of one scene for many chunks at once (vectorised).

    Args:
        rec: the scene asset.
        bounds: per chunk, source-CRS xmin, xmax, ymin, ymax (1-D arrays).
        scale: per chunk, source CRS units per target pixel.
        margin: extra source pixels around each window for the resampling kernel.

    Returns:
        overview level (-1: full resolution or decimated read), decimation factor, windows as
        (row_off, col_off, height, width) rows, and a mask of chunks whose window is not empty.
    """
    xmin, xmax, ymin, ymax = bounds
    a, b, c, d, e, f = rec.transform  # type: ignore[misc]
    det = a * e - b * d
    xs = np.stack([xmin, xmin, xmax, xmax])
    ys = np.stack([ymin, ymax, ymin, ymax])
    cols = (e * (xs - c) - b * (ys - f)) / det  # the inverse affine, for all corners at once
    rows = (-d * (xs - c) + a * (ys - f)) / det
    h, w = rec.shape  # type: ignore[misc]
    res = rec.resolution or (1.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = scale / max(min(res), 1e-300)  # source pixels per target pixel
    finite = np.isfinite(cols).all(axis=0) & np.isfinite(rows).all(axis=0) & np.isfinite(ratio)
    ratio = np.where(finite, ratio, 1.0)
    if rec.overviews is None:  # unknown overviews: a decimated read, GDAL picks the level
        level = np.full(ratio.shape, -1)
        factor = 2 ** np.maximum(0, np.floor(np.log2(np.maximum(ratio, 1.0)) + 1e-9)).astype(np.int64)
    else:
        ovs = np.asarray(rec.overviews, dtype=np.int64)
        count = (
            np.searchsorted(ovs, ratio * (1 + 1e-6), side="right") if len(ovs) else np.zeros(ratio.shape, int)
        )
        level = count - 1
        factor = np.where(count > 0, ovs[np.maximum(count - 1, 0)] if len(ovs) else 1, 1)
    cols = np.where(finite, cols, 0.0)
    rows = np.where(finite, rows, 0.0)
    lh, lw = np.ceil(h / factor).astype(np.int64), np.ceil(w / factor).astype(np.int64)
    r0 = np.maximum(0, np.floor(rows.min(axis=0) / factor).astype(np.int64) - margin)
    r1 = np.minimum(lh, np.ceil(rows.max(axis=0) / factor).astype(np.int64) + margin)
    c0 = np.maximum(0, np.floor(cols.min(axis=0) / factor).astype(np.int64) - margin)
    c1 = np.minimum(lw, np.ceil(cols.max(axis=0) / factor).astype(np.int64) + margin)
    ok = finite & (r1 > r0) & (c1 > c0)
    return level, factor, np.stack([r0, c0, r1 - r0, c1 - c0], axis=1), ok


def chunk_boxes(gbox: GeoBox, chunks: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Every chunk's bounding box in target CRS coordinates, row-major (vectorised)."""
    ny, nx = gbox.shape
    r_edges = np.minimum(np.arange(grid[0] + 1) * chunks[0], ny)
    c_edges = np.minimum(np.arange(grid[1] + 1) * chunks[1], nx)
    aff = gbox.affine
    r0, c0 = np.meshgrid(r_edges[:-1], c_edges[:-1], indexing="ij")
    r1, c1 = np.meshgrid(r_edges[1:], c_edges[1:], indexing="ij")
    xs = np.stack([aff.a * cc + aff.b * rr + aff.c for cc in (c0, c1) for rr in (r0, r1)])
    ys = np.stack([aff.d * cc + aff.e * rr + aff.f for cc in (c0, c1) for rr in (r0, r1)])
    return cast(
        np.ndarray, shapely.box(xs.min(0).ravel(), ys.min(0).ravel(), xs.max(0).ravel(), ys.max(0).ravel())
    )


def footprint_in_target(rec: SceneAsset, area_ll: Any, gbox: GeoBox) -> Any:
    """The scene footprint clipped to the request area, in target CRS coordinates."""
    return _lonlat_in_target(rec.footprint, area_ll, gbox)


def grid_in_target(rec: SceneAsset, area_ll: Any, gbox: GeoBox) -> Any:
    """The scene's whole pixel grid (not only its data) near the request, in target CRS coordinates.

    Unlike the footprint, which may come from a catalogue and be simplified, the grid outline bounds
    every pixel the scene can give, so it safely narrows where a read's pixels can land. None when the
    grid is unknown or cannot be drawn in the target CRS (then a read may land anywhere in its chunk).
    """
    if rec.transform is None or rec.shape is None:
        return None
    outline = grid_outline(rec.transform, rec.shape)
    wkt, geographic = _target(gbox)[:2]
    if not geographic and _same_crs(rec.crs, wkt):
        return outline  # (lon/lat grids go through the antimeridian handling below)
    direct = _outline_directly(outline, rec, gbox)
    if direct is not None:
        return direct
    try:
        return _lonlat_in_target(to_lonlat(outline, rec.crs), area_ll, gbox)
    except InvalidInputError:
        return None


def _outline_directly(outline: Any, rec: SceneAsset, gbox: GeoBox) -> Any:
    """The grid outline reprojected straight into the target CRS, where that is safe; else None.

    Safe away from the antimeridian and the poles: the scene's footprint is one polygon clear of both,
    and a lon/lat target does not cross 180. Elsewhere the lon/lat route (split at 180, closed over the
    poles) is taken; it costs ~1 ms a scene, against ~0.1 ms here. The transformer is the one the
    window lattice already uses (target to source), inverted.
    """
    target = _target(gbox)
    wkt, geographic = target.wkt, target.geographic
    fp = rec.footprint
    west, south, east, north = fp.bounds
    if fp.geom_type != "Polygon" or not (-179.0 < west and east < 179.0 and -80.0 < south and north < 80.0):
        return None
    if geographic and (target.minx < -180 or target.maxx > 180):
        return None
    xy = shapely.get_coordinates(densify(outline, 16))
    with np.errstate(all="ignore"):
        x, y = transformer(wkt, rec.crs).transform(xy[:, 0], xy[:, 1], errcheck=False, direction=_INVERSE)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    poly = shapely.Polygon(np.column_stack([x, y]))
    if not poly.is_valid or (geographic and np.ptp(x) > 90.0):
        return None  # folded or wrapped: the projection is not continuous over the scene
    return poly


def chunk_targets(
    grid: Any,
    boxes: np.ndarray,
    gbox: GeoBox,
    chunks: tuple[int, int],
    ys: np.ndarray,
    xs: np.ndarray,
    pad: int,
) -> np.ndarray:
    """Per chunk (ys, xs), the box of its pixels that a scene's ``grid`` (target CRS) covers.

    Rows of (row_off, col_off, height, width) in the chunk's own pixels, widened by ``pad`` pixels for
    the resampling kernel and the outline's densification; the whole chunk where the grid is unknown.
    """
    ny, nx = gbox.shape
    y0, x0 = ys * chunks[0], xs * chunks[1]
    h, w = np.minimum(chunks[0], ny - y0), np.minimum(chunks[1], nx - x0)
    whole = np.stack([np.zeros_like(ys), np.zeros_like(xs), h, w], axis=1)
    if grid is None or not len(ys):
        return whole
    nxc = math.ceil(nx / chunks[1])
    cut = shapely.intersection(grid, boxes[ys * nxc + xs])
    minx, miny, maxx, maxy = shapely.bounds(cut).T
    inv = ~gbox.affine
    cols = np.stack([inv.a * x + inv.b * y + inv.c for x in (minx, maxx) for y in (miny, maxy)])
    rows = np.stack([inv.d * x + inv.e * y + inv.f for x in (minx, maxx) for y in (miny, maxy)])
    with np.errstate(invalid="ignore"):
        r0 = np.clip(np.floor(rows.min(axis=0)) - pad - y0, 0, h)
        r1 = np.clip(np.ceil(rows.max(axis=0)) + pad - y0, 0, h)
        c0 = np.clip(np.floor(cols.min(axis=0)) - pad - x0, 0, w)
        c1 = np.clip(np.ceil(cols.max(axis=0)) + pad - x0, 0, w)
    box_ = np.stack([r0, c0, r1 - r0, c1 - c0], axis=1)
    known = np.isfinite(box_).all(axis=1)  # an empty cut has NaN bounds: keep the whole chunk
    return np.where(known[:, None], np.nan_to_num(box_), whole).astype(np.int64)


@lru_cache(maxsize=256)
def _same_crs(a: str, b: str) -> bool:
    return a == b or CRS.from_user_input(a).equals(CRS.from_user_input(b))


class _TargetFacts(NamedTuple):
    wkt: str
    geographic: bool
    lonlat: bool
    minx: float
    maxx: float


_last_target: tuple[GeoBox, _TargetFacts] | None = None


def _target(gbox: GeoBox) -> _TargetFacts:
    """The target grid's CRS as WKT, whether it is geographic or plain lon/lat, and its x extent.

    Kept for the last grid asked about: they are asked for every scene of a plan, and cost more than
    the scene's geometry (a WKT export alone is 25 us; a GeoBox hashes through it).
    """
    global _last_target
    last = _last_target
    if last is not None and last[0] is gbox:
        return last[1]
    crs = cast("GeoCRS", gbox.crs)
    wkt = crs.to_wkt()
    lonlat = bool(crs.geographic and CRS.from_user_input(wkt).equals(LONLAT))
    minx, _, maxx, _ = gbox.boundingbox
    facts = _TargetFacts(wkt, bool(crs.geographic), lonlat, float(minx), float(maxx))
    _last_target = (gbox, facts)
    return facts


def _lonlat_in_target(geom_ll: Any, area_ll: Any, gbox: GeoBox) -> Any:
    """A lon/lat geometry clipped to the request area, in target CRS coordinates."""
    clipped = geom_ll.intersection(area_ll)
    if clipped.is_empty:
        return clipped
    target = _target(gbox)
    if target.lonlat:
        minx, maxx = target.minx, target.maxx
        parts = []
        for p in getattr(clipped, "geoms", [clipped]):
            if maxx > 180 and p.bounds[2] <= minx:
                p = shapely.affinity.translate(p, 360)
            elif minx < -180 and p.bounds[0] >= maxx:
                p = shapely.affinity.translate(p, -360)
            parts.append(p)
        return shapely.union_all(parts)
    return lonlat_to_crs(clipped, target.wkt)
