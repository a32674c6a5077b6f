"""Point time series: mosaic.sample against mosaic.load + sel and odc.stac.load + sel, same points.

A year of a synthetic collection: two overlapping scenes (UTM 32N and 33N across the 12E seam, one
pass, 4 s apart) every 5 days of 2024 (146 scenes, one ``uint16`` COG each, 10 m, 1536 x 1536 px,
256 px tiles), generated once into ``benchmarks/output/sample_points/``. 100 random points over the
two scenes (fixed seed). Three engines, each giving the (time, point) series of ``B02`` by solar day,
``first``:

- ``mosaic-sample``: ``mosaic.sample(points, index=...)``;
- ``mosaic-load``: ``mosaic.load(bbox of the points, "EPSG:32633", resolution=10)`` (lazy, default
  2048 px chunks) then ``.sel(x=, y=, method="nearest")`` at the points and ``.compute()``;
- ``odc-stac``: ``odc.stac.load(items, bbox=, crs="EPSG:32633", resolution=10, chunks=2048)``, the
  same ``sel`` and ``compute``.

Every run is a fresh process (GDAL's caches start empty). ``--mode local`` reads the files on disk
and counts the bytes the process read during the timed call (``rchar`` of ``/proc/self/io``: every
byte read through a system call, cached or not); ``--mode http`` serves them with
``tests/servers.py``'s ``RangeServer`` with ``--latency`` (default 0.02 s) per request and counts its
requests and body bytes. Timed: the call and its compute, with the index (or the parsed Items) made
beforehand. mosaic's reads are its limiter's count. Values: the fraction of (time, point) values
equal to ``mosaic-sample``'s (``mosaic-load`` and ``odc-stac`` warp the 32N scene onto a 33N grid,
so where it is read first a nearest pick may be a neighbour pixel).

Run from the project root under the shared lock (``make benchmark`` does not run it)::

    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/sample_points.py --runs 5
    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/sample_points.py --runs 5 --points 20
    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/sample_points.py --runs 1 --mode http

Results: ``benchmarks/output/sample_points_<mode>_<points>.md`` and ``.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
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
ROOT = HERE / "output" / "sample_points"
sys.path.insert(0, str(HERE.parent / "tests"))

ENGINES = ("mosaic-sample", "mosaic-load", "odc-stac")
N_POINTS = 100
CENTRES = (
    ("S32", "EPSG:32632", (11.93, 45.50), (10, 20, 0)),
    ("S33", "EPSG:32633", (12.07, 45.46), (10, 20, 4)),
)


def collection() -> list[dict[str, Any]]:
    """The year of scenes (generated once), as STAC Item dicts."""
    from mosaic import synthetic as syn

    asset = (syn.AssetSpec("B02", "uint16", 10.0, truth_band=1),)
    specs = []
    for day in range(0, 366, 5):
        date = dt.date(2024, 1, 1) + dt.timedelta(days=day)
        for stem, crs, centre, (hh, mm, ss) in CENTRES:
            when = dt.datetime.combine(date, dt.time(hh, mm, ss), tzinfo=dt.UTC)
            collar = syn.Collar("west" if stem == "S33" else "east", 0.1 + 0.002 * (day % 20))
            specs.append(
                syn.SceneSpec(f"{stem}-{date:%Y%m%d}", crs, centre, 15360, 15360, when, asset, collar)
            )
    items = syn.make_collection(specs, ROOT)
    return [item.to_dict(include_self_link=False, transform_hrefs=False) for item in items]


def points(n: int = N_POINTS) -> np.ndarray:
    """``n`` random lon/lat points over the two scenes (fixed seed)."""
    rng = np.random.default_rng(42)
    return np.column_stack([rng.uniform(11.91, 12.09, n), rng.uniform(45.43, 45.53, n)])


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _with_base(items: list[dict[str, Any]], base: str | None) -> list[dict[str, Any]]:
    if base is None:
        return items
    out = []
    for item in items:
        copy = json.loads(json.dumps(item))
        for asset in copy["assets"].values():
            rel = Path(asset["href"]).resolve().relative_to(ROOT).as_posix()
            asset["href"] = f"{base}/{rel}"
        out.append(copy)
    return out


def worker(engine: str, base: str | None, n: int) -> dict[str, Any]:
    """One timed run of ``engine`` in this (fresh) process."""
    import pystac
    import xarray as xr
    from pyproj import Transformer

    import mosaic
    import mosaic.api
    import mosaic.fuse
    import mosaic.io.read
    import mosaic.outputs.sampling  # (imported before the timed call, as odc.stac is)
    from mosaic import TileIndex

    items = _with_base(json.loads((ROOT / "items.json").read_text())["features"], base)
    pts = points(n)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(pts[:, 0], pts[:, 1])
    at = {"x": xr.DataArray(x, dims="point"), "y": xr.DataArray(y, dims="point")}
    bbox = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
    out: dict[str, Any] = {"engine": engine}
    if engine.startswith("mosaic"):
        index = TileIndex.from_stac(items)
        before, t0 = _rchar(), time.perf_counter()
        if engine == "mosaic-sample":
            ds = mosaic.sample(pts, index=index, bands="B02")
        else:
            ds = mosaic.load(bbox, "EPSG:32633", index=index, bands="B02", resolution=10)
            ds = ds.sel(at, method="nearest").compute()
        out["seconds"] = time.perf_counter() - t0
        out["reads"] = mosaic.read_stats().reads
    else:
        import odc.stac

        pitems = [pystac.Item.from_dict(d) for d in items]
        before, t0 = _rchar(), time.perf_counter()
        ds = odc.stac.load(
            pitems,
            bands=["B02"],
            bbox=bbox,
            crs="EPSG:32633",
            resolution=10,
            groupby="solar_day",
            chunks={"x": 2048, "y": 2048},
        )
        ds = ds.sel(at, method="nearest").compute()
        out["seconds"] = time.perf_counter() - t0
        out["reads"] = None
    out["rchar"] = _rchar() - before
    out["values"] = np.asarray(ds.B02.values).tolist()
    out["times"] = [str(t) for t in ds.time.values]
    return out


def run(engine: str, base: str | None, n: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", engine, "--points", str(n)]
    if base is not None:
        cmd += ["--base-url", base]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mode", choices=("local", "http"), default="local")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--points", type=int, default=N_POINTS, help="number of points (default 100)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.base_url, args.points)))
        return
    t0 = time.perf_counter()
    items = collection()
    print(f"collection: {len(items)} scenes ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    server = None
    if args.mode == "http":
        from servers import RangeServer

        server = RangeServer(ROOT, latency=args.latency).start()
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in args.engines}
    try:
        for i in range(args.runs):
            for engine in args.engines:  # interleaved: load drifts hit every engine alike
                if server is not None:
                    server.reset_stats()
                res = run(engine, None if server is None else server.base_url, args.points)
                if server is not None:
                    stats = server.stats()
                    res["requests"], res["bytes_sent"] = stats.requests, stats.bytes_sent
                results[engine].append(res)
                print(f"run {i + 1} {engine}: {res['seconds']:.2f} s", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
    reference = np.asarray(results["mosaic-sample"][0]["values"]) if "mosaic-sample" in results else None
    rows = []
    for engine, runs in results.items():
        last = runs[-1]
        values = np.asarray(last["values"])
        same = (
            None
            if reference is None or values.shape != reference.shape
            else float((values == reference).mean())
        )
        row = {
            "engine": engine,
            "seconds_median": statistics.median(r["seconds"] for r in runs),
            "seconds_all": [round(r["seconds"], 3) for r in runs],
            "reads": last["reads"],
            "rchar_mb": last["rchar"] / 1e6,
            "requests": last.get("requests"),
            "bytes_sent_mb": None if last.get("bytes_sent") is None else last["bytes_sent"] / 1e6,
            "shape": list(values.shape),
            "equal_to_sample": same,
        }
        rows.append(row)
    load = os.getloadavg()[0]
    out = HERE / "output"
    out.mkdir(exist_ok=True)
    name = f"sample_points_{args.mode}_{args.points}"
    (out / f"{name}.json").write_text(json.dumps({"load1": load, "rows": rows}, indent=1))
    lines = [
        f"mode {args.mode}, {len(items)} scenes, {args.points} points, runs {args.runs}, load {load:.2f}",
        "",
        "| engine | time (median s) | reads | bytes read (MB) | requests | bytes sent (MB) | (time, point) "
        "| equal to sample |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        sent = "-" if r["bytes_sent_mb"] is None else f"{r['bytes_sent_mb']:.1f}"
        equal = "-" if r["equal_to_sample"] is None else f"{100 * r['equal_to_sample']:.1f}%"
        reads = "-" if r["reads"] is None else r["reads"]
        requests = "-" if r["requests"] is None else r["requests"]
        lines.append(
            f"| {r['engine']} | {r['seconds_median']:.2f} | {reads} | {r['rchar_mb']:.1f} | {requests} | "
            f"{sent} | {tuple(r['shape'])} | {equal} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
