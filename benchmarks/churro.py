"""A pixel's time series ("churro") over a year of scenes: the tree against mosaic.load and odc.stac.load.

One file per date is the layout that makes a time series slowest: every date is another file. Here a
year of weekly scenes (52, 2024) of one UTM 33N grid: 1024 x 1024 px at 20 m, one uint16 band, tiled
COGs (256-px DEFLATE tiles, overviews; ``mosaic.synthetic``'s writer), generated once into
``benchmarks/output/churro/`` with their STAC Items. They are served over HTTP by ``tests/servers.py``'s
``RangeServer`` (its own process, 127.0.0.1) with ``--latency`` seconds added per request (default
0.01), so every engine reads through GDAL's ``/vsicurl/`` (or mosaic's own ranged reads) and the
server counts requests and bytes.

Engines, each asked for the B02 series of pixel (``--y``, ``--x``), 52 values that must be identical:

- ``tree``: ``mosaic.open_tree(index).<node>.B02.isel(y, x)``: chunks are the COG tiles;
- ``tree-ranges``: the same, with an index built with ``tile_ranges=True`` (no header request);
- ``load-point``: ``mosaic.load(geobox=<the pixel's 1 x 1 grid>, groupby="time")``;
- ``load-cube``: ``mosaic.load(geobox=<the scene grid>, groupby="time", chunks=2048).isel(y, x)``:
  the lazy cube of the area, then the pixel (a chunk is the whole scene);
- ``odc-point`` / ``odc-cube``: ``odc.stac.load`` with the same grids, ``groupby="time"``, chunks 2048.

Each run is a fresh process and a fresh server, the engines' order rotating from run to run. The
process sets up first (imports, Items, the index; for ``tree-ranges`` the index reads each file's
header, after which GDAL's HTTP cache is emptied), says it is ready, the server's counters are
zeroed, and only then the timed part runs: open/plan + compute of the series. Reported: the median
wall time of the timed part, the server's requests and body bytes (the same in every run), and
mosaic's reads (its limiter). 8 dask threads, ``max_concurrency`` 8.

Run from the project root, under the shared lock (timings only on a quiet machine)::

    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/churro.py --runs 5
    .venv/bin/python benchmarks/churro.py --runs 1 --engines tree load-point   # a quick look

Results: ``benchmarks/output/churro.md`` and ``.json`` (git-ignored).
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "output"
DATA = OUT / "churro"
sys.path.insert(0, str(ROOT / "tests"))

ENGINES = ("tree", "tree-ranges", "load-point", "load-cube", "odc-point", "odc-cube")
SIZE = 1024  # pixels a side
RES = 20.0
CENTRE = (15.0, 45.0)
THREADS = 8


def make_data() -> list[dict[str, Any]]:
    """The 52 weekly scenes and their Items (generated once; reused when present)."""
    from mosaic import synthetic

    start = dt.datetime(2024, 1, 3, 10, 0, tzinfo=dt.UTC)
    specs = [
        synthetic.SceneSpec(
            f"W33-{(start + dt.timedelta(weeks=w)):%Y%m%d}",
            "EPSG:32633",
            CENTRE,
            SIZE * RES,
            SIZE * RES,
            start + dt.timedelta(weeks=w),
            (synthetic.AssetSpec("B02", "uint16", RES, truth_band=1),),
        )
        for w in range(52)
    ]
    items = synthetic.make_collection(specs, DATA, workers=2)
    return [item.to_dict(include_self_link=False, transform_hrefs=False) for item in items]


def _items(base_url: str) -> list[dict[str, Any]]:
    features = json.loads((DATA / "items.json").read_text())["features"]
    root = str(DATA.resolve())
    for item in features:
        for asset in item["assets"].values():
            if asset["href"].startswith(root):
                asset["href"] = base_url.rstrip("/") + asset["href"][len(root) :]
    return sorted(features, key=lambda d: (d["properties"]["datetime"], d["id"]))


def worker(args: argparse.Namespace) -> None:
    """One run of one engine in this fresh process: set up, say READY, wait for GO, time, print RESULT."""
    import copy

    import dask
    import distributed  # noqa: F401  (an import cost dask pays on the first compute: not timed)
    import numpy as np
    import odc.stac
    import pystac
    import xarray  # noqa: F401
    from affine import Affine
    from odc.geo.geobox import GeoBox

    import mosaic
    import mosaic.api
    import mosaic.io.read
    import mosaic.outputs.tree
    from servers import clear_gdal_http_cache

    items = _items(args.base_url)
    engine = args.engine
    index = None
    if engine.startswith(("tree", "load")):
        index = mosaic.TileIndex.from_stac(items, tile_ranges=engine == "tree-ranges")
    pitems = [pystac.Item.from_dict(copy.deepcopy(d)) for d in items]
    first = items[0]["assets"]["B02"]
    gbox = GeoBox((SIZE, SIZE), Affine(*first["proj:transform"][:6]), "EPSG:32633")
    pixel = gbox[args.y : args.y + 1, args.x : args.x + 1]
    clear_gdal_http_cache()
    mosaic.io.runtime.reset()
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=THREADS):
        if engine.startswith("tree"):
            tree = mosaic.open_tree(index, bands="B02", max_concurrency=THREADS)
            (leaf,) = tree.leaves
            values = leaf.to_dataset().B02.isel(y=args.y, x=args.x).values
        elif engine == "load-point":
            ds = mosaic.load(geobox=pixel, index=index, bands="B02", groupby="time", max_concurrency=THREADS)
            values = ds.B02.values[:, 0, 0]
        elif engine == "load-cube":
            ds = mosaic.load(
                geobox=gbox, index=index, bands="B02", groupby="time", chunks=2048, max_concurrency=THREADS
            )
            values = ds.B02.isel(y=args.y, x=args.x).values
        else:
            ds = odc.stac.load(
                pitems,
                bands=["B02"],
                geobox=pixel if engine == "odc-point" else gbox,
                groupby="time",
                resampling="nearest",
                chunks={"x": 2048, "y": 2048},
                fail_on_error=True,
            )
            values = ds.B02.isel(
                y=0 if engine == "odc-point" else args.y, x=0 if engine == "odc-point" else args.x
            ).values
    seconds = time.perf_counter() - t0
    reads = mosaic.read_stats(THREADS).reads if index is not None else None
    print("RESULT " + json.dumps({"seconds": seconds, "values": np.asarray(values).tolist(), "reads": reads}))


def run_once(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    from _engines import run_ready_worker

    from servers import RangeServer

    with RangeServer(DATA, latency=args.latency) as server:
        cmd = [sys.executable, __file__, "--worker", "--engine", engine, "--base-url", server.base_url]
        cmd += ["--y", str(args.y), "--x", str(args.x)]
        result = run_ready_worker(cmd, engine, before_go=server.reset_stats, timeout=600)
        result["requests"] = server.requests
        result["by_method"] = server.by_method
        result["bytes"] = server.bytes_sent
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--y", type=int, default=700)
    parser.add_argument("--x", type=int, default=300)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    make_data()
    load_before = os.getloadavg()[0]
    rows, series = [], {}
    done: dict[str, list[dict[str, Any]]] = {e: [] for e in args.engines}
    for r in range(args.runs):  # the engines' order rotates from run to run (the load drifts)
        for engine in args.engines[r % len(args.engines) :] + args.engines[: r % len(args.engines)]:
            done[engine].append(run_once(engine, args))
    for engine, runs in done.items():
        series[engine] = runs[0]["values"]
        rows.append(
            {
                "engine": engine,
                "median_s": statistics.median(r["seconds"] for r in runs),
                "seconds": [round(r["seconds"], 3) for r in runs],
                "requests": runs[0]["requests"],
                "by_method": runs[0]["by_method"],
                "bytes": runs[0]["bytes"],
                "reads": runs[0]["reads"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    reference = next(iter(series.values()))
    same = {e: v == reference for e, v in series.items()}
    lines = [
        f"52 weekly scenes, {SIZE} x {SIZE} px uint16, 256-px COG tiles; pixel ({args.y}, {args.x}); "
        f"latency {args.latency} s per request; {args.runs} runs; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after",
        "",
        "| engine | median s | requests (GET/HEAD) | bytes | mosaic reads | same series |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        methods = f"{r['by_method'].get('GET', 0)}/{r['by_method'].get('HEAD', 0)}"
        lines.append(
            f"| {r['engine']} | {r['median_s']:.3f} | {r['requests']} ({methods}) | {r['bytes']:,} | "
            f"{r['reads'] if r['reads'] is not None else '-'} | {'yes' if same[r['engine']] else 'NO'} |"
        )
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "churro.md").write_text(text + "\n")
    (OUT / "churro.json").write_text(json.dumps({"rows": rows, "same": same, "args": vars(args)}, indent=1))
    if not all(same.values()):
        raise SystemExit("the engines' series differ")


if __name__ == "__main__":
    main()
