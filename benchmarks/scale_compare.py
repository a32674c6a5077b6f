"""Throughput at scale: mosaic vs odc-stac, stackstac, gdalwarp -multi and the physical floor.

The collection (generated once, cached under ``benchmarks/output/scale_compare_data/``): **24 scenes of
2048 x 2048 uint16 at 30 m** (61.44 km a side), tiled 512, DEFLATE + predictor 2, 4 internal overviews
(x2..x16, average), nodata 0, in a 3 x 8 grid around 55N from 11.5E to 18.6E: the westmost column in
UTM 32N, six in 33N, the eastmost in 34N, so both the 12E and 18E zone seams are inside. Values: the
synthetic module's smooth analytic truth (:func:`mosaic.synthetic.truth`, band 1) plus Gaussian noise
of sigma ``NOISE_SIGMA``, so tiles compress like real data (the ratio is printed). One STAC Item per
scene (projection v2 + raster extensions), one pass 5 s apart per scene.

Cases, output EPSG:4326, method ``first`` (earliest on top), nearest, one band:

* ``seam``: 11.5E-13.0E x 54.45N-55.5N at 0.0003 deg (~native), 5000 x 3500 px, across the 12E seam;
* ``wide``: 11.55E-18.45E x 54.35N-55.625N at 0.0006 deg (2x coarser), 11500 x 2125 px, 3 zones;
* ``coarse``: the same box at 0.003 deg (10x coarser: overview reads), 2300 x 425 px.

Engines (``_engines.py``; the same GeoBox, 2048-px chunks and 2 dask threads for the dask engines):
``mosaic``, ``odc-stac``, ``stackstac`` (0.5.1; not in the ``bench`` extra's venv here, so the script
puts ``benchmarks/output/_pylib`` on its path: ``pip install --no-deps --target
benchmarks/output/_pylib stackstac==0.5.1``), ``gdalwarp-multi`` (Debian's CLI, ``-multi -wo
NUM_THREADS=ALL_CPUS -r near``, writing an uncompressed GeoTIFF) and ``floor``: decoding exactly the
source tiles the request needs (each once, at the level mosaic reads, on 2 threads, rasterio reading
whole tiles without warping) plus one pass over the output array.

Every run is a fresh process. Two figures per engine:

* **compute**: only the load + compute (modules imported, Items parsed / index built beforehand,
  ``distributed`` imported beforehand: dask imports it on a process's first compute);
* **fresh**: the whole process, from its launch to the array in hand (interpreter, imports, Item
  parsing or index building, load, compute). gdalwarp's two figures are the same process.

Engines run round-robin with a rotating order; medians; the 1-minute load average is recorded.
Output Mpix/s = output pixels / time, source Mpix/s = the floor's source pixels (the tiles the request
needs) / time. Identical pixels are counted against mosaic among pixels valid in both.

``--profile CASE`` profiles mosaic on a case instead (cProfile on the synchronous scheduler, plus
wall and CPU on 2 threads) and splits the time into planning, graph, opens, reads (decode), warping,
fusion and the rest. Results: ``benchmarks/output/scale_compare.{md,json}``. Run from the project
root, under the shared lock on a shared machine::

    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/scale_compare.py --runs 5 --cases seam
    flock /tmp/mosaic-bench.lock .venv/bin/python benchmarks/scale_compare.py --profile seam
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "output"
DATA = OUTPUT / "scale_compare_data"
PYLIB = OUTPUT / "_pylib"
ASSET = "B04"
DAY = "2024-06-01"
SIZE, RES, TILE, OVERVIEWS = 2048, 30.0, 512, 4
NOISE_SIGMA = 6.0
ROW_LATS = (54.5, 55.0, 55.5)
COLUMN_LONS = tuple(11.95 + 0.875 * k for k in range(8))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(PYLIB))  # stackstac, when installed there (see the docstring)

CASES: dict[str, dict[str, Any]] = {
    "seam": {"bbox": (11.5, 54.45, 13.0, 55.5), "res": 0.0003, "what": "12E seam, ~native (0.0003 deg)"},
    "wide": {
        "bbox": (11.55, 54.35, 18.45, 55.625),
        "res": 0.0006,
        "what": "3 zones, 2x coarser (0.0006 deg)",
    },
    "coarse": {
        "bbox": (11.55, 54.35, 18.45, 55.625),
        "res": 0.003,
        "what": "3 zones, 10x coarser (0.003 deg)",
    },
}
ENGINE_ORDER = ("mosaic", "mosaic-proto", "odc-stac", "stackstac", "gdalwarp-multi", "floor")


# ------------------------------------------------------------------------------------------ collection


def _zone(lon: float) -> str:
    return "EPSG:32632" if lon < 12 else ("EPSG:32633" if lon < 18 else "EPSG:32634")


def scene_specs() -> list[dict[str, Any]]:
    specs = []
    for r, lat in enumerate(ROW_LATS):
        for c, lon in enumerate(COLUMN_LONS):
            k = len(specs)
            when = dt.datetime(2024, 6, 1, 10, 0, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=5 * k)
            crs = _zone(lon)
            specs.append(
                {"id": f"T{crs[-2:]}-r{r}c{c}", "crs": crs, "lon": lon, "lat": lat, "when": when.isoformat()}
            )
    return specs


def make_scene(spec: dict[str, Any]) -> dict[str, Any]:
    """Write one scene's COG (if absent) and return its STAC Item as a dict."""
    import numpy as np
    from affine import Affine
    from pyproj import Transformer
    from shapely.geometry import box

    from mosaic.index.geom import to_lonlat
    from mosaic.synthetic import truth

    folder = DATA / spec["id"]
    path = folder / f"{ASSET}.tif"
    cx, cy = Transformer.from_crs("EPSG:4326", spec["crs"], always_xy=True).transform(
        spec["lon"], spec["lat"]
    )
    left = round(cx / RES - SIZE / 2) * RES
    top = round(cy / RES + SIZE / 2) * RES
    transform = Affine(RES, 0, left, 0, -RES, top)
    bounds = (left, top - SIZE * RES, left + SIZE * RES, top)
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cols = left + (np.arange(SIZE) + 0.5) * RES
        rows = top - (np.arange(SIZE) + 0.5) * RES
        x, y = np.meshgrid(cols, rows)
        lon, lat = Transformer.from_crs(spec["crs"], "EPSG:4326", always_xy=True).transform(x, y)
        when = dt.datetime.fromisoformat(spec["when"])
        seed = sum(map(ord, spec["id"]))
        noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, size=(SIZE, SIZE))
        data = np.clip(np.rint(truth(lon, lat, 1, when=when) + noise), 1, 65535).astype("uint16")
        from _engines import write_uint16_cog

        write_uint16_cog(path, data, spec["crs"], transform, tile=TILE, overviews=OVERVIEWS)
    footprint = to_lonlat(box(*bounds), spec["crs"])
    from _engines import uint16_cog_item

    return uint16_cog_item(
        spec["id"],
        path,
        ASSET,
        crs=spec["crs"],
        when=spec["when"].replace("+00:00", "Z"),
        footprint=footprint,
        transform=transform,
        bounds=bounds,
        shape=(SIZE, SIZE),
        res=RES,
    )


def build_collection() -> tuple[list[dict[str, Any]], float]:
    """Generate (or reuse) the collection; returns the Items and the seconds it took."""
    t0 = time.perf_counter()
    items_path = DATA / "items.json"
    specs = scene_specs()
    if items_path.exists() and all((DATA / s["id"] / f"{ASSET}.tif").exists() for s in specs):
        return json.loads(items_path.read_text())["features"], 0.0
    DATA.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        items = list(pool.map(make_scene, specs))
    items_path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return items, time.perf_counter() - t0


def compression_ratio(items: list[dict[str, Any]]) -> float:
    size = sum(Path(d["assets"][ASSET]["href"]).stat().st_size for d in items)
    raw = len(items) * SIZE * SIZE * 2 * 4 / 3  # full resolution + overviews (x2..x16: ~1/3 more)
    return raw / size


# ---------------------------------------------------------------------------------------------- cases


def case_geobox(name: str) -> dict[str, Any]:
    """The case's grid as plain numbers: shape and transform in EPSG:4326."""
    case = CASES[name]
    west, south, east, north = case["bbox"]
    res = case["res"]
    shape = (round((north - south) / res), round((east - west) / res))
    return {"shape": list(shape), "transform": [res, 0.0, west, 0.0, -res, north], "crs": "EPSG:4326"}


def geobox_of(grid: dict[str, Any]) -> Any:
    from affine import Affine
    from odc.geo.geobox import GeoBox

    return GeoBox(tuple(grid["shape"]), Affine(*grid["transform"]), grid["crs"])


def case_items(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    import shapely

    area = shapely.box(*CASES[name]["bbox"])
    chosen = [f for f in items if shapely.geometry.shape(f["geometry"]).intersects(area)]
    chosen.sort(key=lambda f: (f["properties"]["datetime"], f["id"]))
    return chosen


def floor_tiles(items: list[dict[str, Any]], grid: dict[str, Any]) -> dict[str, Any]:
    """The source tiles the request needs: per file, the level mosaic reads and the tiles holding the
    source pixel of an output pixel centre (first scene on top), each once.

    Output pixel centres are sampled with a stride of at most 4 px (so a tile missed would be a sliver
    under 4 output pixels wide). The level is the one mosaic's planner and reader choose.
    """
    import numpy as np
    import rasterio
    from pyproj import Transformer

    import mosaic
    from mosaic.index import TileIndex

    gbox = geobox_of(grid)
    plan = mosaic.plan(
        index=TileIndex.from_stac(items, assets=[ASSET]),
        geobox=gbox,
        bands=[ASSET],
        groupby="solar_day",
        method="first",
        resampling="nearest",
        chunks=2048,
    )
    factor = {r.href: r.factor for t in plan.tasks for r in t.reads}
    ny, nx = grid["shape"]
    stride = max(1, min(4, int((ny * nx / 4e6) ** 0.5)))
    a = grid["transform"]
    rows, cols = np.arange(0, ny, stride), np.arange(0, nx, stride)
    lon, lat = np.meshgrid(a[2] + (cols + 0.5) * a[0], a[5] + (rows + 0.5) * a[4])
    lon, lat = lon.ravel(), lat.ravel()
    free = np.ones(lon.size, dtype=bool)
    files, total = [], 0
    for d in items:
        href = d["assets"][ASSET]["href"]
        if href not in factor:
            continue
        with rasterio.open(href) as src:
            level = max((i for i, f in enumerate(src.overviews(1)) if f <= factor[href]), default=-1)
            base_t, base_shape = src.transform, src.shape
        with rasterio.open(href, overview_level=level) if level >= 0 else rasterio.open(href) as lsrc:
            lshape = lsrc.shape
        w, s, e, n = d["bbox"]
        cand = np.flatnonzero(free & (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n))
        x, y = Transformer.from_crs("EPSG:4326", d["properties"]["proj:code"], always_xy=True).transform(
            lon[cand], lat[cand]
        )
        col, row = ~base_t * (x, y)
        inside = (col >= 0) & (row >= 0) & (col < base_shape[1]) & (row < base_shape[0])
        cand, col, row = cand[inside], col[inside], row[inside]
        free[cand] = False
        lcol = np.floor(col * lshape[1] / base_shape[1]).astype(int)
        lrow = np.floor(row * lshape[0] / base_shape[0]).astype(int)
        tiles = sorted({(int(r), int(c)) for r, c in zip(lrow // TILE, lcol // TILE, strict=True)})
        windows = []
        for tr, tc in tiles:
            h, wd = min(TILE, lshape[0] - tr * TILE), min(TILE, lshape[1] - tc * TILE)
            windows.append([tc * TILE, tr * TILE, wd, h])
            total += h * wd
        files.append({"href": href, "level": level, "windows": windows})
    return {"files": files, "tiles": sum(len(f["windows"]) for f in files), "source_pixels": total}


def prepare_case(name: str, items: list[dict[str, Any]]) -> Path:
    """Write the case file the workers read: its Items, grid and floor tiles (cached)."""
    path = OUTPUT / f"scale_case_{name}.json"
    chosen = case_items(items, name)
    grid = case_geobox(name)
    key = {"items": [d["id"] for d in chosen], "grid": grid}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("key") == key:
            return path
    case = {"key": key, "name": name, "items": chosen, "grid": grid, "floor": floor_tiles(chosen, grid)}
    path.write_text(json.dumps(case))
    return path


# --------------------------------------------------------------------------------------------- workers


def floor_engine(case: dict[str, Any], threads: int) -> dict[str, Any]:
    """Decode each needed tile once on ``threads`` threads, then one pass over the output array."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import rasterio
    from rasterio.windows import Window

    jobs = [(f["href"], f["level"], w) for f in case["floor"]["files"] for w in f["windows"]]
    local = threading.local()

    def decode(job: tuple[str, int, list[int]]) -> int:
        href, level, (c, r, w, h) = job
        handles = local.__dict__.setdefault("handles", {})
        src = handles.get((href, level))
        if src is None:
            src = rasterio.open(href, overview_level=level) if level >= 0 else rasterio.open(href)
            handles[(href, level)] = src
        return int(src.read(1, window=Window(c, r, w, h)).size)

    def timed() -> tuple[Any, dict[str, Any]]:
        with rasterio.Env(GDAL_CACHEMAX=64), ThreadPoolExecutor(threads) as pool:
            decoded = sum(pool.map(decode, jobs))
        out = np.zeros(tuple(case["grid"]["shape"]), dtype="uint16")
        out.fill(1)  # the one pass over the output every engine makes
        if decoded != case["floor"]["source_pixels"]:
            raise RuntimeError("floor decoded other pixels than planned")
        return out, case["grid"]

    return {"timed": timed, "after": lambda: {"tiles": case["floor"]["tiles"]}}


def worker(args: argparse.Namespace) -> None:
    """One run of one engine on one case in this fresh process; prints one RESULT line."""
    launched = float(args.launched)
    case = json.loads(Path(args.case_file).read_text())
    if args.mode == "compute" and args.engine != "floor":
        import distributed  # noqa: F401  (dask imports it on a process's first compute: an import cost)
    gbox = geobox_of(case["grid"])
    if args.engine == "floor":
        engine = floor_engine(case, args.threads)
    else:
        from _engines import ENGINES

        engine = ENGINES[args.engine.removesuffix("-proto")](case["items"], gbox, ASSET, args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    array, grid = engine["timed"]()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    ended = time.time()
    info = engine["after"]()
    if args.save:
        import numpy as np

        np.save(args.save, array)
    result = {"seconds": seconds, "cpu": cpu, "fresh": ended - launched, "grid": grid, **info}
    print("RESULT " + json.dumps(result, default=str))


def run_worker(
    engine: str, case_file: Path, mode: str, args: argparse.Namespace, save: Path | None
) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    paths = [str(PYLIB)] if engine == "stackstac" else []
    if engine == "mosaic-proto":
        paths.insert(0, str(args.proto_src))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--engine", engine, "--case-file", str(case_file), "--mode", mode]
    cmd += ["--threads", str(args.threads)] + (["--save", str(save)] if save else [])
    launched = time.time()
    proc = subprocess.run([*cmd, "--launched", repr(launched)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return dict(json.loads(lines[-1][len("RESULT ") :]))


def gdalwarp_run(case: dict[str, Any], out: Path) -> tuple[list[str], float, float]:
    import resource

    from _engines import gdalwarp_command, run_gdalwarp

    cmd = gdalwarp_command(case["items"], geobox_of(case["grid"]), ASSET, out, multi=True, threads="ALL_CPUS")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = run_gdalwarp(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cmd, seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ---------------------------------------------------------------------------------------------- driver


def run_case(name: str, items: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from load_compare import agreement

    case_file = prepare_case(name, items)
    case = json.loads(case_file.read_text())
    for d in case["items"]:  # warm page cache
        Path(d["assets"][ASSET]["href"]).read_bytes()
    ny, nx = case["grid"]["shape"]
    print(
        f"\n## {name}: {CASES[name]['what']}; {len(case['items'])} Items, output {ny} x {nx}, "
        f"floor {case['floor']['tiles']} tiles, {case['floor']['source_pixels'] / 1e6:.1f} Mpix",
        flush=True,
    )
    arrays = OUTPUT / "scale_compare_arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    engines = [e for e in ENGINE_ORDER if e in args.engines]
    rec: dict[str, dict[str, Any]] = {e: {"compute": [], "fresh": [], "cpu": []} for e in engines}
    outputs: dict[str, Path] = {}
    runs = dict.fromkeys(engines, args.runs)
    loads = [os.getloadavg()[0]]
    for k in range(args.runs):
        for engine in engines[k % len(engines) :] + engines[: k % len(engines)]:
            if k >= runs[engine]:
                continue
            if engine == "gdalwarp-multi":
                out = arrays / f"{name}__{engine}.tif"
                cmd, seconds, cpu = gdalwarp_run(case, out)
                rec[engine]["compute"].append(seconds)
                rec[engine]["fresh"].append(seconds)
                rec[engine]["cpu"].append(cpu)
                rec[engine]["command"] = shlex.join(cmd)
                outputs[engine] = out
                continue
            save = arrays / f"{name}__{engine}.npy" if k == 0 and engine != "floor" else None
            res = run_worker(engine, case_file, "compute", args, save)
            rec[engine]["compute"].append(res["seconds"])
            rec[engine]["cpu"].append(res["cpu"])
            if args.fresh and engine not in args.no_fresh_for:
                rec[engine]["fresh"].append(run_worker(engine, case_file, "fresh", args, None)["fresh"])
            if save:
                outputs[engine] = save
                rec[engine]["info"] = {
                    k2: v for k2, v in res.items() if k2 not in ("seconds", "cpu", "fresh")
                }
            if k == 0 and res["seconds"] > args.slow:
                runs[engine] = min(runs[engine], args.min_runs)
        loads.append(os.getloadavg()[0])
    src_px = case["floor"]["source_pixels"]
    for engine, r in rec.items():
        r["median"] = statistics.median(r["compute"])
        r["fresh_median"] = statistics.median(r["fresh"]) if r["fresh"] else None
        r["cpu_median"] = statistics.median(r["cpu"])
        r["out_mpix_s"] = ny * nx / 1e6 / r["median"]
        r["src_mpix_s"] = src_px / 1e6 / r["median"]
        fresh = f"{r['fresh_median']:7.3f}" if r["fresh_median"] else "      -"
        print(
            f"  {engine:15s} compute {r['median']:7.3f} s  fresh {fresh} s  cpu {r['cpu_median']:6.3f} s  "
            f"{r['out_mpix_s']:6.1f} out Mpix/s  {r['src_mpix_s']:6.1f} src Mpix/s  runs {len(r['compute'])}"
        )
    loaded: dict[str, Any] = {}
    for engine, path in outputs.items():
        if path.suffix == ".tif":
            import rasterio

            with rasterio.open(path) as src:
                loaded[engine] = src.read(1)
        else:
            loaded[engine] = np.load(path)
        if loaded[engine].shape != (ny, nx):
            rec[engine]["shape_error"] = list(loaded[engine].shape)
    ref = loaded.get("mosaic")
    for engine, other in loaded.items():
        origin = rec[engine].get("info", {}).get("grid", case["grid"])["transform"]
        same_origin = np.allclose(origin, case["grid"]["transform"], rtol=0, atol=1e-9)
        if ref is not None and other.shape != ref.shape and same_origin:
            other = other[: ref.shape[0], : ref.shape[1]]  # stackstac snaps one more row/column
        if ref is not None and engine != "mosaic" and other.shape == ref.shape:
            rec[engine]["agreement"] = agreement(ref, other)
            print(
                f"  {engine:15s} identical valid px vs mosaic: "
                f"{100 * rec[engine]['agreement']['identical_of_both_valid']:.3f}%"
            )
    refpath = OUTPUT / f"scale_reference_{name}.npy"
    if args.reference and ref is not None and not refpath.exists():
        np.save(refpath, ref)
        print(f"  saved mosaic's output as {refpath.name}")
    for engine in ("mosaic", "mosaic-proto"):
        if args.reference and engine in loaded and refpath.exists():
            same = bool(np.array_equal(np.load(refpath), loaded[engine]))
            rec[engine]["identical_to_reference"] = same
            print(f"  {engine} identical to {refpath.name}: {same}")
    if not args.keep:
        for path in outputs.values():
            path.unlink(missing_ok=True)
    loads.append(os.getloadavg()[0])
    return {
        "case": name,
        "what": CASES[name]["what"],
        "grid": case["grid"],
        "items": len(case["items"]),
        "floor": {k: case["floor"][k] for k in ("tiles", "source_pixels")},
        "load_1min": loads,
        "engines": rec,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | engine | compute s | fresh s | CPU s | out Mpix/s | src Mpix/s | mosaic / engine "
        "(compute) | mosaic / engine (fresh) | identical valid px |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        m = res["engines"].get("mosaic", {})
        for engine, r in res["engines"].items():
            ratio = f"{m['median'] / r['median']:.2f}" if m and engine != "mosaic" else "-"
            fr = (
                f"{m['fresh_median'] / r['fresh_median']:.2f}"
                if m.get("fresh_median") and r["fresh_median"] and engine not in ("mosaic", "floor")
                else "-"
            )
            agree = r.get("agreement")
            same = f"{100 * agree['identical_of_both_valid']:.2f}%" if agree else "-"
            fresh = f"{r['fresh_median']:.3f}" if r["fresh_median"] else "-"
            lines.append(
                f"| {res['case']} | {engine} | {r['median']:.3f} | {fresh} | {r['cpu_median']:.3f} | "
                f"{r['out_mpix_s']:.1f} | {r['src_mpix_s']:.1f} | {ratio} | {fr} | {same} |"
            )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- profile


def profile(name: str, items: list[dict[str, Any]], threads: int) -> None:
    """Where mosaic's time goes on a case: cProfile on the synchronous scheduler, split by stage."""
    import cProfile
    import pstats

    import dask
    import distributed  # noqa: F401

    import mosaic
    from mosaic.index import TileIndex

    case = json.loads(prepare_case(name, items).read_text())
    gbox = geobox_of(case["grid"])
    index = TileIndex.from_stac(case["items"], assets=[ASSET])
    kwargs = dict(
        index=index,
        geobox=gbox,
        bands=[ASSET],
        groupby="solar_day",
        method="first",
        resampling="nearest",
        chunks=2048,
    )
    walls = []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        with dask.config.set(scheduler="threads", num_workers=threads):
            mosaic.load(**kwargs).compute()
        walls.append((time.perf_counter() - t0, time.process_time() - c0))
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    with dask.config.set(scheduler="synchronous"):
        plan = mosaic.plan(**kwargs)
        ds = mosaic.api.to_dataset(plan)
        ds.compute()
    prof.disable()
    sync = time.perf_counter() - t0
    st = pstats.Stats(prof)
    cum: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        key = f"{Path(file).name}:{func}"
        cum[key] = cum.get(key, 0.0) + ct

    def get(*keys: str) -> float:
        return sum(cum.get(k, 0.0) for k in keys)

    planning = get(f"{Path(mosaic.plan.__code__.co_filename).name}:{mosaic.plan.__name__}")
    graph = get("api.py:to_dataset")
    chunks = get("graph.py:load_chunk")
    read_window = get("read.py:read_window")
    opens = get("read.py:_open") + get("read.py:_check_identity")
    warp = get("read.py:warp_read") - read_window
    fusion = get("fuse.py:feed") + get("fuse.py:pending")
    accumulators = get("fuse.py:__init__")
    cast = get("graph.py:_cast")
    concat = get("core.py:concatenate3")
    split = {
        "planning (mosaic.plan)": planning,
        "graph (to_dataset)": graph,
        "file opens + identity checks": opens,
        "reads: decode (read_window, opens excluded)": read_window - opens,
        "warping (WarpedVRT setup + read)": warp,
        "fusion (Fuser.feed, pending)": fusion,
        "chunk accumulators (allocation)": accumulators,
        "cast": cast,
        "load_chunk, other": chunks - read_window - warp - fusion - accumulators - cast,
        "final concatenation (dask concatenate3)": concat,
        "other (dask scheduling, xarray)": sync - planning - graph - chunks - concat,
    }
    text = [
        f"### profile: {name} ({case['grid']['shape'][0]} x {case['grid']['shape'][1]})",
        "",
        f"2 threads, 3 warm runs in one process: wall {', '.join(f'{w:.3f}' for w, _ in walls)} s, "
        f"CPU {', '.join(f'{c:.3f}' for _, c in walls)} s; synchronous under cProfile: {sync:.3f} s",
        "",
        "| stage | s (synchronous, cProfile) | share |",
        "|---|---:|---:|",
    ]
    text += [f"| {k} | {v:.3f} | {100 * v / sync:.0f}% |" for k, v in split.items()]
    print("\n".join(text))
    out = OUTPUT / f"scale_profile_{name}"
    st.dump_stats(str(out) + ".prof")
    (Path(str(out) + ".md")).write_text("\n".join(text) + "\n")
    st.sort_stats("cumulative").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--engines", nargs="*", default=None, choices=ENGINE_ORDER)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--slow", type=float, default=15.0, help="a first run slower than this: --min-runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-fresh", dest="fresh", action="store_false", help="skip the fresh-process runs")
    parser.add_argument("--no-fresh-for", nargs="*", default=[], help="engines without fresh-process runs")
    parser.add_argument(
        "--reference",
        action="store_true",
        help="save mosaic's output as the reference, or compare it with the saved one",
    )
    parser.add_argument("--proto-src", type=Path, help="add engine mosaic-proto: mosaic from DIR/mosaic")
    parser.add_argument("--profile", choices=list(CASES), help="profile mosaic on this case instead")
    parser.add_argument("--output", default="scale_compare", help="output file stem")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--case-file", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="compute", help=argparse.SUPPRESS)
    parser.add_argument("--launched", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        worker(args)
        return
    items, took = build_collection()
    print(
        f"collection: {len(items)} scenes ({took:.0f} s), DEFLATE ratio {compression_ratio(items):.2f}",
        flush=True,
    )
    if args.profile:
        profile(args.profile, items, args.threads)
        return
    if args.engines is None:
        args.engines = [e for e in ENGINE_ORDER if e != "mosaic-proto" or args.proto_src]
    started = dt.datetime.now(dt.UTC)
    results = [run_case(name, items, args) for name in args.cases]
    from load_compare import machine, source_state

    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": ".venv/bin/python benchmarks/scale_compare.py " + shlex.join(sys.argv[1:]),
        "source": source_state(),
        "threads": args.threads,
        "results": results,
    }
    try:
        report["machine"] = machine()
    except ImportError as exc:  # stackstac outside the venv
        report["machine"] = {"error": str(exc)}
    (OUTPUT / f"{args.output}.json").write_text(json.dumps(report, indent=1, default=str))
    text = "\n\n".join(
        [
            f"# scale_compare ({report['date']})",
            f"`{report['command']}`; source {report['source']}",
            table(results),
        ]
    )
    (OUTPUT / f"{args.output}.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
