"""Property filters on the tile index at scale: the file size of the typed columns, and what pushdown reads.

The index of ``index_scale.py`` (the real MGRS grid x 73 dates, ~1.34 million rows) with Sentinel-2-like
Item properties on every row: ``s2:mgrs_tile`` (the tile), ``mgrs:utm_zone`` (its zone), ``platform``
(alternating by date), ``sat:orbit_state``, ``s2:processing_baseline`` (05.10, then 05.11 from
2024-07-23) and ``eo:cloud_cover`` (random, uniform 0..100, per row).

It writes the same rows three ways (no properties; the properties as JSON only, the layout of index
format 4; JSON plus one typed column per property, format 5) and reports the file sizes, then times,
each in a fresh process and as the median of ``--runs``:

* ``TileIndex.read(path, filter=F)`` on the format 5 file (pushdown: row groups left out by their
  statistics, then by the filter's columns), with the row groups and rows it read;
* ``TileIndex.read(path).query(filter=F)``: the whole index read, then filtered in memory;
* the same with a 1-degree box and a month.

Run from the project root: ``.venv/bin/python benchmarks/filter_scale.py [--dates N] [--runs N]``. Outputs go
to ``benchmarks/output/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_scale import OUTPUT, base_index, dates, environment, replicate

from mosaic.index.tile_index import SCHEMA, TileIndex

FILTERS = {
    "one MGRS tile": "s2:mgrs_tile = '32UPU'",
    "one UTM zone": "mgrs:utm_zone = 32",
    "baseline 05.11": "s2:processing_baseline = '05.11'",
    "cloud < 10 %": "eo:cloud_cover < 10",
    "platform": "platform = 'sentinel-2b'",
}
BOX = (11.0, 48.0, 12.0, 49.0)  # Bavaria
MONTH = "2024-06"


def with_properties(index: TileIndex, when: list, *, columns: bool) -> TileIndex:
    """The index with Sentinel-2-like properties on every row (JSON, and typed columns if ``columns``)."""
    n = len(index)
    table = index.table
    tile = table.column("id").to_numpy(zero_copy_only=False)
    tile = np.array([t.rsplit("_T", 1)[-1] for t in tile], dtype=object)
    stamps = pc.cast(table.column("datetime"), pa.int64()).to_numpy()
    first = int(np.datetime64(when[0].replace(tzinfo=None), "us").astype(np.int64))
    day = (stamps - first) // (86_400 * 10**6)
    rng = np.random.default_rng(20)
    cloud = np.round(rng.uniform(0, 100, n), 2)
    zone = np.array([int(t[:2]) for t in tile], dtype=np.int64)
    platform = np.where((day // 5) % 2 == 0, "sentinel-2a", "sentinel-2b")
    cut = int(np.datetime64("2024-07-23T00:00:00", "us").astype(np.int64))
    baseline = np.where(stamps < cut, "05.10", "05.11")
    texts = [
        json.dumps(
            {
                "eo:cloud_cover": float(c),
                "mgrs:utm_zone": int(z),
                "platform": p,
                "s2:mgrs_tile": t,
                "s2:processing_baseline": b,
                "sat:orbit_state": "descending",
            },
            sort_keys=True,
        )
        for c, z, p, t, b in zip(cloud, zone, platform, tile, baseline, strict=True)
    ]
    out = table.set_column(table.schema.get_field_index("properties"), "properties", pa.array(texts))
    if columns:
        typed = {
            "eo:cloud_cover": pa.array(cloud),
            "mgrs:utm_zone": pa.array(zone),
            "platform": pa.array(platform),
            "s2:mgrs_tile": pa.array(tile, pa.string()),
            "s2:processing_baseline": pa.array(baseline),
            "sat:orbit_state": pa.array(np.full(n, "descending")),
        }
        for name, column in typed.items():
            out = out.append_column(name, column)
    return TileIndex(out, index.footprints)


# ---------------------------------------------------------------------------------------- children


def child(args: argparse.Namespace) -> None:
    from _engines import collect_index_reads

    handler = collect_index_reads()
    box = None if args.box is None else tuple(float(v) for v in args.box.split(","))
    t0 = time.perf_counter()
    if args.child == "pushdown":
        got = TileIndex.read(args.path, bbox=box, time=args.time, filter=args.filter)
        if box is not None:
            got = got.query(box, time=args.time)
    else:  # read the whole index (or the box's candidates), then filter in memory
        got = TileIndex.read(args.path, bbox=box, time=args.time).query(
            box, time=args.time, filter=args.filter
        )
    seconds = time.perf_counter() - t0
    (report,) = handler.reports
    print(
        json.dumps(
            {
                "s": seconds,
                "rows": len(got),
                "groups": report.row_groups,
                "filtered": report.row_groups_filtered,
                "probed": report.row_groups_probed,
                "read": report.row_groups_read,
                "rows_read": report.rows_read,
            }
        )
    )


def run(kind: str, path: Path, flt: str, box: str | None, runs: int) -> dict:
    out = []
    for _ in range(runs):
        cmd = [sys.executable, __file__, "--child", kind, "--path", str(path), "--filter", flt]
        if box is not None:
            cmd += ["--box", box, "--time", MONTH]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(proc.stderr)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = dict(out[0])
    result["s"] = statistics.median(r["s"] for r in out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=73)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--child", choices=["pushdown", "whole"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--filter", help=argparse.SUPPRESS)
    parser.add_argument("--box", help=argparse.SUPPRESS)
    parser.add_argument("--time", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    when = dates(args.dates)
    index = replicate(base_index(), when)
    n = len(index)
    paths = {
        "no properties": args.out / f"filters_{args.dates}d_none.parquet",
        "JSON only (format 4 layout)": args.out / f"filters_{args.dates}d_json.parquet",
        "JSON + typed columns (format 5)": args.out / f"filters_{args.dates}d_columns.parquet",
    }
    index.write(paths["no properties"])
    with_properties(index, when, columns=False).write(paths["JSON only (format 4 layout)"])
    typed = with_properties(index, when, columns=True)
    typed.write(paths["JSON + typed columns (format 5)"])
    del index, typed
    target = paths["JSON + typed columns (format 5)"]
    assert [f.name for f in pq.read_schema(target)][: len(SCHEMA)] == SCHEMA.names
    t0 = time.perf_counter()
    derived = TileIndex.read(paths["JSON only (format 4 layout)"])  # written as format 5: no derivation
    from mosaic.index.filters import with_property_columns

    with_property_columns(derived.table, SCHEMA.names)
    derive_s = time.perf_counter() - t0
    lines = [
        f"# Property filters at scale: {n:,} rows ({args.dates} dates), {args.runs} fresh-process runs each",
        "",
        f"load average (1 min) at start: {os.getloadavg()[0]:.2f}",
        "",
        "| file | size (MB) |",
        "| --- | ---: |",
    ]
    for label, path in paths.items():
        lines.append(f"| {label} | {path.stat().st_size / 1e6:.1f} |")
    lines += [
        "",
        f"read of the JSON-only file + deriving the typed columns from the JSON (a format 4 file's read): "
        f"{derive_s:.1f} s",
        "",
        "| query | filter | rows | row groups: of, left out by statistics, read | pushdown (s) | "
        "whole read + query (s) |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for label, flt in FILTERS.items():
        for box in (None, ",".join(map(str, BOX))):
            pushed = run("pushdown", target, flt, box, args.runs)
            whole = run("whole", target, flt, box, args.runs)
            assert pushed["rows"] == whole["rows"], (label, pushed, whole)
            where = "whole index" if box is None else f"box {BOX}, {MONTH}"
            lines.append(
                f"| {where} | {label}: `{flt}` | {pushed['rows']:,} | {pushed['groups']}, "
                f"{pushed['filtered']}, {pushed['read']} | {pushed['s']:.2f} | {whole['s']:.2f} |"
            )
    lines += ["", f"load average (1 min) at end: {os.getloadavg()[0]:.2f}", ""]
    env = environment()
    lines += [f"- {k}: {v}" for k, v in env.items()]
    text = "\n".join(lines)
    (args.out / f"filter_scale_{args.dates}d.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
