"""Fixed costs (issue 15, goal 3): imports, the CLI's help, distributed, planning, small jobs.

Every figure is the median over ``--runs`` fresh Python processes (``sys.executable``, this checkout's
``src`` first on ``PYTHONPATH``), timed from outside (wall time of the whole process, so the
interpreter's own start-up counts for every entry alike; ``.pyc`` files written, as an installed package
has them, under ``/tmp/mosaic-bench-pycache``) unless it says "warm" (timed inside one process
after a warm-up run):

* ``import mosaic`` against ``import rasterio`` and ``import odc.stac`` (and ``python -c pass``);
* ``mosaic --help`` and ``mosaic regrid --help`` (the console script);
* whether ``distributed`` is in ``sys.modules`` after an eager load, a regrid to a COG, a regrid to
  Zarr, and a lazy load's ``.compute()`` (dask's own default scheduler lookup);
* warm planning plus graph building (``mosaic.plan`` + ``mosaic.api.to_dataset``) on the demo
  collection's 12E seam: one band in 4 chunks of 2048, and all 8 bands in 1024-pixel chunks;
* a small eager load, ``chunks=None``, against odc-stac's eager ``odc.stac.load(..., chunks=None)``:
  the demo seam (B02, EPSG:4326, 0.0002 degrees), same GeoBox, warm and in a fresh process;
* the two-scene job: ``tests/real_data.py``'s ``fill_zero_scenes`` (two overlapping real Landsat 7
  cuts, 0 fill, no nodata tag) into EPSG:4326 at 0.0003 degrees, by ``gdalwarp`` with its defaults
  (``-srcnodata 0``, nearest, one thread, a GeoTIFF) against ``mosaic.load(..., chunks=None)`` and
  ``mosaic regrid ... -o out.tif``, each a fresh process, imports included.

Timed runs hold ``/tmp/mosaic-bench.lock`` (``flock``), one at a time on a shared machine; the load
average is recorded before and after. Run from the project root::

    .venv/bin/python benchmarks/fixed_costs.py             # ~2-3 min
    .venv/bin/python benchmarks/fixed_costs.py --runs 3    # quicker
    .venv/bin/python benchmarks/fixed_costs.py --src ../main/src   # another checkout's mosaic (before)

Results: ``benchmarks/output/fixed_costs.md`` and ``.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = [ROOT / "src"]  # --src replaces it: the same figures for another checkout (e.g. main, before)
OUT = ROOT / "benchmarks" / "output"
LOCK = "/tmp/mosaic-bench.lock"
PYCACHE = "/tmp/mosaic-bench-pycache"
PYTHON = sys.executable
MOSAIC = str(Path(PYTHON).parent / "mosaic")
SEAM_BBOX = (11.88, 45.40, 12.12, 45.58)
SEAM_RES = 0.0002
SCENES_RES = 0.0003


def env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SRC[0]), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # .pyc files, as an installed package has them, kept out of the source trees
    return dict(environ, PYTHONPATH=path, OMP_NUM_THREADS="1", PYTHONPYCACHEPREFIX=PYCACHE)


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wall(cmd: list[str]) -> float:
    """Wall seconds of one process (fails loudly)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed:\n{proc.stderr[-3000:]}")
    return seconds


def python_json(code: str) -> Any:
    """Run ``code`` in a fresh interpreter; the JSON it prints last."""
    proc = subprocess.run(
        [PYTHON, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env(), cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_wall(cmds: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Median wall seconds per command, runs interleaved round-robin (background load hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for cmd in cmds.values():  # one untimed run each: the page cache, .pyc files
        wall(cmd)
    for _ in range(runs):
        for name, cmd in cmds.items():
            times[name].append(wall(cmd))
    return {name: statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------------------------- data


def prepare(work: Path) -> dict[str, Any]:
    """The demo collection (its Items as JSON) and the two fill-0 scenes with their STAC-less grid."""
    return python_json(
        f"""
        import json
        from pathlib import Path
        import rasterio
        from rasterio.warp import transform_bounds
        import real_data
        from mosaic import synthetic

        work = Path({str(work)!r})
        items = synthetic.demo_collection(work / "demo")
        (work / "demo_items.json").write_text(json.dumps([i.to_dict() for i in items]))
        scenes = [str(p) for p in real_data.fill_zero_scenes(work / "scenes")]
        bounds = []
        for p in scenes:
            with rasterio.open(p) as src:
                bounds.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
        bbox = [min(b[0] for b in bounds), min(b[1] for b in bounds),
                max(b[2] for b in bounds), max(b[3] for b in bounds)]
        print(json.dumps({{"items": str(work / "demo_items.json"), "scenes": scenes, "scenes_bbox": bbox}}))
        """
    )


def scenes_grid(data: dict[str, Any]) -> dict[str, Any]:
    """mosaic's grid for the two-scene job (EPSG:4326, edge-anchored), for gdalwarp's -te/-ts."""
    return python_json(
        f"""
        import json, mosaic
        index = mosaic.TileIndex.from_files({data["scenes"]!r}, progress=False)
        p = mosaic.plan({data["scenes_bbox"]!r}, "EPSG:4326", index=index, resolution={SCENES_RES},
                        src_nodata=0, groupby=None)
        g = p.geobox
        print(json.dumps({{"shape": list(g.shape), "bounds": list(g.boundingbox)}}))
        """
    )


# ------------------------------------------------------------------------------------------ figures


def imports_and_help(runs: int) -> dict[str, float]:
    return median_wall(
        {
            "python -c pass": [PYTHON, "-c", "pass"],
            "import rasterio": [PYTHON, "-c", "import rasterio"],
            "import mosaic": [PYTHON, "-c", "import mosaic"],
            "import click": [PYTHON, "-c", "import click"],
            "import odc.stac": [PYTHON, "-c", "import odc.stac"],
            "from mosaic import load (resolved)": [PYTHON, "-c", "from mosaic import load"],
            "mosaic --help": [MOSAIC, "--help"],
            "mosaic regrid --help": [MOSAIC, "regrid", "--help"],
        },
        runs,
    )


def distributed_after(data: dict[str, Any], work: Path) -> dict[str, bool]:
    """Whether each kind of local compute leaves ``distributed`` imported (each in a fresh process)."""
    setup = f"""
        import json, sys
        import mosaic
        index = mosaic.TileIndex.from_files({data["scenes"]!r}, progress=False)
        kw = dict(index=index, src_nodata=0, groupby=None)
        bbox = {data["scenes_bbox"]!r}
        """
    cases = {
        "eager load (chunks=None)": 'mosaic.load(bbox, "EPSG:4326", chunks=None, **kw)',
        "regrid to a COG": f'mosaic.regrid({str(work / "d.tif")!r}, bbox, "EPSG:4326", overwrite=True, **kw)',
        "regrid to Zarr": f'mosaic.regrid({str(work / "d.zarr")!r}, bbox, "EPSG:4326", overwrite=True, **kw)',
        "lazy load, .compute()": 'mosaic.load(bbox, "EPSG:4326", **kw).compute()',
        "lazy load, .compute(scheduler=dask.threaded.get)": (
            'import dask.threaded; mosaic.load(bbox, "EPSG:4326", **kw).compute(scheduler=dask.threaded.get)'
        ),
    }
    return {
        name: python_json(textwrap.dedent(setup) + f"{stmt}\nprint(json.dumps('distributed' in sys.modules))")
        for name, stmt in cases.items()
    }


def plan_graph_warm(data: dict[str, Any], repeat: int) -> dict[str, dict[str, float]]:
    return python_json(
        f"""
        import json, statistics, time
        import pystac
        import mosaic
        from mosaic.api import to_dataset
        items = [pystac.Item.from_dict(d) for d in json.load(open({data["items"]!r}))]
        index = mosaic.TileIndex.from_stac(items)
        bbox = (11.86, 45.39, 12.14, 45.57)
        cases = {{
            "B02, 2048 px chunks": dict(bands="B02", chunks=2048),
            "8 bands, 1024 px chunks": dict(bands=None, chunks=1024),
        }}
        out = {{}}
        for name, kw in cases.items():
            plan_s, graph_s = [], []
            for i in range({repeat} + 1):
                t0 = time.perf_counter()
                p = mosaic.plan(bbox, "EPSG:32633", "2024-06-01", index=index, resolution=10, **kw)
                t1 = time.perf_counter()
                to_dataset(p)
                t2 = time.perf_counter()
                if i:  # the first is the warm-up
                    plan_s.append(t1 - t0)
                    graph_s.append(t2 - t1)
            s = p.summary()
            out[name] = {{
                "plan_ms": 1e3 * statistics.median(plan_s),
                "graph_ms": 1e3 * statistics.median(graph_s),
                "total_ms": 1e3 * statistics.median(a + b for a, b in zip(plan_s, graph_s)),
                "chunks": s["chunks"], "nonempty_chunks": s["nonempty_chunks"], "reads": s["reads"],
            }}
        print(json.dumps(out))
        """
    )


EAGER_SETUP = """
    import json, statistics, sys, time
    import numpy as np
    import pystac
    items = [pystac.Item.from_dict(d) for d in json.load(open({items!r}))]
    items = [i for i in items if i.datetime.date().isoformat() == "2024-06-01"]
"""
MOSAIC_EAGER = """
    import mosaic
    from odc.geo.geobox import GeoBox
    gbox = GeoBox.from_bbox({bbox!r}, "EPSG:4326", resolution={res})
    index = mosaic.TileIndex.from_stac(items, assets=["B02"])
    def run():
        ds = mosaic.load(geobox=gbox, index=index, bands="B02", chunks=None)
        return ds.B02.values[0]
"""
ODC_EAGER = """
    import odc.stac
    from odc.geo.geobox import GeoBox
    gbox = GeoBox.from_bbox({bbox!r}, "EPSG:4326", resolution={res})
    def run():
        ds = odc.stac.load(items, bands=["B02"], geobox=gbox, groupby="solar_day", chunks=None)
        return ds.B02.values[0]
"""


def eager_small(data: dict[str, Any], runs: int, repeat: int) -> dict[str, Any]:
    """The demo seam, B02, eager: warm medians in one process each, and fresh processes (imports in)."""
    fmt = {"items": data["items"], "bbox": SEAM_BBOX, "res": SEAM_RES}
    engines = {"mosaic": MOSAIC_EAGER, "odc-stac": ODC_EAGER}
    warm: dict[str, Any] = {}
    for name, body in engines.items():
        code = textwrap.dedent((EAGER_SETUP + body).format(**fmt)) + textwrap.dedent(
            f"""
            first = run()
            times = []
            for _ in range({repeat}):
                t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
            np.save({str(OUT / f"eager_{name}.npy")!r}, first)
            print(json.dumps({{"warm_ms": 1e3 * statistics.median(times), "shape": list(first.shape)}}))
            """
        )
        warm[name] = python_json(code)
    import numpy as np

    a, b = (np.load(OUT / f"eager_{name}.npy") for name in engines)
    both = (a != 0) & (b != 0)
    agree = float((a[both] == b[both]).mean()) if both.any() else float("nan")
    fresh_cmds = {
        name: [PYTHON, "-c", textwrap.dedent((EAGER_SETUP + body).format(**fmt)) + "run()\n"]
        for name, body in engines.items()
    }
    fresh = median_wall(fresh_cmds, runs)
    return {"warm": warm, "fresh_s": fresh, "identical_of_both_valid": agree}


def two_scenes(data: dict[str, Any], grid: dict[str, Any], work: Path, runs: int) -> dict[str, Any]:
    """gdalwarp (defaults) against mosaic, fresh processes, imports included, same grid."""
    (ny, nx), (minx, miny, maxx, maxy) = grid["shape"], grid["bounds"]
    gdal_out, cog_out = work / "gdalwarp.tif", work / "mosaic.tif"
    gdalwarp = [
        "gdalwarp",
        "-q",
        "-overwrite",
        "-t_srs",
        "EPSG:4326",
        "-te",
        *map(repr, (minx, miny, maxx, maxy)),
    ]
    gdalwarp += ["-ts", str(nx), str(ny), "-srcnodata", "0", *reversed(data["scenes"]), str(gdal_out)]
    load_code = textwrap.dedent(
        f"""
        import mosaic
        index = mosaic.TileIndex.from_files({data["scenes"]!r}, progress=False)
        ds = mosaic.load({data["scenes_bbox"]!r}, "EPSG:4326", index=index, resolution={SCENES_RES},
                         src_nodata=0, groupby=None, chunks=None)
        ds.data.values
        """
    )
    index_path = work / "scenes.parquet"
    subprocess.run(
        [MOSAIC, "index", "build", *data["scenes"], "-o", str(index_path), "--quiet"], check=True, env=env()
    )
    bbox = ",".join(map(repr, data["scenes_bbox"]))
    regrid = [MOSAIC, "regrid", "--index", str(index_path), "--bbox", bbox, "--crs", "EPSG:4326"]
    regrid += ["--resolution", repr(SCENES_RES), "--src-nodata", "0", "--groupby", "none", "--quiet"]
    regrid += ["--overwrite", "-o", str(cog_out)]
    cmds = {
        "gdalwarp (defaults)": gdalwarp,
        "mosaic.load(chunks=None), fresh process": [PYTHON, "-c", load_code],
        "mosaic regrid -o out.tif (CLI)": regrid,
    }
    times = median_wall(cmds, runs)
    import rasterio

    with rasterio.open(gdal_out) as g, rasterio.open(cog_out) as m:
        a, b = g.read(1), m.read(1)
        same_grid = g.transform.almost_equals(m.transform) and g.shape == m.shape
    both = (a != 0) & (b != 0)
    return {
        "shape": [ny, nx],
        "seconds": times,
        "same_grid": bool(same_grid),
        "identical_of_both_valid": float((a[both] == b[both]).mean()) if both.any() else float("nan"),
        "gdalwarp": " ".join(gdalwarp),
        "regrid": " ".join(regrid),
    }


# ------------------------------------------------------------------------------------------- report


def report(result: dict[str, Any]) -> str:
    imp = result["imports"]
    ratio = imp["import mosaic"] / imp["import rasterio"]
    help_ratio = imp["mosaic --help"] / imp["import mosaic"]
    pg = result["plan_graph"]
    few = pg["B02, 2048 px chunks"]["total_ms"]
    eager = result["eager"]
    warm_ratio = eager["warm"]["mosaic"]["warm_ms"] / eager["warm"]["odc-stac"]["warm_ms"]
    fresh_ratio = eager["fresh_s"]["mosaic"] / eager["fresh_s"]["odc-stac"]
    two = result["two_scenes"]["seconds"]
    gw = two["gdalwarp (defaults)"]
    load_two = two["mosaic.load(chunks=None), fresh process"]
    cli_two = two["mosaic regrid -o out.tif (CLI)"]
    dist = result["distributed"]
    ours = {k: v for k, v in dist.items() if k in ("eager load (chunks=None)", "regrid to a COG")}

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = [
        f"Machine: {result['machine']}; load average {result['load_before']} before, "
        f"{result['load_after']} after; {result['runs']} fresh-process runs per figure (medians); "
        f"commit {result['commit']}, {result['date']}.",
        "",
        "| goal | figure | |",
        "|---|---|---|",
        f"| `import mosaic` <= 1.5x `import rasterio` | {imp['import mosaic']:.3f} s vs "
        f"{imp['import rasterio']:.3f} s = {ratio:.2f}x | {met(ratio <= 1.5)} |",
        f"| `mosaic --help` as fast as `import mosaic` | {imp['mosaic --help']:.3f} s ({help_ratio:.2f}x; "
        f"`import click` alone {imp['import click']:.3f} s); `mosaic regrid --help` "
        f"{imp['mosaic regrid --help']:.3f} s | {met(help_ratio <= 1.5)} |",
        "| no `distributed` import without a client | "
        + "; ".join(f"{k}: {'imports it' if v else 'no'}" for k, v in dist.items())
        + f" | {met(not any(ours.values()))} (the computes mosaic runs itself) |",
        f"| plan + graph < 20 ms warm, a few chunks | {few:.1f} ms (4 chunks, 1 band); "
        f"8 bands x 1024 px: {pg['8 bands, 1024 px chunks']['total_ms']:.1f} ms | {met(few < 20)} |",
        f"| eager small load <= odc-stac eager | warm {eager['warm']['mosaic']['warm_ms']:.0f} vs "
        f"{eager['warm']['odc-stac']['warm_ms']:.0f} ms ({warm_ratio:.2f}x); fresh "
        f"{eager['fresh_s']['mosaic']:.2f} vs {eager['fresh_s']['odc-stac']:.2f} s ({fresh_ratio:.2f}x) "
        f"| {met(warm_ratio <= 1 and fresh_ratio <= 1)} |",
        f"| two-scene job <= gdalwarp, fresh process | gdalwarp {gw:.3f} s; mosaic.load {load_two:.3f} s "
        f"({load_two / gw:.1f}x); mosaic regrid CLI {cli_two:.3f} s ({cli_two / gw:.1f}x) | "
        f"{met(load_two <= gw)} |",
        "",
        "| fresh process | s |",
        "|---|---:|",
        *(f"| `{k}` | {v:.3f} |" for k, v in imp.items()),
        "",
        "| warm plan + graph | plan ms | graph ms | total ms | chunks | non-empty | reads |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {k} | {v['plan_ms']:.1f} | {v['graph_ms']:.1f} | {v['total_ms']:.1f} | {v['chunks']} "
            f"| {v['nonempty_chunks']} | {v['reads']} |"
            for k, v in pg.items()
        ),
        "",
        f"Eager seam load (B02, {eager['warm']['mosaic']['shape']} px): pixels identical where both valid: "
        f"{eager['identical_of_both_valid']:.4f}.",
        f"Two-scene job: {result['two_scenes']['shape']} px output, same grid as gdalwarp: "
        f"{result['two_scenes']['same_grid']}, identical where both valid: "
        f"{result['two_scenes']['identical_of_both_valid']:.4f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh-process runs per figure")
    parser.add_argument("--repeat", type=int, default=20, help="warm repeats per in-process figure")
    parser.add_argument("--no-lock", action="store_true", help="do not take the lock (a smoke run)")
    parser.add_argument("--src", type=Path, help="measure the mosaic package in this folder instead")
    args = parser.parse_args()
    if args.src is not None:
        SRC[0] = args.src.resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "fixed_costs"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    data = prepare(work)
    grid = scenes_grid(data)
    result: dict[str, Any] = {"runs": args.runs}
    result["distributed"] = distributed_after(data, work)  # not timed: outside the lock
    with contextlib.nullcontext() if args.no_lock else bench_lock():
        result["load_before"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        result["imports"] = imports_and_help(args.runs)
        result["plan_graph"] = plan_graph_warm(data, args.repeat)
        result["eager"] = eager_small(data, args.runs, args.repeat)
        result["two_scenes"] = two_scenes(data, grid, work, args.runs)
        result["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=SRC[0]
    )
    cpu = platform.processor() or platform.machine()
    result["machine"] = f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    result["commit"] = commit.stdout.strip()
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = report(result)
    print(text)
    stem = "fixed_costs" if args.src is None else f"fixed_costs_{result['commit']}"
    (OUT / f"{stem}.md").write_text(text + "\n")
    (OUT / f"{stem}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
