"""Mosaic load vs odc-stac, stackstac and gdalwarp: same STAC Items, same target grid, same threads.

For each case, one odc-geo ``GeoBox`` is built and given to every engine:

* ``mosaic``: ``mosaic.load(index=TileIndex.from_stac(items), geobox=gbox, ...).compute()``;
* ``odc-stac``: ``odc.stac.load(items, geobox=gbox, chunks=..., groupby="solar_day").compute()``;
* ``stackstac``: ``stackstac.mosaic(stackstac.stack(items, epsg, resolution, bounds), reverse=True)``;
* ``gdalwarp`` / ``gdalwarp-multi``: the Debian CLI with ``-t_srs -te -tr`` (the second with
  ``-multi -wo NUM_THREADS=2``), inputs in reverse fusion order (in gdalwarp the last input wins),
  writing an uncompressed GeoTIFF.

One band (B02, uint16, nodata 0), method "first" (earliest scene on top, ties by id), one day,
nearest resampling, 2048-pixel chunks and the dask threaded scheduler with ``--threads`` workers
(default 2) for the dask engines. Every run is a fresh process (this script with ``--engine X --case
Y``; gdalwarp is one by nature). Only load + compute is timed: not imports (``distributed`` included:
dask imports it on the first compute of a process, ~0.25 s, for every dask engine alike), not Item
parsing, not index building (timed and reported separately). Engines run round-robin (run k of every
engine, then run k+1, in an order that rotates every round), so background load hits them alike; wall
time and CPU time (user + system of the timed region) are both recorded. Before a case its files are
read once (warm page cache).

The outputs of the first run of each engine are checked: same shape and transform as the GeoBox, the
fraction of identical pixels among those valid in both versus mosaic, the fraction valid in only one,
and the mean |value - truth| at the output pixel centres (the synthetic truth, on a subsample; the
scenes' noise alone gives ~1.0).

Cases:

1. ``seam12``: the demo collection's 12E zone seam (UTM 32N and 33N scenes, one day), 20 m, UTM 33N;
2. ``wide3zone``: 12E-18E x 45.3N-45.7N at 20 m in UTM 33N, from a strip of 110 x 60 km scenes in UTM
   32N/33N/34N covering 10.9E-19.1E (generated once, ~1.5 min, under ``benchmarks/output/``);
3. ``overview200``: 11.5E-18.5E x 45.25N-45.75N at 200 m (10x coarser) from the same strip: an
   overview read.

Run from the project root::

    .venv/bin/python benchmarks/load_compare.py            # full run (~3-4 min on 2 cores)
    .venv/bin/python benchmarks/load_compare.py --quick    # smoke run: 1 run each, a smaller wide case

``--proto-src DIR`` adds an engine ``mosaic-proto``: the mosaic worker with ``PYTHONPATH=DIR`` (a
patched copy of ``src/mosaic`` in ``DIR/mosaic``), to measure proposed changes on the same footing.
Results: ``benchmarks/output/load_compare[_quick].md`` and ``.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "output"
DATA = OUTPUT / "load_compare_data"
ASSET = "B02"
TRUTH_BAND = 1  # demo_assets: B02 holds truth band 1, scale 1, offset 0
DAY = "2024-06-01"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# ------------------------------------------------------------------------------------- collections

# The strip: (zone EPSG, centre longitudes). 110 x 60 km scenes at 20 m (5490 x 3000 pixels, internal
# overviews x2..x64); neighbours overlap by ~5 km, zones by ~50 km (as Sentinel-2 tiles do).
STRIP_LAT = 45.5
STRIP_SCENES = (
    ("EPSG:32632", (11.6,)),
    ("EPSG:32633", (12.3, 13.65, 15.0, 16.35, 17.7)),
    ("EPSG:32634", (18.4,)),
)
STRIP_WIDTH_M, STRIP_HEIGHT_M = 109_800.0, 60_000.0


def strip_specs() -> list[Any]:
    from mosaic.synthetic import SceneSpec, demo_assets

    assets = tuple(a for a in demo_assets(20.0) if a.name == ASSET)
    specs = []
    for crs, lons in STRIP_SCENES:
        for lon in lons:
            k = len(specs)  # one pass, west to east, 5 s apart: distinct times, a fixed fusion order
            when = dt.datetime(2024, 6, 1, 10, 0, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=5 * k)
            zone = crs.split(":")[1][-2:]
            specs.append(
                SceneSpec(
                    f"S{zone}-{lon:05.2f}E-20240601",
                    crs,
                    (lon, STRIP_LAT),
                    STRIP_WIDTH_M,
                    STRIP_HEIGHT_M,
                    when,
                    assets,
                )
            )
    return specs


def build_collections() -> dict[str, float]:
    """Generate (or reuse) both collections; returns the seconds each took."""
    from mosaic.synthetic import demo_collection, make_collection

    took = {}
    t0 = time.perf_counter()
    demo_collection(DATA / "demo")
    took["demo"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    make_collection(strip_specs(), DATA / "strip", workers=min(4, os.cpu_count() or 1))
    took["strip"] = time.perf_counter() - t0
    return took


# ------------------------------------------------------------------------------------------- cases

CASES: dict[str, dict[str, Any]] = {
    "seam12": {
        "collection": "demo",
        "bbox": (11.86, 45.39, 12.14, 45.57),
        "crs": "EPSG:32633",
        "resolution": 20.0,
        "what": "12E zone seam, UTM 32N + 33N scenes (demo collection, 15 km scenes), 20 m",
    },
    "wide3zone": {
        "collection": "strip",
        "bbox": (12.0, 45.3, 18.0, 45.7),
        "quick_bbox": (11.8, 45.3, 13.2, 45.7),
        "crs": "EPSG:32633",
        "resolution": 20.0,
        "what": "12E-18E, UTM 32N/33N/34N scenes (110 x 60 km), 20 m",
    },
    "overview200": {
        "collection": "strip",
        "bbox": (11.5, 45.25, 18.5, 45.75),
        "crs": "EPSG:32633",
        "resolution": 200.0,
        "what": "11.5E-18.5E at 200 m from 20 m scenes (10x coarser: overviews)",
    },
}


def case_setup(name: str, quick: bool = False) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """The case's Items (dicts, of DAY, touching the box, sorted by datetime then id) and its GeoBox."""
    import shapely
    from odc.geo.geobox import GeoBox
    from odc.geo.geom import BoundingBox

    case = CASES[name]
    bbox = case.get("quick_bbox", case["bbox"]) if quick else case["bbox"]
    features = json.loads((DATA / case["collection"] / "items.json").read_text())["features"]
    area = shapely.box(*bbox)
    items = [
        f
        for f in features
        if f["properties"]["datetime"].startswith(DAY)
        and ASSET in f["assets"]
        and shapely.geometry.shape(f["geometry"]).intersects(area)
    ]
    items.sort(key=lambda f: (f["properties"]["datetime"], f["id"]))
    gbox = GeoBox.from_bbox(
        BoundingBox(*bbox, crs="EPSG:4326").to_crs(case["crs"]), resolution=case["resolution"]
    )
    return items, gbox, {**case, "bbox": bbox}


# ------------------------------------------------------------------------------------------ worker


def worker(args: argparse.Namespace) -> None:
    """One timed run of one engine on one case, in this (fresh) process; prints one RESULT line."""
    import distributed  # noqa: F401  (dask imports it on a process's first compute: an import cost)
    from _engines import ENGINES

    items, gbox, _ = case_setup(args.case, args.quick)
    engine = ENGINES[args.engine.removesuffix("-proto")](items, gbox, ASSET, args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    array, grid = engine["timed"]()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = engine["after"]()
    if args.save:
        np.save(args.save, array)
    if args.engine.startswith("mosaic"):
        import mosaic

        info["module"] = str(Path(mosaic.__file__).parent)
    result = {"seconds": seconds, "cpu": cpu, "grid": grid, "dtype": str(array.dtype), **info}
    print("RESULT " + json.dumps(result))


def run_worker(engine: str, case: str, args: argparse.Namespace, save: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--engine", engine, "--case", case, "--threads", str(args.threads)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--save", str(save)] if save else []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if engine == "mosaic-proto":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.proto_src), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} on {case} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    warned = sorted({line.strip() for line in proc.stderr.splitlines() if "Warning" in line})
    if warned:
        result["stderr_warnings"] = warned[:5]
    return result


def run_gdalwarp_timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child) of one gdalwarp run."""
    from _engines import run_gdalwarp

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = run_gdalwarp(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ------------------------------------------------------------------------------------------ checks


def warm_cache(items: list[dict[str, Any]]) -> int:
    total = 0
    for d in items:
        with open(d["assets"][ASSET]["href"], "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    return total


def agreement(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Fraction of pixels valid in both that are identical, and of pixels valid in only one."""
    va, vb = ref != 0, other != 0
    both, either = va & vb, va | vb
    return {
        "identical_of_both_valid": float((ref[both] == other[both]).mean()) if both.any() else 1.0,
        "valid_mismatch": float((va ^ vb).sum() / max(1, either.sum())),
        "valid_pixels_ref": int(va.sum()),
        "valid_pixels_other": int(vb.sum()),
    }


def truth_sample(gbox: Any, stride: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The truth (B02, DAY) at the centres of every ``stride``-th output pixel."""
    from pyproj import Transformer

    from mosaic.synthetic import truth

    ny, nx = gbox.shape
    rows, cols = np.arange(0, ny, stride), np.arange(0, nx, stride)
    a = gbox.affine
    x, y = np.meshgrid(a.c + (cols + 0.5) * a.a, a.f + (rows + 0.5) * a.e)
    lon, lat = Transformer.from_crs(str(gbox.crs), "EPSG:4326", always_xy=True).transform(x, y)
    when = dt.date.fromisoformat(DAY)
    return (slice(0, ny, stride), slice(0, nx, stride)), truth(lon, lat, TRUTH_BAND, when=when)


def truth_error(array: np.ndarray, sample: tuple[tuple[slice, slice], np.ndarray]) -> dict[str, float]:
    where, expected = sample
    values = array[where]
    valid = values != 0
    err = np.abs(values[valid].astype(np.float64) - expected[valid])
    if not err.size:
        return {"mean": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"mean": float(err.mean()), "p99": float(np.percentile(err, 99)), "max": float(err.max())}


def grid_of_tif(path: Path) -> dict[str, Any]:
    import rasterio

    with rasterio.open(path) as src:
        return {
            "shape": [src.height, src.width],
            "transform": [float(v) for v in tuple(src.transform)[:6]],
            "crs": f"EPSG:{src.crs.to_epsg()}",
        }


def same_grid(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["shape"] == b["shape"]
        and np.allclose(a["transform"], b["transform"], rtol=0, atol=1e-6)
        and a["crs"].upper() == b["crs"].upper()
    )


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    import dask
    import odc.geo
    import odc.stac
    import rasterio
    import stackstac
    import xarray

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    gdal_cli = subprocess.run(["gdalwarp", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024**2, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "rasterio": rasterio.__version__,
        "rasterio_gdal": rasterio.__gdal_version__,
        "gdal_cli": gdal_cli,
        "virtual-mosaic": version("virtual-mosaic"),
        "odc-stac": odc.stac.__version__,
        "odc-geo": odc.geo.__version__,
        "stackstac": stackstac.__version__,
        "dask": dask.__version__,
        "xarray": xarray.__version__,
        "numpy": np.__version__,
    }


def source_state() -> dict[str, Any]:
    """Which mosaic source was measured: the commit and whether src/ had uncommitted changes."""

    def git(*argv: str) -> str:
        proc = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "src_uncommitted": git("status", "--porcelain", "src")}


# ------------------------------------------------------------------------------------------ driver

ENGINE_ORDER = ("mosaic", "mosaic-proto", "odc-stac", "stackstac", "gdalwarp", "gdalwarp-multi")


def run_case(name: str, args: argparse.Namespace, arrays: Path) -> dict[str, Any]:
    from _engines import gdalwarp_command, grid_from_geobox

    items, gbox, case = case_setup(name, args.quick)
    warmed = warm_cache(items)
    expected = grid_from_geobox(gbox)
    print(f"\n## {name}: {case['what']}; {len(items)} Items, output {expected['shape']}", flush=True)
    result: dict[str, Any] = {
        "case": name,
        "what": case["what"],
        "bbox_lonlat": case["bbox"],
        "items": [d["id"] for d in items],
        "geobox": expected,
        "warmed_bytes": warmed,
        "engines": {},
    }
    engines = [e for e in ENGINE_ORDER if e in args.engines]
    outputs: dict[str, Path] = {}
    times: dict[str, list[float]] = {e: [] for e in engines}
    cpus: dict[str, list[float]] = {e: [] for e in engines}
    infos: dict[str, dict[str, Any]] = {e: {} for e in engines}
    runs = dict.fromkeys(engines, args.runs)
    loads = [os.getloadavg()[0]]
    # round-robin (run k of every engine, then run k+1), so background load hits every engine alike; the
    # order rotates every round, so no engine always runs first (after the previous round's last process
    # freed its memory, which this VM's page-fault cost depends on)
    for k in range(args.runs):
        for engine in engines[k % len(engines) :] + engines[: k % len(engines)]:
            if k >= runs[engine]:
                continue
            if engine.startswith("gdalwarp"):
                out = arrays / f"{name}__{engine}.tif"
                cmd = gdalwarp_command(items, gbox, ASSET, out, multi=engine.endswith("multi"))
                seconds, cpu = run_gdalwarp_timed(cmd)
                if k == 0:
                    infos[engine] = {"command": shlex.join(cmd), "grid": grid_of_tif(out)}
                    outputs[engine] = out
            else:
                save = arrays / f"{name}__{engine}.npy" if k == 0 else None
                res = run_worker(engine, name, args, save)
                seconds, cpu = res.pop("seconds"), res.pop("cpu")
                if k == 0:
                    infos[engine] = res
                    outputs[engine] = save  # type: ignore[assignment]
            times[engine].append(seconds)
            cpus[engine].append(cpu)
            if k == 0 and seconds > args.slow:
                runs[engine] = min(runs[engine], args.min_runs)  # a slow engine: fewer runs
        loads.append(os.getloadavg()[0])
    for engine in engines:
        info = infos[engine]
        info.update(times=times[engine], cpu_times=cpus[engine])
        info.update(median=statistics.median(times[engine]), min=min(times[engine]))
        info["cpu_median"] = statistics.median(cpus[engine])
        info["grid_ok"] = same_grid(info["grid"], expected)
        result["engines"][engine] = info
        print(
            f"  {engine:15s} median {info['median']:7.3f} s  min {info['min']:7.3f} s  "
            f"cpu {info['cpu_median']:7.3f} s  runs {len(times[engine])}"
        )
    result["load_average_1min"] = loads
    # outputs: agreement versus mosaic, error versus the truth
    sample = truth_sample(gbox, max(1, int(np.sqrt(gbox.shape[0] * gbox.shape[1] / 2e6))))
    loaded: dict[str, np.ndarray] = {}
    for engine, path in outputs.items():
        if path.suffix == ".tif":
            import rasterio

            with rasterio.open(path) as src:
                loaded[engine] = src.read(1)
        else:
            loaded[engine] = np.load(path)
        result["engines"][engine]["truth_error"] = truth_error(loaded[engine], sample)
    ref = loaded.get("mosaic")
    for engine, other in loaded.items():
        if ref is None or engine == "mosaic":
            continue
        if other.shape != ref.shape:
            result["engines"][engine]["agreement"] = {"error": f"shape {other.shape} != {ref.shape}"}
        else:
            result["engines"][engine]["agreement"] = agreement(ref, other)
    if not args.keep:
        for path in outputs.values():
            path.unlink(missing_ok=True)
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | engine | median (s) | min (s) | CPU (s) | runs | vs mosaic "
        "| identical valid px | valid only in one | mean abs err vs truth |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        base = res["engines"].get("mosaic", {}).get("median")
        for engine, info in res["engines"].items():
            agree = info.get("agreement", {})
            ratio = f"{info['median'] / base:.2f}x" if base else "-"
            if engine == "mosaic":
                same = mismatch = "(reference)"
            elif "error" in agree:
                same, mismatch = agree["error"], "-"
            else:
                same = f"{100 * agree['identical_of_both_valid']:.2f}%" if agree else "-"
                mismatch = f"{100 * agree['valid_mismatch']:.3f}%" if agree else "-"
            grid = "" if info["grid_ok"] else " (GRID DIFFERS)"
            err = info.get("truth_error", {}).get("mean", float("nan"))
            lines.append(
                f"| {res['case']} | {engine}{grid} | {info['median']:.3f} | {info['min']:.3f} | "
                f"{info['cpu_median']:.3f} | {len(info['times'])} | {ratio} | {same} | {mismatch} "
                f"| {err:.2f} |"
            )
    return "\n".join(lines)


def details(results: list[dict[str, Any]]) -> str:
    lines = []
    for res in results:
        g = res["geobox"]
        lines.append(
            f"* **{res['case']}**: {res['what']}; {len(res['items'])} Items; "
            f"bbox {tuple(res['bbox_lonlat'])} -> {g['crs']} grid {g['shape'][0]} x {g['shape'][1]} px, "
            f"transform {tuple(g['transform'])}; 1-min load average during the case: "
            f"{', '.join(f'{v:.1f}' for v in res['load_average_1min'])}"
        )
        for name in ("mosaic", "mosaic-proto"):
            m = res["engines"].get(name)
            if not m:
                continue
            p = m["plan"]
            lines.append(
                f"  * {name}: index build {m['index_s']:.3f} s (not in the timings), plan alone "
                f"{m['plan_s']:.3f} s; plan: {p['reads']} reads of {p['assets_read']} assets, "
                f"{p['nonempty_chunks']}/{p['chunks']} chunks with data, overview factors "
                f"{p['overview_factors']}, ~{p['estimated_read_bytes'] / 1e6:.1f} MB decoded as float, "
                f"output {p['output_bytes'] / 1e6:.1f} MB"
            )
        errs = ", ".join(
            f"{e}: {i['truth_error']['mean']:.2f}/{i['truth_error']['p99']:.2f}/{i['truth_error']['max']:.1f}"
            for e, i in res["engines"].items()
            if "truth_error" in i
        )
        lines.append(f"  * abs error vs truth, mean/p99/max: {errs}")
        grids = ", ".join(f"{e}: {'same' if i['grid_ok'] else i['grid']}" for e, i in res["engines"].items())
        lines.append(f"  * output grid vs GeoBox: {grids}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run each, a smaller wide case")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--engines", nargs="*", default=None, choices=ENGINE_ORDER)
    parser.add_argument("--runs", type=int, default=5, help="runs per engine and case (median reported)")
    parser.add_argument("--min-runs", type=int, default=3, help="runs for an engine whose first run is slow")
    parser.add_argument("--slow", type=float, default=20.0, help="seconds that make a first run 'slow'")
    parser.add_argument("--threads", type=int, default=2, help="dask threads for the dask engines")
    parser.add_argument("--proto-src", type=Path, help="add engine mosaic-proto: mosaic from DIR/mosaic")
    parser.add_argument("--output", help="output file stem (default load_compare[_quick])")
    parser.add_argument("--keep", action="store_true", help="keep the output arrays")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        worker(args)
        return
    if args.engines is None:
        args.engines = [e for e in ENGINE_ORDER if e != "mosaic-proto" or args.proto_src]
    if "mosaic-proto" in args.engines and not args.proto_src:
        parser.error("engine mosaic-proto needs --proto-src")
    if args.quick:
        args.runs = args.min_runs = 1
    DATA.mkdir(parents=True, exist_ok=True)
    arrays = OUTPUT / "load_compare_arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    took = build_collections()
    print(f"collections ready: {', '.join(f'{k} {v:.1f} s' for k, v in took.items())}", flush=True)
    started = dt.datetime.now(dt.UTC)
    results = [run_case(name, args, arrays) for name in args.cases]
    stem = args.output or ("load_compare_quick" if args.quick else "load_compare")
    command = ".venv/bin/python benchmarks/load_compare.py " + shlex.join(sys.argv[1:])
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": machine(),
        "source": source_state(),
        "threads": args.threads,
        "collections_s": took,
        "results": results,
    }
    (OUTPUT / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    text = "\n\n".join(
        [
            f"# Mosaic load vs odc-stac, stackstac and gdalwarp ({report['date']})",
            f"`{report['command']}`; {args.threads} dask threads; mosaic source: {report['source']}; "
            "machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()),
            table(results),
            details(results),
        ]
    )
    (OUTPUT / f"{stem}.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
