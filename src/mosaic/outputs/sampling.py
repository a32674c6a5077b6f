"""Point time series: the values of a collection at points, per time group (:func:`mosaic.sample`).

Planning (:func:`plan_sample`) does no pixel I/O. It turns points and a tile index into a
:class:`SamplePlan`: frozen, picklable records the executor (:func:`run_sample`) only executes.

How a sample is planned:

1. the points are checked and transformed once to lon/lat (pyproj, vectorised) and the index is
   queried with the lon/lat cells that hold them (:data:`CELL_DEGREES`), not point by point;
2. the points are matched to the footprints of the selected scenes (each footprint, widened by
   :data:`FOOTPRINT_TOLERANCE` and prepared, against the points in its bounds in one call): a scene
   is read only where a point falls in its footprint or within that tolerance of it (footprints
   are traced coarsely, or simplified in STAC Items; the pixel decides);
3. per source CRS, the points are transformed once into it (from the points' own CRS, so a UTM point
   is not rounded through lon/lat), and into each scene's pixel grid by its inverse affine;
4. a scene's points are grouped by the tile (block) of the file they fall in (the tile size the index
   recorded with ``tile_ranges=True``, else 256 px, which holds within one tile of any tiling in
   multiples of 256), tiles side by side in one tile row together (a COG stores them one after
   the other: one request, no byte nobody needs); each group is one
   :class:`~mosaic.planning.planner.Read` of the smallest window holding its pixels (and their
   bilinear neighbours), at full resolution;
5. scenes are grouped in time and ordered for fusion as :func:`mosaic.load` does
   (:func:`mosaic.planning.planner.time_groups`), so both label the same groups with the same times.

The executor runs one task per (band, time group), reading its windows in fusion order through the
reader of :mod:`mosaic.io.read` (the process's limiter, retries, credentials, per-thread handles, reads
from the recorded tile ranges), and fuses the points' values with :mod:`mosaic.fuse` as a chunk of
``(1, n_points)`` pixels: ``first``/``last`` skip a read whose points all have a value.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from mosaic.auth import Profile, hide_secrets
from mosaic.errors import InvalidInputError, MosaicWarning, NoDataError, ReadError, ReadFailedWarning
from mosaic.index.filters import check_sortby, parse_filter, parse_sortby
from mosaic.io.paths import check_allowed, redact
from mosaic.masks import MaskSpec, as_mask
from mosaic.planning._mask_plan import check_mask_rows, mask_assets, mask_reads
from mosaic.planning.bands import (
    BandSpec,
    band_specs,
    mixed_scale_assets,
    resampling_name,
    to_physical,
    with_source_nodata,
)
from mosaic.planning.grid import parse_crs
from mosaic.planning.planner import (
    Read,
    _check_auth,
    _check_dtypes,
    _check_method,
    _make_read,
    check_bands,
    check_concurrency,
    resolve_index,
    time_groups,
)
from mosaic.planning.records import SceneAsset, crs_to_string
from mosaic.times import parse_time
from mosaic.types import TimeLike

__all__ = [
    "SAMPLE_RESAMPLING",
    "PointRead",
    "SamplePlan",
    "SampleTask",
    "plan_sample",
    "run_sample",
    "sample",
]

SAMPLE_RESAMPLING = ("nearest", "bilinear")
"""The kernels a point sample offers: the pixel holding the point, or GDAL's bilinear over 2 x 2."""

DEFAULT_TILE = (256, 256)
"""Points are grouped by cells of this size when the index has no tile layout of the file: a cell
aligned on multiples of 256 px lies in one tile of any tiling whose tile sides are multiples of 256
(COGs: 256, 512, 1024)."""

FOOTPRINT_TOLERANCE = 1000.0
"""Metres around a scene's footprint within which a point is still looked up in the scene's pixels.

Index footprints are traced from a coarse read of the data (accurate to a pixel of that read) or come
simplified from STAC Items: a point by the edge of a scene's data must not lose it. The pixel decides:
off the grid, or nodata, the scene gives no value there."""


# ============================================================================================ records


@dataclass(frozen=True, slots=True)
class PointRead:
    """One window of one band of one scene, and the points it holds.

    ``rows`` and ``cols`` are the points' continuous pixel positions in the scene's full-resolution
    grid (pixel ``(i, j)`` spans ``[i, i + 1) x [j, j + 1)``), one per entry of ``points``, the points'
    positions in the request.
    """

    read: Read
    points: tuple[int, ...]
    rows: tuple[float, ...]
    cols: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SampleTask:
    """The reads of one band at one time group, in fusion order."""

    band: str
    time: int
    reads: tuple[PointRead, ...]


@dataclass(frozen=True, slots=True)
class SamplePlan:
    """A complete, inspectable point-sample plan. Execute it with :func:`run_sample`.

    ``x`` and ``y`` are the points in ``crs``; ``ids`` the id columns of a GeoDataFrame's rows.
    ``mask`` is the quality mask (:mod:`mosaic.masks`) whose band reads each data read carries
    (:attr:`mosaic.planning.planner.Read.masks`), or None.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    crs: str
    ids: tuple[tuple[str, tuple[Any, ...]], ...]
    times: tuple[np.datetime64, ...]
    groups: tuple[str, ...]
    bands: tuple[BandSpec, ...]
    tasks: tuple[SampleTask, ...]
    method: str | Callable[..., Any]
    resampling: str
    mask: MaskSpec | None = None
    index_source: str | None = None
    scenes: tuple[str, ...] = ()
    on_error: str = "raise"
    gdal_options: tuple[tuple[str, Any], ...] = ()
    max_concurrency: int | None = None
    auth: tuple[Profile, ...] = field(default=(), repr=False)

    def summary(self) -> dict[str, Any]:
        """Counts that tell what the sample will do: points, scenes, times, reads, pixels read."""
        reads = [pr for t in self.tasks for pr in t.reads]
        return {
            "points": len(self.x),
            "points_in_a_scene": len({p for pr in reads for p in pr.points}),
            "scenes": len(self.scenes),
            "times": len(self.times),
            "bands": [b.name for b in self.bands],
            "reads": len(reads),
            "mask": None if self.mask is None else repr(self.mask),
            "mask_reads": sum(len(pr.read.masks) for pr in reads),
            "pixels_read": int(sum(pr.read.pixels for pr in reads)),
            "source_crs": sorted({pr.read.crs for pr in reads}),
            "method": self.method if isinstance(self.method, str) else "callable",
            "resampling": self.resampling,
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"SamplePlan({s['points']} points ({s['points_in_a_scene']} in a scene), {s['scenes']} scenes, "
            f"{s['times']} times, bands {s['bands']}, {s['reads']} reads of {s['pixels_read']} pixels, "
            f"method={s['method']!r}, resampling={s['resampling']!r}"
            + ("" if self.mask is None else f", mask={s['mask']}, {s['mask_reads']} mask reads")
            + ")"
        )


# ============================================================================================ points


def as_points(
    points: Any, crs: Any = "EPSG:4326"
) -> tuple[np.ndarray, np.ndarray, CRS, dict[str, np.ndarray]]:
    """The points' x and y, their CRS, and their id columns (GeoDataFrame columns other than geometry).

    Accepts an (n, 2) array, a list of (x, y), shapely Points (a list, a MultiPoint or one Point), or a
    GeoDataFrame or GeoSeries of points (its own CRS wins over ``crs``).

    Raises:
        InvalidInputError: naming the point, when the input is empty, not (n, 2), not points, or holds
            a NaN or infinite coordinate.
    """
    ids: dict[str, np.ndarray] = {}
    own_crs = getattr(points, "crs", None)
    if hasattr(points, "geometry") and hasattr(points, "columns"):  # a GeoDataFrame
        geometry = np.asarray(points.geometry.values, dtype=object)
        for name in points.columns:
            if name != points.geometry.name:
                ids[str(name)] = np.asarray(points[name].to_numpy())
        xy = _shapely_xy(geometry)
    elif hasattr(points, "geometry") and hasattr(points, "values") and own_crs is not None:  # GeoSeries
        xy = _shapely_xy(np.asarray(points.values, dtype=object))
    elif isinstance(points, shapely.Geometry):
        xy = _shapely_xy(np.asarray(shapely.get_parts(points), dtype=object))
    elif (
        isinstance(points, Sequence | np.ndarray) and len(points) and isinstance(points[0], shapely.Geometry)
    ):
        xy = _shapely_xy(np.asarray(list(points), dtype=object))
    else:
        try:
            xy = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                "points must be an (n, 2) array of x, y, a list of (x, y), shapely Points or a "
                f"GeoDataFrame; got {type(points).__name__} ({exc})"
            ) from None
    if xy.size == 0:
        raise InvalidInputError("points is empty: give at least one (x, y)")
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InvalidInputError(
            f"points must be (n, 2): one (x, y) per point; got an array of shape {xy.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(xy).all(axis=1))
    if bad.size:
        raise InvalidInputError(
            f"point {int(bad[0])} is {tuple(xy[bad[0]].tolist())}: every coordinate must be a finite number "
            f"({bad.size} such point(s))"
        )
    crs_in = parse_crs(own_crs if own_crs is not None else crs, "crs")
    return xy[:, 0].copy(), xy[:, 1].copy(), crs_in, ids


def _shapely_xy(geoms: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates of shapely Points (empty and non-point geometries refused, by position)."""
    if geoms.size == 0:
        return np.empty((0, 2))
    if not all(isinstance(g, shapely.Geometry) for g in geoms):
        raise InvalidInputError("points holds something that is not a shapely geometry: give Points only")
    kinds = shapely.get_type_id(geoms)
    wrong = np.flatnonzero((kinds != 0) | shapely.is_empty(geoms))
    if wrong.size:
        g = geoms[wrong[0]]
        raise InvalidInputError(
            f"point {int(wrong[0])} is {g.geom_type}{' (empty)' if g.is_empty else ''}: give Points"
        )
    return np.column_stack([shapely.get_x(geoms), shapely.get_y(geoms)])


_LONLAT = CRS.from_epsg(4326)


def _transformer(src: CRS, dst: CRS) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def _to_lonlat(x: np.ndarray, y: np.ndarray, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    """The points in lon/lat (longitudes in [-180, 180))."""
    if crs.equals(_LONLAT, ignore_axis_order=True):
        lon, lat = x, y
    else:
        lon, lat = _transformer(crs, _LONLAT).transform(x, y, errcheck=False)
        lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(lon) & np.isfinite(lat)) | (np.abs(lat) > 90.0))
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(
            f"point {i} ({x[i]!r}, {y[i]!r}) is not a place on Earth in {crs.to_string()} "
            "(latitude beyond +-90, or outside the CRS's domain); check crs= and the x/y order"
        )
    return (lon + 180.0) % 360.0 - 180.0, lat


# ============================================================================================ planning


def plan_sample(
    points: Any,
    time: TimeLike = None,
    *,
    index: Any = None,
    bands: Sequence[str] | str | None = None,
    crs: Any = "EPSG:4326",
    method: str | Callable[..., Any] = "first",
    groupby: str | None = "solar_day",
    mask: Any = None,
    resampling: str | Any = "nearest",
    dtype: Any = None,
    nodata: Any = None,
    src_nodata: float | Mapping[str, float] | None = None,
    max_concurrency: int | None = None,
    on_error: str = "raise",
    on_empty: str = "raise",
    gdal_options: Mapping[str, Any] | None = None,
    auth: Profile | Sequence[Profile] | None = None,
    filter: Any = None,
    sortby: Any = None,
) -> SamplePlan:
    """Plan a point sample without reading pixels; arguments as :func:`sample`."""
    mask_spec = as_mask(mask)
    method, rank_band = _check_method(method)
    if rank_band is not None:
        raise InvalidInputError(
            f"method {method!r}: ranking methods are not available in mosaic.sample; use first, last, "
            "min, max, mean, median, count or a callable"
        )
    kernel = resampling_name(resampling)
    if kernel not in SAMPLE_RESAMPLING:
        raise InvalidInputError(f"resampling {resampling!r}: a point sample takes 'nearest' or 'bilinear'")
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_empty not in ("raise", "warn"):
        raise InvalidInputError(f"on_empty must be 'raise' or 'warn', got {on_empty!r}")
    if groupby is not None and not isinstance(groupby, str):
        raise InvalidInputError(
            f"groupby must be 'solar_day', 'time', an Item property name or None, got {groupby!r}"
        )
    if gdal_options is not None and not isinstance(gdal_options, Mapping):
        raise InvalidInputError(
            f"gdal_options must be a mapping of GDAL option names to values, got {gdal_options!r}"
        )
    max_concurrency = check_concurrency(max_concurrency)
    parse_time(time)
    bands = check_bands(bands)
    _check_dtypes(dtype)
    profiles = _check_auth(auth)
    x, y, crs_in, ids = as_points(points, crs)
    lon, lat = _to_lonlat(x, y, crs_in)

    near = _cells(lon, lat)  # the index is queried per cell of points, not per point
    flt = parse_filter(filter)
    order = parse_sortby(sortby)
    idx = resolve_index(index, bbox_ll=near, time=time, auth=profiles, filter=flt)
    considered = idx.query_geometry(near, time, filter=flt).records()
    records = [r for r in considered if r.href is not None and r.transform is not None]
    check_allowed(r.href for r in records)
    if not records:
        where = f" {idx.source}" if idx.source else ""
        message = (
            f"no scene in the index{where} holds any of the {len(x)} points at time {time!r}; compare the "
            "points (and crs=) with the index's extent and time range (`mosaic index info`)"
        )
        if on_empty == "raise":
            raise NoDataError(message)
        warnings.warn(message, MosaicWarning, stacklevel=2)
    records = with_source_nodata(records, src_nodata)
    mixed = mixed_scale_assets(records)
    specs = (
        band_specs(
            records,
            bands=bands,
            method=method,
            dtype=dtype,
            nodata=nodata,
            resampling=kernel,
            mixed_scales=mixed,
        )
        if records
        else ()
    )
    wanted = {spec.asset for spec in specs}
    # the mask bands are read for the scenes' reads, not as reads of their own (as make_plan does)
    mask_rows = {(r.id, r.asset): r for r in records if r.asset in mask_assets(mask_spec)}
    records = [r for r in records if r.asset in wanted]
    if mask_spec is not None:
        check_mask_rows(mask_spec, (r.id for r in records), mask_rows)

    # which points each scene's footprint holds: one vectorised query of the scenes' footprints
    held: dict[int, np.ndarray] = {}
    for i, rec in enumerate(records):
        inside = _near_footprint(rec.footprint, lon, lat)
        if inside.size:
            held[i] = inside
    records_held = [records[i] for i in sorted(held)]
    points_of = {(records[i].id, records[i].asset): held[i] for i in held}

    clusters = _clusters(records_held, points_of, x, y, crs_in, kernel)
    check_sortby(order, records_held)
    group_keys, times, grouped = time_groups(records_held, groupby, reverse=method == "last", order=order)

    tasks: list[SampleTask] = []
    for t, key in enumerate(group_keys):
        for spec in specs:
            reads: list[PointRead] = []
            for rec in grouped[key]:
                if rec.asset != spec.asset or spec.band > rec.band_count:
                    continue
                physical = to_physical(rec) if spec.physical else None
                for win, pts, rows, cols in clusters.get((rec.id, rec.asset), ()):
                    read = _make_read(rec, spec.band, -1, 1, win, None, physical)
                    if mask_spec is not None:  # the mask around the points, on the mask band's grid
                        masks = mask_reads(mask_spec, rec, -1, 1, win, mask_rows, _make_read)
                        read = dataclasses.replace(read, masks=masks)
                    reads.append(PointRead(read, pts, rows, cols))
            if reads:
                tasks.append(SampleTask(spec.name, t, tuple(reads)))

    return SamplePlan(
        x=tuple(x.tolist()),
        y=tuple(y.tolist()),
        crs=crs_to_string(crs_in),
        ids=tuple((name, tuple(values.tolist())) for name, values in ids.items()),
        times=times,
        groups=tuple(str(k) for k in group_keys),
        bands=specs,
        tasks=tuple(tasks),
        method=method,
        resampling=kernel,
        mask=mask_spec,
        index_source=idx.source,
        scenes=tuple(sorted({r.id for r in records_held})),
        on_error=on_error,
        gdal_options=hide_secrets(gdal_options or {}),
        max_concurrency=None if max_concurrency is None else int(max_concurrency),
        auth=profiles,
    )


CELL_DEGREES = 0.25
"""Points are looked up in the index per lon/lat cell of this size holding some (one query per cell)."""


def _reach(lat: np.ndarray | float) -> np.ndarray:
    """:data:`FOOTPRINT_TOLERANCE` in degrees at latitudes ``lat`` (of longitude: the wider)."""
    return np.asarray(FOOTPRINT_TOLERANCE / (111_320.0 * np.maximum(np.cos(np.radians(lat)), 0.01)))


def _cells(lon: np.ndarray, lat: np.ndarray) -> BaseGeometry:
    """The lon/lat cells holding points, each widened by :data:`FOOTPRINT_TOLERANCE`, as one geometry."""
    cells = np.unique(np.floor(np.column_stack([lon, lat]) / CELL_DEGREES), axis=0) * CELL_DEGREES
    west, south = cells[:, 0], cells[:, 1]
    north = south + CELL_DEGREES
    reach = _reach(np.maximum(np.abs(south), np.abs(north)))
    boxes = shapely.box(
        np.maximum(west - reach, -180.0),
        np.maximum(south - reach, -90.0),
        np.minimum(west + CELL_DEGREES + reach, 180.0),
        np.minimum(north + reach, 90.0),
    )
    return shapely.multipolygons(boxes)


def _near_footprint(footprint: BaseGeometry, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Positions of the points in ``footprint`` or within :data:`FOOTPRINT_TOLERANCE` of it.

    The footprint is widened once by the tolerance at its highest latitude (so by at least that
    everywhere in it) and prepared; the points in its bounds are tested against it in one call.
    """
    parts = shapely.get_parts(footprint)
    bounds = shapely.bounds(parts)
    reach = float(_reach(np.abs(bounds[:, [1, 3]]).max()))
    west, south, east, north = shapely.total_bounds(parts)
    near = np.flatnonzero(
        (lon >= west - reach) & (lon <= east + reach) & (lat >= south - reach) & (lat <= north + reach)
    )
    if near.size == 0:
        return near
    widened = shapely.buffer(footprint, reach, quad_segs=2)
    shapely.prepare(widened)
    inside: np.ndarray = near[shapely.intersects_xy(widened, lon[near], lat[near])]
    return inside


Cluster = tuple[tuple[int, int, int, int], tuple[int, ...], tuple[float, ...], tuple[float, ...]]
"""(window, points, rows, cols) of one tile's points in one scene."""


def _clusters(
    records: Sequence[SceneAsset],
    points_of: Mapping[tuple[str, str], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    crs_in: CRS,
    kernel: str,
) -> dict[tuple[str, str], list[Cluster]]:
    """Per scene asset, its points grouped by the file's tile they fall in, with each group's window."""
    out: dict[tuple[str, str], list[Cluster]] = {}
    by_crs: dict[str, list[SceneAsset]] = defaultdict(list)
    for rec in records:
        by_crs[rec.crs].append(rec)
    for scene_crs, recs in by_crs.items():
        # the points of this CRS's scenes, transformed once (from their own CRS)
        wanted = np.unique(np.concatenate([points_of[(r.id, r.asset)] for r in recs]))
        dst = CRS.from_user_input(scene_crs)
        if dst.equals(crs_in):
            sx, sy = x[wanted], y[wanted]
        else:
            tx, ty = _transformer(crs_in, dst).transform(x[wanted], y[wanted], errcheck=False)
            sx, sy = np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)
        where = np.full(len(x), -1, dtype=np.int64)
        where[wanted] = np.arange(wanted.size)
        for rec in recs:
            pts = points_of[(rec.id, rec.asset)]
            px, py = sx[where[pts]], sy[where[pts]]
            out[(rec.id, rec.asset)] = _scene_clusters(rec, pts, px, py, kernel)
    return out


def _scene_clusters(
    rec: SceneAsset, pts: np.ndarray, px: np.ndarray, py: np.ndarray, kernel: str
) -> list[Cluster]:
    """One scene's points (in its CRS) on its pixel grid, grouped by runs of tiles side by side.

    A run is tiles next to each other in one tile row; points off the grid are dropped.
    """
    inv = ~cast(Affine, rec.affine)
    cols = inv.a * px + inv.b * py + inv.c
    rows = inv.d * px + inv.e * py + inv.f
    height, width = cast("tuple[int, int]", rec.shape)
    ok = np.isfinite(cols) & np.isfinite(rows)
    r0 = np.floor(np.where(ok, rows, -1.0))
    c0 = np.floor(np.where(ok, cols, -1.0))
    ok &= (r0 >= 0) & (r0 < height) & (c0 >= 0) & (c0 < width)
    if not ok.any():
        return []
    pts, rows, cols, r0, c0 = pts[ok], rows[ok], cols[ok], r0[ok].astype(np.int64), c0[ok].astype(np.int64)
    lo_r, lo_c, hi_r, hi_c = _pixel_boxes(rows, cols, kernel, (0, 0, height, width))
    th, tw = _tile_shape(rec)
    tile_row, tile_col = r0 // th, c0 // tw
    key = tile_row * (width // tw + 1) + tile_col
    order = np.lexsort((pts, key))
    key, pts, rows, cols = key[order], pts[order], rows[order], cols[order]
    tile_row, tile_col = tile_row[order], tile_col[order]
    lo_r, lo_c, hi_r, hi_c = lo_r[order], lo_c[order], hi_r[order], hi_c[order]
    # a group is a run of tiles side by side in one tile row: a COG (as any GeoTIFF GDAL tiles)
    # stores them one after the other, so their read is one request with no byte no point needs;
    # where a file stores them apart, the reader fetches across gaps up to MOSAIC_RANGE_GAP, else apart
    apart = (np.diff(tile_row) != 0) | (np.diff(tile_col) > 1)
    starts = np.flatnonzero(np.r_[True, apart])
    top, left = np.minimum.reduceat(lo_r, starts), np.minimum.reduceat(lo_c, starts)
    heights = np.maximum.reduceat(hi_r, starts) - top + 1
    widths = np.maximum.reduceat(hi_c, starts) - left + 1
    windows = np.column_stack([top, left, heights, widths]).tolist()
    ends = [*starts[1:].tolist(), key.size]
    pts_l, rows_l, cols_l = pts.tolist(), rows.tolist(), cols.tolist()
    return [
        (tuple(win), tuple(pts_l[s:e]), tuple(rows_l[s:e]), tuple(cols_l[s:e]))
        for win, s, e in zip(windows, starts.tolist(), ends, strict=True)
    ]


def _pixel_boxes(
    rows: np.ndarray, cols: np.ndarray, kernel: str, inside: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first and last row and column of the pixels each point needs, within ``inside``.

    A point needs its own pixel, or for bilinear the 2 x 2 whose centres surround it; ``inside`` is a
    window (row_off, col_off, height, width) the rows and columns are kept in.
    """
    top, left, height, width = inside
    if kernel == "bilinear":
        lo_r, lo_c = np.floor(rows - 0.5).astype(np.int64), np.floor(cols - 0.5).astype(np.int64)
        hi_r, hi_c = lo_r + 1, lo_c + 1
    else:
        lo_r = hi_r = np.floor(rows).astype(np.int64)
        lo_c = hi_c = np.floor(cols).astype(np.int64)
    last_r, last_c = top + height - 1, left + width - 1
    return (
        np.clip(lo_r, top, last_r),
        np.clip(lo_c, left, last_c),
        np.clip(hi_r, top, last_r),
        np.clip(hi_c, left, last_c),
    )


def _narrowed(pr: PointRead, keep: np.ndarray, kernel: str) -> PointRead:
    """``pr`` for the points ``keep`` selects only, its window cut to the pixels they need.

    So a read of a run of tiles whose other points have their value fetches only these points' tiles.
    """
    rows, cols = np.asarray(pr.rows)[keep], np.asarray(pr.cols)[keep]
    lo_r, lo_c, hi_r, hi_c = _pixel_boxes(rows, cols, kernel, pr.read.window)
    top, left = int(lo_r.min()), int(lo_c.min())
    window = (top, left, int(hi_r.max()) - top + 1, int(hi_c.max()) - left + 1)
    return PointRead(
        dataclasses.replace(pr.read, window=window),
        tuple(np.asarray(pr.points)[keep].tolist()),
        tuple(rows.tolist()),
        tuple(cols.tolist()),
    )


def _tile_shape(rec: SceneAsset) -> tuple[int, int]:
    """The file's tile (block) shape where the index recorded its layout, else :data:`DEFAULT_TILE`."""
    if rec.tiles is not None:
        from mosaic.io.cog import decode_layout

        layout = decode_layout(rec.tiles)
        if layout is not None:
            return layout.tile
    return DEFAULT_TILE


# ============================================================================================ execution


def _values(data: np.ndarray, pr: PointRead, kernel: str) -> np.ndarray:
    """The points' values from their window's pixels (float, NaN for no data).

    ``bilinear`` is GDAL's warp kernel at one point: the point's own pixel must hold data, then the
    2 x 2 pixels whose centres surround it are weighted by distance, those without data (or outside
    the image) left out and the rest renormalised.
    """
    row_off, col_off, height, width = pr.read.window
    rows, cols = np.asarray(pr.rows), np.asarray(pr.cols)
    r0 = np.floor(rows).astype(np.int64) - row_off
    c0 = np.floor(cols).astype(np.int64) - col_off
    own: np.ndarray = data[r0, c0].astype(np.float64)
    if kernel == "nearest":
        return own
    u, v = cols - 0.5 - col_off, rows - 0.5 - row_off
    cl, rl = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - cl, v - rl
    total = np.zeros(rows.size)
    weight = np.zeros(rows.size)
    for dr, dc, w in (
        (0, 0, (1 - fu) * (1 - fv)),
        (0, 1, fu * (1 - fv)),
        (1, 0, (1 - fu) * fv),
        (1, 1, fu * fv),
    ):
        rr, cc = rl + dr, cl + dc
        inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        value = np.full(rows.size, np.nan)
        value[inside] = data[rr[inside], cc[inside]]
        good = ~np.isnan(value) & (w > 0)
        total[good] += w[good] * value[good]
        weight[good] += w[good]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(weight > 1e-5, total / np.where(weight > 0, weight, 1.0), np.nan)
    out[np.isnan(own)] = np.nan
    return out


def _run_task(task: SampleTask, plan: SamplePlan, n: int) -> tuple[np.ndarray, list[ReadError]]:
    """Read and fuse one task: the points' fused values (float, NaN for no data) and the failed reads."""
    from mosaic.fuse import First, make_fuser
    from mosaic.graph import _physical
    from mosaic.io._mask_read import scene_mask
    from mosaic.io.gdalenv import gdal_env
    from mosaic.io.limits import get_limiter
    from mosaic.io.read import read_window

    limiter = get_limiter(plan.max_concurrency)
    fuser = make_fuser(plan.method, (1, n))
    failed: list[ReadError] = []
    with gdal_env(plan.gdal_options):
        for pr in task.reads:
            if isinstance(fuser, First):  # first/last: a point with its value keeps it, whatever comes
                lacking = np.isnan(fuser.result()[0, list(pr.points)])
                if not lacking.any():
                    continue
                if not lacking.all():
                    pr = _narrowed(pr, lacking, plan.resampling)
            try:
                fetched = read_window(pr.read, limiter, auth=plan.auth)
                if fetched is None:
                    continue
                data = fetched[0]
                if plan.mask is not None and pr.read.masks:
                    # the mask evaluated (and dilated) on the mask band's own grid, taken to the
                    # window's pixels (nearest): its dropped pixels are no data before the points'
                    # values are taken; a failed mask read fails the read (on_error decides)
                    drop = scene_mask(plan.mask, pr.read, data.shape, fetched[1], limiter, plan.auth)
                    data = np.where(drop, np.nan, data.astype(np.float64, copy=False))
            except ReadError as exc:
                if plan.on_error == "raise":
                    raise
                failed.append(exc)
                continue
            values = _physical(_values(data, pr, plan.resampling), pr.read.to_physical)
            layer = np.full((1, n), np.nan)
            layer[0, list(pr.points)] = values
            fuser.feed(layer)
    return np.asarray(fuser.result()[0], dtype=np.float64), failed


def run_sample(plan: SamplePlan) -> Any:
    """Execute ``plan``: the ``xarray.Dataset`` of :func:`sample`."""
    import xarray as xr

    from mosaic.api import _nodata_value
    from mosaic.graph import _cast
    from mosaic.io.limits import get_limiter

    n = len(plan.x)
    fused = {b.name: np.full((len(plan.times), n), np.nan) for b in plan.bands}
    failed: list[ReadError] = []
    if plan.tasks:
        workers = min(len(plan.tasks), get_limiter(plan.max_concurrency).max_concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mosaic-sample") as pool:
            results = pool.map(lambda task: _run_task(task, plan, n), plan.tasks)
            for task, (values, errors) in zip(plan.tasks, results, strict=True):
                fused[task.band][task.time] = values
                failed += errors
    if failed:
        listing = "; ".join(f"{e.scene_id} ({redact(e.href)}): {e.reason}" for e in failed)
        warnings.warn(
            f"{len(failed)} read(s) failed and were skipped (on_error='skip'): {listing}",
            ReadFailedWarning,
            stacklevel=3,
        )
    coords: dict[str, Any] = {
        "time": ("time", np.array(plan.times, dtype="datetime64[ns]")),
        "point": ("point", np.arange(n)),
        "x": ("point", np.asarray(plan.x)),
        "y": ("point", np.asarray(plan.y)),
    }
    for name, column in plan.ids:
        if name in coords or any(b.name == name for b in plan.bands):
            name = f"{name}_id"
        coords[name] = ("point", np.asarray(column))
    data_vars = {}
    for band in plan.bands:
        attrs: dict[str, Any] = {"asset": band.asset, "asset_band": band.band}
        if band.nodata is not None:
            attrs["nodata"] = attrs["_FillValue"] = _nodata_value(band)
        if band.scale not in (None, 1.0):
            attrs["scale_factor"] = band.scale
        if band.offset not in (None, 0.0):
            attrs["add_offset"] = band.offset
        data_vars[band.name] = xr.DataArray(
            _cast(fused[band.name], band), dims=("time", "point"), attrs=attrs
        )
    attrs = {
        "crs": plan.crs,
        "index": redact(plan.index_source) if plan.index_source else "in-memory TileIndex",
        "method": plan.method if isinstance(plan.method, str) else "callable",
        "resampling": plan.resampling,
        "groups": list(plan.groups),
        "scenes": len(plan.scenes),
        "reads": sum(len(t.reads) for t in plan.tasks),
        "mask": None if plan.mask is None else repr(plan.mask),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def sample(
    points: Any,
    time: TimeLike = None,
    *,
    index: Any = None,
    bands: Sequence[str] | str | None = None,
    crs: Any = "EPSG:4326",
    method: str | Callable[..., Any] = "first",
    groupby: str | None = "solar_day",
    mask: Any = None,
    resampling: str | Any = "nearest",
    dtype: Any = None,
    nodata: Any = None,
    src_nodata: float | Mapping[str, float] | None = None,
    max_concurrency: int | None = None,
    on_error: str = "raise",
    on_empty: str = "raise",
    gdal_options: Mapping[str, Any] | None = None,
    auth: Profile | Sequence[Profile] | None = None,
    filter: Any = None,
    sortby: Any = None,
) -> Any:
    """The time series of a collection at points: one value per (time group, point) and band.

    Each point takes the value of the scene pixel holding it (or GDAL's bilinear of the 2 x 2 around
    it), in each scene whose footprint holds it, whatever the scene's CRS; the scenes of a time group
    are fused by ``method`` as :func:`mosaic.load` fuses them, and grouped in time as ``load`` groups
    them (same time labels). Only the tiles holding points are read: one read per scene and run of
    adjacent tiles (tiles side by side in a tile row, which a COG stores together).

    Args:
        points: an (n, 2) array of x, y; a list of (x, y); shapely Points (a list or a MultiPoint); or
            a GeoDataFrame of points, whose CRS wins over ``crs`` and whose other columns become
            coordinates of the ``point`` dimension (ids, names).
        time: a date or partial date (``"2024"``), ``"start/end"``, or a ``(start, end)`` pair.
        index: a TileIndex, the path of a saved index, or STAC Items (default: ``$MOSAIC_INDEX``).
        bands: variables to sample (as :func:`mosaic.load`): asset names, ``asset.N``, common names.
        crs: CRS of the points (default lon/lat).
        method: how the scenes of one time group are fused at a point: ``first``, ``last``, ``min``,
            ``max``, ``mean``, ``median``, ``count``, or a callable from a (scenes, 1, points) stack.
        groupby: ``"solar_day"``, ``"time"``, an Item property name, or None (one step for the period).
        mask: a quality mask (:mod:`mosaic.masks`: a spec, a preset name such as ``"sentinel2-scl"``,
            or an expression) evaluated per scene on its own mask band's grid around the points
            (dilation included); a masked point gives no data in that scene, so ``first`` takes the
            next scene holding it clear.
        resampling: ``"nearest"`` (the pixel holding the point) or ``"bilinear"``.
        dtype: output dtype (one, or a mapping per band with ``"*"``); default as :func:`mosaic.load`.
        nodata: output nodata (one, or a mapping per band); default as :func:`mosaic.load`.
        src_nodata: the source files' nodata where they do not declare it (as :func:`mosaic.load`).
        max_concurrency: bound on simultaneous reads per process (default: 4 per core).
        on_error: ``"raise"`` on a failed read, or ``"skip"`` it with a warning.
        on_empty: ``"raise"`` (default) or ``"warn"`` when no scene holds any point.
        gdal_options: GDAL configuration options entered around every read.
        auth: credential profiles (:mod:`mosaic.auth`) matched by href prefix.
        filter: only the scenes for which this CQL2 filter is true, as :func:`mosaic.load`.
        sortby: the order ``first``/``last`` take the scenes of a time group in, as :func:`mosaic.load`.

    Raises:
        InvalidInputError: a malformed argument: points empty, not (n, 2), NaN, off the Earth; ...
        NoDataError: no scene holds any point (with ``on_empty="raise"``).

    Returns:
        A Dataset with dims ``(time, point)``: one variable per band (dtype and nodata as ``load`` gives
        them; nodata where no scene holds a point), coordinates ``time``, ``point`` (the points' order),
        ``x``, ``y`` (in ``crs``) and any id columns. ``.to_dataframe()`` is the long table.
    """
    return run_sample(
        plan_sample(
            points,
            time,
            index=index,
            bands=bands,
            crs=crs,
            method=method,
            groupby=groupby,
            mask=mask,
            resampling=resampling,
            dtype=dtype,
            nodata=nodata,
            src_nodata=src_nodata,
            max_concurrency=max_concurrency,
            on_error=on_error,
            on_empty=on_empty,
            gdal_options=gdal_options,
            auth=auth,
            filter=filter,
            sortby=sortby,
        )
    )
