"""Remote reads: mosaic.load against odc.stac.load over HTTP with added latency, same Items, same grid.

The collections of ``load_compare.py`` are served by ``tests/servers.py``'s ``RangeServer`` (a real
HTTP/1.1 server with ``Range`` support, in its own process, on 127.0.0.1) with ``--latency`` seconds
added to every request (default 0.02). The Items' hrefs are rewritten to its URLs, so both engines
read through GDAL's ``/vsicurl/``. Both run with the same number of dask threads (``--threads``,
default 8); mosaic's ``max_concurrency`` is set to the same number. Every run is a fresh process with
a fresh server (GDAL's HTTP cache starts empty); medians of ``--runs``.

Measured per run: wall and CPU time of load + compute (as ``load_compare.py``), and at the server:
requests (HEAD and GET), body bytes sent, and the peak number of requests in flight. The outputs are
compared with mosaic's (identical valid pixels). Goal (issue 5): fewer requests and bytes than odc-stac,
and faster at the same concurrency.

``mosaic-ranges`` is mosaic with an index built with ``tile_ranges=True`` (each file's tile layout
recorded at index time, issue 15): it reads tiles straight from their byte ranges, with no ``HEAD``
and no header request. Its index is built before the run, from the same server's URLs (a one-off, as
any index), and the server's counters are zeroed before the timed process starts. Goal (issue 15):
zero header requests, at least 2x fewer requests than odc-stac, faster at the same concurrency,
identical pixels.

Run from the project root (``make benchmark`` does not run it)::

    .venv/bin/python benchmarks/remote_compare.py                 # ~3 min on 2 cores
    .venv/bin/python benchmarks/remote_compare.py --runs 1 --cases seam12
    .venv/bin/python benchmarks/remote_compare.py --runs 5 --cases seam12 --engines mosaic-ranges odc-stac

Results: ``benchmarks/output/remote_compare.md`` and ``.json`` (git-ignored).
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import load_compare as lc  # noqa: E402  (after the path set-up)

ENGINES = ("mosaic", "mosaic-ranges", "odc-stac", "odc-stac-serial")
RANGES = "mosaic-ranges"
"""mosaic reading from the tile ranges its index recorded (``TileIndex.from_stac(..., tile_ranges=True)``)."""
SERIAL = "odc-stac-serial"
"""odc-stac again, with ``GDAL_HTTP_MULTIRANGE=SERIAL`` (as mosaic sets it): each of its reads has at most
one request in flight, so with the same threads it never has more requests in flight than mosaic's
limit. This is the comparison at the same concurrency as seen by the server."""
MATCHED = "mosaic-matched"
"""mosaic again, with as many threads and as high a ``max_concurrency`` as odc-stac's measured peak
of requests in flight (GDAL fetches the block ranges of one odc-stac read as simultaneous requests;
mosaic's limiter bounds requests, not reads, so at equal threads it has fewer in flight)."""


def worker(args: argparse.Namespace) -> None:
    """One timed load in this fresh process, reading through ``args.base_url``; prints one RESULT line."""
    import distributed  # noqa: F401  (an import cost dask pays on the first compute: not timed)
    from _engines import ENGINES as RUNNERS

    items, gbox, _ = lc.case_setup(args.case)
    root = str(lc.DATA)
    for item in items:
        for asset in item["assets"].values():
            if asset["href"].startswith(root):
                asset["href"] = args.base_url + asset["href"][len(root) :]
    if args.engine == RANGES:
        engine = ranges_engine(items, args.index, gbox, args.threads, args.range_gap)
    else:
        engine = RUNNERS[args.engine](items, gbox, lc.ASSET, args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    array, _grid = engine["timed"]()
    result = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    if args.save:
        np.save(args.save, array)
    print("RESULT " + json.dumps(result))


def ranges_engine(
    items: list[dict[str, Any]], index_path: Path, gbox: Any, threads: int, gap: int | None = None
) -> dict[str, Any]:
    """``_engines.mosaic_engine`` (same set-up, same load) on rows carrying the tile layouts recorded
    in ``index_path`` (built beforehand from the same URLs with ``tile_ranges=True``)."""
    import dataclasses

    import dask
    from _engines import import_mosaic_engine

    import mosaic
    import mosaic.io.cog
    import mosaic.io.ranged
    from mosaic.index import TileIndex

    import_mosaic_engine()
    index = TileIndex.from_stac(list(items), assets=[lc.ASSET])  # as mosaic_engine builds it
    recorded = {(r.id, r.asset): r for r in TileIndex.read(index_path)}
    index = TileIndex.from_records(
        [
            dataclasses.replace(
                r, tiles=recorded[r.id, r.asset].tiles, identity=recorded[r.id, r.asset].identity
            )
            for r in index
        ]
    )
    kwargs = dict(
        index=index,
        geobox=gbox,
        bands=[lc.ASSET],
        groupby="solar_day",
        method="first",
        resampling="nearest",
        chunks=2048,
        gdal_options={} if gap is None else {"MOSAIC_RANGE_GAP": str(gap)},
    )

    def timed() -> tuple[np.ndarray, dict[str, Any]]:
        with dask.config.set(scheduler="threads", num_workers=threads):
            ds = mosaic.load(**kwargs).compute()
        return np.asarray(ds[lc.ASSET].values[0]), {}

    return {"timed": timed}


def ranges_index(case: str, base_url: str, path: Path) -> None:
    """The case's index with tile ranges, built from the server's URLs (as ``worker`` rewrites them)."""
    from mosaic.index import TileIndex

    items, _, _ = lc.case_setup(case)
    root = str(lc.DATA)
    for item in items:
        for asset in item["assets"].values():
            if asset["href"].startswith(root):
                asset["href"] = base_url + asset["href"][len(root) :]
    TileIndex.from_stac(items, assets=[lc.ASSET], tile_ranges=True).write(path)


def run_once(
    engine: str, case: str, args: argparse.Namespace, save: Path | None, threads: int | None = None
) -> dict[str, Any]:
    """A fresh server and a fresh worker process; the worker's timings plus the server's counters."""
    from servers import RangeServer

    threads = threads or args.threads
    with RangeServer(lc.DATA, latency=args.latency) as server:
        runner = engine.removesuffix("-matched").removesuffix("-serial")
        cmd = [sys.executable, __file__, "--engine", runner, "--case", case]
        cmd += ["--threads", str(threads), "--base-url", server.base_url]
        cmd += ["--save", str(save)] if save else []
        cmd += ["--range-gap", str(args.range_gap)] if args.range_gap is not None else []
        if engine == RANGES:  # the index (a one-off) is built first, in its own process; not counted
            index = lc.OUTPUT / f"remote_compare_{case}_ranges.parquet"
            setup = [sys.executable, __file__, "--build-index", str(index), "--case", case]
            subprocess.run([*setup, "--base-url", server.base_url], check=True, capture_output=True)
            server.reset_stats()
            cmd += ["--index", str(index)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MOSAIC_MAX_CONCURRENCY=str(threads))
        if engine == SERIAL:
            env["GDAL_HTTP_MULTIRANGE"] = "SERIAL"  # GDAL reads its settings from the environment too
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{engine} on {case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        stats = server.stats()
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result.update(
        requests=stats.requests,
        gets=stats.by_method.get("GET", 0),
        heads=stats.by_method.get("HEAD", 0),
        bytes=stats.bytes_sent,
        peak=stats.peak_in_flight,
        errors=sum(n for code, n in stats.by_status.items() if code >= 400),
    )
    return result


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| case | engine | threads | median (s) | min (s) | CPU (s) | requests | GET | HEAD | MB sent "
        "| peak in flight "
        "| vs mosaic (time) | identical valid px |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    out = [head]
    for r in rows:
        out.append(
            f"| {r['case']} | {r['engine']} | {r['threads']} | {r['median']:.3f} | {r['min']:.3f} "
            f"| {r['cpu']:.3f} "
            f"| {r['requests']} | {r['gets']} | {r['heads']} | {r['bytes'] / 1e6:.2f} | {r['peak']} "
            f"| {r['ratio']:.2f}x | {r['identical']} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="*", default=["seam12", "wide3zone", "overview200"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--range-gap", type=int, help="mosaic-ranges: MOSAIC_RANGE_GAP, bytes (default: mosaic's, 64 KB)"
    )
    parser.add_argument("--build-index", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--engines", nargs="*", default=[*ENGINES, MATCHED], help="engines to run (mosaic always)"
    )
    args = parser.parse_args()
    if args.build_index:
        ranges_index(args.case, args.base_url, args.build_index)
        return
    if args.engine:
        worker(args)
        return
    lc.build_collections()
    arrays = lc.OUTPUT / "remote_compare_arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    engines = tuple(e for e in ENGINES if e == "mosaic" or e in args.engines)
    matched = MATCHED in args.engines and "odc-stac" in engines
    for case in args.cases:
        runs: dict[str, list[dict[str, Any]]] = {e: [] for e in (*engines, MATCHED)}
        for k in range(args.runs):  # round-robin (order rotating), so background load hits all alike
            for engine in engines[k % len(engines) :] + engines[: k % len(engines)]:
                save = arrays / f"{case}-{engine}.npy" if k == 0 else None
                runs[engine].append(run_once(engine, case, args, save))
            if matched:
                peak = int(statistics.median(r["peak"] for r in runs["odc-stac"]))
                save = arrays / f"{case}-{MATCHED}.npy" if k == 0 else None
                runs[MATCHED].append(run_once(MATCHED, case, args, save, threads=max(peak, args.threads)))
        ref = np.load(arrays / f"{case}-mosaic.npy")
        base = statistics.median(r["seconds"] for r in runs["mosaic"])
        for engine in (*engines, MATCHED) if matched else engines:
            got = np.load(arrays / f"{case}-{engine}.npy")
            both = (ref != 0) & (got != 0)
            same = f"{100 * float((ref[both] == got[both]).mean()):.2f}%" if both.any() else "n/a"
            if engine == RANGES:
                same += " (arrays equal)" if np.array_equal(ref, got) else " (ARRAYS DIFFER)"
            rs = runs[engine]
            median = statistics.median(r["seconds"] for r in rs)
            rows.append(
                {
                    "case": case,
                    "engine": engine,
                    "median": median,
                    "min": min(r["seconds"] for r in rs),
                    "cpu": statistics.median(r["cpu"] for r in rs),
                    **{
                        key: int(statistics.median(r[key] for r in rs))
                        for key in ("requests", "gets", "heads", "bytes", "peak")
                    },
                    "errors": max(r["errors"] for r in rs),
                    "ratio": median / base,
                    "identical": "(reference)" if engine == "mosaic" else same,
                    "threads": max(int(statistics.median(r["peak"] for r in runs["odc-stac"])), args.threads)
                    if engine == MATCHED
                    else args.threads,
                    "runs": rs,
                }
            )
        print(table([r for r in rows if r["case"] == case]), flush=True)
    text = (
        f"Remote reads over HTTP, latency {args.latency * 1000:.0f} ms per request, "
        f"{args.threads} dask threads (mosaic max_concurrency {args.threads}), "
        f"median of {args.runs} fresh processes\n\n{table(rows)}\n"
    )
    (lc.OUTPUT / "remote_compare.md").write_text(text)
    (lc.OUTPUT / "remote_compare.json").write_text(
        json.dumps({"args": vars(args) | {"save": None}, "rows": rows}, indent=1, default=str)
    )
    print(text)


if __name__ == "__main__":
    main()
