"""Tile index at scale: a year of Sentinel-2 over land (the MGRS grid x 73 dates, ~1.34 million rows).

Builds the index (the real MGRS grid from ``../shared/data/real/`` replicated over every 5th day of
2024), writes it as GeoParquet with :meth:`TileIndex.write`, then times, each in a fresh process and as
the median of several runs:

* reading the whole index (``TileIndex.read(path)``);
* a cold query: open + query one 1-degree box and one month
  (``TileIndex.read(path, bbox=box, time="2024-06").query(box, time="2024-06")``), with the row groups
  and bytes actually read;
* a warm query on the whole index in memory, after one warm-up query that builds the STRtree;
* the same reads with ``proto_read``, a prototype of a faster ``TileIndex.read`` (same rows).

``--compare-layouts`` also writes the same rows in other on-disk layouts (row group size, sort order)
and repeats the cold query on each: evidence for tuning :meth:`TileIndex.write`.

Run from the project root: ``.venv/bin/python benchmarks/index_scale.py [--quick] [--compare-layouts]``.
Outputs go to ``benchmarks/output/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import shapely

from mosaic.index._store import find_index_files, read_tables
from mosaic.index.geom import bbox_to_lonlat
from mosaic.index.tile_index import _FORMAT_VERSION, ROW_GROUP_SIZE, SCHEMA, TileIndex
from mosaic.times import parse_time

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "output"
GRID_PARQUET = ROOT / "tile_indexes" / "sentinel2_grid.parquet"
MONTH = "2024-06"

# 1-degree boxes (lon/lat; minx > maxx crosses the antimeridian).
BOXES = {
    "Europe (Bavaria)": (11.0, 48.0, 12.0, 49.0),
    "UTM seam 12E 45N": (11.5, 44.5, 12.5, 45.5),
    "antimeridian 65N": (179.5, 64.5, -179.5, 65.5),
    "high latitude (Svalbard)": (15.0, 78.0, 16.0, 79.0),
}


# ------------------------------------------------------------------------------------ building


def base_index() -> TileIndex:
    """The 18,367-tile MGRS planning index (the committed file, else rebuilt from the shapefile)."""
    if GRID_PARQUET.exists():
        return TileIndex.read(GRID_PARQUET)
    sys.path.insert(0, str(ROOT / "tile_indexes"))
    import build_sentinel2_grid

    return build_sentinel2_grid.build(build_sentinel2_grid.SHAPEFILE, None)


def dates(n: int = 73) -> list[dt.datetime]:
    """Every 5th day of 2024 from January 1st, 10:30 UTC (73 dates), or ``n`` of them spread over the year."""
    start = dt.datetime(2024, 1, 1, 10, 30, tzinfo=dt.UTC)
    every = [start + dt.timedelta(days=5 * k) for k in range(73)]
    pick = np.unique(np.round(np.linspace(0, 72, max(1, min(n, 73)))).astype(int))
    return [every[k] for k in pick]


def replicate(base: TileIndex, when: list[dt.datetime]) -> TileIndex:
    """The base index once per date, with Sentinel-2-like ids, in :meth:`TileIndex.write`'s canonical order.

    There is no public bulk constructor for prebuilt columns: from_records would make 1.34 million
    SceneAsset objects. Instead the Arrow table is repeated with new ``id``/``datetime`` columns, the
    footprints are tiled, and ``TileIndex(table, geometry)`` is built directly. Rows are laid out
    tile-major (each tile's dates together, tiles in the base index's Hilbert order), which is the order
    ``TileIndex._sorted`` gives (Hilbert index of the footprint centre, then time, id, asset).
    """
    n, k = len(base), len(when)
    table = base.table
    order = np.repeat(np.arange(n), k)  # tile-major
    big = table.take(pa.array(order))
    stamps = np.tile(np.array([d.replace(tzinfo=None) for d in when], dtype="datetime64[us]"), n)
    day = np.tile(np.array([d.strftime("%Y%m%d") for d in when], dtype=object), n)
    tile = big.column("id").to_numpy(zero_copy_only=False)
    ids = pc.binary_join_element_wise("S2_MSIL2A_", pa.array(day), "_T", pa.array(tile), "")
    big = big.set_column(big.schema.get_field_index("id"), "id", ids)
    big = big.set_column(
        big.schema.get_field_index("datetime"), "datetime", pa.array(stamps, pa.timestamp("us", tz="UTC"))
    )
    big = big.combine_chunks()
    return TileIndex(big, base.footprints[order], source=None)


def reorder(index: TileIndex, layout: str) -> TileIndex:
    """The same rows in another on-disk order (for --compare-layouts)."""
    if layout == "canonical":
        return index
    fps = index.footprints
    bounds = shapely.bounds(fps)
    crossing = (bounds[:, 2] - bounds[:, 0]) > 180.0  # split at 180: bbox covers all longitudes
    when = pc.cast(index.table.column("datetime"), pa.int64()).to_numpy()
    pos = np.arange(len(index))
    if layout == "crossing-last":
        # canonical order, but rows whose footprint is split at 180 gathered at the end
        order = np.lexsort((pos, crossing))
    elif layout == "time-major":
        order = np.lexsort((pos, when))
    else:
        raise ValueError(layout)
    return index.take(order)


# ------------------------------------------------------------- prototypes (proposed for index.py)


def proto_read(path: Path, bbox=None, time_=None, *, dictionary: bool = True) -> TileIndex:
    """Proposed ``TileIndex.read``: prune row groups from footer statistics, decode each distinct WKB once.

    Same rows as ``TileIndex.read(path, bbox=, time=)`` (the same superset test, row by row), but
    (1) row groups are chosen with NumPy from the footer statistics of ``bbox.*`` and ``datetime``
    instead of by pyarrow.dataset, whose first filtered scan costs ~0.3 ms per row group; and (2) the
    geometry column is read as a dictionary (``read_dictionary``), so a footprint repeated over many
    dates is decoded from WKB once per row group rather than once per row.
    """
    pf = pq.ParquetFile(path, read_dictionary=["geometry"] if dictionary else None)
    md = pf.metadata
    n = md.num_row_groups
    leaf = {md.schema.column(i).path: i for i in range(md.num_columns)}

    def stats(name: str, attr: str) -> np.ndarray:
        j = leaf[name]
        return np.array([getattr(md.row_group(g).column(j).statistics, attr) for g in range(n)])

    keep = np.ones(n, dtype=bool)
    parts = []
    if bbox is not None:
        area = bbox_to_lonlat(bbox)
        parts = [p.bounds for p in getattr(area, "geoms", [area])]
        xmin, ymin = stats("bbox.xmin", "min"), stats("bbox.ymin", "min")
        xmax, ymax = stats("bbox.xmax", "max"), stats("bbox.ymax", "max")
        spatial = np.zeros(n, dtype=bool)
        for x0, y0, x1, y1 in parts:
            spatial |= (xmin <= x1) & (xmax >= x0) & (ymin <= y1) & (ymax >= y0)
        keep &= spatial
    start, end = parse_time(time_)
    if start is not None or end is not None:
        tmin = np.array([np.nan if v is None else v.timestamp() for v in stats("datetime", "min")])
        tmax = np.array([np.nan if v is None else v.timestamp() for v in stats("datetime", "max")])
        ok = np.ones(n, dtype=bool)
        if start is not None:
            ok &= tmax >= start.timestamp()
        if end is not None:
            ok &= tmin < end.timestamp()
        loose = (stats("datetime", "null_count") > 0) | (stats("start_datetime", "num_values") > 0)
        loose |= stats("end_datetime", "num_values") > 0
        keep &= ok | loose
    groups = np.flatnonzero(keep).tolist()
    table = pf.read_row_groups(groups, columns=[*SCHEMA.names, "geometry", "bbox"])
    rows = np.ones(len(table), dtype=bool)
    if parts:
        b = table.column("bbox")
        x0, y0, x1, y1 = (pc.struct_field(b, k).to_numpy() for k in ("xmin", "ymin", "xmax", "ymax"))
        spatial = np.zeros(len(table), dtype=bool)
        for px0, py0, px1, py1 in parts:
            spatial |= (x0 <= px1) & (x1 >= px0) & (y0 <= py1) & (y1 >= py0)
        rows &= spatial
    if start is not None or end is not None:
        when = table.column("datetime")
        us = pc.cast(pc.fill_null(when, 0), pa.int64()).to_numpy()
        ok = np.ones(len(table), dtype=bool)
        if start is not None:
            ok &= us >= start.value // 1000
        if end is not None:
            ok &= us < end.value // 1000
        loose = when.is_null().to_numpy(zero_copy_only=False)
        loose |= table.column("start_datetime").is_valid().to_numpy(zero_copy_only=False)
        loose |= table.column("end_datetime").is_valid().to_numpy(zero_copy_only=False)
        rows &= ok | loose
    table = table.filter(pa.array(rows))
    geometry = []
    for chunk in table.column("geometry").chunks:
        if dictionary:  # decode the distinct WKBs only
            decoded = shapely.from_wkb(chunk.dictionary.to_numpy(zero_copy_only=False))
            geometry.append(decoded[chunk.indices.to_numpy(zero_copy_only=False)])
        else:
            geometry.append(shapely.from_wkb(chunk.to_numpy(zero_copy_only=False)))
    geoms = np.concatenate(geometry) if geometry else np.empty(0, dtype=object)
    table = table.drop_columns(["geometry", "bbox"]).cast(SCHEMA).combine_chunks()
    return TileIndex(table, np.asarray(geoms, dtype=object), source=str(path))


VARIANTS = (("current", ()), ("proto", ("--proto",)), ("proto-nodict", ("--proto", "--no-dict")))


def current_read(path: Path, bbox=None, time_=None) -> TileIndex:
    return TileIndex.read(path, bbox=bbox, time=time_)


def query(index: TileIndex, bbox, time_=None) -> TileIndex:
    return index.query(bbox, time=time_)


# ------------------------------------------------------------------------------------- children


def _rchar() -> int | None:
    """Bytes this process has read through read() calls so far (Linux), page cache hits included."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    path = Path(args.path)
    read = proto_read if args.proto else current_read
    if args.proto and args.no_dict:
        read = functools.partial(proto_read, dictionary=False)
    out: dict[str, object] = {}
    if args.child == "read":
        r0 = _rchar()
        c0, t0 = time.process_time(), time.perf_counter()
        idx = read(path)
        out["read_s"] = time.perf_counter() - t0
        out["cpu_s"] = time.process_time() - c0
        out["rows"] = len(idx)
        out["bytes_read"] = None if r0 is None else _rchar() - r0  # type: ignore[operator]
    elif args.child == "read-profile":  # the steps of TileIndex.read, timed one by one
        t0 = time.perf_counter()
        table = pads.dataset(path, format="parquet").to_table(columns=[*SCHEMA.names, "geometry"])
        t1 = time.perf_counter()
        wkb = table.column("geometry").to_numpy(zero_copy_only=False)
        geometry = shapely.from_wkb(wkb)
        t2 = time.perf_counter()
        table = table.drop_columns(["geometry"]).cast(SCHEMA).combine_chunks()
        t3 = time.perf_counter()
        idx = TileIndex(table, np.asarray(geometry, dtype=object))
        idx._strtree()
        t4 = time.perf_counter()
        out.update(parquet_s=t1 - t0, wkb_s=t2 - t1, cast_combine_s=t3 - t2, strtree_s=t4 - t3)
    elif args.child == "cold":
        bbox = tuple(float(v) for v in args.box.split(","))
        r0 = _rchar()
        c0, t0 = time.process_time(), time.perf_counter()
        candidates = read(path, bbox, args.time)
        t1 = time.perf_counter()
        result = query(candidates, bbox, args.time)
        t2 = time.perf_counter()
        out.update(
            total_s=t2 - t0,
            cpu_s=time.process_time() - c0,
            read_s=t1 - t0,
            query_s=t2 - t1,
            candidates=len(candidates),
            rows=len(result),
            ids=sorted(result.table.column("id").to_pylist()),
            bytes_read=None if r0 is None else _rchar() - r0,  # type: ignore[operator]
        )
    elif args.child == "warm":
        idx = read(path)
        boxes = [tuple(float(v) for v in b.split(",")) for b in args.box.split(";")]
        t0 = time.perf_counter()
        query(idx, boxes[0], args.time)  # builds the STRtree and the time bounds
        out["warmup_s"] = time.perf_counter() - t0
        per_box = []
        for bbox in boxes:
            times, rows = [], 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                rows = len(query(idx, bbox, args.time))
                times.append(time.perf_counter() - t)
            per_box.append({"median_s": statistics.median(times), "min_s": min(times), "rows": rows})
        out["boxes"] = per_box
    print(json.dumps(out))


def run_child(kind: str, path: Path, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--path", str(path), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# ------------------------------------------------------------------------------------- analysis


def row_group_stats(path: Path) -> dict:
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    xmin, xmax = names.index("bbox.xmin"), names.index("bbox.xmax")
    global_x = sum(
        1
        for g in range(meta.num_row_groups)
        if meta.row_group(g).column(xmin).statistics.min < -179.0
        and meta.row_group(g).column(xmax).statistics.max > 179.0
    )
    return {"row_groups": meta.num_row_groups, "rows": meta.num_rows, "global_x_row_groups": global_x}


def pruning(path: Path, bbox, time_: str | None) -> dict:
    """Row groups (and their rows and compressed bytes) that ``TileIndex.read`` reads for this query."""
    area = bbox_to_lonlat(bbox)
    parts = [p.bounds for p in getattr(area, "geoms", [area])]
    start, end = parse_time(time_)
    _, report = read_tables(
        find_index_files(str(path)),
        parts=parts,
        start=start,
        end=end,
        schema_names=SCHEMA.names,
        version_max=_FORMAT_VERSION,
    )
    meta = pq.ParquetFile(path).metadata
    return {
        "groups": report.row_groups_read,
        "of": meta.num_row_groups,
        "rows": report.rows_read,
    }


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


# ----------------------------------------------------------------------------------------- main


def environment() -> dict[str, str]:
    import geopandas
    import pandas
    import pyproj

    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            mem = f"{kb / 1024**2:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "ram": mem,
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "shapely": f"{shapely.__version__} (GEOS {shapely.geos_version_string})",
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "geopandas": geopandas.__version__,
        "pyproj": pyproj.__version__,
        "os": platform.platform(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="13 dates (every 30 days), 3 runs: a smoke test")
    parser.add_argument("--dates", type=int, default=None, help="number of dates (default 73)")
    parser.add_argument("--runs", type=int, default=None, help="fresh-process runs per figure (default 7)")
    parser.add_argument("--repeat", type=int, default=200, help="warm queries per box")
    parser.add_argument("--row-group-size", type=int, default=None, help="default: TileIndex.write's")
    parser.add_argument("--compare-layouts", action="store_true", help="also time other on-disk layouts")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--child", choices=["read", "read-profile", "cold", "warm"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--box", help=argparse.SUPPRESS)
    parser.add_argument("--time", default=MONTH, help=argparse.SUPPRESS)
    parser.add_argument("--proto", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-dict", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    n_dates = args.dates or (13 if args.quick else 73)
    runs = args.runs or (3 if args.quick else 7)
    repeat = 20 if args.quick else args.repeat
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"s2_index_{n_dates}d.parquet"
    write_kw = {} if args.row_group_size is None else {"row_group_size": args.row_group_size}

    t0 = time.perf_counter()
    base = base_index()
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = replicate(base, dates(n_dates))
    t_rep = time.perf_counter() - t0
    t0 = time.perf_counter()
    canonical = index._sorted() is index  # the order TileIndex.from_records would give
    t_sort = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.write(path, **write_kw)
    t_write = time.perf_counter() - t0
    size = path.stat().st_size
    layout = row_group_stats(path)
    print(
        f"index: {len(index):,} rows ({len(base):,} tiles x {n_dates} dates); base {t_base:.1f} s, "
        f"replicate {t_rep:.2f} s, canonical order: {canonical} (checked in {t_sort:.1f} s)"
    )
    print(
        f"write: {t_write:.1f} s, {size / 1e6:.1f} MB, {layout['row_groups']} row groups, "
        f"{layout['global_x_row_groups']} with a bbox spanning all longitudes"
    )
    del index

    box_arg = ";".join(",".join(map(str, b)) for b in BOXES.values())
    load_before = os.getloadavg()
    # Current TileIndex and the prototypes, alternating run by run so that load changes hit both alike.
    reads: dict[str, list[dict]] = {"current": [], "proto": [], "proto-nodict": []}
    for _ in range(runs):
        reads["current"].append(run_child("read", path))
        reads["proto"].append(run_child("read", path, "--proto"))
        reads["proto-nodict"].append(run_child("read", path, "--proto", "--no-dict"))
    profile = [run_child("read-profile", path) for _ in range(max(3, runs // 2))]
    warm = {"current": run_child("warm", path, "--box", box_arg, "--time", MONTH, "--repeat", str(repeat))}
    rows = []
    for i, (name, bbox) in enumerate(BOXES.items()):
        cold: dict[str, list[dict]] = {"current": [], "proto": [], "proto-nodict": []}
        for _ in range(runs):
            for kind, extra in VARIANTS:
                cold[kind].append(
                    run_child("cold", path, "--box", ",".join(map(str, bbox)), "--time", MONTH, *extra)
                )
        same = all(r["ids"] == cold["current"][0]["ids"] for v in cold.values() for r in v)
        rows.append(
            {
                "name": name,
                "bbox": bbox,
                "cold": cold,
                "pruning": pruning(path, bbox, MONTH),
                "warm": {k: w["boxes"][i] for k, w in warm.items()},
                "proto_same_result": same,
            }
        )
    load_after = os.getloadavg()

    env = environment()
    env["load average (1 min) before/after"] = f"{load_before[0]:.2f} / {load_after[0]:.2f}"
    cur_reads = reads["current"]
    lines = [
        f"Index: {len(base):,} MGRS tiles x {n_dates} dates = {len(base) * n_dates:,} rows; "
        f"GeoParquet {size / 1e6:.1f} MB, {layout['row_groups']} row groups of "
        f"{write_kw.get('row_group_size', ROW_GROUP_SIZE)} rows; written in {t_write:.1f} s.",
        "",
        f"| 1-degree box, {MONTH} | cold open+query ms | (CPU ms) | of which `read` ms | row groups read | "
        "rows in them | MB read | candidates | result rows | warm query ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cold, prune = r["cold"]["current"], r["pruning"]
        mb = statistics.median((c["bytes_read"] or 0) for c in cold) / 1e6
        lines.append(
            f"| {r['name']} `{r['bbox']}` | {fmt_ms(median_of(cold, 'total_s'))} "
            f"| {fmt_ms(median_of(cold, 'cpu_s'))} | {fmt_ms(median_of(cold, 'read_s'))} "
            f"| {prune['groups']} of {prune['of']} | {prune['rows']:,} "
            f"| {mb:.2f} | {cold[0]['candidates']:,} | {cold[0]['rows']} "
            f"| {fmt_ms(r['warm']['current']['median_s'])} |"
        )
    cold_process = statistics.median(c["process_s"] for r in rows for c in r["cold"]["current"])
    prof = {k: statistics.median(p[k] for p in profile) for k in profile[0] if k != "process_s"}
    lines += [
        "",
        f"Cold: median of {runs} fresh processes, timed after `import mosaic` (~0.5 s; a whole child "
        f"process takes {cold_process:.2f} s). Warm: median of {repeat} queries on the whole index in "
        f"memory, after a warm-up query (STRtree over {cur_reads[0]['rows']:,} footprints + time bounds) "
        f"of {warm['current']['warmup_s']:.2f} s. The OS page cache holds the file (not dropped).",
        "",
        f"Whole-index read (`TileIndex.read(path)`, median of {runs} fresh processes): "
        f"**{median_of(cur_reads, 'read_s'):.2f} s** (CPU {median_of(cur_reads, 'cpu_s'):.2f} s) "
        f"for {cur_reads[0]['rows']:,} rows "
        f"({(cur_reads[0]['bytes_read'] or 0) / 1e6:.1f} MB read). Its steps: Parquet scan "
        f"{prof['parquet_s']:.2f} s, WKB decoding {prof['wkb_s']:.2f} s, cast + combine_chunks "
        f"{prof['cast_combine_s']:.2f} s; building the STRtree afterwards {prof['strtree_s']:.2f} s.",
        "",
        "Prototype of a proposed `TileIndex.read` (`proto_read` in this script; same rows returned: "
        f"{all(r['proto_same_result'] for r in rows)}):",
        "",
        "| | current ms | prototype ms | prototype without dictionary-read geometry, ms |",
        "| --- | ---: | ---: | ---: |",
        "| whole-index read | "
        + " | ".join(fmt_ms(median_of(reads[k], "read_s")) for k, _ in VARIANTS)
        + " |",
    ]
    for r in rows:
        lines.append(
            f"| cold, {r['name']} | "
            + " | ".join(fmt_ms(median_of(r["cold"][k], "total_s")) for k, _ in VARIANTS)
            + " |"
        )
    report = "\n".join(lines)
    print()
    print(report)
    print()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in env.items()))

    layouts = compare_layouts(path, n_dates, runs) if args.compare_layouts else None

    result = {
        "dates": n_dates,
        "rows": len(base) * n_dates,
        "file_bytes": size,
        "write_s": t_write,
        "layout": layout,
        "reads": reads,
        "read_profile": profile,
        "warm": warm,
        "boxes": rows,
        "layouts": layouts,
        "environment": env,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (args.out / f"index_scale_{n_dates}d.json").write_text(json.dumps(result, indent=1))
    (args.out / f"index_scale_{n_dates}d.md").write_text(report + "\n")


def compare_layouts(path: Path, n_dates: int, runs: int) -> str:
    """Cold query on the same rows written in other layouts (evidence for TileIndex.write defaults)."""
    index = TileIndex.read(path)
    variants = [
        ("canonical", 2048),
        ("canonical", 8192),
        ("canonical", 32768),
        ("canonical", 131072),
        ("crossing-last", 8192),
        ("time-major", 8192),
    ]
    lines = [
        "| order | row group size | file MB | footer KB | row groups | all-longitude groups | "
        + " | ".join(f"{name}: groups read, current / prototype ms" for name in BOXES)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(BOXES),
    ]
    for layout, rg in variants:
        p = path.with_name(f"{path.stem}_{layout}_{rg}.parquet")
        reorder(index, layout).write(p, row_group_size=rg)
        stats = row_group_stats(p)
        footer = pq.read_metadata(p).serialized_size / 1e3
        cells = []
        for bbox in BOXES.values():
            cold: dict[str, list[dict]] = {"current": [], "proto": []}
            for _ in range(runs):
                for kind, extra in (("current", ()), ("proto", ("--proto",))):
                    cold[kind].append(
                        run_child("cold", p, "--box", ",".join(map(str, bbox)), "--time", MONTH, *extra)
                    )
            prune = pruning(p, bbox, MONTH)
            cells.append(
                f"{prune['groups']}: {fmt_ms(median_of(cold['current'], 'total_s'))} / "
                f"{fmt_ms(median_of(cold['proto'], 'total_s'))}"
            )
        lines.append(
            f"| {layout} | {rg} | {p.stat().st_size / 1e6:.1f} | {footer:.0f} | {stats['row_groups']} | "
            f"{stats['global_x_row_groups']} | " + " | ".join(cells) + " |"
        )
        p.unlink()
    table = "\n".join(lines)
    print()
    print(f"Layouts ({n_dates} dates, cold open+query of one month, median of {runs} fresh processes):")
    print(table)
    (path.parent / f"index_layouts_{n_dates}d.md").write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
