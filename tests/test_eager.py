"""The eager load (``chunks=None``): the lazy result computed, without the fixed costs of computing it.

These assert what the result is and what a fresh interpreter did, never how long anything took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.warp import transform_bounds

import mosaic
import real_data

SRC = Path(mosaic.__file__).resolve().parents[1]


def test_an_eager_load_is_the_lazy_load_computed(demo_index):
    bbox = (11.88, 45.40, 12.12, 45.58)
    kw = dict(index=demo_index, resolution=0.0004, bands=["B02", "B8A"], groupby=None, chunks=None)
    eager = mosaic.load(bbox, "EPSG:4326", "2024-06-01", **kw)
    lazy = mosaic.load(bbox, "EPSG:4326", "2024-06-01", **dict(kw, chunks=2048))
    assert all(isinstance(v.data, np.ndarray) for v in eager.variables.values())
    assert lazy.B02.chunks is not None
    xr.testing.assert_identical(eager, lazy.compute())
    assert (eager.B02.values != 0).mean() > 0.5


def test_an_eager_load_neither_imports_distributed_nor_scans_entry_points(tmp_path):
    # Dataset.compute() looks for xarray chunk managers among every installed distribution's entry
    # points on its first call in a process; the eager load computes its dask arrays directly
    scenes = [str(p) for p in real_data.fill_zero_scenes(tmp_path)]
    bounds = []
    for path in scenes:
        with rasterio.open(path) as src:
            bounds.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    bbox = [min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds)]
    bbox.append(max(b[3] for b in bounds))
    code = f"""
        import json, sys
        import mosaic
        from mosaic import TileIndex
        index = TileIndex.from_files({scenes!r}, progress=False)
        ds = mosaic.load({bbox!r}, "EPSG:4326", index=index, resolution=0.0003, src_nodata=0,
                         groupby=None, chunks=None)
        from xarray.namedarray.parallelcompat import list_chunkmanagers
        print(json.dumps({{
            "scanned": list_chunkmanagers.cache_info().currsize,
            "distributed": "distributed" in sys.modules,
            "valid": int((ds[list(ds.data_vars)[0]].values != 0).sum()),
        }}))
        """
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"scanned": 0, "distributed": False, "valid": got["valid"]} and got["valid"] > 0
