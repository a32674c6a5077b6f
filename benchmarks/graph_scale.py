"""How planning and graph building scale with the number of chunks (issue: 10,000 chunks well under 1 s).

Run: .venv/bin/python benchmarks/graph_scale.py
Builds the demo collection under benchmarks/output/, then plans the 12E seam area at 10 m in EPSG:32633
with smaller and smaller chunks, timing `mosaic.plan` and the dask graph construction (`to_dataset`)
separately (median of 5), and counting graph keys vs. tasks.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

import mosaic
from mosaic import synthetic
from mosaic.api import to_dataset

OUT = Path(__file__).resolve().parent / "output"
BBOX = (11.86, 45.39, 12.14, 45.57)


def median_time(func, *args, runs: int = 5, **kwargs) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = func(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    items = synthetic.demo_collection(OUT / "demo_collection")
    index = mosaic.TileIndex.from_stac(items)
    rows = [
        "| chunk px | chunks | non-empty | plan (s) | graph build (s) | graph keys | tasks |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for chunk in (512, 128, 64, 32, 24, 20):
        plan_s, plan = median_time(
            mosaic.plan,
            BBOX,
            "EPSG:32633",
            "2024-06-01",
            index=index,
            resolution=10,
            bands="B02",
            chunks=chunk,
        )
        graph_s, ds = median_time(to_dataset, plan)
        graph = dict(ds.B02.data.__dask_graph__())
        tasks = sum(
            1 for v in graph.values() if isinstance(v, tuple) and callable(v[0]) and v[0] is not np.full
        )
        s = plan.summary()
        rows.append(
            f"| {chunk} | {s['chunks']:,} | {s['nonempty_chunks']:,} | {plan_s:.3f} | {graph_s:.3f} "
            f"| {len(graph):,} | {tasks:,} |"
        )
    text = "\n".join(rows)
    print(text)
    (OUT / "graph_scale.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
