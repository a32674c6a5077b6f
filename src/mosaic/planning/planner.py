"""The query planner: which scene windows feed which output chunk, at which overview level.

Planning does no pixel I/O. It turns a request (area, CRS, grid, time, bands, method) and a tile index
into a :class:`Plan`: plain, frozen, picklable records that the graph and the reader only execute.

How a plan is made:

1. the target grid (an odc-geo ``GeoBox``, pixel edges aligned to multiples of the resolution, like
   ``gdalwarp -tap``) is cut into chunks;
2. the index is queried with the grid's footprint in lon/lat and the time range;
3. each candidate scene's footprint is reprojected into the target CRS and tested against the chunk
   boxes (exact footprint, not bounding box): chunks no footprint touches get no task;
4. for every (scene, chunk) pair, a lattice of points along the chunk is transformed into the scene's
   CRS (one vectorised transform per CRS, not per pair) to find the source window and the local scale,
   which picks the coarsest overview that still resolves the target pixels;
5. scenes are grouped in time (solar day, exact time, an Item property, or one group) and ordered for
   fusion (``sortby``'s fields, then datetime, then id).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd
import shapely
import shapely.affinity
from odc.geo.geobox import GeoBox
from pyproj import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from mosaic.auth import Profile, as_profiles, hide_secrets, with_signer
from mosaic.errors import IndexFormatError, InvalidInputError, MissingIndexError, MosaicWarning, NoDataError
from mosaic.index.filters import (
    Filter,
    check_sortby,
    ordered,
    parse_filter,
    parse_sortby,
    sort_values,
    sortby_text,
)
from mosaic.index.geom import (
    areal,
    as_geometry,
    bbox_to_lonlat,
    centre_lon,
    geometry_bounds,
    lonlat_to_crs,
    to_lonlat,
)
from mosaic.index.tile_index import TileIndex
from mosaic.io._neighbours import with_neighbours
from mosaic.io.paths import check_allowed, redact
from mosaic.masks import MaskSpec, as_mask
from mosaic.planning._mask_plan import check_mask_rows, mask_assets, mask_reads
from mosaic.planning.bands import (
    RESAMPLING,
    BandSpec,
    band_specs,
    common_name_asset,
    mixed_scale_assets,
    resampling_name,
    to_physical,
    with_source_nodata,
)
from mosaic.planning.grid import (
    DEFAULT_CHUNK,
    DEFAULT_MAX_PIXELS,
    anchor_phase,
    check_bbox,
    check_grid,
    check_max_pixels,
    chunk_shape,
    make_geobox,
    metres_per_unit,
    parse_crs,
    warn_area_of_use,
)
from mosaic.planning.records import SceneAsset
from mosaic.planning.windows import (
    WindowFinder,
    chunk_boxes,
    chunk_targets,
    chunks_touching,
    footprint_in_target,
    grid_in_target,
    scene_windows,
)
from mosaic.times import parse_time
from mosaic.types import BBox, TimeLike

if TYPE_CHECKING:
    from odc.geo.crs import CRS as GeoCRS

__all__ = [
    "METHODS",
    "RESAMPLING",
    "BandSpec",
    "ChunkTask",
    "Plan",
    "Read",
    "anchor_of",
    "check_bands",
    "check_concurrency",
    "make_plan",
    "request_grid",
    "resolve_index",
    "time_groups",
]

METHODS = ("first", "last", "min", "max", "mean", "median", "count")
PixelBox = tuple[int, int, int, int]
"""(row_off, col_off, height, width) in some pixel grid."""

_KERNEL_MARGIN = {"nearest": 1, "bilinear": 2, "cubic": 3, "cubic_spline": 3, "lanczos": 4}


@dataclass(frozen=True, slots=True)
class Read:
    """One window of one band of one scene, to be warped into one chunk.

    ``window`` is (row_off, col_off, height, width) in the pixel grid of overview ``overview``, whose
    decimation factor is ``factor``. ``overview`` -1 with ``factor`` 1 is full resolution; -1 with a
    larger factor is a decimated read of the full-resolution grid in which GDAL picks the overview (used
    when the index does not know the file's overviews).
    """

    scene: str
    asset: str
    href: str
    band: int
    crs: str
    overview: int
    factor: int
    window: tuple[int, int, int, int]
    nodata: float | None
    datetime: str | None
    target: PixelBox | None = None
    """The box of the chunk (row_off, col_off, height, width) the scene's grid covers: its pixels land
    nowhere else, so a warp computes just this box. None: anywhere in the chunk."""
    to_physical: tuple[float, float] | None = None
    """(scale, offset) turning this scene's stored values into physical ones, when the scenes of the
    band disagree on them (the band is then mosaicked in physical units); None: stored values as is."""
    identity: str | None = None
    """What the file was when indexed (``SceneAsset.identity``): the reader warns,
    once per file and process, when its size or modification time now differ. None: unknown."""
    tiles: bytes | None = field(default=None, repr=False)
    """The file's tile layout (:attr:`~mosaic.planning.records.SceneAsset.tiles`): the reader then fetches the
    window's tiles straight from their byte ranges, with no header request. None: GDAL opens the file."""
    masks: tuple[Read, ...] = ()
    """With a quality mask (``mask=``): the reads of the scene's mask bands, one per band of the spec
    (:attr:`mosaic.masks.MaskSpec.bands`), covering this read's window; the reader sets the pixels the
    mask drops to no data before the layer is warped and fused. Empty: no mask."""
    neighbours: tuple[tuple[int, int, int, int], ...] = field(default=(), repr=False)
    """With ``tiles``: the windows of other reads of the load from the same file, band and level whose
    rows meet this one's (:mod:`mosaic.io._neighbours`): a request may carry their tiles between its own."""

    @property
    def pixels(self) -> int:
        """Number of source pixels the read fetches."""
        return self.window[2] * self.window[3]

    def __repr__(self) -> str:  # the href redacted: dask and distributed print task arguments
        from mosaic._repr import record_repr

        return record_repr(self)


@dataclass(frozen=True, slots=True)
class ChunkTask:
    """Everything one output chunk of one band at one time needs: its reads, in fusion order.

    ``aux`` holds, for ``highest:<band>``/``lowest:<band>``, the reads of the ranking band, one per
    entry of ``reads`` (same scene).
    """

    band: str
    time: int
    iy: int
    ix: int
    reads: tuple[Read, ...]
    aux: tuple[Read, ...] = ()
    clipped: bool = False
    """The chunk reaches beyond the plan's clip polygon: its pixels outside it become nodata."""


def _read_token(read: Read) -> tuple[Any, ...]:
    """A read's fields as plain values, its href redacted as in its repr (dask hashes ``str()`` of this)."""
    return (
        redact(read.href),
        *(getattr(read, name) for name in _READ_FIELDS if name != "masks"),
        tuple(map(_read_token, read.masks)),
    )


def _task_token(task: ChunkTask) -> tuple[Any, ...]:
    """A chunk task as plain values: hashing these is ~10x faster than dask's ``str()`` of the records."""
    return tuple(
        tuple(map(_read_token, value)) if name in ("reads", "aux") else value
        for name, value in ((name, getattr(task, name)) for name in _TASK_FIELDS)
    )


_READ_FIELDS = tuple(f.name for f in dataclasses.fields(Read) if f.name != "href")
_TASK_FIELDS = tuple(f.name for f in dataclasses.fields(ChunkTask))


@dataclass(frozen=True, slots=True)
class Plan:
    """A complete, inspectable load plan. Execute it with :func:`mosaic.load` (or ``mosaic.graph``)."""

    geobox: GeoBox
    chunks: tuple[int, int]
    times: tuple[np.datetime64, ...]
    groups: tuple[str, ...]
    bands: tuple[BandSpec, ...]
    tasks: tuple[ChunkTask, ...]
    method: str | Callable[..., Any]
    resampling: str
    index_source: str | None = None
    scenes: tuple[str, ...] = ()
    on_error: str = "raise"
    gdal_options: tuple[tuple[str, Any], ...] = ()
    max_concurrency: int | None = None
    auth: tuple[Profile, ...] = ()
    considered: tuple[SceneAsset, ...] = field(default=(), repr=False, compare=False)
    clip: bytes | None = None
    """With ``clip=True``: the polygon (WKB, in the grid's CRS) outside which pixels are nodata."""
    mask: MaskSpec | None = None
    """The quality mask applied to every scene read before fusion (:mod:`mosaic.masks`); None: none."""
    mask_fraction: bool = False
    """Add the ``mask_fraction`` variable: per pixel, the share of the scenes with data there that the
    mask drops."""
    sortby: tuple[tuple[str, bool], ...] = ()
    """The ``sortby`` fields (name, descending) ordering the scenes of a time group before datetime and
    id: the order ``first`` and ``last`` take them in."""
    filter: str | None = None
    """The ``filter=`` the scenes were selected by (CQL2 text), if any."""

    # ------------------------------------------------------------------------------------ geometry

    @property
    def chunk_grid(self) -> tuple[int, int]:
        """Number of chunks along (y, x)."""
        ny, nx = self.geobox.shape
        return (math.ceil(ny / self.chunks[0]), math.ceil(nx / self.chunks[1]))

    def chunk_slices(self, iy: int, ix: int) -> tuple[slice, slice]:
        """Pixel slices (rows, cols) of chunk (iy, ix) in the output grid."""
        ny, nx = self.geobox.shape
        cy, cx = self.chunks
        return slice(iy * cy, min((iy + 1) * cy, ny)), slice(ix * cx, min((ix + 1) * cx, nx))

    def chunk_geobox(self, iy: int, ix: int) -> GeoBox:
        """The grid of chunk (iy, ix)."""
        return self.geobox[self.chunk_slices(iy, ix)]

    def band(self, name: str) -> BandSpec:
        """The spec of output variable ``name``."""
        for spec in self.bands:
            if spec.name == name:
                return spec
        raise InvalidInputError(f"plan has no band {name!r}; it has {[b.name for b in self.bands]}")

    def __dask_tokenize__(self) -> Hashable:
        return (
            "mosaic.Plan",
            cast("GeoCRS", self.geobox.crs).to_wkt(),
            tuple(self.geobox.affine)[:6],
            tuple(self.geobox.shape),
            self.chunks,
            self.times,
            self.bands,
            tuple(_task_token(t) for t in self.tasks),
            self.method
            if isinstance(self.method, str)
            else getattr(self.method, "__qualname__", repr(self.method)),
            self.resampling,
            self.clip,
            repr(self.mask),
            self.mask_fraction,
        )

    # ------------------------------------------------------------------------------- inspection

    def __repr__(self) -> str:
        """A few lines (scenes, CRSs, times, grid, chunks, bands, reads, bytes), whatever the plan's size.

        (Defined here, so the dataclass does not generate a repr listing every task.)
        """
        from mosaic._repr import plan_repr

        return plan_repr(self)

    def _repr_html_(self) -> str:
        """The plan as an HTML table (what Jupyter shows)."""
        from mosaic._repr import plan_html

        return plan_html(self)

    def summary(self) -> dict[str, Any]:
        """Counts that tell what the load will do: scenes, reads, chunks, overviews, bytes."""
        ny, nx = self.chunk_grid
        total = ny * nx * len(self.times) * len(self.bands)
        reads = [r for t in self.tasks for r in (*t.reads, *t.aux)]
        levels: dict[int, int] = defaultdict(int)
        for r in reads:
            levels[r.factor] += 1
        itemsize = {b.name: np.dtype(b.work_dtype).itemsize for b in self.bands}
        est = sum(r.pixels * itemsize[t.band] for t in self.tasks for r in (*t.reads, *t.aux))
        mask_reads = [m for t in self.tasks for r in t.reads for m in r.masks]
        est += sum(m.pixels * 4 for m in mask_reads)  # read as float32
        out_bytes = sum(
            self.geobox.shape[0] * self.geobox.shape[1] * len(self.times) * np.dtype(b.dtype).itemsize
            for b in self.bands
        )
        return {
            "scenes": len(self.scenes),
            "assets_read": len({(r.scene, r.asset) for r in reads}),
            "reads": len(reads),
            "chunks": total,
            "nonempty_chunks": len(self.tasks),
            "empty_chunks": total - len(self.tasks),
            "times": len(self.times),
            "bands": [b.name for b in self.bands],
            "shape": [len(self.times), int(self.geobox.shape[0]), int(self.geobox.shape[1])],
            "crs": str(self.geobox.crs),
            "resolution": [float(self.geobox.resolution.x), float(self.geobox.resolution.y)],
            "source_crs": sorted({r.crs for r in reads}),
            "overview_factors": {str(k): v for k, v in sorted(levels.items())},
            "estimated_read_bytes": int(est),
            "output_bytes": int(out_bytes),
            "method": self.method if isinstance(self.method, str) else "callable",
            "resampling": self.resampling,
            "mask": None if self.mask is None else repr(self.mask),
            "mask_reads": len(mask_reads),
        }

    def explain(self, iy: int, ix: int, *, time: int | None = None, band: str | None = None) -> str:
        """Which scenes feed chunk (iy, ix) and why, and which nearby scenes do not and why."""
        ny, nx = self.chunk_grid
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (iy, ix)):
            raise InvalidInputError(f"explain takes a chunk's row and column numbers, got ({iy!r}, {ix!r})")
        if not (0 <= iy < ny and 0 <= ix < nx):
            raise InvalidInputError(f"chunk ({iy}, {ix}) is outside the chunk grid {ny} x {nx}")
        from mosaic._repr import read_text, window_text

        gbox = self.chunk_geobox(iy, ix)
        chunk_ll = to_lonlat(box(*gbox.boundingbox), cast("GeoCRS", gbox.crs).to_wkt())
        rows, cols = self.chunk_slices(iy, ix)
        lines = [
            f"chunk ({iy}, {ix}): {window_text((rows.start, rows.stop), (cols.start, cols.stop))} of the "
            f"output grid, lon/lat bounds {tuple(round(v, 5) for v in chunk_ll.bounds)}"
        ]
        fed: set[tuple[str, str]] = set()
        for task in self.tasks:
            if (
                (task.iy, task.ix) != (iy, ix)
                or (time is not None and task.time != time)
                or (band is not None and task.band != band)
            ):
                continue
            lines.append(
                f"  {task.band} @ {self.groups[task.time]}: {len(task.reads)} read(s), in fusion order "
                f"({'reversed: ' if self.method == 'last' else ''}{sortby_text(self.sortby)}):"
            )
            fed.update((r.scene, r.asset) for r in task.aux)  # the ranking band of highest:/lowest:
            for r in task.reads:
                fed.add((r.scene, r.asset))
                lines.append(f"    - {read_text(r)}{self._sort_values(r)}: footprint intersects the chunk")
        outside = self.clip is not None and not shapely.from_wkb(self.clip).intersects(box(*gbox.boundingbox))
        if outside:
            lines.append("  no reads: the chunk lies outside the clip polygon (it is a constant fill)")
        elif len(lines) == 1:
            lines.append("  no reads: no scene footprint intersects this chunk (it is a constant fill)")
        elif any(t.clipped for t in self.tasks if (t.iy, t.ix) == (iy, ix)):
            lines.append("  the clip polygon crosses the chunk: its pixels outside the polygon are nodata")
        # scenes of the assets asked for (not other assets of the same scenes) that come near the chunk
        wanted = {b.asset for b in self.bands if band is None or b.name == band}
        wanted |= {r.asset for t in self.tasks for r in t.aux if band is None or t.band == band}
        # (a scene read for this chunk in another time group than the one asked about is read, too)
        fed |= {
            (r.scene, r.asset) for t in self.tasks if (t.iy, t.ix) == (iy, ix) for r in (*t.reads, *t.aux)
        }
        for rec in self.considered:
            if (
                rec.asset not in wanted
                or (rec.id, rec.asset) in fed
                or not rec.footprint.envelope.intersects(chunk_ll.envelope)
            ):
                continue
            why = (
                "the chunk lies outside the clip polygon"
                if outside
                else "its bounding box touches the chunk but its data footprint does not"
                if not rec.footprint.intersects(chunk_ll)
                else "its pixel grid does not reach into the chunk, or its window there is empty after "
                "clipping to the grid"
            )
            lines.append(f"  not read: {rec.id} [{rec.asset}]: {why}")
        return "\n".join(lines)

    def _sort_values(self, read: Read) -> str:
        """`` [eo:cloud_cover=3.2]``: the read's scene's values of the ``sortby`` fields (empty without)."""
        if not self.sortby:
            return ""
        rec = next((r for r in self.considered if (r.id, r.asset) == (read.scene, read.asset)), None)
        if rec is None:
            return ""
        values = sort_values(rec, self.sortby)
        return " [" + ", ".join(f"{n}={v}" for (n, _), v in zip(self.sortby, values, strict=True)) + "]"

    def plot(self, path: str | os.PathLike[str] | None = None, *, ax: Any = None) -> Any:
        """Draw scene footprints (coloured by CRS) over the chunk grid; save a PNG when ``path`` is given."""
        from mosaic.plot import plot_plan

        return plot_plan(self, path, ax=ax)


# ============================================================================================ planning


def resolve_index(
    index: Any,
    *,
    bbox_ll: Any = None,
    time: TimeLike = None,
    other_files: Literal["stac", "gti"] = "stac",
    auth: Sequence[Any] = (),
    filter: Filter | None = None,
) -> TileIndex:
    """A TileIndex from an index, the path of a saved index or a GTI, STAC Items, or ``$MOSAIC_INDEX``.

    A path is read by its suffix: ``.parquet`` (a saved index, or stac-geoparquet), a GDAL tile index
    (``.gti``, ``.gpkg``, ``.shp``, ``.fgb``), and any other file as STAC Items (JSON or NDJSON); with
    ``other_files="gti"``, any file but ``.json`` and ``.ndjson`` as a GDAL tile index. A folder, a glob
    or a URL is a (partitioned) saved index, read with ``auth``'s credentials
    (:meth:`TileIndex.read`), of which only the partitions and row groups ``bbox_ll``, ``time`` and
    ``filter`` need.

    Raises:
        MissingIndexError: no index given, and ``$MOSAIC_INDEX`` is not set.
        IndexFormatError: naming the file (and ``$MOSAIC_INDEX`` when it came from there): it does not
            exist, is a folder, is empty, truncated or of another format, or holds no tile index nor
            STAC Items.
        InvalidInputError: ``index`` is none of the kinds above.
    """
    label = None
    if index is None:
        env = os.environ.get("MOSAIC_INDEX")
        if not env:
            raise MissingIndexError(
                "no tile index given: pass index= (a TileIndex, the path of a saved index, or STAC Items), "
                "or set the MOSAIC_INDEX environment variable to the path of a saved index"
            )
        index, label = env, f"{env} ($MOSAIC_INDEX)"
    if isinstance(index, TileIndex):
        return index
    if isinstance(index, (str, os.PathLike)):
        from mosaic.index._store import is_index_collection

        text = os.fspath(index)
        try:
            if "://" in text or is_index_collection(text):  # a folder, a glob, a URL
                return TileIndex.read(text, bbox=_pushdown_box(bbox_ll), time=time, auth=auth, filter=filter)
            path = Path(text)
            return _index_file(path, label or str(path), bbox_ll, time, other_files, filter)
        except IndexFormatError as exc:
            if label is None or label in str(exc):
                raise
            raise IndexFormatError(f"$MOSAIC_INDEX: {exc}") from exc
    if isinstance(index, (bytes, bool, int, float)) or not (
        isinstance(index, Mapping | Iterable) or hasattr(index, "to_dict") or hasattr(index, "items")
    ):
        raise InvalidInputError(
            "index must be a TileIndex, the path of a saved index (or of STAC Items, or a GDAL GTI), or "
            f"STAC Items; got {type(index).__name__}"
        )
    return TileIndex.from_stac(index)


def _index_file(
    path: Path,
    label: str,
    bbox_ll: Any,
    time: TimeLike,
    other_files: Literal["stac", "gti"],
    filter: Filter | None = None,
) -> TileIndex:
    """The index in file ``path`` (``label`` names it in errors)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mosaic.index.sources import RASTER_SUFFIXES

    build = "make one with 'mosaic index build' or TileIndex.write"
    if not path.exists():
        raise IndexFormatError(f"{label}: index file does not exist; {build}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise IndexFormatError(f"{label}: cannot be read ({exc.strerror or exc})") from exc
    if not head:
        raise IndexFormatError(f"{label}: the file is empty (0 bytes); {build}")
    name = path.name.lower()
    if name.endswith((".parquet", ".geoparquet")) or head.startswith(b"PAR1"):
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise IndexFormatError(
                f"{label}: not a readable Parquet file (truncated, or another format: {exc})"
            ) from exc
        if "stac_version" in names or ("assets" in names and "href" not in names):
            return _stac_file(path, label)
        return TileIndex.read(path, bbox=_pushdown_box(bbox_ll), time=time, filter=filter)
    if name.endswith(RASTER_SUFFIXES):
        raise IndexFormatError(
            f"{label}: is a raster, not a tile index; index it first "
            f"(mosaic index build {path} -o index.parquet)"
        )
    if name.endswith(_GTI_SUFFIXES) or (other_files == "gti" and not name.endswith((".json", ".ndjson"))):
        return TileIndex.read(path)  # a GDAL GTI or gdaltindex output
    return _stac_file(path, label)


def _stac_file(path: Path, label: str) -> TileIndex:
    """The index of the STAC Items in a JSON, NDJSON or stac-geoparquet file."""
    from mosaic.errors import SourceError
    from mosaic.index.sources import iter_items

    try:
        items, base = iter_items(path)
    except SourceError as exc:
        raise IndexFormatError(
            f"{label}: not a tile index: neither a saved index (GeoParquet), STAC Items (JSON, NDJSON, "
            f"stac-geoparquet) nor a GDAL tile index ({exc.reason if exc.href == str(path) else exc})"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{label}: not a tile index nor STAC Items JSON ({exc})") from exc
    if not items:
        raise IndexFormatError(f"{label}: holds no STAC Items")
    return TileIndex.from_stac([{**item, "_base": item.get("_base", base)} for item in items])


_GTI_SUFFIXES = (".gti", ".gti.gpkg", ".gpkg", ".shp", ".fgb")
"""Paths taken as GDAL tile indexes (GTI files, ``gdaltindex`` outputs), not STAC."""


def _pushdown_box(area: Any) -> tuple[float, float, float, float] | None:
    """The lon/lat box to read an index's candidates for ``area`` by (minx > maxx across 180)."""
    if area is None:
        return None
    parts = list(getattr(area, "geoms", [area]))
    if len(parts) == 2:  # split at the antimeridian: a box across it
        east, west = sorted((p.bounds for p in parts), key=lambda b: -b[0])
        if east[2] >= 180.0 and west[0] <= -180.0:
            return (east[0], min(east[1], west[1]), west[2], max(east[3], west[3]))
    return tuple(shapely.total_bounds(parts))


def anchor_of(
    anchor: Any, *, geobox: Any = None, like: Any = None, shape: Any = None
) -> tuple[float, float] | None:
    """The grid's pixel phase (None: the scenes' own, ``"native"``); the default is edge-aligned."""
    if anchor is None:
        return (0.0, 0.0)
    fixed = [
        name for name, given in (("geobox", geobox), ("like", like), ("shape", shape)) if given is not None
    ]
    if fixed:
        raise InvalidInputError(
            f"anchor= aligns a grid made from a bbox and a resolution, not one given by {fixed[0]}="
        )
    return anchor_phase(anchor)


def _native_phase(
    rows: Sequence[SceneAsset], bands: Sequence[str] | str | None, target: CRS, rx: float, ry: float
) -> tuple[float, float]:
    """The pixel phase, on a grid of ``rx`` x ``ry``, that the selected scenes in ``target`` share.

    Raises:
        InvalidInputError: no selected scene is in the target CRS, or their grids are out of phase.
    """
    names = [] if bands is None else [bands] if isinstance(bands, str) else list(bands)
    wanted = {n.split(".")[0] for n in names}
    same = [r for r in rows if r.transform is not None and r.href is not None and _same_crs(r.crs, target)]
    if any(r.asset in wanted for r in same):  # the scenes of the bands asked for, where names match assets
        same = [r for r in same if r.asset in wanted]
    if not same:
        raise InvalidInputError(
            f"anchor='native': no selected scene is in the target CRS {target.to_string()}, so there is no "
            "native grid to align to; use anchor='edge' or 'center', or load in the scenes' CRS"
        )
    phases = []
    for r in same:
        _, b, c, d, _, f = cast("tuple[float, ...]", r.transform)
        if b or d:
            raise InvalidInputError(f"anchor='native': scene {r.id} [{r.asset}] has a rotated grid")
        phases.append((r, (c / rx) % 1.0, (f / ry) % 1.0))
    first, fx, fy = phases[0]
    for other, ox, oy in phases[1:]:
        if _phase_gap(fx, ox) > 1e-4 or _phase_gap(fy, oy) > 1e-4:
            raise InvalidInputError(
                f"anchor='native': the selected scenes' grids are out of phase on a {rx:g} x {ry:g} grid: "
                f"{first.id} [{first.asset}] at ({fx:.4f}, {fy:.4f}) of a pixel, {other.id} [{other.asset}] "
                f"at ({ox:.4f}, {oy:.4f}); give anchor=(x, y) or choose scenes that share a grid"
            )
    return (fx if _phase_gap(fx, 0.0) > 1e-9 else 0.0, fy if _phase_gap(fy, 0.0) > 1e-9 else 0.0)


def _phase_gap(a: float, b: float) -> float:
    """Distance between two pixel phases on the circle [0, 1)."""
    gap = abs(a - b) % 1.0
    return min(gap, 1.0 - gap)


@lru_cache(maxsize=256)
def _same_crs(a: str, b: CRS) -> bool:
    return CRS.from_user_input(a).equals(b)


def _in_grid(area: tuple[BaseGeometry, str], gbox: GeoBox) -> BaseGeometry:
    """The geopolygon in the grid's CRS and coordinates (a lon/lat grid past 180 continues east)."""
    geom, crs = area
    target = cast("GeoCRS", gbox.crs).to_wkt()
    if not CRS.from_user_input(crs).equals(CRS.from_user_input(target)):
        geom = lonlat_to_crs(to_lonlat(geom, crs), target)
    left = gbox.boundingbox.left
    if CRS.from_user_input(target).is_geographic and gbox.boundingbox.right > 180.0:
        geom = shapely.union_all(
            [
                shapely.affinity.translate(p, 360.0) if p.bounds[2] <= left else p
                for p in shapely.get_parts(geom)
            ]
        )
    return geom


def _partial_chunks(
    gbox: GeoBox, chunks: tuple[int, int], clip: BaseGeometry | None, touched: Sequence[np.ndarray]
) -> set[int]:
    """The touched chunks (row-major indices) that reach beyond the clip polygon (none without one)."""
    if clip is None or not touched:
        return set()
    flat = np.unique(np.concatenate(touched))
    return set(flat[~shapely.contains(clip, chunk_boxes(gbox, chunks, flat))].tolist())


def _margin(spec: BandSpec) -> int:
    """Source pixels a band's warp kernel reaches beyond a window."""
    return _KERNEL_MARGIN.get(spec.resampling, 2)


def _kernels(specs: Sequence[BandSpec], requested: Any) -> str:
    """The plan's resampling in one word, or ``band=kernel`` pairs when the bands differ."""
    kinds = {b.resampling for b in specs}
    if not kinds:
        return requested if isinstance(requested, str) else "nearest"
    if len(kinds) == 1:
        return kinds.pop()
    return ", ".join(f"{b.name}={b.resampling}" for b in specs)


# ------------------------------------------------------------------------------------------ checks


def check_concurrency(value: Any) -> int | None:
    """``max_concurrency`` as a positive int, or None.

    Raises:
        InvalidInputError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"max_concurrency must be a whole number of reads, at least 1, got {value!r}")
    return int(value)


def check_bands(bands: Any) -> Sequence[str] | str | None:
    """``bands`` as None, one name or a list of names.

    Raises:
        InvalidInputError: anything else (a number, a list of numbers...).
    """
    if bands is None or isinstance(bands, str):
        return bands
    if isinstance(bands, Sequence | np.ndarray | set | frozenset) and all(isinstance(b, str) for b in bands):
        return list(bands)
    raise InvalidInputError(
        f"bands must be a band name ('B02', 'visual.1', 'red') or a list of them, got {bands!r}"
    )


def _check_dtypes(dtype: Any) -> None:
    """Refuse output dtypes no band can be written as (complex, strings, objects): ints and floats only."""
    for value in dtype.values() if isinstance(dtype, Mapping) else [dtype]:
        if value is None:
            continue
        try:
            kind = np.dtype(value).kind
        except TypeError:
            continue  # not a dtype at all: band_specs says so, naming the band
        if kind not in "uif":
            raise InvalidInputError(
                f"dtype {value!r}: give an integer or float dtype (e.g. 'uint16', 'int16', 'float32')"
            )


def _check_auth(auth: Any) -> tuple[Profile, ...]:
    """``auth`` as a tuple of credential profiles."""
    try:
        return as_profiles(auth)
    except TypeError:
        raise InvalidInputError(
            "auth takes a credential profile (mosaic.auth.S3Profile, HTTPProfile, EarthdataProfile) or a "
            f"list of them, got {auth!r}"
        ) from None


# ------------------------------------------------------------------------------------------ method


def _check_method(method: Any) -> tuple[Any, str | None]:
    """Validate ``method``; return it and the ranking asset band of highest:/lowest: methods."""
    if callable(method):
        return method, None
    if not isinstance(method, str):
        raise InvalidInputError(f"method must be a name or a callable, got {method!r}")
    if method.startswith(("highest:", "lowest:")):
        rank = method.split(":", 1)[1]
        if not rank:
            raise InvalidInputError(f"method {method!r} needs a band name after the colon")
        return method, rank
    if method not in METHODS:
        raise InvalidInputError(
            f"unknown method {method!r}; choose from {', '.join(METHODS)}, "
            "highest:<band>, lowest:<band> or a callable"
        )
    return method, None


# ------------------------------------------------------------------------------------------ time


def time_groups(
    records: Sequence[SceneAsset],
    groupby: str | None,
    *,
    reverse: bool = False,
    order: tuple[tuple[str, bool], ...] = (),
) -> tuple[list[Any], tuple[np.datetime64, ...], dict[Any, list[SceneAsset]]]:
    """The time groups of ``records``: their keys in time order, time labels, and rows in fusion order.

    A group's label is the first time of its scenes (NaT when none has one); groups are ordered by it,
    then by key. Inside a group, scenes are in fusion order: the ``sortby`` fields ``order``, then
    datetime, then id (all reversed for ``last``).
    :func:`make_plan` and :func:`mosaic.sample` group with this, so both label the same groups alike.
    """
    if groupby in ("solar_day", "time") and not any(r.datetime or r.start_datetime for r in records):
        groupby = None  # no scene has a time (plain GeoTIFFs often have none): one layer, time NaT
    grouped: dict[Any, list[SceneAsset]] = defaultdict(list)
    for r in records:
        grouped[_group_key(r, groupby)].append(r)

    def first_time(rows: list[SceneAsset]) -> pd.Timestamp | None:
        times = [t for t in (r.datetime or r.start_datetime for r in rows) if t is not None]
        return min(times) if times else None

    def as_coord(when: pd.Timestamp | None) -> np.datetime64:
        if when is None:
            return np.datetime64("NaT", "ns")
        return np.datetime64(when.tz_convert("UTC").tz_localize(None), "ns")

    epoch = pd.Timestamp(0, tz="UTC")
    keys = sorted(grouped, key=lambda k: (first_time(grouped[k]) or epoch, str(k)))
    times = tuple(as_coord(first_time(grouped[k])) for k in keys)
    in_order = {k: ordered(grouped[k], order, epoch) for k in keys}  # sortby, then datetime and id
    if reverse:
        in_order = {k: rows[::-1] for k, rows in in_order.items()}
    return keys, times, in_order


def _group_key(rec: SceneAsset, groupby: str | None) -> Any:
    if groupby is None:
        return "all"
    when = rec.datetime if rec.datetime is not None else rec.start_datetime
    if groupby == "time":
        return when
    if groupby == "solar_day":
        if when is None:
            raise InvalidInputError(
                f"scene {rec.id!r} has no datetime while other selected scenes have one, so it cannot be "
                "grouped by solar day; pass groupby=None to fuse all into one layer, or give the undated "
                "files a time (TileIndex.from_files(datetime=...))"
            )
        lon = centre_lon(rec.footprint)
        return (when + pd.Timedelta(hours=lon / 15.0)).strftime("%Y-%m-%d")
    props = json.loads(rec.properties) if rec.properties else {}
    if groupby not in props:
        raise InvalidInputError(
            f"groupby={groupby!r}: scene {rec.id!r} has no such property; it has {sorted(props)[:20]}"
        )
    value = props[groupby]
    return json.dumps(value, sort_keys=True) if not isinstance(value, (str, int, float)) else value


def request_grid(
    idx: TileIndex,
    bbox: Sequence[float] | None,
    crs: Any,
    *,
    time: TimeLike,
    bands: Sequence[str] | str | None,
    resolution: float | tuple[float, float] | None,
    bbox_crs: Any,
    shape: tuple[int, int] | None = None,
    geobox: GeoBox | None = None,
    like: Any = None,
    phase: tuple[float, float] | None = (0.0, 0.0),
    area_ll: BaseGeometry | None = None,
    filter: Filter | None = None,
) -> GeoBox:
    """The output grid of a request, as :func:`mosaic.load` makes it (also for :func:`mosaic.export_gti`).

    What depends on the data, the default resolution (the finest of the selected scenes) and the
    ``"native"`` anchor (``phase`` None: their pixel phase), comes from the scenes of ``idx`` in
    ``area_ll`` (lon/lat; default: the bbox) and ``time``.
    """
    if area_ll is None and bbox is not None:
        area_ll = bbox_to_lonlat(bbox, bbox_crs)

    def selected() -> list[SceneAsset]:
        return idx.query_geometry(area_ll, time, filter=filter).records()

    def native_anchor(target: CRS, rx: float, ry: float) -> tuple[float, float]:
        return _native_phase(selected(), bands, target, rx, ry)

    def native_resolution(target: CRS) -> float:
        # in ground metres, so scenes in degrees (or feet) and a grid in metres (or degrees) agree
        res = [min(r.resolution) * metres_per_unit(r.crs) for r in selected() if r.resolution]
        if not res:
            raise NoDataError(
                "resolution= not given and no scene in the request has a known resolution to default to"
            )
        return min(res) / metres_per_unit(target)

    return make_geobox(
        bbox,
        crs,
        resolution=resolution,
        shape=shape,
        geobox=geobox,
        like=like,
        bbox_crs=bbox_crs,
        default_resolution=native_resolution,
        anchor=native_anchor if phase is None else phase,
    )


def make_plan(
    bbox: BBox | Sequence[float] | None = None,
    crs: Any = None,
    time: TimeLike = None,
    *,
    index: Any = None,
    resolution: float | tuple[float, float] | None = None,
    shape: tuple[int, int] | None = None,
    geobox: GeoBox | None = None,
    like: Any = None,
    bbox_crs: Any = "EPSG:4326",
    geopolygon: Any = None,
    clip: bool = False,
    anchor: Any = None,
    bands: Sequence[str] | str | None = None,
    groupby: str | None = "solar_day",
    method: str | Callable[..., Any] = "first",
    resampling: str | Any | Mapping[str, Any] = "nearest",
    dtype: Any = None,
    nodata: Any = None,
    src_nodata: float | Mapping[str, float] | None = None,
    chunks: int | tuple[int, int] | Mapping[str, int] | None = DEFAULT_CHUNK,
    max_concurrency: int | None = None,
    on_error: str = "raise",
    on_empty: str = "raise",
    gdal_options: Mapping[str, Any] | None = None,
    auth: Profile | Sequence[Profile] | None = None,
    max_pixels: float | None = DEFAULT_MAX_PIXELS,
    mask: MaskSpec | str | None = None,
    mask_fraction: bool = False,
    sign: Callable[[str], str] | None = None,
    filter: Any = None,
    sortby: Any = None,
) -> Plan:
    """Plan a mosaic load without reading any pixels (``mosaic.plan``); arguments as :func:`mosaic.load`.

    Returns a :class:`Plan`: frozen records of what to read, from where, into which chunk, which
    ``summary()``, ``explain()`` and ``plot()`` describe and :func:`mosaic.api.to_dataset` executes.
    """
    method, rank_band = _check_method(method)
    if not isinstance(resampling, Mapping):
        resampling = resampling_name(resampling)  # early: before the index is opened
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_empty not in ("raise", "warn"):
        raise InvalidInputError(f"on_empty must be 'raise' or 'warn', got {on_empty!r}")
    max_concurrency = check_concurrency(max_concurrency)
    check_max_pixels(max_pixels)
    parse_time(time)  # validate early
    flt = parse_filter(filter)
    order = parse_sortby(sortby)
    bands = check_bands(bands)
    _check_dtypes(dtype)
    mask_spec = as_mask(mask)
    if not isinstance(mask_fraction, bool):
        raise InvalidInputError(f"mask_fraction must be True or False, got {mask_fraction!r}")
    if mask_fraction and mask_spec is None:
        raise InvalidInputError("mask_fraction=True needs mask=, the quality mask whose fraction to report")
    if groupby is not None and not isinstance(groupby, str):
        raise InvalidInputError(
            f"groupby must be 'solar_day', 'time', an Item property name or None, got {groupby!r}"
        )
    if gdal_options is not None and not isinstance(gdal_options, Mapping):
        raise InvalidInputError(
            f"gdal_options must be a mapping of GDAL option names to values, got {gdal_options!r}"
        )
    profiles = _check_auth(with_signer(auth, sign))
    parse_crs(bbox_crs, "bbox_crs")
    if bbox is not None:
        bbox = check_bbox(bbox)
    phase = anchor_of(anchor, geobox=geobox, like=like, shape=shape)
    area: tuple[BaseGeometry, str] | None = None  # the geopolygon, in its own CRS
    if geopolygon is not None:
        if bbox is not None:
            raise InvalidInputError("give bbox= or geopolygon=, not both")
        area = as_geometry(geopolygon, bbox_crs)
        bbox, bbox_crs = geometry_bounds(*area), area[1]
    elif clip:
        raise InvalidInputError("clip=True needs geopolygon=, the polygon to clip to")

    # the grid first when it does not depend on the data; else from a pre-query on the bbox
    pre_area = None if bbox is None else bbox_to_lonlat(bbox, bbox_crs)
    if area is not None:
        pre_area = to_lonlat(*area)
    idx = resolve_index(index, bbox_ll=pre_area, time=time, auth=profiles, filter=flt)

    gbox = request_grid(
        idx,
        bbox,
        crs,
        time=time,
        bands=bands,
        resolution=resolution,
        shape=shape,
        geobox=geobox,
        like=like,
        bbox_crs=bbox_crs,
        phase=phase,
        area_ll=pre_area,
        filter=flt,
    )
    chunk_yx = chunk_shape(chunks, tuple(gbox.shape))  # type: ignore[arg-type]
    area_ll = to_lonlat(box(*gbox.boundingbox), cast("GeoCRS", gbox.crs).to_wkt())
    warn_area_of_use(gbox.crs, area_ll if pre_area is None else pre_area, stacklevel=3)
    clip_target = None
    if clip and area is not None:  # only scenes under the polygon, and only chunks it touches
        area_ll = areal(area_ll.intersection(pre_area))
        clip_target = _in_grid(area, gbox)

    considered = idx.query_geometry(area_ll, time, filter=flt).records()
    records = [r for r in considered if r.href is not None and r.transform is not None]
    check_allowed(r.href for r in records)  # $MOSAIC_ALLOWED_PREFIXES: refused before any read
    no_href = len(considered) - len(records)
    if not records:
        detail = f" ({no_href} footprint-only rows have no file to read)" if no_href else ""
        where = f" {idx.source}" if idx.source else ""
        matching = "" if flt is None else f", filter {flt.text!r}"
        message = (
            f"no scene in the index{where} intersects the request: bbox "
            f"{tuple(bbox) if bbox is not None else gbox.boundingbox} ({bbox_crs}), time {time!r}{matching}"
            f"{detail}; "
            "compare the request with the index's extent and time range (`mosaic index info`)"
        )
        if on_empty == "raise":
            raise NoDataError(message)
        warnings.warn(message, MosaicWarning, stacklevel=2)

    records = with_source_nodata(records, src_nodata)
    mixed = mixed_scale_assets(records)  # assets whose scenes disagree on scale/offset
    specs = (
        band_specs(
            records,
            bands=bands,
            method=method,
            dtype=dtype,
            nodata=nodata,
            resampling=resampling,
            mixed_scales=mixed,
        )
        if records
        else ()
    )
    if rank_band is not None and records:
        available = {r.asset for r in records}
        if rank_band not in available:
            rank_band = common_name_asset(rank_band, records) or rank_band  # highest:nir
        if rank_band not in available:
            raise InvalidInputError(
                f"method {method!r}: band {rank_band!r} is in none of the selected scenes; "
                f"available: {sorted(available)}"
            )

    # only the assets the bands (and the ranking band) come from are planned
    wanted = {spec.asset for spec in specs} | ({rank_band} if rank_band else set())
    # (the mask bands are read for the scenes' reads, not as reads of their own)
    mask_rows = {(r.id, r.asset): r for r in records if r.asset in mask_assets(mask_spec)}
    records = [r for r in records if r.asset in wanted]
    if mask_spec is not None:
        check_mask_rows(mask_spec, (r.id for r in records), mask_rows)
    # the size guard: before anything sized by the grid or its chunks exists
    check_grid(gbox, records, max_pixels=max_pixels, dtypes=[b.dtype for b in specs])

    # time groups, and fusion order inside each
    check_sortby(order, records)
    group_keys, times, grouped = time_groups(records, groupby, reverse=method == "last", order=order)

    # footprints in the target CRS against the boxes of the chunks near them (never every chunk)
    finder = WindowFinder(gbox, chunk_yx)
    nx = finder.grid[1]
    if clip_target is not None:
        shapely.prepare(clip_target)
    # source pixels around each window for the kernel: per asset, for the widest kernel of its bands
    margins = {a: max((_margin(b) for b in specs if b.asset == a), default=1) for a in wanted}
    if rank_band is not None:
        margins[rank_band] = max((_margin(b) for b in specs), default=1)  # warped with each band's kernel

    hit: list[tuple[SceneAsset, np.ndarray, np.ndarray]] = []  # per scene: chunks touched, their boxes
    for rec in records:
        fp = footprint_in_target(rec, area_ll, gbox)
        if fp.is_empty:
            continue
        flat, boxes = chunks_touching(fp, gbox, chunk_yx)
        if clip_target is not None:  # only chunks the clip polygon touches
            keep = shapely.intersects(clip_target, boxes)
            flat, boxes = flat[keep], boxes[keep]
        hit.append((rec, flat, boxes))
    for crs in sorted({rec.crs for rec, _, _ in hit}):  # one lattice transform per source CRS
        finder.prepare(crs, np.unique(np.concatenate([flat for rec, flat, _ in hit if rec.crs == crs])))
    partial = _partial_chunks(gbox, chunk_yx, clip_target, [flat for _, flat, _ in hit])

    touching: dict[tuple[str, str], list[tuple[int, int, int, int, PixelBox, PixelBox]]] = {}
    for rec, flat, boxes in hit:
        ys, xs = np.divmod(flat, nx)
        xmin, xmax, ymin, ymax, scale = finder.bounds(rec.crs, flat)
        levels, factors, wins, ok = scene_windows(rec, (xmin, xmax, ymin, ymax), scale, margins[rec.asset])
        # where in each chunk the scene's pixels can land (its grid, plus the kernel and 2 px for the
        # outline's densification): a warp computes only there
        targets = chunk_targets(
            grid_in_target(rec, area_ll, gbox), boxes, gbox, chunk_yx, ys, xs, margins[rec.asset] + 2
        )
        keep = np.flatnonzero(ok & (targets[:, 2] > 0) & (targets[:, 3] > 0))
        touching[(rec.id, rec.asset)] = list(
            zip(
                ys[keep].tolist(),
                xs[keep].tolist(),
                levels[keep].tolist(),
                factors[keep].tolist(),
                map(tuple, wins[keep].tolist()),
                map(tuple, targets[keep].tolist()),
                strict=True,
            )
        )

    tasks: list[ChunkTask] = []
    by_scene_asset = {(r.id, r.asset): r for r in records}
    for t, key in enumerate(group_keys):
        rows = grouped[key]
        for spec in specs:
            per_chunk: dict[tuple[int, int], list[Read]] = defaultdict(list)
            aux_chunk: dict[tuple[int, int], list[Read]] = defaultdict(list)
            for rec in rows:
                if rec.asset != spec.asset or spec.band > rec.band_count:
                    continue
                rank_rec = by_scene_asset.get((rec.id, rank_band)) if rank_band else None
                if rank_band and rank_rec is None:
                    continue  # a scene without the ranking band cannot be ranked
                physical = to_physical(rec) if spec.physical else None
                for iy, ix, level, factor, win, target in touching.get((rec.id, rec.asset), ()):
                    read = _make_read(rec, spec.band, level, factor, win, target, physical)
                    if mask_spec is not None:
                        masks = mask_reads(mask_spec, rec, level, factor, win, mask_rows, _make_read)
                        read = dataclasses.replace(read, masks=masks)
                    per_chunk[(iy, ix)].append(read)
                    if rank_rec is not None:
                        rank_physical = to_physical(rank_rec) if rank_band in mixed else None
                        aux = _aux_read(rank_rec, finder, iy, ix, margins[rank_rec.asset], rank_physical)
                        aux_chunk[(iy, ix)].append(aux)
            for (iy, ix), reads in sorted(per_chunk.items()):
                aux_reads = tuple(aux_chunk.get((iy, ix), ()))
                clipped = iy * nx + ix in partial
                tasks.append(ChunkTask(spec.name, t, iy, ix, tuple(reads), aux_reads, clipped))

    return Plan(
        geobox=gbox,
        chunks=chunk_yx,
        times=times,
        groups=tuple(str(k) for k in group_keys),
        bands=specs,
        tasks=tuple(with_neighbours(tasks)),
        method=method,
        resampling=_kernels(specs, resampling),
        index_source=idx.source,
        scenes=tuple(sorted({r.id for r in records})),
        on_error=on_error,
        gdal_options=hide_secrets(gdal_options or {}),
        max_concurrency=None if max_concurrency is None else int(max_concurrency),
        auth=profiles,
        considered=tuple(considered),
        clip=None if clip_target is None else shapely.to_wkb(clip_target),
        mask=mask_spec,
        mask_fraction=mask_fraction,
        sortby=order,
        filter=None if flt is None else flt.text,
    )


def _make_read(
    rec: SceneAsset,
    band: int,
    level: int,
    factor: int,
    win: PixelBox,
    target: PixelBox | None = None,
    physical: tuple[float, float] | None = None,
) -> Read:
    return Read(
        scene=rec.id,
        asset=rec.asset,
        href=rec.href,  # type: ignore[arg-type]
        band=band,
        crs=rec.crs,
        overview=level,
        factor=factor,
        window=win,
        nodata=rec.nodata,
        datetime=None if rec.datetime is None else rec.datetime.isoformat(),
        target=target,
        to_physical=physical,
        identity=rec.identity,
        tiles=rec.tiles,
    )


def _aux_read(
    rec: SceneAsset,
    finder: WindowFinder,
    iy: int,
    ix: int,
    margin: int,
    physical: tuple[float, float] | None = None,
) -> Read:
    """The ranking band's read for one chunk (an empty window when it does not reach the chunk)."""
    xmin, xmax, ymin, ymax, scale = finder.bounds(rec.crs, np.array([iy * finder.grid[1] + ix]))
    level, factor, win, ok = scene_windows(rec, (xmin, xmax, ymin, ymax), scale, margin)
    if not ok[0]:
        return _make_read(rec, 1, -1, 1, (0, 0, 0, 0))
    box_ = cast(PixelBox, tuple(int(v) for v in win[0]))
    return _make_read(rec, 1, int(level[0]), int(factor[0]), box_, None, physical)
