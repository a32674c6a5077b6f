"""Tile latency of ``mosaic serve`` on the demo collection: cold, warm p50/p95 per zoom, and throughput.

A real server process (``mosaic serve``, uvicorn) on 127.0.0.1 serves the demo collection (UTM 32N/33N/
34N scenes at the 12E and 18E seams); the tiles are those touching the scenes at zooms 6-12. Times are
measured from a client in this process (``urllib``, one connection per request, as a browser's first
requests):

* cold: the first tile after the server answered its first request (index read, nothing opened yet);
* warm: each tile once, after a warm-up pass over *other* tiles of the same zoom (the process and GDAL
  are warm, the tile is not in the server's cache);
* throughput: 16 client threads asking for every tile of zooms 10-12 once, tiles per second.

Usage: ``python benchmarks/serve_latency.py [--runs 3]``; JSON and a Markdown table to stdout.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from servers import free_ports  # noqa: E402

SCENES = [(11.87, 45.39, 12.14, 45.57), (14.9, 45.63, 15.1, 45.77), (17.87, 45.83, 18.14, 46.02)]


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


def one_run(index: Path) -> dict[str, object]:
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    mosaic = Path(sys.executable).with_name("mosaic")
    proc = subprocess.Popen(
        [
            str(mosaic),
            "serve",
            "--index",
            str(index),
            "--port",
            str(port),
            *("--bands", "B02", "--rescale", "0,3000"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/times.json", timeout=5).read()
                break
            except OSError:
                time.sleep(0.05)
        zooms = {z: sorted({t for box in SCENES for t in tiles_over(box, z)}) for z in range(6, 13)}
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
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from mosaic import TileIndex
    from mosaic import synthetic as syn

    work = HERE / "output" / "serve"
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index.parquet"
    if not index.exists():
        TileIndex.from_stac(syn.demo_collection(work / "collection")).write(index)
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
