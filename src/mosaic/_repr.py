"""Short text and notebook HTML views of plans and tile indexes, bounded in size whatever they hold.

``repr(plan)`` and ``repr(index)`` are a few lines whether a plan has ten reads or a million: lists
(CRSs, bands, assets) show their first few entries and how many more there are, and long names (a
CRS given as WKT) are cut. The ``_repr_html_`` tables Jupyter shows hold the same facts with a few
more entries, every value escaped. :func:`index_facts` is also what ``mosaic index info`` prints.

No view shows a secret: hrefs and index paths go through :func:`mosaic.io.paths.redact`, and the
records that hold hrefs (index rows, reads, GTI tiles) have reprs that redact them too
(:func:`record_repr`), as dask and ``distributed`` print task arguments.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from mosaic.io.paths import redact

if TYPE_CHECKING:
    from mosaic.index.tile_index import TileIndex
    from mosaic.planning.planner import Plan, Read

__all__ = [
    "asset_info",
    "human_bytes",
    "index_facts",
    "index_html",
    "index_repr",
    "iso_utc",
    "plan_html",
    "plan_repr",
    "plural",
    "read_text",
    "record_repr",
    "short_crs",
    "window_text",
]

_NAME = 32
"""Longest name (CRS, band, asset, method) shown before it is cut."""
_TEXT_ITEMS = 3
"""Entries of a list in a text repr (then "+N more")."""
_HTML_ITEMS = 20
"""Entries of a list in an HTML table (then "... N more")."""


# ------------------------------------------------------------------------------------------ values


def human_bytes(n: float) -> str:
    """``1536`` to ``"1.5 KiB"`` (binary units, one decimal; whole bytes below 1 KiB)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"


def _cut(text: str, width: int = _NAME) -> str:
    """``text`` on one line, at most ``width`` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


@lru_cache(maxsize=256)
def short_crs(crs: str, width: int = _NAME) -> str:
    """A CRS as people read it: ``"EPSG:32633"`` as is, a WKT or PROJ string by its name, cut to ``width``."""
    text = str(crs).strip()
    if len(text) <= width and "[" not in text and "+" not in text:
        return text
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        parsed = CRS.from_user_input(text)
    except CRSError:
        return _cut(text, width)
    authority = parsed.to_authority(min_confidence=100)
    name = f"{authority[0]}:{authority[1]}" if authority else parsed.name
    return _cut(text if name in (None, "", "unknown") else name, width)


def _number(value: float | None) -> str:
    """A nodata value or a pixel size: ``none``, ``nan``, ``0``, ``-9999``, ``0.0002``."""
    if value is None:
        return "none"
    return "nan" if math.isnan(value) else f"{value:g}"


def record_repr(record: Any) -> str:
    """A dataclass's repr with its ``href`` redacted (as the generated repr, field for field)."""
    shown = []
    for f in dataclasses.fields(record):
        if not f.repr:
            continue
        value = getattr(record, f.name)
        text = repr(redact(value)) if f.name == "href" and isinstance(value, str) else repr(value)
        shown.append(f"{f.name}={text}")
    return f"{type(record).__qualname__}({', '.join(shown)})"


def plural(n: int, noun: str) -> str:
    """``"1 time step"``, ``"3 time steps"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _listing(items: Sequence[str], limit: int) -> str:
    """The first ``limit`` items, comma separated, then ``+N more``."""
    shown = ", ".join(items[:limit])
    return shown + (f", +{len(items) - limit} more" if len(items) > limit else "")


def _counted(counts: Mapping[str, int], limit: int) -> str:
    """``"EPSG:32632: 3, EPSG:32633: 3, +2 more"``, most first."""
    return _listing([f"{name}: {n}" for name, n in counts.items()], limit)


def _most_first(counts: Mapping[str, int]) -> dict[str, int]:
    """The counts, most first, ties in name order."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def iso_utc(value: Any) -> str | None:
    """A timestamp as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (fractions kept); None and NaT are None."""
    import pandas as pd

    if value is None or pd.isna(value):
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    text = str(ts.strftime("%Y-%m-%dT%H:%M:%S"))
    return text + (f".{ts.microsecond:06d}" if ts.microsecond else "") + "Z"


def _span(lo: str | None, hi: str | None, *, dates: bool = False) -> str:
    """``"2024-06-01 .. 2024-06-21"`` from two ISO times (their dates when ``dates``)."""
    if lo is None and hi is None:
        return "no time"
    lo_, hi_ = (lo or "?"), (hi or "?")
    if dates:
        lo_, hi_ = lo_[:10], hi_[:10]
    return lo_ if lo_ == hi_ else f"{lo_} .. {hi_}"


def window_text(rows: tuple[int, int], cols: tuple[int, int]) -> str:
    """``"rows 0:256, cols 128:384"``: half-open pixel ranges, as NumPy slices."""
    return f"rows {rows[0]}:{rows[1]}, cols {cols[0]}:{cols[1]}"


def _box_text(box: tuple[int, int, int, int]) -> str:
    """A (row_off, col_off, height, width) box as :func:`window_text`."""
    r, c, h, w = (int(v) for v in box)
    return window_text((r, r + h), (c, c + w))


def read_text(read: Read) -> str:
    """One read for people: scene, band, CRS, its window in the source grid and its box in the chunk.

    The window is given in the pixel grid of the level read (full resolution or an overview), the
    box in the chunk's own pixels: ``S2A [B02 b1] EPSG:32633: rows 10:138, cols 0:256 of its x2
    overview (level 0) -> chunk rows 0:128, cols 30:128``.
    """
    if read.factor == 1:
        grid = "full-resolution grid"
    elif read.overview >= 0:
        grid = f"x{read.factor} overview (level {read.overview})"
    else:
        grid = f"grid decimated x{read.factor} (GDAL picks the overview)"
    lands = "anywhere in the chunk" if read.target is None else f"chunk {_box_text(read.target)}"
    return (
        f"{read.scene} [{read.asset} b{read.band}] {short_crs(read.crs)}: "
        f"{_box_text(read.window)} of its {grid} -> {lands}"
    )


# ------------------------------------------------------------------------------------------- HTML


def _cell(value: str | Sequence[str]) -> str:
    """A table cell's content: one escaped text, or escaped lines (at most ``_HTML_ITEMS``)."""
    if isinstance(value, str):
        return html.escape(value)
    lines = [html.escape(v) for v in value[:_HTML_ITEMS]]
    if len(value) > _HTML_ITEMS:
        lines.append(f"\u2026 {len(value) - _HTML_ITEMS} more")
    return "<br/>".join(lines) if lines else "-"


def _table(caption: str, rows: Sequence[tuple[str, str | Sequence[str]]]) -> str:
    """A two-column HTML table (well-formed XHTML: every tag closed, every value escaped)."""
    left = 'style="text-align: left; vertical-align: top; padding-right: 1em"'
    body = "".join(
        f"<tr><th {left}>{html.escape(name)}</th>"
        f'<td style="text-align: left; vertical-align: top">{_cell(value)}</td></tr>'
        for name, value in rows
    )
    return (
        f'<div class="mosaic-repr"><table><caption style="text-align: left"><strong>'
        f"{html.escape(caption)}</strong></caption><tbody>{body}</tbody></table></div>"
    )


# ------------------------------------------------------------------------------------------- plans


def _plan_facts(plan: Plan) -> dict[str, Any]:
    """What the repr and HTML of a plan say, in one pass over its reads."""
    summary = plan.summary()
    scenes_by_crs: dict[str, set[str]] = defaultdict(set)
    spatial: set[tuple[int, int]] = set()
    for task in plan.tasks:
        spatial.add((task.iy, task.ix))
        for read in (*task.reads, *task.aux):
            scenes_by_crs[read.crs].add(read.scene)
    crs_counts: Counter[str] = Counter()
    for crs, scenes in scenes_by_crs.items():
        crs_counts[short_crs(crs)] += len(scenes)
    times = np.array([t for t in plan.times if not np.isnat(t)], dtype="datetime64[ns]")
    lo = hi = None
    if len(times):
        midnight = bool(np.all(times == times.astype("datetime64[D]")))
        ends = np.datetime_as_string(np.array([times.min(), times.max()]), unit="D" if midnight else "m")
        lo, hi = str(ends[0]), str(ends[1])
    gy, gx = plan.chunk_grid
    rx, ry = (abs(v) for v in summary["resolution"])
    return {
        **summary,
        "crs_counts": _most_first(crs_counts),
        "time_span": "no time step" if not plan.times else _span(lo, hi),
        "chunks_read": len(spatial),
        "chunks_all": gy * gx,
        "pixel": _number(rx) if rx == ry else f"{_number(rx)} x {_number(ry)}",
        "grid_crs": short_crs(str(plan.geobox.crs)),
        "band_lines": [f"{_cut(b.name)}: {b.dtype}, nodata {_number(b.nodata)}" for b in plan.bands],
        "method_name": _cut(summary["method"]),
    }


def plan_repr(plan: Plan) -> str:
    """A few lines: scenes and CRSs, times, grid, chunks, bands, reads and bytes (bounded in size)."""
    f = _plan_facts(plan)
    t, ny, nx = f["shape"]
    crs = (
        f" in {plural(len(f['crs_counts']), 'CRS')} ({_counted(f['crs_counts'], _TEXT_ITEMS)})"
        if f["crs_counts"]
        else ""
    )
    bands = _listing([f"{_cut(b.name)} {b.dtype}" for b in plan.bands], 2 * _TEXT_ITEMS) or "none"
    cy, cx = plan.chunks
    return (
        f"<Plan: {plural(f['scenes'], 'scene')}{crs}; {plural(t, 'time step')}, {f['time_span']}\n"
        f"  grid {ny} x {nx} px in {f['grid_crs']}, pixel {f['pixel']}; chunks {cy} x {cx}, "
        f"{f['chunks_read']} of {f['chunks_all']} read\n"
        f"  bands {bands}\n"
        f"  {plural(f['reads'], 'read')}, ~{human_bytes(f['estimated_read_bytes'])} read, "
        f"{human_bytes(f['output_bytes'])} output; {f['method_name']}, {plan.resampling}>"
    )


def plan_html(plan: Plan) -> str:
    """The plan as an HTML table for notebooks."""
    f = _plan_facts(plan)
    t, ny, nx = f["shape"]
    cy, cx = plan.chunks
    overviews = ", ".join(f"x{k}: {v}" for k, v in f["overview_factors"].items()) or "-"
    rows: list[tuple[str, str | Sequence[str]]] = [
        ("index", redact(plan.index_source) if plan.index_source else "in memory"),
        ("scenes", str(f["scenes"])),
        ("CRSs (scenes)", [f"{name}: {n}" for name, n in f["crs_counts"].items()]),
        ("time steps", f"{t}: {f['time_span']}"),
        ("grid", f"{t} x {ny} x {nx} (time, y, x) in {f['grid_crs']}, pixel {f['pixel']}"),
        ("chunks", f"{cy} x {cx} px; {f['chunks_read']} of {f['chunks_all']} read"),
        ("bands", f["band_lines"]),
        ("reads", f"{f['reads']} windows of {f['assets_read']} assets; overview factors {overviews}"),
        ("bytes read", f"~{human_bytes(f['estimated_read_bytes'])}"),
        ("output bytes", human_bytes(f["output_bytes"])),
        ("method", f"{f['method_name']}, resampling {plan.resampling}"),
    ]
    return _table("mosaic.Plan", rows)


# ----------------------------------------------------------------------------------------- indexes


def _time_range(idx: TileIndex) -> tuple[str | None, str | None]:
    """Earliest start and latest end of the rows (``datetime``, else ``start/end_datetime``)."""
    import pyarrow.compute as pc

    table = idx.table
    start = pc.coalesce(table.column("start_datetime"), table.column("datetime"))
    end = pc.coalesce(table.column("end_datetime"), table.column("datetime"))
    return iso_utc(pc.min(start).as_py()), iso_utc(pc.max(end).as_py())


def _value_counts(idx: TileIndex, column: str, missing: str = "unknown") -> dict[str, int]:
    """How many rows hold each value of ``column`` (``missing`` for nulls), most first."""
    import pyarrow.compute as pc

    counts: Counter[str] = Counter()
    for entry in pc.value_counts(idx.table.column(column)).to_pylist():
        value = entry["values"]
        name = missing if value is None else _number(value) if isinstance(value, float) else str(value)
        counts[name] += int(entry["counts"])
    return _most_first(counts)


def index_facts(idx: TileIndex) -> dict[str, Any]:
    """Facts about an index as plain JSON types: counts, CRSs, time range, extent, dtypes, assets.

    The CRSs are given as stored (EPSG codes or WKT), with their row counts, most first.
    """
    import pyarrow.compute as pc
    import shapely

    table = idx.table
    extent = [float(v) for v in shapely.total_bounds(idx.footprints)] if len(idx) else None
    return {
        "path": None if idx.source is None else redact(idx.source),
        "rows": len(idx),
        "scenes": len(pc.unique(table.column("id"))),
        "crs": _value_counts(idx, "crs"),
        "time_range": list(_time_range(idx)),
        "extent": extent,
        "dtypes": _value_counts(idx, "dtype"),
        "assets": dict(sorted(_value_counts(idx, "asset").items())),
        "asset_info": asset_info(idx),
        "skipped": [{"href": redact(s.href), "reason": redact(s.reason)} for s in idx.skipped],
    }


def asset_info(idx: TileIndex) -> dict[str, dict[str, list[Any]]]:
    """Per asset, the distinct dtypes, nodata values, band counts and common names of its rows.

    An unknown dtype is ``"unknown"``, no nodata ``None`` and a NaN nodata ``"nan"`` (JSON has no NaN).
    """
    import math

    table = idx.table
    columns = ("asset", "dtype", "nodata", "band_count", "common_names")
    seen: dict[str, dict[str, set[Any]]] = {}
    for asset, dtype, nodata, count, common in zip(
        *(table.column(c).to_pylist() for c in columns), strict=True
    ):
        facts = seen.setdefault(asset, {k: set() for k in columns[1:]})
        facts["dtype"].add(dtype if dtype is not None else "unknown")
        facts["nodata"].add("nan" if nodata is not None and math.isnan(nodata) else nodata)
        facts["band_count"].add(count)
        facts["common_names"].add(tuple(common or ()))
    return {
        asset: {
            key: [
                list(v) if isinstance(v, tuple) else v
                for v in sorted(values, key=lambda v: (str(type(v)), v))
            ]
            for key, values in facts.items()
        }
        for asset, facts in sorted(seen.items())
    }


def index_repr(idx: TileIndex) -> str:
    """One line: where from, assets of how many scenes, CRSs with their row counts, time range."""
    where = f" from {_cut(redact(idx.source), 80)}" if idx.source else ""
    if len(idx) == 0:
        return f"<TileIndex{where}: empty>"
    import pyarrow.compute as pc

    # (not index_facts: the extent is not shown here, and costs a pass over every footprint)
    assets = _listing([_cut(a) for a in sorted(_value_counts(idx, "asset"))], 2 * _TEXT_ITEMS)
    crs = _by_count_of(_value_counts(idx, "crs"))
    scenes = len(pc.unique(idx.table.column("id")))
    skipped = f", {plural(len(idx.skipped), 'input')} skipped" if idx.skipped else ""
    return (
        f"<TileIndex{where}: {plural(len(idx), 'asset')} ({assets}) of {plural(scenes, 'scene')} "
        f"in {plural(len(crs), 'CRS')} "
        f"({_counted(crs, _TEXT_ITEMS)}), {_span(*_time_range(idx), dates=True)}{skipped}>"
    )


def _by_count_of(counts: Mapping[str, int]) -> dict[str, int]:
    """Row counts per CRS keyed by short CRS names (two WKTs of one name add up), most first."""
    merged: Counter[str] = Counter()
    for crs, n in counts.items():
        merged[short_crs(crs)] += n
    return _most_first(merged)


def index_html(idx: TileIndex) -> str:
    """The index as an HTML table for notebooks."""
    if len(idx) == 0:
        return _table("mosaic.TileIndex", [("source", redact(idx.source or "-")), ("rows", "0")])
    f = index_facts(idx)
    extent = f["extent"]
    rows: list[tuple[str, str | Sequence[str]]] = [
        ("source", redact(idx.source) if idx.source else "in memory"),
        ("rows", f"{f['rows']} assets of {f['scenes']} scenes"),
        ("CRSs (assets)", [f"{name}: {n}" for name, n in _by_count_of(f["crs"]).items()]),
        ("time range", _span(*f["time_range"])),
        (
            "extent (lon/lat)",
            "-" if extent is None else ", ".join(f"{v:.4f}" for v in extent) + " (west, south, east, north)",
        ),
        ("assets", [f"{_cut(name)}: {n}" for name, n in f["assets"].items()]),
        ("dtypes", [f"{name}: {n}" for name, n in f["dtypes"].items()]),
        ("nodata", [f"{name}: {n}" for name, n in _value_counts(idx, "nodata", "none").items()]),
    ]
    if f["skipped"]:
        rows.append(("skipped", [f"{_cut(s['href'], 80)}: {_cut(s['reason'], 120)}" for s in f["skipped"]]))
    return _table("mosaic.TileIndex", rows)
