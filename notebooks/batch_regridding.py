# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Batch regridding to Zarr
#
# Regrid a collection onto one analysis grid and store it as Zarr, region by region: the same call
# works on one machine or on a dask cluster, and picks up where it stopped if it is interrupted.
#
# This notebook runs offline on the embedded demo collection (19 synthetic scenes in 7 CRSs). It is a
# [jupytext](https://jupytext.readthedocs.io) "percent" script: run it as `python batch_regridding.py`,
# or open it in Jupyter with jupytext installed. `MOSAIC_INDEX` (a saved tile index) and
# `MOSAIC_NOTEBOOK_DIR` (where to write) are optional.

# %%
import json
import os
import tempfile
from pathlib import Path

import dask
import matplotlib.pyplot as plt
import numpy as np
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from dask.distributed import Client, LocalCluster

import mosaic
from mosaic import synthetic
from mosaic.demo import demo_index

workdir = Path(os.environ.get("MOSAIC_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mosaic-regrid-"))
# a saved tile index, else the demo collection and its index, generated offline in a few seconds
index_path = os.environ.get("MOSAIC_INDEX") or str(demo_index(workdir))
print("index:", index_path, "| outputs in:", workdir)

# %% [markdown]
# ## The request
#
# A lon/lat box across the 12E seam between UTM zones 32N and 33N, in June 2024. Plan it first: the
# plan reads no pixels and tells how much a regrid will read and write.

# %%
BBOX = (11.88, 45.40, 12.12, 45.58)
REQUEST = dict(index=index_path, resolution=0.0002, bands=["B02", "B8A"])

plan = mosaic.plan(BBOX, "EPSG:4326", "2024-06", chunks=256, **REQUEST)
summary = plan.summary()
print(
    f"{summary['shape']} (time, y, x), {summary['scenes']} scenes from {summary['source_crs']}, "
    f"{summary['reads']} reads, {summary['output_bytes'] / 2**20:.1f} MiB output"
)

# %% [markdown]
# ## Pancakes: maps
#
# One time step per chunk, large in x and y (the default is 2048 x 2048): fast to read one date of a
# large area. Each output chunk is one *region*: one task reads what it needs and writes it.

# %%
pancakes = workdir / "pancakes.zarr"
report = mosaic.regrid(
    pancakes, BBOX, "EPSG:4326", "2024-06", chunks={"time": 1, "y": 256, "x": 256}, **REQUEST
)
print(report.format())

# %% [markdown]
# ## Churros: time series
#
# Many time steps per chunk, small in x and y: fast to read the history of a small area. The reads
# are still planned per region and time step.

# %%
churros = workdir / "churros.zarr"
report = mosaic.regrid(
    churros, BBOX, "EPSG:4326", "2024-06", chunks={"time": 3, "y": 128, "x": 128}, **REQUEST
)
print(report.format())

# %% [markdown]
# ## Reading back
#
# Any Zarr reader opens the stores; xarray and rioxarray find the CRS (`spatial_ref`), the nodata
# (`_FillValue`) and the coordinates. The attributes record the request.

# %%
ds = xr.open_zarr(churros, decode_coords="all")
print(ds.rio.crs, ds.B02.encoding["chunks"], ds.attrs["regrid_status"])
print(json.dumps(json.loads(ds.attrs["regrid_request"]), indent=1))
series = ds.B02.sel(x=12.0, y=45.5, method="nearest").values
print("B02 at (12.0E, 45.5N):", series)
with xr.open_zarr(pancakes) as maps:
    same = np.isclose(maps.B02.values, ds.B02.values, equal_nan=True).mean()
# nearest picks within GDAL's warp tolerance (0.01 px) can depend on the chunk, so layouts agree on
# all but a few pixels; the same layout always gives the same bytes
print(f"pancakes and churros agree on {same:.4%} of the pixels")
assert same > 0.999

# %% [markdown]
# One pixel's history: with churros, the whole series of a pixel is in one chunk per band, so reading
# it reads one chunk, not one per date. The demo scenes sample a known field (`synthetic.truth`, which
# rises by 0.2 a day) plus noise of at most +-2, drawn here for comparison (the value is the nearest
# source pixel's, whose centre is a few metres from this pixel's, so it can stray a little further).

# %%
pixel = ds[["B02", "B8A"]].sel(x=12.0, y=45.5, method="nearest").compute()
days = pixel.time.values.astype("datetime64[D]")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
for ax, (name, band) in zip(axes, (("B02", 1), ("B8A", 2)), strict=True):
    truth = synthetic.truth(float(pixel.x), float(pixel.y), band, when=None)
    truth = truth + np.array([synthetic.time_term(day.item()) for day in days])
    ax.plot(days, pixel[name].values, "o-", label=f"{name} from churros.zarr")
    ax.plot(days, truth, "k:", label="known field")
    ax.set_xticks(days)
    ax.set_xlabel("acquisition day")
    ax.set_ylabel(f"{name} (stored value)")
    ax.legend(fontsize=8)
    assert np.all(np.abs(pixel[name].values - truth) <= 4)
fig.suptitle(f"the time series of the pixel at ({float(pixel.x):.4f}E, {float(pixel.y):.4f}N)")
plt.show()
plt.close(fig)
assert pixel.sizes["time"] == 3 and ds.B02.encoding["chunks"][0] == 3

# %% [markdown]
# ## Resuming
#
# Running the same call again skips every region already written. After an interruption (a killed
# process, a lost node) that is how a regrid finishes: only the missing regions are computed. A
# different request on the same store is refused unless `overwrite=True`.

# %%
again = mosaic.regrid(
    churros, BBOX, "EPSG:4326", "2024-06", chunks={"time": 3, "y": 128, "x": 128}, **REQUEST
)
print(f"resumed: {again.written} regions written, {again.skipped} already done")

# %% [markdown]
# ## On a dask cluster
#
# Pass a `dask.distributed` client (or have one as the current client). On a real cluster the index
# and the output store must be reachable from every worker at the same path or URL: see
# `docs/cluster.md`. Here an in-process cluster stands in for one.

# %%
# Python 3.11 only: dask's worker profiler calls sys._current_frames(), which can deadlock with the
# garbage collector there (CPython gh-106883); `mosaic regrid --workers` turns it off the same way.
dask.config.set({"distributed.worker.profile.enabled": False})
with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
    on_cluster = workdir / "cluster.zarr"
    report = mosaic.regrid(
        on_cluster,
        BBOX,
        "EPSG:4326",
        "2024-06",
        chunks={"time": 1, "y": 256, "x": 256},
        client=client,
        **REQUEST,
    )
    print(report.format())
with xr.open_zarr(on_cluster) as a, xr.open_zarr(pancakes) as b:
    xr.testing.assert_identical(a.load(), b.load())
print("cluster result identical to the threaded one")
