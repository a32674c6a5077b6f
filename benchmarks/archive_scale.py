"""A tile index of archive size: ~29 million Sentinel-2-like rows, partitioned by year and UTM zone.

Builds (once; cached in ``benchmarks/output/s2_archive/``) the real MGRS grid (18,367 tiles, from
``tile_indexes/sentinel2_grid.parquet``) x 5 years (2020-2024) of revisits: every 5th day, from as
many relative orbits as cover the tile (``round(3 / cos(latitude))``, 1 to 12: one orbit track every
~290 km at the equator, converging towards the poles, as Sentinel-2's do), so each tile has 3 to 12
acquisitions per 5-day cycle and the archive ~29 M rows (Sentinel-2 L2A holds ~30 M items). Written
with ``TileIndex.write(folder, partition_by=("year", "utm_zone"), keep_other_partitions=True)`` one
year at a time, so at most one year (~6 M rows) is in memory.

Then times, each in a fresh process (median of ``--runs``):

* a cold 1-degree, 1-month query: ``TileIndex.read(folder, bbox=box, time=month).query(box,
  time=month)``, timed after ``import mosaic``, with the files, row groups, rows and bytes it read
  (the ``mosaic.index`` DEBUG record and ``/proc/self/io``) and the process's peak RSS;
* the same query warm: repeated in the same process (modules imported, files in the OS page cache);
* the whole process (``python -c`` with the import) for the first box.

Run from the project root, under the shared lock:
``flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/archive_scale.py --runs 7``.
``--build-only`` builds the index and exits. Outputs go to ``benchmarks/output/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "output"
GRID_PARQUET = ROOT / "tile_indexes" / "sentinel2_grid.parquet"
YEARS = (2020, 2021, 2022, 2023, 2024)
MONTH = "2024-06"

# 1-degree boxes (lon/lat; minx > maxx crosses the antimeridian), and a query across a year boundary.
QUERIES = {
    "Europe (Bavaria)": ((11.0, 48.0, 12.0, 49.0), MONTH),
    "UTM seam 12E 45N": ((11.5, 44.5, 12.5, 45.5), MONTH),
    "antimeridian 65N": ((179.5, 64.5, -179.5, 65.5), MONTH),
    "high latitude (Svalbard)": ((15.0, 78.0, 16.0, 79.0), MONTH),
    "Bavaria, New Year 2023/24": ((11.0, 48.0, 12.0, 49.0), "2023-12-15/2024-01-15"),
}


# ------------------------------------------------------------------------------------ building


def orbits(base) -> np.ndarray:
    """Relative orbits covering each tile: round(3 / cos(latitude)), 1 to 12."""
    b = shapely.bounds(base.footprints)
    lat = np.minimum(np.abs((b[:, 1] + b[:, 3]) / 2), 80.0)
    return np.clip(np.round(3.0 / np.cos(np.radians(lat))), 1, 12).astype(np.int64)


def year_index(base, k: np.ndarray, year: int):
    """One year of acquisitions: every 5th day from January 1st, each covering orbit offset in the cycle."""
    from mosaic.index import TileIndex

    days = np.arange(np.datetime64(f"{year}-01-01"), np.datetime64(f"{year + 1}-01-01"), 5)
    n_days = len(days)
    per_tile = k * n_days
    tile = np.repeat(np.arange(len(base)), per_tile)
    # within a tile: orbit-major, then day
    start = np.repeat(np.cumsum(per_tile) - per_tile, per_tile)
    within = np.arange(len(tile)) - start
    orbit = within // n_days
    day = within % n_days
    minutes = (orbit * (5 * 24 * 60) // k[tile]) + 10 * 60 + 30
    stamps = days.astype("datetime64[us]")[day] + (minutes * 60_000_000).astype("timedelta64[us]")
    inside = stamps < np.datetime64(f"{year + 1}-01-01")  # the last cycle's later orbits: next year's
    tile, orbit, stamps = tile[inside], orbit[inside], stamps[inside]
    table = base.table.take(pa.array(tile))
    tile_ids = table.column("id").to_numpy(zero_copy_only=False)
    label = np.datetime_as_string(stamps, unit="m")
    label = np.char.replace(np.char.replace(label.astype(str), "-", ""), ":", "")
    orbit_txt = np.char.zfill(orbit.astype(str), 2)
    ids = pc.binary_join_element_wise(
        "S2_MSIL2A_", pa.array(label), "_R", pa.array(orbit_txt), "_T", pa.array(tile_ids), ""
    )
    table = table.set_column(table.schema.get_field_index("id"), "id", ids)
    table = table.set_column(
        table.schema.get_field_index("datetime"), "datetime", pa.array(stamps, pa.timestamp("us", tz="UTC"))
    )
    return TileIndex(table.combine_chunks(), base.footprints[tile])


def build(folder: Path) -> dict:
    """Write the archive year by year (cached: skipped when ``folder/BUILT.json`` exists)."""
    from mosaic.index import TileIndex

    done = folder / "_BUILT.json"
    if done.exists():
        return json.loads(done.read_text())
    base = TileIndex.read(GRID_PARQUET)
    k = orbits(base)
    seconds = []
    t_all = time.perf_counter()
    for year in YEARS:
        t0 = time.perf_counter()
        index = year_index(base, k, year)
        t1 = time.perf_counter()
        index.write(folder, partition_by=("year", "utm_zone"), keep_other_partitions=True)
        t2 = time.perf_counter()
        seconds.append({"year": year, "rows": len(index), "build_s": t1 - t0, "write_s": t2 - t1})
        line = f"{year}: {len(index):,} rows, built in {t1 - t0:.1f} s, written in {t2 - t1:.1f} s"
        print(line, flush=True)
        del index
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.parquet"))
    footers = [pq.ParquetFile(f).metadata for f in files]
    facts = {
        "rows": sum(m.num_rows for m in footers),
        "tiles": len(base),
        "years": list(YEARS),
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "total_s": time.perf_counter() - t_all,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "per_year": seconds,
    }
    facts["row_groups"] = sum(m.num_row_groups for m in footers)
    done.write_text(json.dumps(facts, indent=1))
    return facts


# ------------------------------------------------------------------------------------- children


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def child(args: argparse.Namespace) -> None:
    """One cold query, then warm repeats, in this fresh process; prints a JSON line."""
    from _engines import collect_index_reads

    from mosaic.index import TileIndex

    handler = collect_index_reads()
    bbox = tuple(float(v) for v in args.box.split(","))
    rss0 = _rss_mb()
    r0 = _rchar()
    c0, t0 = time.process_time(), time.perf_counter()
    candidates = TileIndex.read(args.path, bbox=bbox, time=args.time)
    t1 = time.perf_counter()
    result = candidates.query(bbox, time=args.time)
    t2 = time.perf_counter()
    out = {
        "total_s": t2 - t0,
        "cpu_s": time.process_time() - c0,
        "read_s": t1 - t0,
        "query_s": t2 - t1,
        "bytes_read": _rchar() - r0,
        "candidates": len(candidates),
        "rows": len(result),
        "ids": sorted(result.table.column("id").to_pylist()),
        "rss_after_import_mb": rss0,
    }
    report = handler.reports[-1]
    out.update(
        files=report.files,
        files_opened=report.files_opened,
        row_groups=report.row_groups,
        row_groups_probed=report.row_groups_probed,
        row_groups_read=report.row_groups_read,
        rows_read=report.rows_read,
        opened=list(report.opened),
    )
    warm, warm_cpu = [], []
    for _ in range(args.repeat):
        c, t = time.process_time(), time.perf_counter()
        TileIndex.read(args.path, bbox=bbox, time=args.time).query(bbox, time=args.time)
        warm.append(time.perf_counter() - t)
        warm_cpu.append(time.process_time() - c)
    out["warm_median_s"] = statistics.median(warm)
    out["warm_cpu_median_s"] = statistics.median(warm_cpu)
    out["warm_min_s"] = min(warm)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(path: Path, bbox, when: str, repeat: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--path",
        str(path),
        "--box",
        ",".join(map(str, bbox)),
        "--time",
        when,
        "--repeat",
        str(repeat),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def whole_process(path: Path, bbox, when: str) -> float:
    """Seconds of ``python -c 'import mosaic...; TileIndex.read(...).query(...)'``, interpreter included."""
    box = tuple(bbox)
    code = (
        "from mosaic.index.tile_index import TileIndex; "
        f"TileIndex.read({str(path)!r}, bbox={box!r}, time={when!r}).query({box!r}, time={when!r})"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per query (median)")
    parser.add_argument("--repeat", type=int, default=20, help="warm repeats in each process")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--box", help=argparse.SUPPRESS)
    parser.add_argument("--time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    folder = args.out / "s2_archive"
    facts = build(folder)
    print(
        f"index: {facts['rows']:,} rows ({facts['tiles']:,} tiles x {len(facts['years'])} years), "
        f"{facts['files']} files, {facts['row_groups']:,} row groups, {facts['bytes'] / 1e6:.0f} MB; "
        f"built and written in {facts['total_s']:.0f} s, peak RSS {facts['peak_rss_mb']:.0f} MB"
    )
    if args.build_only:
        return
    load_before = os.getloadavg()[0]
    rows = []
    for name, (bbox, when) in QUERIES.items():
        runs = [run_child(folder, bbox, when, args.repeat) for _ in range(args.runs)]
        same = all(r["ids"] == runs[0]["ids"] for r in runs)
        rows.append({"name": name, "bbox": bbox, "time": when, "runs": runs, "same_rows": same})
    first_bbox, first_time = next(iter(QUERIES.values()))
    processes = [whole_process(folder, first_bbox, first_time) for _ in range(max(3, args.runs // 2))]
    load_after = os.getloadavg()[0]

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    lines = [
        f"Index: {facts['rows']:,} rows, {facts['files']} files, {facts['row_groups']:,} row groups, "
        f"{facts['bytes'] / 1e6:.0f} MB. Load average (1 min) before/after: {load_before:.2f} / "
        f"{load_after:.2f}.",
        "",
        "| query | cold open+query ms | (CPU ms) | files opened (listed) | row groups: matched by "
        "statistics / read | rows read | MB read | candidates | result rows | warm ms | (CPU ms) "
        "| peak RSS MB (after import) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        runs, first = r["runs"], r["runs"][0]
        lines.append(
            f"| {r['name']} `{r['bbox']}` {r['time']} | {med(runs, 'total_s') * 1e3:.1f} "
            f"| {med(runs, 'cpu_s') * 1e3:.1f} "
            f"| {first['files_opened']} ({first['files']}) of {facts['files']} "
            f"| {first['row_groups_probed']} / {first['row_groups_read']} of {first['row_groups']} "
            f"| {first['rows_read']:,} | {med(runs, 'bytes_read') / 1e6:.2f} | {first['candidates']:,} "
            f"| {first['rows']} | {med(runs, 'warm_median_s') * 1e3:.1f} "
            f"| {med(runs, 'warm_cpu_median_s') * 1e3:.1f} | {med(runs, 'peak_rss_mb'):.0f} "
            f"({med(runs, 'rss_after_import_mb'):.0f}) |"
        )
    lines += [
        "",
        f"Whole process (`python -c`, interpreter and `import mosaic` included), first query, median of "
        f"{len(processes)}: {statistics.median(processes):.2f} s. Same rows in every run: "
        f"{all(r['same_rows'] for r in rows)}.",
    ]
    report = "\n".join(lines)
    print(report)
    result = {
        "facts": facts,
        "queries": rows,
        "whole_process_s": processes,
        "load": [load_before, load_after],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (args.out / "archive_scale.json").write_text(json.dumps(result, indent=1))
    (args.out / "archive_scale.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
