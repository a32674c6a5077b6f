"""Tile latency of ``mosaic serve`` on the demo collection: cold, warm p50/p95 per zoom, and throughput.

A real server process (``mosaic serve``, uvicorn) on 127.0.0.1 serves the demo collection (UTM 32N/33N/
34N scenes at the 12E and 18E seams); the tiles are those touching the scenes at zooms 6-12. Times are
measured from a client in this process (``urllib``, one connection per request, as a browser's first
requests):

* cold: the first tile after the server answered its first request (index read, nothing opened yet);
* warm: each tile once, after a warm-up pass over *other* tiles of the same zoom (the process and GDAL
  are warm, the tile is not in the server's cache);
* throughput: 16 client threads asking for every tile of zooms 10-12 once, tiles per second.

With ``--titiler``, the same measures on the demo collection's UTM 33N scenes only (one CRS: the 12E
and 18E seams' 33N sides and the 15E scene, 8 scenes), for ``mosaic serve`` over an index of those
scenes and for a titiler app (``_titiler_app.py``: rio-tiler's ``mosaic_reader``, ``FirstMethod``,
nearest, titiler.core's ``render_image``) run by uvicorn from ``benchmarks/.venv-titiler`` (a venv of
its own: ``python -m venv benchmarks/.venv-titiler && benchmarks/.venv-titiler/bin/pip install
titiler.core==2.4.0 rio-tiler==9.4.12 uvicorn``), on the tiles touching those scenes; and the two
engines' PNGs of a few tiles decoded and compared pixel by pixel.

Usage: ``python benchmarks/serve_latency.py [--runs 3] [--titiler]``; JSON and a Markdown table to
stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from servers import free_ports  # noqa: E402

SCENES = [(11.87, 45.39, 12.14, 45.57), (14.9, 45.63, 15.1, 45.77), (17.87, 45.83, 18.14, 46.02)]
TITILER_VENV = HERE / ".venv-titiler"
Box = tuple[float, float, float, float]
# titiler's performance-tuning advice (the options that matter for local files); mosaic sets the first
# itself (mosaic.io.gdalenv). ``--titiler-gdal-defaults`` runs titiler without them.
TITILER_GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_CACHEMAX": "200",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": "5000000",
}
TITILER_ENV: dict[str, str] = dict(TITILER_GDAL_ENV)


def tiles_over(bbox: tuple[float, float, float, float], z: int) -> list[tuple[int, int, int]]:
    """The XYZ tiles of zoom ``z`` touching a lon/lat box."""
    n = 2**z

    def xy(lon: float, lat: float) -> tuple[int, int]:
        x = int((lon + 180.0) / 360.0 * n)
        y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
        return x, y

    x0, y0 = xy(bbox[0], bbox[3])
    x1, y1 = xy(bbox[2], bbox[1])
    return [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]


def get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - start


def launch(engine: str, source: Path, port: int) -> subprocess.Popen[bytes]:
    """A server process: ``mosaic serve`` over an index, or the titiler app over an assets JSON."""
    if engine == "mosaic":
        command = [
            str(Path(sys.executable).with_name("mosaic")),
            *("serve", "--index", str(source), "--port", str(port)),
            *("--bands", "B02", "--rescale", "0,3000"),
        ]
        env = None
    else:
        command = [
            str(TITILER_VENV / "bin" / "python"),
            *("-m", "uvicorn", "_titiler_app:app", "--port", str(port), "--log-level", "warning"),
        ]
        env = {**os.environ, **TITILER_ENV, "MOSAIC_BENCH_ASSETS": str(source), "PYTHONPATH": str(HERE)}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=HERE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    proc.wait()


def wait_ready(base: str, engine: str, proc: subprocess.Popen[bytes]) -> None:
    url = base + ("/times.json" if engine == "mosaic" else "/openapi.json")
    while proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the {engine} server exited with status {proc.returncode}")


def one_run(source: Path, engine: str = "mosaic", boxes: Sequence[Box] = SCENES) -> dict[str, object]:
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    proc = launch(engine, source, port)
    try:
        wait_ready(base, engine, proc)
        zooms = {z: sorted({t for box in boxes for t in tiles_over(box, z)}) for z in range(6, 13)}
        cold = get(f"{base}/tiles/{'/'.join(map(str, zooms[12][0]))}.png")
        warm: dict[int, list[float]] = {}
        for z, tiles in zooms.items():
            half = len(tiles) // 2 or 1
            for t in tiles[:half]:  # warm-up on other tiles of the zoom
                get(f"{base}/tiles/{t[0]}/{t[1]}/{t[2]}.png?colormap=magma")
            warm[z] = [get(f"{base}/tiles/{t[0]}/{t[1]}/{t[2]}.png") for t in tiles[half:] or tiles]
        many = [t for z in (10, 11, 12) for t in zooms[z]]
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda t: get(f"{base}/tiles/{t[0]}/{t[1]}/{t[2]}.png?colormap=gray"), many))
        rate = len(many) / (time.perf_counter() - start)
    finally:
        stop(proc)
    all_warm = [v for values in warm.values() for v in values]
    return {
        "cold_s": cold,
        "warm_p50_s": statistics.median(all_warm),
        "warm_p95_s": sorted(all_warm)[max(0, math.ceil(0.95 * len(all_warm)) - 1)],
        "warm_by_zoom_p50_s": {z: statistics.median(v) for z, v in warm.items()},
        "tiles": len(all_warm),
        "tiles_per_s_16_clients": rate,
        "throughput_tiles": len(many),
    }


def png_rgba(url: str) -> object:
    import io

    import numpy as np
    from PIL import Image

    with urllib.request.urlopen(url, timeout=120) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGBA"))


def compare_pixels(index: Path, assets: Path, boxes: Sequence[Box]) -> dict[str, object]:
    """Both engines' gray PNGs of a few tiles per zoom, decoded: how many pixels are the same."""
    import numpy as np

    tiles = []
    for z in (8, 10, 12):
        near = sorted({t for box in boxes for t in tiles_over(box, z)})
        tiles += near[:: max(1, len(near) // 4)][:4]
    images: dict[str, list[object]] = {}
    for engine, source in (("mosaic", index), ("titiler", assets)):
        port = free_ports(1)[0]
        base = f"http://127.0.0.1:{port}"
        proc = launch(engine, source, port)
        try:
            wait_ready(base, engine, proc)
            images[engine] = [png_rgba(f"{base}/tiles/{z}/{x}/{y}.png?colormap=gray") for z, x, y in tiles]
        finally:
            stop(proc)
    a = np.stack(images["mosaic"])  # type: ignore[arg-type]
    b = np.stack(images["titiler"])  # type: ignore[arg-type]
    valid_a, valid_b = a[..., 3] > 0, b[..., 3] > 0
    both = valid_a & valid_b
    grey_a, grey_b = a[..., 0].astype(int), b[..., 0].astype(int)
    return {
        "tiles": [list(t) for t in tiles],
        "pixels": int(valid_a.size),
        "identical_rgba": float(np.all(a == b, axis=-1).mean()),
        "same_validity": float((valid_a == valid_b).mean()),
        "valid_mosaic": int(valid_a.sum()),
        "valid_titiler": int(valid_b.sum()),
        "valid_both": int(both.sum()),
        "identical_where_both_valid": float((grey_a == grey_b)[both].mean()) if both.any() else None,
        "within_1_where_both_valid": float((abs(grey_a - grey_b) <= 1)[both].mean()) if both.any() else None,
    }


def titiler_main(runs: int, work: Path) -> None:
    """mosaic serve and the titiler app on the demo collection's UTM 33N scenes, alternating runs."""
    import pystac

    from mosaic import TileIndex

    if not (TITILER_VENV / "bin" / "python").exists():
        raise SystemExit(f"no {TITILER_VENV}: see this script's docstring for the pip command")
    items = [
        pystac.Item.from_file(str(p))
        for p in sorted((work / "collection").glob("*/*.json"))
        if p.stem == p.parent.name
    ]
    utm33 = [i for i in items if i.properties.get("proj:code") == "EPSG:32633" and i.bbox[1] < 60]
    index = work / "index_33n.parquet"
    if not index.exists():
        TileIndex.from_stac(utm33).write(index)
    assets = work / "assets_33n.json"
    assets.write_text(
        json.dumps(
            [
                {
                    "id": i.id,
                    "datetime": i.datetime.isoformat(),
                    "bbox": i.bbox,
                    "path": i.assets["B02"].get_absolute_href(),
                }
                for i in utm33
            ]
        )
    )
    boxes = [tuple(i.bbox) for i in utm33]
    results: dict[str, list[dict[str, object]]] = {"mosaic": [], "titiler": []}
    for _ in range(runs):
        results["mosaic"].append(one_run(index, "mosaic", boxes))  # type: ignore[arg-type]
        results["titiler"].append(one_run(assets, "titiler", boxes))  # type: ignore[arg-type]
    keys = ["cold_s", "warm_p50_s", "warm_p95_s", "tiles_per_s_16_clients"]
    out: dict[str, object] = {
        "scenes": [i.id for i in utm33],
        "titiler_env": TITILER_ENV,
        "load_average": os.getloadavg(),
    }
    rows = []
    for engine, rs in results.items():
        med = {k: statistics.median(float(r[k]) for r in rs) for k in keys}  # type: ignore[arg-type]
        by_zoom = {z: statistics.median(float(r["warm_by_zoom_p50_s"][z]) for r in rs) for z in range(6, 13)}  # type: ignore[index]
        out[engine] = {**med, "warm_by_zoom_p50_s": by_zoom, "runs": rs}
        rows.append(
            f"| {engine} | {1000 * med['cold_s']:.0f} ms | {1000 * med['warm_p50_s']:.0f} ms | "
            f"{1000 * med['warm_p95_s']:.0f} ms | {med['tiles_per_s_16_clients']:.1f} | "
            + " / ".join(f"{1000 * by_zoom[z]:.0f}" for z in range(6, 13))
            + " |"
        )
    out["pixels"] = compare_pixels(index, assets, boxes)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    print(
        "| engine | cold tile | warm p50 | warm p95 | tiles/s, 16 clients | warm p50 by zoom 6-12, ms |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--titiler", action="store_true", help="compare with titiler on the 33N scenes")
    parser.add_argument(
        "--titiler-gdal-defaults", action="store_true", help="run titiler without its advised GDAL options"
    )
    args = parser.parse_args()
    if args.titiler_gdal_defaults:
        TITILER_ENV.clear()
    from mosaic import TileIndex
    from mosaic import synthetic as syn

    work = HERE / "output" / "serve"
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index.parquet"
    if not index.exists():
        TileIndex.from_stac(syn.demo_collection(work / "collection")).write(index)
    if args.titiler:
        syn.demo_collection(work / "collection")  # reused when present
        return titiler_main(args.runs, work)
    runs = [one_run(index) for _ in range(args.runs)]
    keys = ["cold_s", "warm_p50_s", "warm_p95_s", "tiles_per_s_16_clients"]
    result = {k: statistics.median(float(r[k]) for r in runs) for k in keys}  # type: ignore[arg-type]
    result["runs"] = runs  # type: ignore[assignment]
    result["load_average"] = os.getloadavg()  # type: ignore[assignment]
    print(json.dumps(result, indent=1))
    print(
        f"| cold tile | warm p50 | warm p95 | tiles/s, 16 clients |\n|---|---|---|---|\n"
        f"| {1000 * result['cold_s']:.0f} ms | {1000 * result['warm_p50_s']:.0f} ms | "
        f"{1000 * result['warm_p95_s']:.0f} ms | {result['tiles_per_s_16_clients']:.1f} |"
    )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
