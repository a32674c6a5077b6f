"""The issue's small job (issue 15, goal 3): two Landsat-8-sized scenes into EPSG:4326, ~2900 x 2000.

The issue measured "two Landsat 8 scenes into EPSG:4326, ~2900 x 2000 output": mosaic 0.45 s,
``gdalwarp`` (defaults) 0.29 s, odc-stac's eager load 0.19 s, imports excluded for the Python tools
(``gdalwarp``, a C++ binary, timed as its process). This script builds that job.

**Data** (generated once, cached under ``benchmarks/output/small_job_data/``): two scenes of
7600 x 7800 ``uint16`` at 30 m in UTM 33N (EPSG:32633), as Landsat 8 Collection 2 bands are: a tilted
(12 degrees) footprint of valid pixels with 0 fill around it (nodata 0), DEFLATE + predictor 2, tiled
512, internal overviews x2..x16 (average); values a smooth field plus Gaussian noise (sigma 6), so the
tiles compress like real data. Adjacent WRS-2 paths: the second scene 120 km east and 30 km south of
the first, acquired 7 days later. One STAC Item each (projection v2 + raster extensions).

**Grid**: EPSG:4326 at 0.001 degrees, 2900 x 2000 pixels over the middle of the two scenes (edge on a
multiple of the resolution, so mosaic's grid for the bbox is this grid exactly); nearest; the earlier
scene on top where they overlap.

**Engines**, each run a fresh process (medians; round-robin order):

* ``mosaic``: ``mosaic.load(bbox, "EPSG:4326", resolution=..., groupby=None, chunks=None)`` (eager);
* ``mosaic-base``: the same as ``mosaic`` from another checkout (``--base-src DIR``: before a change);
* ``mosaic-regrid``: ``mosaic.regrid("out.tif", ...)`` (a COG written);
* ``mosaic-cli``: ``mosaic regrid --index I --bbox ... -o out.tif`` (the console script: imports in);
* ``odc-stac``: ``odc.stac.load(items, geobox=..., chunks=None, groupby=<one group>)`` (eager);
* ``gdalwarp``: ``gdalwarp -t_srs EPSG:4326 -te ... -ts 2900 2000`` and nothing else (its defaults:
  nearest, one thread, no ``-multi``, the files' nodata, overview chosen by GDAL, a GeoTIFF).

Two figures per Python engine from the same run: **job** (the load, imports done and the index built
or Items parsed beforehand, as the issue timed it) and **process** (launch to array, everything in).
``gdalwarp`` and the CLI have one figure (their process). ``--reference`` saves mosaic's array the
first time and compares every later run's with it (pixels identical to main's); ``--src DIR`` runs the
mosaic engines from another checkout's ``src``. ``--profile`` profiles mosaic's eager load instead.

Run from the project root, under the shared lock on a shared machine::

    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/small_job.py --runs 7 --reference
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "output"
DATA = OUTPUT / "small_job_data"
ASSET = "B4"
CRS = "EPSG:32633"
WIDTH, HEIGHT, RES, TILE, OVERVIEWS = 7600, 7800, 30.0, 512, 4
NOISE_SIGMA = 6.0
TILT = 12.0  # degrees: a descending Landsat path's footprint within its UTM-aligned raster
SCENES = (
    # id, upper-left corner (UTM 33N), acquisition time: adjacent paths 120 km apart, 7 days apart
    ("LC08_190028", 380_010.0, 5_100_000.0, "2024-06-01T09:50:00Z"),
    ("LC08_189028", 500_010.0, 5_070_000.0, "2024-06-08T09:44:00Z"),
)
OUT_RES = 0.001
OUT_SHAPE = (2000, 2900)
ENGINES = ("mosaic", "mosaic-base", "mosaic-regrid", "mosaic-cli", "odc-stac", "gdalwarp")


# ------------------------------------------------------------------------------------------- data


def make_scene(scene: tuple[str, float, float, str]) -> dict[str, Any]:
    """Write one scene's COG (if absent) and return its STAC Item as a dict."""
    import numpy as np
    from affine import Affine
    from shapely.geometry import box

    from mosaic.index.geom import to_lonlat

    name, left, top, when = scene
    path = DATA / name / f"{ASSET}.tif"
    transform = Affine(RES, 0, left, 0, -RES, top)
    bounds = (left, top - HEIGHT * RES, left + WIDTH * RES, top)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(sum(map(ord, name)))
        rows = np.arange(HEIGHT, dtype=np.float32)[:, None]
        cols = np.arange(WIDTH, dtype=np.float32)[None, :]
        x, y = left + (cols + 0.5) * RES, top - (rows + 0.5) * RES
        field = (
            9000
            + 1500 * np.sin(x / 9000.0) * np.cos(y / 7000.0)
            + 800 * np.sin((x + y) / 2300.0)
            + 300 * np.cos(x / 700.0 - y / 900.0)
        )
        data = field + rng.normal(0.0, NOISE_SIGMA, size=(HEIGHT, WIDTH)).astype(np.float32)
        # the valid footprint: a rectangle tilted by TILT degrees about the raster's centre
        t = np.deg2rad(TILT)
        u = (cols - WIDTH / 2) * np.cos(t) + (rows - HEIGHT / 2) * np.sin(t)
        v = -(cols - WIDTH / 2) * np.sin(t) + (rows - HEIGHT / 2) * np.cos(t)
        inside = (np.abs(u) < 3100) & (np.abs(v) < 3000)
        out = np.where(inside, np.clip(np.rint(data), 1, 65535), 0).astype("uint16")
        del data, field, u, v, inside
        from _engines import write_uint16_cog

        write_uint16_cog(path, out, CRS, transform, tile=TILE, overviews=OVERVIEWS)
    footprint = to_lonlat(box(*bounds), CRS)
    from _engines import uint16_cog_item

    return uint16_cog_item(
        name,
        path,
        ASSET,
        crs=CRS,
        when=when,
        footprint=footprint,
        transform=transform,
        bounds=bounds,
        shape=(HEIGHT, WIDTH),
        res=RES,
    )


def build() -> dict[str, Any]:
    """The scenes (generated if absent), their Items, the output grid and a mosaic index file."""
    from concurrent.futures import ProcessPoolExecutor

    case_path = DATA / "case.json"
    if case_path.exists() and all((DATA / s[0] / f"{ASSET}.tif").exists() for s in SCENES):
        return dict(json.loads(case_path.read_text()))
    DATA.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        items = list(pool.map(make_scene, SCENES))
    took = time.perf_counter() - t0
    import shapely

    union = shapely.union_all([shapely.geometry.shape(d["geometry"]) for d in items])
    cx, cy = union.centroid.x, union.centroid.y
    ny, nx = OUT_SHAPE
    west = round((cx - nx * OUT_RES / 2) / OUT_RES) * OUT_RES
    south = round((cy - ny * OUT_RES / 2) / OUT_RES) * OUT_RES
    bbox = [round(west, 6), round(south, 6), round(west + nx * OUT_RES, 6), round(south + ny * OUT_RES, 6)]
    index_path = DATA / "index.parquet"
    from mosaic.index.tile_index import TileIndex

    TileIndex.from_stac(items, assets=[ASSET]).write(index_path)
    size = sum(Path(d["assets"][ASSET]["href"]).stat().st_size for d in items)
    case = {
        "items": items,
        "bbox": bbox,
        "res": OUT_RES,
        "shape": [ny, nx],
        "index": str(index_path),
        "generated_s": took,
        "deflate_ratio": len(items) * WIDTH * HEIGHT * 2 * 4 / 3 / size,
    }
    case_path.write_text(json.dumps(case))
    return case


# ---------------------------------------------------------------------------------------- workers


def _geobox(case: dict[str, Any]) -> Any:
    from affine import Affine
    from odc.geo.geobox import GeoBox

    west, _, _, north = case["bbox"]
    res = case["res"]
    return GeoBox(tuple(case["shape"]), Affine(res, 0.0, west, 0.0, -res, north), "EPSG:4326")


def worker(args: argparse.Namespace) -> None:
    """One run of one engine in this fresh process; prints one RESULT line."""
    launched = float(args.launched)
    case = json.loads((DATA / "case.json").read_text())
    import numpy as np

    if args.engine in ("mosaic", "mosaic-base", "mosaic-regrid"):
        import mosaic
        import mosaic.api
        import mosaic.fuse
        import mosaic.io.read  # (the engine's modules, as `import odc.stac` imports all of odc-stac)
        import mosaic.outputs.batch
        from mosaic.index.tile_index import TileIndex

        index = TileIndex.from_stac(case["items"], assets=[ASSET])
        kw = dict(index=index, resolution=case["res"], groupby=None, method="first", resampling="nearest")
        out_tif = OUTPUT / "small_job_regrid.tif"

        def run() -> Any:
            if args.engine != "mosaic-regrid":
                ds = mosaic.load(case["bbox"], "EPSG:4326", chunks=None, **kw)
                return ds[ASSET].values[0]
            mosaic.regrid(out_tif, case["bbox"], "EPSG:4326", overwrite=True, progress=False, **kw)
            return None

    elif args.engine == "odc-stac":
        import odc.stac
        import pystac

        items = [pystac.Item.from_dict(d) for d in case["items"]]
        gbox = _geobox(case)

        def run() -> Any:
            ds = odc.stac.load(
                items,
                bands=[ASSET],
                geobox=gbox,
                groupby=lambda item, parsed, idx: 0,  # one plane: the two scenes mosaicked
                resampling="nearest",
                chunks=None,
                fail_on_error=True,
            )
            return ds[ASSET].values[0]

    else:
        raise SystemExit(f"unknown engine {args.engine}")
    ready = time.time()
    t0, c0 = time.perf_counter(), time.process_time()
    array = run()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    ended = time.time()
    if array is None:  # the COG: read back (untimed)
        import rasterio

        with rasterio.open(OUTPUT / "small_job_regrid.tif") as src:
            array = src.read(1)
    if args.save:
        np.save(args.save, np.asarray(array))
    result = {
        "job": seconds,
        "cpu": cpu,
        "process": ended - launched,
        "before_job": ready - launched,
        "distributed": "distributed" in sys.modules,
        "shape": list(np.shape(array)),
    }
    print("RESULT " + json.dumps(result))


def run_python(engine: str, args: argparse.Namespace, save: Path | None) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = args.base_src if engine == "mosaic-base" else args.src
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--engine", engine] + (["--save", str(save)] if save else [])
    launched = time.time()
    proc = subprocess.run([*cmd, "--launched", repr(launched)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return dict(json.loads(lines[-1][len("RESULT ") :]))


def gdalwarp_cmd(case: dict[str, Any], out: Path) -> list[str]:
    """gdalwarp with its defaults: only the target CRS, extent and size are given."""
    ny, nx = case["shape"]
    hrefs = [d["assets"][ASSET]["href"] for d in case["items"]]
    cmd = ["gdalwarp", "-q", "-overwrite", "-t_srs", "EPSG:4326", "-te", *map(repr, case["bbox"])]
    return [*cmd, "-ts", str(nx), str(ny), *reversed(hrefs), str(out)]  # gdalwarp: the last input on top


def cli_cmd(case: dict[str, Any], out: Path) -> list[str]:
    exe = str(Path(sys.executable).parent / "mosaic")
    cmd = [exe, "regrid", "--index", case["index"], "--bbox", ",".join(map(repr, case["bbox"]))]
    cmd += ["--crs", "EPSG:4326", "--resolution", repr(case["res"]), "--groupby", "none", "--quiet"]
    return [*cmd, "--overwrite", "-o", str(out)]


def run_process(cmd: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one process."""
    import resource

    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.src), env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[:8])} failed: {proc.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ----------------------------------------------------------------------------------------- driver


def read_tif(path: Path) -> Any:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def bench(case: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    for d in case["items"]:  # warm the page cache
        Path(d["assets"][ASSET]["href"]).read_bytes()
    arrays = OUTPUT / "small_job_arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    engines = [e for e in ENGINES if e in args.engines]
    rec: dict[str, dict[str, list[Any]]] = {e: {"job": [], "cpu": [], "process": []} for e in engines}
    outputs: dict[str, Path] = {}
    loads = [os.getloadavg()[0]]
    for k in range(args.runs + 1):  # run 0: untimed warm-up (page cache, .pyc files), arrays saved
        for engine in engines[k % len(engines) :] + engines[: k % len(engines)]:
            if engine == "gdalwarp":
                out = arrays / "gdalwarp.tif"
                seconds, cpu = run_process(gdalwarp_cmd(case, out), args)
                outputs[engine] = out
                res = {"job": seconds, "cpu": cpu, "process": seconds}
            elif engine == "mosaic-cli":
                out = arrays / "mosaic_cli.tif"
                seconds, cpu = run_process(cli_cmd(case, out), args)
                outputs[engine] = out
                res = {"job": seconds, "cpu": cpu, "process": seconds}
            else:
                save = arrays / f"{engine}.npy" if k == 0 else None
                res = run_python(engine, args, save)
                if save:
                    outputs[engine] = save
                    rec[engine]["info"] = [{k2: res[k2] for k2 in ("distributed", "shape", "before_job")}]
            if k:
                for key in ("job", "cpu", "process"):
                    rec[engine][key].append(res[key])
        loads.append(os.getloadavg()[0])
    summary: dict[str, Any] = {}
    loaded = {e: (np.load(p) if p.suffix == ".npy" else read_tif(p)) for e, p in outputs.items()}
    ref = loaded.get("mosaic")
    refpath = OUTPUT / "small_job_reference.npy"
    if args.reference and ref is not None and not refpath.exists():
        np.save(refpath, ref)
        print(f"saved mosaic's output as {refpath.name}")
    for engine, r in rec.items():
        s: dict[str, Any] = {key: statistics.median(r[key]) for key in ("job", "cpu", "process")}
        s["runs"] = len(r["job"])
        s["all_job"] = r["job"]
        s.update(r.get("info", [{}])[0])
        if engine in loaded and ref is not None and loaded[engine].shape == ref.shape:
            a, b = ref, loaded[engine]
            both = (a != 0) & (b != 0)
            s["identical_valid_vs_mosaic"] = float((a[both] == b[both]).mean()) if both.any() else None
            s["valid_px"] = int((b != 0).sum())
        if args.reference and engine in loaded and engine.startswith("mosaic") and refpath.exists():
            s["identical_to_reference"] = bool(np.array_equal(np.load(refpath), loaded[engine]))
        summary[engine] = s
    loads.append(os.getloadavg()[0])
    return {"engines": summary, "load_1min": loads}


def report(case: dict[str, Any], result: dict[str, Any], args: argparse.Namespace) -> str:
    e = result["engines"]
    gw = e.get("gdalwarp", {}).get("job")
    odc = e.get("odc-stac", {}).get("job")
    lines = [
        f"small job: 2 scenes {WIDTH} x {HEIGHT}, output {case['shape'][1]} x {case['shape'][0]} "
        f"EPSG:4326 at {case['res']} deg; {args.runs} runs, medians; 1-min load "
        f"{', '.join(f'{v:.1f}' for v in result['load_1min'])}; src {args.src or 'this checkout'}",
        "",
        "| engine | job s (imports excluded) | CPU s | process s (imports in) | / gdalwarp | / odc-stac | "
        "identical valid px vs mosaic | identical to reference |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in e.items():
        lines.append(
            f"| {name} | {s['job']:.3f} | {s['cpu']:.3f} | {s['process']:.3f} | "
            f"{s['job'] / gw:.2f} | {s['job'] / odc:.2f} | "
            f"{100 * s['identical_valid_vs_mosaic']:.2f}% | {s.get('identical_to_reference', '-')} |"
            if gw and odc and s.get("identical_valid_vs_mosaic") is not None
            else f"| {name} | {s['job']:.3f} | {s['cpu']:.3f} | {s['process']:.3f} | "
            f"{s['job'] / gw if gw else float('nan'):.2f} | {s['job'] / odc if odc else float('nan'):.2f} "
            f"| - | {s.get('identical_to_reference', '-')} |"
        )
    return "\n".join(lines)


def profile(case: dict[str, Any]) -> None:
    """cProfile of mosaic's eager load on the synchronous scheduler, after warm runs on threads."""
    import cProfile
    import pstats

    import dask

    import mosaic
    import mosaic.api
    from mosaic.index.tile_index import TileIndex

    index = TileIndex.from_stac(case["items"], assets=[ASSET])
    kw = dict(index=index, resolution=case["res"], groupby=None, method="first", resampling="nearest")
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        mosaic.load(case["bbox"], "EPSG:4326", chunks=None, **kw)
        print(f"eager load: wall {time.perf_counter() - t0:.3f} s, CPU {time.process_time() - c0:.3f} s")
    plan = mosaic.plan(case["bbox"], "EPSG:4326", **kw)
    print(json.dumps(plan.summary()))
    for t in plan.tasks:
        print(t.iy, t.ix, [(r.scene, r.overview, r.factor, r.window, r.target) for r in t.reads])
    prof = cProfile.Profile()
    prof.enable()
    with dask.config.set(scheduler="synchronous"):
        mosaic.load(case["bbox"], "EPSG:4326", **kw).compute()
    prof.disable()
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(30)
    st.sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--src", type=Path, help="run the mosaic engines from this folder's mosaic")
    parser.add_argument("--base-src", type=Path, help="engine mosaic-base: mosaic from this folder")
    parser.add_argument("--reference", action="store_true", help="save / compare mosaic's array")
    parser.add_argument("--profile", action="store_true", help="profile mosaic's eager load instead")
    parser.add_argument("--output", default="small_job", help="output file stem")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--launched", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.src:
        args.src = args.src.resolve()
    if args.base_src:
        args.base_src = args.base_src.resolve()
    elif "mosaic-base" in args.engines and not args.engine:
        args.engines.remove("mosaic-base")
    if args.engine:
        worker(args)
        return
    case = build()
    print(f"data: generated in {case['generated_s']:.0f} s, DEFLATE ratio {case['deflate_ratio']:.2f}")
    if args.profile:
        profile(case)
        return
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result = bench(case, args)
    text = f"# small_job ({started})\n\n" + report(case, result, args)
    print(text)
    (OUTPUT / f"{args.output}.md").write_text(text + "\n")
    (OUTPUT / f"{args.output}.json").write_text(json.dumps({"date": started, **result}, indent=1))


if __name__ == "__main__":
    main()
