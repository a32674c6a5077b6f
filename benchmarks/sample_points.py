"""Point time series: mosaic.sample against odc.stac.load of small boxes around the points, same points.

A year of a synthetic collection: two overlapping scenes (UTM 32N and 33N across the 12E seam, one
pass, 4 s apart) every 5 days of 2024 (148 scenes, one ``uint16`` COG each, 10 m, 1536 x 1536 px,
256 px DEFLATE tiles; ``mosaic.synthetic``'s writer), generated once into
``benchmarks/output/sample_points/``. ``--points`` random points over the two scenes (default 20,
fixed seed). Each engine gives the (time, point) series of ``B02``, by solar day, ``first``:

- ``sample``: ``mosaic.sample(points, index=...)``, the index built from the Items;
- ``sample-ranges``: the same on an index built with ``tile_ranges=True`` (the tile byte ranges are
  in the index: no ``HEAD``, no header request);
- ``odc-boxes``: what an odc-stac user writes for sites: one ``odc.stac.load`` per point of a 3 x 3
  pixel box around it (10 m, on the 33N scenes' grid, ``chunks={}``), the centre pixel of each box,
  all points computed in one ``dask.compute``. Each load gets only the Items whose footprint holds its
  point (a STAC search per point would do that; here it is free and untimed, which favours odc-stac);
- ``load``: ``mosaic.load(bbox of the points, "EPSG:32633", resolution=10)`` then
  ``.sel(x=, y=, method="nearest")`` and ``.compute()`` (the whole area);
- ``odc-bbox``: the same with ``odc.stac.load(items, bbox=..., chunks=2048)``.

Every run is a fresh process. It sets up first (imports, Items, the index: for ``sample-ranges`` it
reads each file's header, after which GDAL's and mosaic's caches are emptied), says READY, the
counters are zeroed, and only then the timed part runs: plan + reads + compute of the series. 8 dask
threads and ``max_concurrency=8`` for every engine. ``--mode local`` reads the files on disk and counts
the bytes the process read during the timed part (``rchar`` of ``/proc/self/io``: every byte read
through a system call, from the page cache or not); ``--mode http`` serves them with
``tests/servers.py``'s ``RangeServer`` (its own process, 127.0.0.1) with ``--latency`` (default
0.02 s) per request and counts its requests and body bytes.

**The floor**: a COG's tile is compressed as one stream, so a reader returning the stored pixel must
fetch at least the whole tile holding it. The floor is the sum of the compressed sizes of the distinct
(file, tile) pairs holding a point inside the file's footprint (read from the TIFF tags), and that
many requests. Values: the fraction of (time, point) values equal to ``sample``'s (the odc-stac and
``load`` engines warp the 32N scene onto a 33N grid, so where it is read first a nearest pick may be
a neighbouring source pixel).

Run from the project root under the shared lock (timings only on a quiet machine)::

    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/sample_points.py --runs 3
    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/sample_points.py --runs 3 --mode http

Results: ``benchmarks/output/sample_points_<mode>_<points>.md`` and ``.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE / "output" / "sample_points"
sys.path.insert(0, str(HERE.parent / "tests"))

ENGINES = ("sample", "sample-ranges", "odc-boxes", "load", "odc-bbox")
N_POINTS = 20
THREADS = 8
BOX = 3  # pixels a side of odc-boxes' box
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


def _holding(items: list[dict[str, Any]], pts: np.ndarray) -> list[list[dict[str, Any]]]:
    """For each point, the Items whose footprint holds it."""
    import shapely

    shapes = [shapely.geometry.shape(item["geometry"]) for item in items]
    return [
        [item for item, shape in zip(items, shapes, strict=True) if shape.covers(shapely.Point(lon, lat))]
        for lon, lat in pts
    ]


def floor(items: list[dict[str, Any]], pts: np.ndarray) -> dict[str, int]:
    """The distinct (file, tile) pairs holding a point inside the file's footprint, and their bytes."""
    import rasterio
    from pyproj import Transformer

    tiles: set[tuple[str, int, int]] = set()
    for (lon, lat), holding in zip(pts, _holding(items, pts), strict=True):
        for item in holding:
            asset = item["assets"]["B02"]
            crs = asset.get("proj:code") or item["properties"]["proj:code"]
            x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
            with rasterio.open(asset["href"]) as ds:
                row, col = ds.index(x, y)
                (bh, bw) = ds.block_shapes[0]
                tiles.add((asset["href"], row // bh, col // bw))
    size = 0
    for href, ti, tj in tiles:
        with rasterio.open(href) as ds:
            size += int(ds.get_tag_item(f"BLOCK_SIZE_{tj}_{ti}", "TIFF", bidx=1))
    return {"tiles": len(tiles), "bytes": size}


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


def _series(times: Any, values: Any) -> dict[str, list[int]]:
    """{solar day: values of the points}, the form every engine's result is compared in."""
    return {str(t)[:10]: [int(v) for v in row] for t, row in zip(times, np.asarray(values), strict=True)}


def worker(engine: str, base: str | None, n: int) -> None:
    """One run of ``engine`` in this fresh process: set up, say READY, wait for GO, time, print RESULT."""
    import dask
    import distributed  # noqa: F401  (an import cost dask pays on the first compute: not timed)
    import odc.stac
    import pystac
    import xarray as xr
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from pyproj import Transformer

    import mosaic
    import mosaic.api
    import mosaic.fuse
    import mosaic.io.read
    import mosaic.io.runtime
    import mosaic.outputs.sampling  # (imported before the timed call, as odc.stac is)
    from servers import clear_gdal_http_cache

    items = _with_base(json.loads((ROOT / "items.json").read_text())["features"], base)
    pts = points(n)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(pts[:, 0], pts[:, 1])
    at = {"x": xr.DataArray(x, dims="point"), "y": xr.DataArray(y, dims="point")}
    bbox = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
    index = None
    if engine in ("sample", "sample-ranges", "load"):
        index = mosaic.TileIndex.from_stac(items, tile_ranges=engine == "sample-ranges")
    pitems = [pystac.Item.from_dict(d) for d in items]
    boxes: list[tuple[list[Any], GeoBox]] = []
    if engine == "odc-boxes":
        s33 = next(d for d in items if d["id"].startswith("S33"))
        grid = Affine(*s33["assets"]["B02"]["proj:transform"][:6])
        by_id = {p.id: p for p in pitems}
        for (px, py), holding in zip(zip(x, y, strict=True), _holding(items, pts), strict=True):
            col, row = (int(v) for v in ~grid * (px, py))
            h = BOX // 2
            box = GeoBox((BOX, BOX), grid * Affine.translation(col - h, row - h), "EPSG:32633")
            boxes.append(([by_id[d["id"]] for d in holding], box))
    clear_gdal_http_cache()
    mosaic.io.runtime.reset()
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return
    before, t0 = _rchar(), time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=THREADS):
        if engine.startswith("sample"):
            ds = mosaic.sample(pts, index=index, bands="B02", max_concurrency=THREADS)
            series = _series(ds.time.values, ds.B02.values)
        elif engine == "load":
            ds = mosaic.load(
                bbox, "EPSG:32633", index=index, bands="B02", resolution=10, max_concurrency=THREADS
            )
            ds = ds.sel(at, method="nearest").compute()
            series = _series(ds.time.values, ds.B02.values)
        elif engine == "odc-bbox":
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
            series = _series(ds.time.values, ds.B02.values)
        else:
            lazy = [
                odc.stac.load(its, bands=["B02"], geobox=box, groupby="solar_day", chunks={}).B02[
                    :, BOX // 2, BOX // 2
                ]
                for its, box in boxes
            ]
            done = dask.compute(*lazy)
            series = {}
            for p, da in enumerate(done):  # a point's loads have only its own dates: 0 elsewhere
                for t, v in zip(da.time.values, da.values, strict=True):
                    series.setdefault(str(t)[:10], [0] * n)[p] = int(v)
            series = dict(sorted(series.items()))
    seconds = time.perf_counter() - t0
    out = {
        "seconds": seconds,
        "rchar": _rchar() - before,
        "reads": None if index is None else mosaic.read_stats(THREADS).reads,
        "series": series,
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_once(engine: str, base: str | None, n: int, server: Any) -> dict[str, Any]:
    from _engines import run_ready_worker

    cmd = [sys.executable, __file__, "--worker", engine, "--points", str(n)]
    if base is not None:
        cmd += ["--base-url", base]
    result = run_ready_worker(cmd, engine, before_go=None if server is None else server.reset_stats)
    if server is not None:
        stats = server.stats()
        result["requests"], result["by_method"], result["bytes_sent"] = (
            stats.requests,
            stats.by_method,
            stats.bytes_sent,
        )
    return result


def _equal(series: dict[str, list[int]], reference: dict[str, list[int]]) -> float:
    """Fraction of the reference's (time, point) values this series has too (0 where it has no date)."""
    ref = np.asarray(list(reference.values()))
    got = np.asarray([series.get(t, [0] * ref.shape[1]) for t in reference])
    return float((got == ref).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=("local", "http"), default="local")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--points", type=int, default=N_POINTS, help=f"number of points (default {N_POINTS})")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.base_url, args.points)
        return
    t0 = time.perf_counter()
    items = collection()
    print(f"collection: {len(items)} scenes ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    least = floor(items, points(args.points))
    server = None
    if args.mode == "http":
        from servers import RangeServer

        server = RangeServer(ROOT, latency=args.latency).start()
    load_before = os.getloadavg()[0]
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in args.engines}
    try:
        for r in range(args.runs):  # the engines' order rotates from run to run (the load drifts)
            for engine in args.engines[r % len(args.engines) :] + args.engines[: r % len(args.engines)]:
                res = run_once(engine, None if server is None else server.base_url, args.points, server)
                results[engine].append(res)
                print(f"run {r + 1} {engine}: {res['seconds']:.2f} s", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
    reference = results[args.engines[0]][0]["series"]
    rows = []
    for engine, runs in results.items():
        last = runs[-1]
        rows.append(
            {
                "engine": engine,
                "seconds_median": statistics.median(r["seconds"] for r in runs),
                "seconds_all": [round(r["seconds"], 3) for r in runs],
                "reads": last["reads"],
                "rchar_mb": last["rchar"] / 1e6,
                "requests": last.get("requests"),
                "by_method": last.get("by_method"),
                "bytes_sent_mb": None if last.get("bytes_sent") is None else last["bytes_sent"] / 1e6,
                "dates": len(last["series"]),
                "equal": _equal(last["series"], reference),
            }
        )
    load_after = os.getloadavg()[0]
    out = HERE / "output"
    out.mkdir(exist_ok=True)
    name = f"sample_points_{args.mode}_{args.points}"
    meta = {"load_before": load_before, "load_after": load_after, "floor": least, "args": vars(args)}
    (out / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    remote = args.mode == "http"
    lines = [
        f"mode {args.mode}{f' ({args.latency} s per request)' if remote else ''}, {len(items)} scenes, "
        f"{args.points} points, {args.runs} runs, {THREADS} threads, load average {load_before:.2f} before, "
        f"{load_after:.2f} after; floor: {least['tiles']} tiles, {least['bytes'] / 1e6:.2f} MB",
        "",
        f"| engine | median s | runs (s) | {'requests (GET/HEAD) | MB sent' if remote else 'MB read'} | "
        f"mosaic reads | dates | equal to {args.engines[0]} |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if remote else ""),
    ]
    for r in rows:
        if remote:
            methods = f"{r['by_method'].get('GET', 0)}/{r['by_method'].get('HEAD', 0)}"
            moved = f"{r['requests']} ({methods}) | {r['bytes_sent_mb']:.2f}"
        else:
            moved = f"{r['rchar_mb']:.2f}"
        runs = ", ".join(map(str, r["seconds_all"]))
        lines.append(
            f"| {r['engine']} | {r['seconds_median']:.2f} | {runs} | {moved} | "
            f"{'-' if r['reads'] is None else r['reads']} | {r['dates']} | {100 * r['equal']:.1f}% |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
