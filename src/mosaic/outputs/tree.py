"""The virtual data tree: every scene on its own native grid, under one entry point.

A mosaic puts every scene on one grid, which resamples most of them. The tree keeps each native pixel
grid as a cube of its own: :func:`open_tree` returns an :class:`xarray.DataTree` with one node per
distinct grid (``group_by="grid"``: CRS + transform + shape, the scenes sharing it stacked along
``time``) or per CRS, resolution and pixel phase (``group_by="crs"``: the scenes placed on the union of
their grids, whole pixels apart, overlaps fused as :func:`mosaic.load` fuses them). Nothing is warped:
a chunk is a plain windowed read of the files' own pixels, through :mod:`mosaic.io.read` (the limiter,
retries, credentials, per-thread handles and header-less tile reads of :func:`mosaic.load`).

Planning (:func:`plan_tree`) reads no pixels and makes frozen records (:class:`TreePlan`,
:class:`TreeNode`...) that the executor (:func:`node_dataset`) only executes, and that an exporter can
walk: each node knows its CRS, transform, shape, chunking and, per time step, each scene's id, time,
footprint and, per band, the :class:`~mosaic.planning.planner.Read` of its file (href, band in the asset) and
the index row it came from.

Node names (:func:`grid_nodes`): ``/<crs>/<grid>``.

- ``<crs>`` is the CRS's authority code with ``_`` for ``:`` (``EPSG_32632``), else ``CRS_`` and the
  first 8 hex digits of the SHA-1 of its WKT2 (a custom CRS).
- ``<grid>`` (``group_by="grid"``) is the grid's code where the scenes' STAC properties give one
  (``grid:code``; else the MGRS extension's ``mgrs:utm_zone`` + ``mgrs:latitude_band`` +
  ``mgrs:grid_square``; else ``s2:mgrs_tile``; else Landsat's ``landsat:wrs_path`` +
  ``landsat:wrs_row`` as ``WRS2-PPPRRR``) followed by the resolution (``32TQM_10m``), else the
  grid's origin, resolution and shape (``x600000_y5000040_10m_1536x1536``). A code shared by grids
  that differ (a shape one pixel apart) is followed by the first 6 hex digits of a hash of each grid.
  Characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_`` (Zarr group names).
- ``<grid>`` (``group_by="crs"``) is the resolution (``10m``), followed by the pixel phase where the
  grid's edges are not on multiples of it (``30m_phase0.5_0.5``).

The same scenes give the same names in every run.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from mosaic._blocks import LazyBlocks
from mosaic.auth import Profile, hide_secrets
from mosaic.errors import InvalidInputError, NoDataError
from mosaic.io.paths import check_allowed, redact
from mosaic.planning.bands import band_specs, mixed_scale_assets, to_physical
from mosaic.planning.planner import (
    BandSpec,
    ChunkTask,
    Read,
    _check_auth,
    _group_key,
    check_bands,
    check_concurrency,
    resolve_index,
)
from mosaic.planning.records import SceneAsset, crs_to_string
from mosaic.times import parse_time
from mosaic.types import BBox, TimeLike

if TYPE_CHECKING:
    import xarray as xr
    from odc.geo.geobox import GeoBox

__all__ = [
    "GROUP_BY",
    "TreeNode",
    "TreePlan",
    "TreeScene",
    "TreeSource",
    "TreeStep",
    "crs_name",
    "grid_code",
    "grid_nodes",
    "node_dataset",
    "open_tree",
    "plan_tree",
    "tree_of",
]

GROUP_BY = ("grid", "crs")
"""The ways :func:`open_tree` makes nodes: one per native grid, or one per CRS, resolution and phase."""

Transform = tuple[float, float, float, float, float, float]
PixelBox = tuple[int, int, int, int]


# ============================================================================================ records


@dataclass(frozen=True, slots=True)
class TreeSource:
    """One band of one scene in a node: the read of its whole grid, and where that grid lies in the node.

    ``read`` is a :class:`~mosaic.planning.planner.Read` of the scene's full-resolution grid (window
    ``(0, 0, height, width)``): href, band in the asset (``read.band``), CRS, nodata, identity and tile
    layout. A chunk reads the part of it the chunk covers.
    """

    band: str
    """The node's variable this source feeds."""
    read: Read
    row: int
    """The position of the source's row in the index the tree was planned from."""
    offset: tuple[int, int]
    """(row, col) of the scene grid's top-left pixel in the node's grid."""
    shape: tuple[int, int]
    """(height, width) of the scene's grid."""

    @property
    def box(self) -> PixelBox:
        """(row_off, col_off, height, width) of the scene's grid in the node's grid."""
        return (*self.offset, *self.shape)


@dataclass(frozen=True, slots=True)
class TreeScene:
    """One scene of a time step: its id, time, data footprint (lon/lat) and its bands' sources."""

    id: str
    datetime: str | None
    footprint: BaseGeometry = field(compare=False, repr=False)
    sources: tuple[TreeSource, ...] = ()

    def source(self, band: str) -> TreeSource | None:
        """The source of variable ``band`` (None: the scene has no such band)."""
        return next((s for s in self.sources if s.band == band), None)


@dataclass(frozen=True, slots=True)
class TreeStep:
    """One time step of a node: its time and group, and its scenes in fusion order."""

    time: np.datetime64
    group: str
    scenes: tuple[TreeScene, ...]


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One cube of the tree: a grid, its chunking and bands, and its time steps.

    ``bands`` are what the node's variables hold (dtype, nodata as :func:`mosaic.load` sets them);
    ``method`` fuses the scenes of a step (``group_by="crs"``; a ``"grid"`` node has one scene per step).
    """

    path: str
    crs: str
    """The CRS's short name (the first part of ``path``: ``EPSG_32632``)."""
    crs_wkt: str
    transform: Transform
    shape: tuple[int, int]
    chunks: tuple[int, int]
    bands: tuple[BandSpec, ...]
    steps: tuple[TreeStep, ...]
    group_by: str = "grid"
    grid: str = ""
    """The grid's name (the last part of ``path``)."""
    code: str | None = None
    """The grid code the scenes' properties give (``32TQM``, ``WRS2-089090``), if any."""
    method: str | Callable[..., Any] = "first"

    @property
    def geobox(self) -> GeoBox:
        """The node's grid as an odc-geo ``GeoBox``."""
        from affine import Affine
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, Affine(*self.transform), _short_crs(self.crs_wkt))

    @property
    def times(self) -> tuple[np.datetime64, ...]:
        """The time of each step."""
        return tuple(s.time for s in self.steps)

    @property
    def chunk_grid(self) -> tuple[int, int]:
        """Number of chunks along (y, x)."""
        return (-(-self.shape[0] // self.chunks[0]), -(-self.shape[1] // self.chunks[1]))

    def chunk_box(self, iy: int, ix: int) -> PixelBox:
        """(row_off, col_off, height, width) of chunk (iy, ix) in the node's grid."""
        cy, cx = self.chunks
        r, c = iy * cy, ix * cx
        return (r, c, min(cy, self.shape[0] - r), min(cx, self.shape[1] - c))

    def band(self, name: str) -> BandSpec:
        """The spec of variable ``name``."""
        for spec in self.bands:
            if spec.name == name:
                return spec
        raise InvalidInputError(
            f"node {self.path} has no band {name!r}; it has {[b.name for b in self.bands]}"
        )

    def reads(self, band: str, t: int, iy: int, ix: int) -> tuple[Read, ...]:
        """The reads of chunk (iy, ix) of ``band`` at step ``t``, in fusion order: only scenes it touches.

        Each read's window is the part of its scene's grid inside the chunk, and its ``target`` where
        that part lands in the chunk.
        """
        r0, c0, h, w = self.chunk_box(iy, ix)
        out = []
        for scene in self.steps[t].scenes:
            src = scene.source(band)
            if src is None:
                continue
            sr, sc, sh, sw = src.box
            top, left = max(r0, sr), max(c0, sc)
            bottom, right = min(r0 + h, sr + sh), min(c0 + w, sc + sw)
            if bottom <= top or right <= left:
                continue
            window = (top - sr, left - sc, bottom - top, right - left)
            target = (top - r0, left - c0, bottom - top, right - left)
            out.append(replace(src.read, window=window, target=target))
        return tuple(out)

    def __dask_tokenize__(self) -> Hashable:
        return (
            "mosaic.TreeNode",
            self.path,
            self.crs_wkt,
            self.transform,
            self.shape,
            self.chunks,
            self.bands,
            self.group_by,
            self.method if isinstance(self.method, str) else getattr(self.method, "__qualname__", ""),
            tuple(
                (
                    str(step.time),
                    step.group,
                    tuple(
                        (
                            s.id,
                            s.datetime,
                            tuple(
                                (
                                    x.band,
                                    redact(x.read.href),
                                    x.read.band,
                                    x.read.identity,
                                    x.read.nodata,
                                    x.read.to_physical,
                                    x.box,
                                )
                                for x in s.sources
                            ),
                        )
                        for s in step.scenes
                    ),
                )
                for step in self.steps
            ),
        )


@dataclass(frozen=True, slots=True)
class TreePlan:
    """A tree's nodes and what every read shares (limits, credentials, GDAL options); no pixels read."""

    nodes: tuple[TreeNode, ...]
    group_by: str
    index_source: str | None = None
    rows: int = 0
    """Index rows selected (scene assets of the bands asked for)."""
    scenes: tuple[str, ...] = ()
    time_range: tuple[str | None, str | None] = (None, None)
    max_concurrency: int | None = None
    gdal_options: tuple[tuple[str, Any], ...] = ()
    auth: tuple[Profile, ...] = ()

    def node(self, path: str) -> TreeNode:
        """The node at ``path`` (``"/EPSG_32632/32TQM_10m"``; the leading ``/`` may be left out)."""
        want = "/" + path.lstrip("/")
        for node in self.nodes:
            if node.path == want:
                return node
        raise InvalidInputError(f"the tree has no node {path!r}; it has {[n.path for n in self.nodes]}")

    def summary(self) -> dict[str, Any]:
        """Counts: nodes, CRSs, scenes, time steps, chunks, and each node's grid."""
        return {
            "group_by": self.group_by,
            "nodes": len(self.nodes),
            "crs": sorted({n.crs for n in self.nodes}),
            "scenes": len(self.scenes),
            "index_rows": self.rows,
            "time_range": list(self.time_range),
            "grids": {
                n.path: {
                    "shape": [len(n.steps), *n.shape],
                    "chunks": list(n.chunks),
                    "bands": [b.name for b in n.bands],
                    "resolution": list(_resolution(n.transform)),
                }
                for n in self.nodes
            },
        }

    def __repr__(self) -> str:
        lines = [
            f"TreePlan({len(self.nodes)} nodes by {self.group_by}, {len(self.scenes)} scenes, "
            f"index {redact(self.index_source) if self.index_source else 'in memory'})"
        ]
        for n in self.nodes[:20]:
            lines.append(
                f"  {n.path}: {len(n.steps)} x {n.shape[0]} x {n.shape[1]}, chunks {n.chunks}, "
                f"bands {[b.name for b in n.bands]}"
            )
        if len(self.nodes) > 20:
            lines.append(f"  ... +{len(self.nodes) - 20} more nodes")
        return "\n".join(lines)


# ============================================================================================= naming


@lru_cache(maxsize=256)
def _parsed_crs(text: str) -> CRS:
    return CRS.from_user_input(text)


@lru_cache(maxsize=256)
def crs_name(crs: str) -> str:
    """A CRS's node name: ``EPSG_32632`` (its authority code), else ``CRS_`` + 8 hex digits of a hash."""
    parsed = _parsed_crs(crs)
    authority = parsed.to_authority(min_confidence=100)
    if authority is not None:
        return _sanitise(f"{authority[0]}_{authority[1]}")
    digest = hashlib.sha1(parsed.to_wkt("WKT2_2019").encode()).hexdigest()[:8]
    return f"CRS_{digest}"


@lru_cache(maxsize=256)
def _short_crs(wkt: str) -> str:
    """``"EPSG:32632"`` where the CRS is exactly one, else its WKT (what odc-geo and rioxarray show)."""
    return crs_to_string(_parsed_crs(wkt))


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _sanitise(name: str) -> str:
    """A Zarr group name: letters, digits, ``-``, ``_``, ``.``; never empty, ``.`` or starting ``__``."""
    out = _UNSAFE.sub("_", name.strip())
    if out in ("", ".", "..") or out.startswith("__"):
        out = f"g{out}"
    return out


def grid_code(properties: str | Mapping[str, Any] | None) -> str | None:
    """The grid code a STAC Item's properties give (see the module docstring for the order), or None."""
    props: Any = json.loads(properties) if isinstance(properties, str) else (properties or {})
    if not isinstance(props, Mapping):
        return None
    code = props.get("grid:code")
    if code:
        return str(code)
    mgrs = [props.get(k) for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")]
    if all(v not in (None, "") for v in mgrs):
        zone = str(mgrs[0])
        return f"{int(zone):02d}{mgrs[1]}{mgrs[2]}" if zone.isdigit() else "".join(map(str, mgrs))
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"])
    path, row = props.get("landsat:wrs_path"), props.get("landsat:wrs_row")
    if path not in (None, "") and row not in (None, ""):
        return f"WRS2-{int(path):03d}{int(row):03d}" if f"{path}{row}".isdigit() else f"WRS2-{path}{row}"
    return None


def _number(value: float) -> str:
    """``10``, ``0.0002``, ``-4663485``: short, exact enough for a name."""
    return f"{value:.10g}"


def _resolution(transform: Transform) -> tuple[float, float]:
    a, b, _, d, e, _ = transform
    return (math.hypot(a, d), math.hypot(b, e))


def _resolution_text(transform: Transform, crs: str) -> str:
    rx, ry = _resolution(transform)
    parsed = _parsed_crs(crs)
    unit = "deg" if parsed.is_geographic else "m" if _metre_axes(parsed) else "u"
    text = _number(rx) if math.isclose(rx, ry, rel_tol=1e-9) else f"{_number(rx)}x{_number(ry)}"
    return f"{text}{unit}"


def _metre_axes(crs: CRS) -> bool:
    axis = crs.axis_info[0] if crs.axis_info else None
    return axis is None or axis.unit_conversion_factor == 1.0


def _grid_hash(crs: str, transform: Transform, shape: tuple[int, int]) -> str:
    text = json.dumps([crs_name(crs), [_number(v) for v in transform], list(shape)])
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def _phase(transform: Transform) -> tuple[float, float]:
    """The grid's pixel phase: where its edges fall between multiples of the resolution (0 <= p < 1)."""
    a, _, c, _, e, f = transform
    px, py = (c / a) % 1.0, (f / e) % 1.0
    return (round(px, 6) % 1.0, round(py, 6) % 1.0)


# ============================================================================================ grouping


@dataclass(frozen=True, slots=True)
class _Group:
    """The rows of one node, before planning its time steps."""

    path: str
    crs: str
    grid: str
    code: str | None
    key: tuple[Any, ...]
    rows: tuple[int, ...]


def _grid_key(rec: SceneAsset, group_by: str) -> tuple[Any, ...]:
    crs = crs_to_string(_parsed_crs(rec.crs))
    transform = tuple(round(v, 9) for v in cast(Transform, rec.transform))
    if group_by == "grid" or transform[1] or transform[3]:  # a rotated grid cannot share a union grid
        return ("grid", crs, transform, tuple(cast(tuple[int, int], rec.shape)))
    a, _, _, _, e, _ = transform
    return ("crs", crs, a, e, _phase(cast(Transform, transform)))


def grid_nodes(records: Any, group_by: str = "grid") -> list[tuple[str, list[int]]]:
    """The nodes ``records`` (a TileIndex or its rows) make: ``(path, positions of its rows)``, by path.

    ``group_by="grid"``: one node per distinct CRS + transform + shape; ``"crs"``: one per CRS,
    resolution and pixel phase (rotated grids keep a node each). Records without a grid (footprint
    only) are left out. The names follow the rule of the module docstring.

    Raises:
        InvalidInputError: an unknown ``group_by``.
    """
    rows = records.records() if hasattr(records, "records") else list(records)
    return [(g.path, list(g.rows)) for g in _groups(rows, _check_group_by(group_by))]


def _check_group_by(group_by: Any) -> str:
    if group_by not in GROUP_BY:
        raise InvalidInputError(
            f"group_by must be 'grid' (one node per native pixel grid) or 'crs' (one per CRS, "
            f"resolution and pixel phase), got {group_by!r}"
        )
    return cast(str, group_by)


def _groups(records: Sequence[SceneAsset], group_by: str) -> list[_Group]:
    keyed: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec.href is None or rec.transform is None or rec.shape is None:
            continue
        keyed[_grid_key(rec, group_by)].append(i)
    named: list[tuple[tuple[Any, ...], str, str, str | None]] = []  # key, crs name, base name, code
    for key, rows in keyed.items():
        crs = key[1]
        first = records[rows[0]]
        transform = cast(Transform, first.transform)
        if key[0] == "grid" and group_by == "grid":
            codes = Counter(c for c in (grid_code(records[i].properties) for i in rows) if c)
            code = codes.most_common(1)[0][0] if codes else None
            res = _resolution_text(transform, crs)
            if code is not None:
                base = f"{code}_{res}"
            else:
                x, y = transform[2], transform[5]
                h, w = cast(tuple[int, int], first.shape)
                base = f"x{_number(x)}_y{_number(y)}_{res}_{h}x{w}"
        elif key[0] == "grid":  # a rotated grid under group_by="crs"
            code = None
            base = f"{_resolution_text(transform, crs)}_rotated"
        else:
            code = None
            px, py = key[4]
            base = _resolution_text(transform, crs)
            if px or py:
                base += f"_phase{_number(px)}_{_number(py)}"
        named.append((key, crs_name(crs), _sanitise(base), code))
    clashes = Counter((crs, base) for _, crs, base, _ in named)
    out = []
    for key, crs, base, code in named:
        rows = keyed[key]
        name = base
        if clashes[(crs, base)] > 1:  # one code, several grids (shapes a pixel apart): each its hash
            first = records[rows[0]]
            grid_shape = cast(tuple[int, int], first.shape)
            name = f"{base}_{_grid_hash(key[1], cast(Transform, first.transform), grid_shape)}"
        out.append(_Group(f"/{crs}/{name}", key[1], name, code, key, tuple(rows)))
    return sorted(out, key=lambda g: g.path)


# ============================================================================================ planning


def plan_tree(
    index: Any,
    *,
    bbox: BBox | Sequence[float] | None = None,
    time: TimeLike = None,
    bands: Sequence[str] | str | None = None,
    bbox_crs: Any = "EPSG:4326",
    group_by: str = "grid",
    chunks: int | tuple[int, int] | Mapping[str, int] | None = None,
    method: str | Callable[..., Any] = "first",
    groupby: str | None = "solar_day",
    max_concurrency: int | None = None,
    gdal_options: Mapping[str, Any] | None = None,
    auth: Profile | Sequence[Profile] | None = None,
    filter: Any = None,
) -> TreePlan:
    """Plan the tree of the scenes of ``index`` in ``bbox`` and ``time``: no pixel is read.

    Arguments as :func:`open_tree`. Default chunks come from the files' internal tiling: the tile
    layout the index recorded (``tile_ranges=True``), else one file header per node.

    Raises:
        InvalidInputError: a malformed argument (an unknown ``group_by``, a band no selected scene has).
        NoDataError: no scene with a file matches ``bbox`` and ``time``.
    """
    group_by = _check_group_by(group_by)
    bands = check_bands(bands)
    parse_time(time)
    max_concurrency = check_concurrency(max_concurrency)
    profiles = _check_auth(auth)
    if gdal_options is not None and not isinstance(gdal_options, Mapping):
        raise InvalidInputError(
            f"gdal_options must be a mapping of GDAL option names to values, got {gdal_options!r}"
        )
    if group_by == "crs":
        _check_method(method)
    if groupby is not None and not isinstance(groupby, str):
        raise InvalidInputError(
            f"groupby must be 'solar_day', 'time', an Item property name or None, got {groupby!r}"
        )
    if chunks is not None:
        from mosaic.planning.grid import chunk_shape

        chunk_shape(chunks, (1, 1))  # validate early
    from mosaic.index.filters import parse_filter
    from mosaic.index.geom import bbox_to_lonlat
    from mosaic.planning.grid import check_bbox, parse_crs

    parse_crs(bbox_crs, "bbox_crs")
    area = None if bbox is None else bbox_to_lonlat(check_bbox(bbox), bbox_crs)
    flt = parse_filter(filter)
    idx = resolve_index(index, bbox_ll=area, time=time, auth=profiles, filter=flt)
    positions = idx.query_rows(area, time, filter=flt)  # (the index rows each source comes from)
    found = idx.take(positions).records()
    position = {(r.id, r.asset): int(i) for r, i in zip(found, positions, strict=True)}
    selected = [r for r in found if r.href is not None and r.transform is not None]
    if not selected:
        where = f" {redact(idx.source)}" if idx.source else ""
        raise NoDataError(
            f"no scene with a file in the index{where} matches bbox {bbox!r} ({bbox_crs}) and time {time!r}; "
            "compare the request with the index's extent and time range (`mosaic index info`)"
        )
    check_allowed(r.href for r in selected)
    specs = band_specs(
        selected,
        bands=bands,
        method=method,
        dtype=None,
        nodata=None,
        resampling="nearest",
        mixed_scales=set(),
    )
    wanted = {s.asset for s in specs}
    records = [r for r in selected if r.asset in wanted]
    nodes = []
    for group in _groups(records, group_by):
        rows = [records[i] for i in group.rows]
        node = _plan_node(
            group,
            rows,
            specs,
            [position[(r.id, r.asset)] for r in rows],
            group_by,
            chunks=chunks,
            method=method,
            groupby=groupby,
            gdal_options=gdal_options or {},
            auth=profiles,
        )
        nodes.append(node)
    times = [t for r in records for t in (r.datetime or r.start_datetime,) if t is not None]
    return TreePlan(
        nodes=tuple(nodes),
        group_by=group_by,
        index_source=idx.source,
        rows=len(records),
        scenes=tuple(sorted({r.id for r in records})),
        time_range=(min(times).isoformat(), max(times).isoformat()) if times else (None, None),
        max_concurrency=max_concurrency,
        gdal_options=hide_secrets(gdal_options or {}),
        auth=profiles,
    )


def _check_method(method: Any) -> None:
    from mosaic.fuse import FUSERS

    if callable(method):
        return
    if not isinstance(method, str) or method.split(":", 1)[0] not in FUSERS:
        raise InvalidInputError(f"unknown method {method!r}; choose from {', '.join(FUSERS)} or a callable")
    if method.startswith(("highest:", "lowest:")):
        raise InvalidInputError(
            f"method {method!r}: ranking methods need a second band on the same grid, which open_tree does "
            "not plan; use mosaic.load(..., anchor='native') for a ranked mosaic"
        )


def _plan_node(
    group: _Group,
    rows: Sequence[SceneAsset],
    specs: Sequence[BandSpec],
    positions: Sequence[int],
    group_by: str,
    *,
    chunks: Any,
    method: Any,
    groupby: str | None,
    gdal_options: Mapping[str, Any],
    auth: tuple[Profile, ...],
) -> TreeNode:
    """One node: its grid (the union of its scenes' grids with ``"crs"``), bands, steps and chunks."""
    from mosaic.planning.grid import chunk_shape

    first = cast(Transform, rows[0].transform)
    a, _, c0, _, e, f0 = first
    boxes = []  # each row's grid in pixels of the first row's lattice
    for r in rows:
        _, _, c, _, _, f = cast(Transform, r.transform)
        h, w = cast(tuple[int, int], r.shape)
        boxes.append((round((f - f0) / e), round((c - c0) / a), h, w))
    top = min(b[0] for b in boxes)
    left = min(b[1] for b in boxes)
    bottom = max(b[0] + b[2] for b in boxes)
    right = max(b[1] + b[3] for b in boxes)
    transform = (a, first[1], c0 + left * a + top * first[1], first[3], e, f0 + top * e + left * first[3])
    shape = (bottom - top, right - left)
    node_specs = _node_specs(specs, rows, group_by, method)
    by_asset: dict[str, list[BandSpec]] = defaultdict(list)
    for spec in node_specs:
        by_asset[spec.asset].append(spec)

    epoch = pd.Timestamp(0, tz="UTC")

    def when(r: SceneAsset) -> pd.Timestamp | None:
        return r.datetime or r.start_datetime

    if group_by == "grid":
        grouped: dict[Any, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            grouped[r.id].append(i)
    else:
        undated = groupby in ("solar_day", "time") and not any(when(r) for r in rows)
        grouped = defaultdict(list)
        for i, r in enumerate(rows):
            grouped[_group_key(r, None if undated else groupby)].append(i)

    def first_time(members: list[int]) -> pd.Timestamp | None:
        times = [t for t in (when(rows[i]) for i in members) if t is not None]
        return min(times) if times else None

    keys = sorted(grouped, key=lambda k: (first_time(grouped[k]) or epoch, str(k)))
    steps = []
    for key in keys:
        members = grouped[key]
        by_scene: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_scene[rows[i].id].append(i)
        order = sorted(
            by_scene, key=lambda s: (when(rows[by_scene[s][0]]) or epoch, s), reverse=method == "last"
        )
        scenes = []
        for scene_id in order:
            sources = []
            for i in by_scene[scene_id]:
                r = rows[i]
                for spec in by_asset.get(r.asset, ()):
                    if spec.band > r.band_count:
                        continue
                    physical = to_physical(r) if spec.physical else None
                    read = Read(
                        scene=r.id,
                        asset=r.asset,
                        href=cast(str, r.href),
                        band=spec.band,
                        crs=r.crs,
                        overview=-1,
                        factor=1,
                        window=(0, 0, *cast(tuple[int, int], r.shape)),
                        nodata=r.nodata,
                        datetime=None if r.datetime is None else r.datetime.isoformat(),
                        to_physical=physical,
                        identity=r.identity,
                        tiles=r.tiles,
                    )
                    b = boxes[i]
                    sources.append(
                        TreeSource(spec.name, read, positions[i], (b[0] - top, b[1] - left), (b[2], b[3]))
                    )
            r0 = rows[by_scene[scene_id][0]]
            t0 = when(r0)
            scenes.append(
                TreeScene(scene_id, None if t0 is None else t0.isoformat(), r0.footprint, tuple(sources))
            )
        t = first_time(members)
        time = (
            np.datetime64("NaT", "ns")
            if t is None
            else np.datetime64(t.tz_convert("UTC").tz_localize(None), "ns")
        )
        steps.append(TreeStep(time, str(key), tuple(scenes)))
    if chunks is None:
        block = _block_shape(rows, gdal_options, auth)
        chunk_yx = chunk_shape(block, shape)
    else:
        chunk_yx = chunk_shape(chunks, shape)
    return TreeNode(
        path=group.path,
        crs=crs_name(group.crs),
        crs_wkt=_parsed_crs(group.crs).to_wkt(),
        transform=cast(Transform, tuple(float(v) for v in transform)),
        shape=shape,
        chunks=chunk_yx,
        bands=tuple(node_specs),
        steps=tuple(steps),
        group_by=group_by,
        grid=group.grid,
        code=group.code,
        method=method if group_by == "crs" else "first",
    )


def _node_specs(
    specs: Sequence[BandSpec], rows: Sequence[SceneAsset], group_by: str, method: Any
) -> tuple[BandSpec, ...]:
    """The request's bands that the node's files hold, with the dtype and nodata of those files.

    Names stay the request's (``data.1`` in every node), so one band has one name across the tree.
    A ``"grid"`` node keeps its files' own dtype and nodata; a ``"crs"`` node's bands are what
    :func:`mosaic.load` makes of the same scenes with ``method``.
    """
    mixed = set() if group_by == "grid" else mixed_scale_assets(rows)
    local: dict[str, tuple[BandSpec, ...]] = {}
    out = []
    for spec in specs:
        if spec.asset not in local:
            mine = [r for r in rows if r.asset == spec.asset]
            local[spec.asset] = (
                band_specs(
                    mine,
                    bands=[spec.asset],
                    method="first" if group_by == "grid" else method,
                    dtype=None,
                    nodata=None,
                    resampling="nearest",
                    mixed_scales=mixed,
                )
                if mine
                else ()
            )
        found = next((s for s in local[spec.asset] if s.band == spec.band), None)
        if found is None:  # not on this node's grid, or its files here have fewer bands
            continue
        found = replace(found, name=spec.name)
        out.append(_declared(found, rows) if group_by == "grid" else found)
    return tuple(out)


def _declared(spec: BandSpec, rows: Sequence[SceneAsset]) -> BandSpec:
    """A ``"grid"`` node's band: the sources' own dtype and nodata (the most common; None: they have none)."""
    values = Counter(
        "nan" if r.nodata is not None and math.isnan(r.nodata) else r.nodata
        for r in rows
        if r.asset == spec.asset
    )
    common = values.most_common(1)[0][0] if values else None
    nodata = math.nan if common == "nan" else cast("float | None", common)
    scales = {to_physical(r) for r in rows if r.asset == spec.asset}
    scale, offset = scales.pop() if len(scales) == 1 else (None, None)
    return replace(
        spec,
        nodata=nodata,
        native=True,
        physical=False,
        scale=None if scale in (None, 1.0) else scale,
        offset=None if offset in (None, 0.0) else offset,
    )


def _block_shape(
    rows: Sequence[SceneAsset], gdal_options: Mapping[str, Any], auth: tuple[Profile, ...]
) -> Any:
    """The internal tiling (block height, width) of the node's files, or None for files in strips.

    From the index's tile layout where it has one, else from one file header.
    """
    from mosaic.io.cog import decode_layout

    for r in rows:
        if r.tiles is not None:
            layout = decode_layout(r.tiles)
            if layout is not None:
                return layout.tile
    r = rows[0]
    import rasterio

    from mosaic.auth import gdal_options_for
    from mosaic.io.gdalenv import gdal_env, options_env
    from mosaic.io.paths import gdal_path

    try:
        with gdal_env(hide_secrets(gdal_options)), options_env(gdal_options_for(cast(str, r.href), auth)):
            with rasterio.open(gdal_path(cast(str, r.href))) as src:
                h, w = src.block_shapes[0]
                tiled = src.profile.get("tiled", False) or (w < src.width)
    except Exception:  # the reads will say what is wrong with the file, naming it
        return None
    return (h, w) if tiled else None


# ============================================================================================ execution


class _NodeBlocks(LazyBlocks):
    """The graph of one band of a node, made when asked: a read task per chunk a scene touches.

    Chunks no scene of their step touches are a constant block of the band's nodata (0 without one).
    Nothing is stored per chunk, so a tree of many time steps costs no memory until computed.
    """

    def __init__(self, name: str, node: TreeNode, spec: BandSpec, ctx: Any):
        super().__init__(name, len(node.steps), *node.chunk_grid)
        self._node, self._spec, self._ctx = node, spec, ctx

    def __getitem__(self, key: Any) -> Any:
        from affine import Affine

        from mosaic.graph import load_chunk

        t, iy, ix = self._chunk(key)
        r0, c0, h, w = self._node.chunk_box(iy, ix)
        reads = self._node.reads(self._spec.name, t, iy, ix)
        if not reads:
            fill = self._ctx.band.nodata if self._ctx.band.nodata is not None else 0
            return (np.full, (1, h, w), fill, self._spec.dtype)
        affine = tuple(Affine(*self._node.transform) * Affine.translation(c0, r0))[:6]
        return (load_chunk, ChunkTask(self._spec.name, t, iy, ix, reads), self._ctx, affine, (h, w))

    def __iter__(self) -> Iterator[Any]:
        return self._grid_keys()

    def __len__(self) -> int:
        return self._times * self._ny * self._nx


def _band_array(node: TreeNode, spec: BandSpec, plan: TreePlan, token: str) -> Any:
    """The lazy (time, y, x) dask array of one band of ``node`` (``token``: the node's dask token)."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from mosaic.graph import ChunkContext

    if node.group_by == "grid":  # one scene per step: its pixels as stored, in the file's dtype
        run = replace(spec, nodata=spec.nodata if spec.nodata is not None else 0.0)
        native = True
    else:  # fused as load fuses (native dtype for first/last when the sources agree)
        run, native = spec, spec.native and node.method in ("first", "last")
    ctx = ChunkContext(
        crs=node.crs_wkt,
        method=node.method,
        resampling="nearest",
        band=run,
        on_error="raise",
        max_concurrency=plan.max_concurrency,
        gdal_options=plan.gdal_options,
        native=native,
        auth=plan.auth,
    )
    name = f"mosaic-tree-{spec.name}-{tokenize(token, spec.name, plan.max_concurrency)}"
    graph = HighLevelGraph.from_collections(name, _NodeBlocks(name, node, spec, ctx), dependencies=())
    ny, nx = node.chunk_grid
    cy, cx = node.chunks
    ychunks = tuple(min(cy, node.shape[0] - i * cy) for i in range(ny))
    xchunks = tuple(min(cx, node.shape[1] - i * cx) for i in range(nx))
    return da.Array(  # type: ignore[no-untyped-call]  # dask's Array.__new__ is unannotated
        graph, name, chunks=((1,) * len(node.steps), ychunks, xchunks), dtype=spec.dtype
    )


def node_dataset(node: TreeNode, plan: TreePlan) -> xr.Dataset:
    """The lazy Dataset of one node: a (time, y, x) variable per band, coordinates, CRS and provenance.

    Per time step: ``scene_id``, ``footprint`` (lon/lat WKT) and ``<band>_href`` coordinates (with
    ``group_by="crs"``: ``scene_ids``, ``footprint`` of their union and ``<band>_hrefs``, JSON lists).
    """
    import shapely
    import xarray as xr
    from dask.base import tokenize
    from odc.geo.xr import xr_coords

    from mosaic.api import _nodata_value

    coords: dict[str, Any] = {
        str(k): v for k, v in xr_coords(node.geobox, crs_coord_name="spatial_ref", dims=("y", "x")).items()
    }
    coords["time"] = xr.DataArray(np.array(node.times, dtype="datetime64[ns]"), dims=("time",))
    grid = node.group_by == "grid"

    def per_step(values: Sequence[Any]) -> Any:
        return xr.DataArray(np.array(values, dtype=object), dims=("time",))  # (no fixed-width copies)

    ids = [[s.id for s in step.scenes] for step in node.steps]
    footprints = [
        shapely.to_wkt(shapely.union_all([s.footprint for s in step.scenes]), rounding_precision=6)
        for step in node.steps
    ]
    coords["scene_id" if grid else "scene_ids"] = per_step([i[0] if grid else json.dumps(i) for i in ids])
    coords["footprint"] = per_step(footprints)
    data_vars = {}
    token = tokenize(node)  # (once: a node of many steps is long to hash)
    for spec in node.bands:
        hrefs = [
            [redact(src.read.href) for s in step.scenes if (src := s.source(spec.name)) is not None]
            for step in node.steps
        ]
        if grid:
            coords[f"{spec.name}_href"] = per_step([h[0] if h else "" for h in hrefs])
        else:
            coords[f"{spec.name}_hrefs"] = per_step([json.dumps(h) for h in hrefs])
        attrs: dict[str, Any] = {"asset": spec.asset, "asset_band": spec.band, "grid_mapping": "spatial_ref"}
        if spec.nodata is not None:  # unmasked data: nodata in attrs, as load sets it
            attrs["nodata"] = attrs["_FillValue"] = _nodata_value(spec)
        if spec.scale not in (None, 1.0):
            attrs["scale_factor"] = spec.scale
        if spec.offset not in (None, 0.0):
            attrs["add_offset"] = spec.offset
        if spec.physical:
            attrs["units_note"] = "physical values: each scene's own scale/offset applied (they differ)"
        data_vars[spec.name] = xr.DataArray(
            _band_array(node, spec, plan, token), dims=("time", "y", "x"), attrs=attrs
        )
    attrs = {
        "crs": node.crs,
        "grid": node.grid,
        "grid_code": node.code or "",
        "group_by": node.group_by,
        "transform": list(node.transform),
        "shape": list(node.shape),
        "chunks": list(node.chunks),
        "scenes": len({s.id for step in node.steps for s in step.scenes}),
    }
    if not grid:
        attrs["method"] = node.method if isinstance(node.method, str) else "callable"
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def open_tree(
    index: Any,
    *,
    bbox: BBox | Sequence[float] | None = None,
    time: TimeLike = None,
    bands: Sequence[str] | str | None = None,
    bbox_crs: Any = "EPSG:4326",
    group_by: str = "grid",
    chunks: int | tuple[int, int] | Mapping[str, int] | None = None,
    method: str | Callable[..., Any] = "first",
    groupby: str | None = "solar_day",
    max_concurrency: int | None = None,
    gdal_options: Mapping[str, Any] | None = None,
    auth: Profile | Sequence[Profile] | None = None,
    filter: Any = None,
) -> xr.DataTree:
    """Every selected scene on its own native grid, as a lazy ``xarray.DataTree``: no resampling.

    Args:
        index: a TileIndex, the path of a saved index, or STAC Items (as :func:`mosaic.load`).
        bbox: (minx, miny, maxx, maxy) in ``bbox_crs``: the scenes whose footprints it touches (their
            whole grids; slice a node with ``.sel``/``.isel`` for less).
        time: a date, partial date, ``"start/end"`` or ``(start, end)``.
        bands: asset names, ``asset.N`` or STAC common names, as :func:`mosaic.load`; each lands in the
            nodes of the grids its files are on.
        bbox_crs: CRS of ``bbox``.
        group_by: ``"grid"``: a node per distinct native grid (CRS + transform + shape), its scenes
            stacked along ``time``, one per step, their pixels exactly as stored; ``"crs"``: a node per
            CRS, resolution and pixel phase, the scenes placed on the union of their grids and fused per
            time group with ``method``.
        chunks: chunk size in pixels (int, (y, x) or {"y":, "x":}); default: the files' internal tiling,
            so one chunk is one tile of a COG.
        method: with ``group_by="crs"``: how overlapping scenes of a time group fuse (as :func:`mosaic.load`:
            ``first``, ``last``, ``min``, ``max``, ``mean``, ``median``, ``count`` or a callable).
        groupby: with ``group_by="crs"``: the time groups (as :func:`mosaic.load`).
        max_concurrency: bound on simultaneous reads per process (the limiter :func:`mosaic.load` uses).
        gdal_options: GDAL configuration options entered inside every read.
        auth: credential profiles (:mod:`mosaic.auth`) matched by href prefix.
        filter: only the scenes for which this CQL2 filter is true, as :func:`mosaic.load`.

    Returns:
        A DataTree: ``/<crs>/<grid>`` nodes (see :mod:`mosaic.outputs.tree` for the names), each a Dataset of
        (time, y, x) variables with pixel-centre coordinates, a ``spatial_ref`` grid mapping (rioxarray,
        odc-geo), nodata in attrs, and per time step the scene ids, footprints and hrefs; the root's
        attrs summarise the index and the tree.

    Raises:
        InvalidInputError: a malformed argument (an unknown ``group_by``, a band no selected scene has).
        NoDataError: no scene with a file matches ``bbox`` and ``time``.
    """
    plan = plan_tree(
        index,
        bbox=bbox,
        time=time,
        bands=bands,
        bbox_crs=bbox_crs,
        group_by=group_by,
        chunks=chunks,
        method=method,
        groupby=groupby,
        max_concurrency=max_concurrency,
        gdal_options=gdal_options,
        auth=auth,
        filter=filter,
    )
    return tree_of(plan)


def tree_of(plan: TreePlan) -> xr.DataTree:
    """The lazy DataTree that executes ``plan``."""
    import xarray as xr

    parts: dict[str, xr.Dataset] = {}
    for crs in sorted({n.crs for n in plan.nodes}):
        wkt = next(n.crs_wkt for n in plan.nodes if n.crs == crs)
        parts[f"/{crs}"] = xr.Dataset(attrs={"crs": crs, "crs_wkt": wkt})
    for node in plan.nodes:
        parts[node.path] = node_dataset(node, plan)
    summary = plan.summary()
    root = xr.Dataset(
        attrs={
            "index": redact(plan.index_source) if plan.index_source else "in-memory TileIndex",
            "group_by": plan.group_by,
            "nodes": len(plan.nodes),
            "crs": summary["crs"],
            "scenes": len(plan.scenes),
            "index_rows": plan.rows,
            "time_range": [t or "" for t in plan.time_range],
            "bands": sorted({b.name for n in plan.nodes for b in n.bands}),
            "tree_summary": json.dumps(summary),
        }
    )
    return xr.DataTree.from_dict({"/": root, **parts})
