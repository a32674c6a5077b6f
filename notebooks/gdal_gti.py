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
# # The same mosaic in GDAL and QGIS: GTI export
#
# GDAL 3.9 added the GTI driver (GDAL Raster Tile Index): a vector layer lists raster files and GDAL
# mosaics them on the fly. `mosaic.export_gti(...)` writes a GTI file that shows what `mosaic.load`
# shows (same grid, same scenes, same winner where scenes overlap), so GDAL tools, rasterio and QGIS
# open the mosaic without `mosaic`. This notebook exports one, opens it with rasterio (GDAL), and
# compares it pixel by pixel with `mosaic.load`. See `docs/gdal.md` for the details.
#
# Runs offline on the embedded demo collection. It is a [jupytext](https://jupytext.readthedocs.io)
# "percent" script: run it as `python gdal_gti.py`, or open it in Jupyter with jupytext installed.
# `MOSAIC_INDEX` (a saved tile index) and `MOSAIC_NOTEBOOK_DIR` (where to write) are optional.

# %%
import os
import tempfile
from pathlib import Path

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import rasterio

import mosaic
from mosaic.demo import DEMO_BBOX, DEMO_CRS, DEMO_RESOLUTION, demo_index

workdir = Path(os.environ.get("MOSAIC_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mosaic-gti-"))
# a saved tile index, else the demo collection and its index, generated offline in a few seconds
index_path = os.environ.get("MOSAIC_INDEX") or str(demo_index(workdir))
index = mosaic.TileIndex.read(index_path)
print(index, "| outputs in:", workdir)
print("GDAL", rasterio.__gdal_version__)

# %% [markdown]
# ## Export
#
# The scenes across the 12E UTM seam in June 2024 (two zones, three passes), band B02, in EPSG:4326
# at 0.0002 degrees. One GeoPackage per asset; with one asset it is the path given. The same from the
# command line: `mosaic gti export --index index.parquet -o seam.gti.gpkg --crs EPSG:4326 --resolution
# 0.0002 --bbox 11.88,45.40,12.12,45.58 --time 2024-06 --bands B02`.

# %%
REQUEST = dict(crs=DEMO_CRS, resolution=DEMO_RESOLUTION, bbox=DEMO_BBOX, time="2024-06", bands="B02")
(gti_path,) = mosaic.export_gti(index, workdir / "seam.gti.gpkg", **REQUEST)
print(gti_path, f"{gti_path.stat().st_size / 1024:.0f} KiB")

# %% [markdown]
# ## What is in the file
#
# A vector layer, one feature per tile: where GDAL finds it (`location`), the scene, its time, its
# own CRS and a `priority`: GDAL draws the highest priority last, on top, so the first scene in time
# wins, as with `method="first"`. Tiles in another CRS than the mosaic are wrapped in an inline warped
# VRT with `mosaic`'s warp tolerance (GDAL's own on-the-fly warp is coarser). Each feature's geometry
# is the tile's outline in the mosaic CRS.

# %%
tiles = gpd.read_file(gti_path)
tiles["location"] = np.where(tiles.location.str.startswith("<VRTDataset"), "warped VRT", tiles.location)
print(tiles.drop(columns="geometry").to_string())
assert len(tiles) == 6 and set(tiles.src_crs) == {"EPSG:32632", "EPSG:32633"}
by_time = tiles.sort_values(["datetime", "id"])
assert list(by_time.priority) == sorted(tiles.priority, reverse=True)  # earliest on top

fig, ax = plt.subplots(figsize=(8, 6.5))
colours = {"EPSG:32632": "tab:red", "EPSG:32633": "tab:orange"}
for crs, group in tiles.groupby("src_crs"):
    group.plot(ax=ax, facecolor=colours[crs], edgecolor=colours[crs], alpha=0.2, linewidth=2)
    ax.plot([], [], color=colours[crs], linewidth=6, alpha=0.4, label=f"tiles in {crs}")
    order = group.sort_values("priority", ascending=False)
    text = "\n".join(f"{tile.priority}: {tile.id}" for tile in order.itertuples())
    centre = group.geometry.iloc[0].centroid
    ax.annotate(text, (centre.x, centre.y), ha="center", va="center", fontsize=8)
minx, miny, maxx, maxy = DEMO_BBOX
ax.plot([minx, maxx, maxx, minx, minx], [miny, miny, maxy, maxy, miny], "k--", label="mosaic bbox")
ax.set_aspect(1 / np.cos(np.radians(45.5)))
ax.set_title("the GTI layer: tiles (their grids, clipped to the mosaic) by priority")
ax.legend(loc="lower right", fontsize=8)
plt.show()
plt.close(fig)

# %% [markdown]
# ## Open it with GDAL
#
# The `.gti.gpkg` suffix makes GDAL pick the GTI driver: `gdalinfo seam.gti.gpkg`,
# `gdal_translate seam.gti.gpkg seam.tif`, QGIS's *Add Raster Layer*, or rasterio as here. The layer's
# metadata give GDAL the grid, so it knows the size, CRS and nodata without opening a tile.

# %%
with rasterio.open(gti_path) as src:
    print(src.driver, src.crs, src.shape, src.dtypes[0], "nodata", src.nodata)
    print("pixel size", src.res, "|", src.bounds)
    gdal = src.read(1)
    nodata = src.nodata
    gdal_grid = (src.crs, src.shape, src.transform)
assert gdal_grid[0] == "EPSG:4326"
assert (gdal != nodata).mean() > 0.75

# %% [markdown]
# ## The same request with `mosaic.load`
#
# `groupby=None` makes one layer of the month, fused with `method="first"`, as the GTI draws it. The
# grid is the same (edges aligned to the resolution, like `gdalwarp -tap`), and so are the pixels, but
# for a few nearest-neighbour ties: a target pixel centre that falls within the warp tolerance (0.01
# px) of the middle between two source pixels can go either way.

# %%
ds = mosaic.load(
    DEMO_BBOX, DEMO_CRS, "2024-06", index=index, resolution=DEMO_RESOLUTION, bands="B02", groupby=None
)
ours = ds.B02.isel(time=0).values
assert (ds.rio.crs, ours.shape, ds.rio.transform()) == gdal_grid
assert ds.B02.attrs["nodata"] == nodata  # the GTI's nodata is the mosaic's
assert np.array_equal(gdal != nodata, ours != nodata)  # data in the same places
has_data = ours != nodata
identical = (gdal == ours)[has_data].mean()
differ = np.argwhere(gdal != ours)
largest = np.abs(gdal.astype(np.int32) - ours.astype(np.int32)).max()
print(f"identical: {identical:.4%} of the {has_data.sum()} pixels with data")
print(f"{len(differ)} pixels differ, by up to {largest}")
assert identical > 0.99

# %%
fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
limits = np.percentile(ours[has_data], [2, 98])
extent = (ds.x.values[0], ds.x.values[-1], ds.y.values[-1], ds.y.values[0])
for ax, (title, values) in zip(axes[:2], (("GDAL (GTI)", gdal), ("mosaic.load", ours)), strict=True):
    masked = np.where(values == nodata, np.nan, values)  # nodata as NaN: not coloured
    image = ax.imshow(masked, extent=extent, vmin=limits[0], vmax=limits[1])
    ax.set_title(f"B02, {title}")
fig.colorbar(image, ax=axes[:2], shrink=0.8, label="B02")
difference = gdal.astype(np.int32) - ours.astype(np.int32)
image = axes[2].imshow(np.where(has_data, difference, np.nan), extent=extent, cmap="RdBu_r", vmin=-5, vmax=5)
rows, cols = differ.T
axes[2].scatter(
    ds.x.values[cols], ds.y.values[rows], s=40, facecolors="none", edgecolors="black", linewidths=0.8
)
axes[2].set_title(f"GDAL - mosaic.load: {identical:.3%} identical ({len(differ)} pixels circled)")
fig.colorbar(image, ax=axes[2], shrink=0.8, label="B02 difference")
for ax in axes:
    ax.set_facecolor("0.85")  # nodata: grey
    ax.set_aspect(1 / np.cos(np.radians(45.5)))
    ax.set_xlabel("longitude")
axes[0].set_ylabel("latitude")
fig.suptitle("June 2024 across the 12E UTM seam: the GTI read by GDAL, mosaic.load, and their difference")
plt.show()
plt.close(fig)

# %% [markdown]
# ## A time slice in GDAL
#
# The GTI's `FILTER` open option is an SQL `WHERE` clause on the layer; `datetime` is ISO 8601 text in
# UTC, so a day is a string range (`gdal_translate -oo "FILTER=..."` on the command line). It matches
# `mosaic.load` of that day.

# %%
june11 = "datetime >= '2024-06-11' AND datetime < '2024-06-12'"
with rasterio.open(gti_path, FILTER=june11) as src:
    gdal_june11 = src.read(1)
ours_june11 = mosaic.load(
    DEMO_BBOX, DEMO_CRS, "2024-06-11", index=index, resolution=DEMO_RESOLUTION, bands="B02", groupby=None
).B02.values[0]
same = (gdal_june11 == ours_june11)[ours_june11 != nodata].mean()
changed = np.mean(gdal_june11 != gdal)
print(f"June 11th: {same:.4%} identical to mosaic.load; {changed:.1%} of the pixels differ from the month")
assert same > 0.99

# %% [markdown]
# ## And back: a GTI as a tile index
#
# `mosaic.TileIndex.read` opens a GTI (ours, or any `gdaltindex` output) as a tile index: each tile is
# opened for its grid, its scene id, time and CRS come from the fields. Loading from it gives the same
# mosaic.

# %%
from_gti = mosaic.TileIndex.read(gti_path)
print(from_gti, from_gti.crs_counts())
again = mosaic.load(
    DEMO_BBOX, DEMO_CRS, "2024-06", index=from_gti, resolution=DEMO_RESOLUTION, bands="B02", groupby=None
).B02.values[0]
assert np.array_equal(again, ours)
print("the mosaic from the GTI's tile index is identical to the one from the original index")
