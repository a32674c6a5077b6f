"""Window maths of the planner: which chunks a scene touches, and which source pixels each needs.

A scene's footprint is tested against the boxes of the chunks near it only (:func:`chunks_touching`).
A lattice of points along each touched chunk is transformed into each source CRS once (one vectorised
pyproj call per CRS, not per scene and chunk); per chunk, the extreme source coordinates give the
source window and the edge lengths the local scale, which picks the overview. All windows of one scene
are then computed in one NumPy pass. Nothing here is sized by the whole grid: planning a vast grid
that few scenes touch costs what those scenes' chunks cost.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import shapely
from odc.geo.geobox import GeoBox
from pyproj import CRS
from pyproj.enums import TransformDirection

from mosaic.errors import InvalidInputError
from mosaic.index.geom import LONLAT, densify, grid_outline, lonlat_to_crs, to_lonlat, transformer
from mosaic.planning.records import SceneAsset

if TYPE_CHECKING:
    from odc.geo.crs import CRS as GeoCRS

__all__ = [
    "WindowFinder",
    "chunk_boxes",
    "chunk_targets",
    "chunks_touching",
    "footprint_in_target",
    "grid_in_target",
    "scene_windows",
]

_INVERSE = TransformDirection.INVERSE
_LATTICE = 8  # at most this many points per chunk edge are transformed into each source CRS
_BATCH = 16384  # chunks per vectorised transform: bounds the lattice's temporaries (~50 MB)


class WindowFinder:
    """Source windows and local scales of chunks, per source CRS, for the chunks asked about only.

    Each chunk's lattice ((s + 1) x (s + 1) points along and across it) is transformed into a source
    CRS once, in one vectorised pyproj call per CRS for all the chunks :meth:`prepare` names (in
    batches of :data:`_BATCH`): the cost follows the chunks the footprints touch, never the size of
    the grid. ``lattice_chunks`` counts the chunk lattices transformed so far.
    """

    def __init__(self, gbox: GeoBox, chunks: tuple[int, int]):
        self.gbox = gbox
        self.chunks = chunks
        ny, nx = gbox.shape
        self.grid = (math.ceil(ny / chunks[0]), math.ceil(nx / chunks[1]))
        # sample points along each chunk edge: dense enough to follow curved edges, fewer for tiny chunks
        self.s = int(np.clip(min(chunks) // 16, 2, _LATTICE))
        self.lattice_chunks = 0
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # CRS: (sorted chunks, 5 x n values)

    def prepare(self, crs: str, flat: np.ndarray) -> None:
        """Transform the lattices of chunks ``flat`` (row-major indices) into ``crs``, if not done yet."""
        keys, values = self._cache.get(crs, (np.empty(0, np.int64), np.empty((5, 0))))
        missing = np.setdiff1d(np.asarray(flat, dtype=np.int64), keys)
        if not missing.size:
            return
        tr = transformer(cast("GeoCRS", self.gbox.crs).to_wkt(), crs)
        new = np.concatenate(
            [self._compute(tr, missing[i : i + _BATCH]) for i in range(0, missing.size, _BATCH)], axis=1
        )
        keys, values = np.concatenate([keys, missing]), np.concatenate([values, new], axis=1)
        order = np.argsort(keys, kind="stable")
        self._cache[crs] = (keys[order], values[:, order])

    def bounds(self, crs: str, flat: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per chunk of ``flat``: source-CRS xmin, xmax, ymin, ymax, and source units per target pixel."""
        flat = np.asarray(flat, dtype=np.int64)
        self.prepare(crs, flat)
        keys, values = self._cache[crs]
        picked = values[:, np.searchsorted(keys, flat)]
        return tuple(picked)

    def _compute(self, tr: Any, flat: np.ndarray) -> np.ndarray:
        """xmin, xmax, ymin, ymax and scale (rows of a 5 x n array) of chunks ``flat`` in ``tr``'s CRS."""
        ny, nx = self.gbox.shape
        cy, cx = self.chunks
        s, n = self.s, flat.size
        iy, ix = np.divmod(flat, self.grid[1])
        rows = np.linspace(iy * cy, np.minimum((iy + 1) * cy, ny), s + 1, axis=1)  # n x (s + 1)
        cols = np.linspace(ix * cx, np.minimum((ix + 1) * cx, nx), s + 1, axis=1)
        rr, cc = rows[:, :, None], cols[:, None, :]
        aff = self.gbox.affine
        tx = aff.a * cc + aff.b * rr + aff.c  # n x (s + 1) x (s + 1), as the broadcast goes
        ty = aff.d * cc + aff.e * rr + aff.f
        with np.errstate(all="ignore"):
            sx, sy = tr.transform(np.ravel(tx), np.ravel(ty), errcheck=False)
        bad = ~(np.isfinite(sx) & np.isfinite(sy))
        sx = np.where(bad, np.nan, sx).reshape(n, (s + 1) ** 2)
        sy = np.where(bad, np.nan, sy).reshape(n, (s + 1) ** 2)
        self.lattice_chunks += n
        out = np.empty((5, n))
        # extremes over each chunk's points, NaN (outside the source CRS) ignored; all NaN stays NaN
        out[0], out[1] = np.fmin.reduce(sx, axis=1), np.fmax.reduce(sx, axis=1)
        out[2], out[3] = np.fmin.reduce(sy, axis=1), np.fmax.reduce(sy, axis=1)
        # local scale: length of the chunk's top and left edges in source units per target pixel
        top_left, top_right, bottom_left = 0, s, s * (s + 1)
        with np.errstate(all="ignore"):
            top = np.hypot(sx[:, top_right] - sx[:, top_left], sy[:, top_right] - sy[:, top_left]) / (
                cols[:, s] - cols[:, 0]
            )
            left = np.hypot(sx[:, bottom_left] - sx[:, top_left], sy[:, bottom_left] - sy[:, top_left]) / (
                rows[:, s] - rows[:, 0]
            )
            out[4] = np.sqrt(top * left)
        return out


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


def chunk_boxes(gbox: GeoBox, chunks: tuple[int, int], flat: np.ndarray) -> np.ndarray:
    """The bounding boxes, in target CRS coordinates, of chunks ``flat`` (row-major indices; vectorised)."""
    ny, nx = gbox.shape
    iy, ix = np.divmod(np.asarray(flat, dtype=np.int64), math.ceil(nx / chunks[1]))
    r0, c0 = iy * chunks[0], ix * chunks[1]
    r1, c1 = np.minimum(r0 + chunks[0], ny), np.minimum(c0 + chunks[1], nx)
    aff = gbox.affine
    xs = np.stack([aff.a * cc + aff.b * rr + aff.c for cc in (c0, c1) for rr in (r0, r1)])
    ys = np.stack([aff.d * cc + aff.e * rr + aff.f for cc in (c0, c1) for rr in (r0, r1)])
    return cast(np.ndarray, shapely.box(xs.min(0), ys.min(0), xs.max(0), ys.max(0)))


def chunks_touching(geom: Any, gbox: GeoBox, chunks: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The chunks whose box intersects ``geom`` (target CRS): sorted row-major indices, and their boxes.

    Only the chunks within one chunk of each part's bounding box are built and tested, so the work
    follows the chunks the geometry covers, not the size of the grid.
    """
    candidates = _candidate_chunks(geom, gbox, chunks)
    if not candidates.size:
        return candidates, np.empty(0, dtype=object)
    boxes = chunk_boxes(gbox, chunks, candidates)
    shapely.prepare(geom)
    keep = shapely.intersects(geom, boxes)
    return candidates[keep], boxes[keep]


def _candidate_chunks(geom: Any, gbox: GeoBox, chunks: tuple[int, int]) -> np.ndarray:
    """Row-major indices of the chunks within one chunk of the bounding box of any part of ``geom``."""
    ny, nx = gbox.shape
    gy, gx = math.ceil(ny / chunks[0]), math.ceil(nx / chunks[1])
    inv = ~gbox.affine
    found = []
    for minx, miny, maxx, maxy in shapely.bounds(shapely.get_parts(geom)):
        corners = [(x, y) for x in (minx, maxx) for y in (miny, maxy)]
        cols = [inv.a * x + inv.b * y + inv.c for x, y in corners]
        rows = [inv.d * x + inv.e * y + inv.f for x, y in corners]
        if not all(math.isfinite(v) for v in (*cols, *rows)):
            continue
        iy0, iy1 = math.floor(min(rows) / chunks[0]) - 1, math.floor(max(rows) / chunks[0]) + 1
        ix0, ix1 = math.floor(min(cols) / chunks[1]) - 1, math.floor(max(cols) / chunks[1]) + 1
        iy = np.arange(max(iy0, 0), min(iy1, gy - 1) + 1, dtype=np.int64)
        ix = np.arange(max(ix0, 0), min(ix1, gx - 1) + 1, dtype=np.int64)
        if iy.size and ix.size:
            found.append((iy[:, None] * gx + ix[None, :]).ravel())
    return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


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
    """Per chunk (ys, xs), with ``boxes`` its chunk boxes, the box of its pixels a scene's ``grid`` covers.

    Rows of (row_off, col_off, height, width) in the chunk's own pixels, widened by ``pad`` pixels for
    the resampling kernel and the outline's densification; the whole chunk where the grid is unknown.
    """
    ny, nx = gbox.shape
    y0, x0 = ys * chunks[0], xs * chunks[1]
    h, w = np.minimum(chunks[0], ny - y0), np.minimum(chunks[1], nx - x0)
    whole = np.stack([np.zeros_like(ys), np.zeros_like(xs), h, w], axis=1)
    if grid is None or not len(ys):
        return whole
    cut = shapely.intersection(grid, boxes)
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
