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
# # Quickstart: one mosaic from scenes in two UTM zones
#
# Satellite scenes come in their own grids and CRSs: along the 12E meridian, scenes of UTM zone 32N
# meet scenes of zone 33N. `mosaic.load(bbox, crs, time)` reads just the parts of the scenes a request
# needs and returns one seamless, lazy `xarray.Dataset` on the grid you ask for. `mosaic.plan(...)`
# tells what that load will read, without reading anything.
#
# This notebook runs offline on the embedded demo collection (19 synthetic scenes in 7 CRSs, sampled
# from a known field). It is a [jupytext](https://jupytext.readthedocs.io) "percent" script: run it as
# `python quickstart.py`, or open it in Jupyter with jupytext installed. `MOSAIC_INDEX` (a saved tile
# index) and `MOSAIC_NOTEBOOK_DIR` (where to write) are optional.

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import mosaic
from mosaic import synthetic
from mosaic.demo import DEMO_BANDS, DEMO_BBOX, DEMO_CRS, DEMO_RESOLUTION, DEMO_TIME, demo_index

workdir = Path(os.environ.get("MOSAIC_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mosaic-quickstart-"))
# a saved tile index, else the demo collection and its index, generated offline in a few seconds
index_path = os.environ.get("MOSAIC_INDEX") or str(demo_index(workdir))
print("index:", index_path, "| outputs in:", workdir)

# %% [markdown]
# ## The tile index
#
# A tile index (GeoParquet) lists every scene asset with its CRS, grid, data footprint, time and file.
# Build one from files (`TileIndex.from_files`), STAC Items (`TileIndex.from_stac`) or a GDAL tile
# index, save it with `.write()`, and pass it (or its path) as `index=`. In a notebook an index shows
# as a table: scenes, CRSs with their row counts, time range, extent, assets, dtypes.

# %%
index = mosaic.TileIndex.read(index_path)
print(index)
assert len(index.crs_counts()) == 7
index  # noqa: B018 (the cell's value: Jupyter shows it as a table)

# %% [markdown]
# ## Load a mosaic across the UTM seam
#
# The request: a lon/lat box around 12E, in EPSG:4326 at 0.0002 degrees (~16 x 22 m), on June 1st
# 2024, bands B02 (20 m, uint16) and B8A (40 m, int16). The result is lazy (dask): pixels are read
# when you compute, plot or save.

# %%
print(f"bbox {DEMO_BBOX}, crs {DEMO_CRS}, resolution {DEMO_RESOLUTION}, time {DEMO_TIME}, bands {DEMO_BANDS}")
REQUEST = dict(index=index, resolution=DEMO_RESOLUTION, bands=list(DEMO_BANDS), chunks=256)
ds = mosaic.load(DEMO_BBOX, DEMO_CRS, DEMO_TIME, **REQUEST)
display(ds)

# %%
ds = ds.compute()  # read now: the plots and checks below use every pixel
b02 = ds.B02.isel(time=0)
valid = b02.values != b02.attrs["nodata"]
west, east = ds.x.values < 11.99, ds.x.values > 12.01
print(f"{ds.attrs['scenes']} scenes, B02 {b02.dtype}, valid {valid.mean():.1%} of the pixels")
assert b02.dtype == np.uint16 and ds.B8A.dtype == np.int16  # source types are kept
assert valid.mean() > 0.75
assert valid[:, west].mean() > 0.6 and valid[:, east].mean() > 0.6  # both zones contribute
assert sorted(json.loads(ds.attrs["plan_summary"])["source_crs"]) == ["EPSG:32632", "EPSG:32633"]

# %% [markdown]
# The two bands side by side, with the data footprints of the scenes (from the index) and the zone
# seam drawn over them. Grey is nodata: each scene has a slanted nodata collar on its west side.

# %%
scenes = index.query(DEMO_BBOX, DEMO_TIME)
colours = {"EPSG:32632": "tab:red", "EPSG:32633": "tab:orange"}

fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
for ax, name in zip(axes, DEMO_BANDS, strict=True):
    band = ds[name].isel(time=0)
    band.where(band != band.attrs["nodata"]).plot.imshow(ax=ax, cmap="viridis", robust=True)
    for rec in scenes:
        if rec.asset == name:
            x, y = rec.footprint.exterior.xy
            ax.plot(x, y, color=colours[rec.crs], linewidth=2, label=f"{rec.id} ({rec.crs})")
    ax.axvline(12.0, color="black", linestyle="--", linewidth=1, label="UTM 32N | 33N seam (12E)")
    ax.set_facecolor("0.85")
    ax.set_aspect(1 / np.cos(np.radians(45.5)))  # a degree of longitude is shorter than one of latitude
    ax.set_xlim(*DEMO_BBOX[::2])
    ax.set_ylim(*DEMO_BBOX[1::2])
    ax.set_title(f"{name} in {DEMO_CRS} on {DEMO_TIME}")
axes[0].legend(loc="lower right", fontsize=8)
plt.show()
plt.close(fig)

# %% [markdown]
# ## Is it right?
#
# The demo scenes are samples of a known field (`mosaic.synthetic.truth`) plus noise of at most +-2,
# so every output pixel can be checked against the field at its centre, whichever scene and zone it
# came from.

# %%
lon, lat = np.meshgrid(ds.x.values, ds.y.values)
expected = synthetic.truth(lon, lat, band=1, when=ds.time.values[0].astype("datetime64[D]").item())
error = np.abs(b02.values.astype(float) - expected)[valid]
print(f"B02 against the known field: mean abs error {error.mean():.2f}, max {error.max():.2f}")
assert error.mean() < 1.3 and error.max() < 4

# %% [markdown]
# ## The plan: what a load reads
#
# `mosaic.plan` takes the same arguments as `mosaic.load` and reads no pixels. It shows as a table
# (scenes, CRSs, time steps, grid, bands, reads and bytes); its `summary()` gives the counts as a dict;
# `explain(iy, ix)` tells which scenes feed one output chunk, which pixel windows are read, and why;
# `plot()` draws the footprints (coloured by CRS) over the chunk grid, with the reads per chunk.
# `load` executes exactly this plan.

# %%
plan = mosaic.plan(DEMO_BBOX, DEMO_CRS, DEMO_TIME, **REQUEST)
summary = plan.summary()
print(json.dumps(summary, indent=1))
assert summary == json.loads(ds.attrs["plan_summary"])
assert summary["scenes"] == 2 and summary["source_crs"] == ["EPSG:32632", "EPSG:32633"]
print(f"{summary['empty_chunks']} of {summary['chunks']} chunks touch no scene: a constant fill, no reads")
plan  # noqa: B018 (the cell's value: Jupyter shows it as a table)

# %% [markdown]
# The chunk with the most reads lies on the seam: both scenes feed it, in fusion order (datetime, then
# id). With the default method `first`, the first scene with data wins each pixel and the second one
# only fills what the first leaves empty. Scenes are selected by their exact data footprint, not
# their bounding box: in another chunk, a scene whose box touches the chunk but whose data (east of
# its slanted nodata collar) does not is left out.


# %%
def explain(iy, ix):
    """The plan's explanation of chunk (iy, ix), about the requested bands only."""
    # explain() also lists the scenes' other assets (not requested here) as "not read"
    lines = plan.explain(iy, ix).splitlines()
    return "\n".join(
        line for line in lines if "not read" not in line or any(f"[{b}]" in line for b in DEMO_BANDS)
    )


busiest = max(plan.tasks, key=lambda task: len(task.reads))
print(explain(busiest.iy, busiest.ix))
assert {r.scene for r in busiest.reads} == {"S32-seam12-20240601", "S33-seam12-20240601"}
skipped = next(
    (task.iy, task.ix) for task in plan.tasks if "data footprint does not" in explain(task.iy, task.ix)
)
print(explain(*skipped))

# %%
fig, ax = plt.subplots(figsize=(8, 7))
plan.plot(workdir / "plan.png", ax=ax)  # draws into this figure and saves it as a PNG too
plt.show()
plt.close(fig)
assert (workdir / "plan.png").stat().st_size > 0

# %% [markdown]
# ## A month, one layer per day
#
# A partial date selects a period. Scenes are grouped by solar day (`groupby="solar_day"`, the
# default): one time step per pass. Here at half the resolution, to be quick.

# %%
month = mosaic.load(DEMO_BBOX, DEMO_CRS, "2024-06", index=index, resolution=0.0004, bands="B02")
print([str(t)[:10] for t in month.time.values])
assert month.sizes["time"] == 3
b02_month = month.B02.where(month.B02 != month.B02.attrs["nodata"])  # nodata as NaN: not coloured
facets = b02_month.plot.imshow(col="time", cmap="viridis", robust=True, size=3.5)
facets.fig.suptitle("B02 of June 2024, one time step per solar day (nodata in white)", y=1.05)
plt.show()
plt.close(facets.fig)

# %% [markdown]
# ## Fusion methods
#
# Where scenes overlap, `method=` decides. With `groupby=None` the whole month is one layer, fused from
# all six scenes:
#
# - `first` (default): the first scene with data, in time order: a quick, sharp composite;
# - `median`: the per-pixel median of all scenes with data (float32): robust to outliers;
# - `highest:quality`: the scene with the highest value of another band (here the `quality` asset,
#   one value per scene) wins each pixel: a best-pixel composite;
# - `count`: how many scenes have data at each pixel (also `last`, `min`, `max`, `mean`, `lowest:<band>`
#   or your own function).

# %%
quality = {
    rec.id: json.loads(rec.properties)["mosaic:quality"]
    for rec in index.query(DEMO_BBOX, "2024-06")
    if rec.asset == "quality"
}
print("quality per scene:", quality)
COMPOSITE = dict(index=index, resolution=0.0004, groupby=None)
fused = {
    method: mosaic.load(DEMO_BBOX, DEMO_CRS, "2024-06", bands=["B02", "quality"], method=method, **COMPOSITE)
    .isel(time=0)
    .compute()
    for method in ("first", "median", "highest:quality", "count", "max")
}
count = fused["count"].B02.values
print("scenes per pixel:", {int(n): int((count == n).sum()) for n in np.unique(count)})
assert count.max() == 6  # 3 passes x 2 zones overlap at the seam

# %%
first, median, best = (fused[m].B02.values.astype(float) for m in ("first", "median", "highest:quality"))
for values in (first, best):  # integer outputs hold their nodata where they have no value: NaN here
    values[values == fused["first"].B02.attrs["nodata"]] = np.nan
limits = np.nanpercentile(first, [2, 98])
x, y = fused["first"].x.values, fused["first"].y.values
extent = (x[0], x[-1], y[-1], y[0])  # lon/lat of the pixel centres at the edges

fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), layout="constrained")
for ax, (title, values) in zip(
    axes[0], (("first", first), ("median", median), ("highest:quality", best)), strict=True
):
    image = ax.imshow(values, cmap="viridis", vmin=limits[0], vmax=limits[1], extent=extent)
    ax.set_title(f"B02, method={title!r}")
fig.colorbar(image, ax=axes[0], shrink=0.8, label="B02")
image = axes[1, 0].imshow(count, cmap="magma", vmin=0, vmax=6, extent=extent)
fig.colorbar(image, ax=axes[1, 0], shrink=0.8, label="scenes")
axes[1, 0].set_title("scenes per pixel (method='count')")
for ax, (title, values) in zip(
    axes[1, 1:], (("median - first", median - first), ("highest:quality - first", best - first)), strict=True
):
    image = ax.imshow(values, cmap="RdBu_r", vmin=-6, vmax=6, extent=extent)
    ax.set_title(f"B02, {title}")
fig.colorbar(image, ax=axes[1, 1:], shrink=0.8, label="B02 difference")
for ax in axes.flat:
    ax.set_facecolor("0.85")  # nodata: grey
    ax.set_aspect(1 / np.cos(np.radians(45.5)))
for ax in axes[1]:
    ax.set_xlabel("longitude")
for ax in axes[:, 0]:
    ax.set_ylabel("latitude")
fig.suptitle("June 2024 fused into one layer (groupby=None) by four methods, and how they differ")
plt.show()
plt.close(fig)

# %% [markdown]
# What the methods promise, checked on every pixel:
#
# - where a single scene has data, `first` and `median` give its value;
# - `highest:quality` takes, per pixel, the scene whose quality is the highest available (its
#   `quality` output equals the per-pixel `max` of the quality band). A pixel whose ranking value is
#   missing (at the collar edges the 60 m quality band ends a little before the 20 m B02 band) ranks
#   below every ranked one, so ranking never leaves a pixel with data empty;
# - the median lies within the range of the scenes (the pixel-wise `min` and `max`).

# %%
single = count == 1
assert np.array_equal(first[single], median[single])
assert np.array_equal(first[single], best[single])
assert not np.isnan(best[count > 0]).any()  # no pixel with data is left empty by the ranking
has_data = count > 0
picked = fused["highest:quality"].quality.values[has_data]
assert np.array_equal(picked, fused["max"].quality.values[has_data])
won = {scene: q for scene, q in quality.items() if q in picked}
print("scenes that win somewhere with highest:quality:", won)
low = mosaic.load(DEMO_BBOX, DEMO_CRS, "2024-06", bands="B02", method="min", **COMPOSITE).B02.values[0]
high = fused["max"].B02.values
assert np.all((median[has_data] >= low[has_data]) & (median[has_data] <= high[has_data]))
print("every method checked on", int(has_data.sum()), "pixels")
