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
# # The virtual data tree: every scene on its own grid
#
# `mosaic.open_tree` opens a collection as an `xarray.DataTree` with one node per native pixel grid
# (CRS + transform + shape): the scenes on a grid are stacked along `time`, their pixels read exactly
# as stored, with no resampling. This notebook opens the tree of the demo collection (UTM zones,
# polar stereographic grids at both poles, two UTM zones across the antimeridian), reads a pixel's
# time series from one node, and puts a node beside `mosaic.load`'s mosaic of the same area.
#
# Runs offline on the embedded demo collection. It is a [jupytext](https://jupytext.readthedocs.io)
# "percent" script: run it as `python virtual_tree.py`, or open it in Jupyter with jupytext installed.
# `MOSAIC_INDEX` (a saved tile index) and `MOSAIC_NOTEBOOK_DIR` (where to write) are optional.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer

import mosaic
from mosaic import synthetic
from mosaic.demo import demo_index
from mosaic.outputs.tree import plan_tree

workdir = Path(os.environ.get("MOSAIC_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mosaic-virtual-tree-"))
# a saved tile index, else the demo collection and its index, generated offline in a few seconds
index_path = os.environ.get("MOSAIC_INDEX") or str(demo_index(workdir))
index = mosaic.TileIndex.read(index_path)
print(index)

# %% [markdown]
# ## The tree of the demo collection
#
# Band B02 (20 m, uint16) of every scene. Nodes are `/<crs>/<grid>`: the CRS's code, then the grid's
# code where the STAC Items give one (`grid:code`, MGRS, WRS), else its origin, resolution and shape.
# Opening reads no pixels: the chunks are lazy, one per COG tile.

# %%
tree = mosaic.open_tree(index, bands="B02")
grids = {(r.crs, r.transform, r.shape) for r in index if r.asset == "B02"}
print(f"{len(tree.leaves)} nodes for {len(grids)} distinct B02 grids, in {tree.attrs['crs']}")
for leaf in tree.leaves:
    ds = leaf.to_dataset()
    print(
        f"  {leaf.path}: {ds.sizes['time']} x {ds.sizes['y']} x {ds.sizes['x']}, chunks {ds.attrs['chunks']}"
    )
assert len(tree.leaves) == len(grids)
assert {"EPSG_3413", "EPSG_3031", "EPSG_32760", "EPSG_32701"} <= set(tree.attrs["crs"])
tree  # noqa: B018 (the cell's value: Jupyter shows the tree)

# %% [markdown]
# ## A time series from one node
#
# The node of the UTM 33N scene at the 12E seam holds its three passes (June 1st, 11th and 21st).
# A pixel's time series reads one tile of each scene: the read counter of the limiter says so. The
# values are the stored pixels, checked against the known field behind the demo (its value at the
# pixel's centre on each date, plus noise of at most +-2).

# %%
path = next(
    leaf.path for leaf in tree.leaves if leaf.to_dataset().sizes["time"] == 3 and "32633" in leaf.path
)
node = tree[path].to_dataset()
y, x = 300, 500
mosaic.io.runtime.reset()  # (the read counters start again)
series = node.B02.isel(y=y, x=x).compute()
reads = mosaic.read_stats().reads
print(f"{path}: pixel ({y}, {x}) over {node.sizes['time']} dates: {series.values}, {reads} reads")
assert reads == node.sizes["time"]  # one tile per scene

lon, lat = Transformer.from_crs(node.rio.crs, "EPSG:4326", always_xy=True).transform(node.x[x], node.y[y])
expected = [synthetic.truth(lon, lat, band=1, when=pd.Timestamp(t).date()) for t in node.time.values]
print(f"known field there: {np.round(expected, 1)}")
assert np.all(np.abs(series.values - np.array(expected)) <= synthetic.NOISE_AMPLITUDE + 0.5)
for t, href in enumerate(node.B02_href.values):  # the stored pixels, bit for bit
    with rasterio.open(href) as src:
        assert src.read(1, window=((y, y + 1), (x, x + 1)))[0, 0] == series.values[t]

fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
ax.plot(node.time.values, series.values, "o-", label="tree node (stored pixels)")
ax.plot(node.time.values, expected, "x--", label="known field at the pixel centre")
ax.set_title(f"B02 time series at pixel ({y}, {x}) of {path.rsplit('/', 1)[1]}")
ax.legend()
plt.show()
plt.close(fig)

# %% [markdown]
# ## A node beside the mosaic
#
# `mosaic.load` makes the mosaic of the same area from the same index: every scene warped onto one
# lon/lat grid and fused, across the seam. For one node, odc-geo's `reproject` puts it onto that grid
# in one line. Where the mosaic's pixel comes from this scene (a mosaic of it alone), the two agree
# but for the nearest-neighbour picks of two warps (odc-geo's and mosaic's own tolerance).

# %%
bbox = (11.88, 45.40, 12.12, 45.58)
day = str(node.time.values[0])[:10]
mos = mosaic.load(bbox, "EPSG:4326", day, index=index, resolution=0.0002, bands="B02")
one = node.sel(time=day).isel(time=0).odc.reproject(mos.odc.geobox, resampling="nearest")
scene = str(node.scene_id.values[0])
alone = mosaic.load(
    geobox=mos.odc.geobox, index=index.take([i for i, r in enumerate(index) if r.id == scene]), bands="B02"
).B02.isel(time=0)
a, b = one.B02.values, alone.values
both = (a != 0) & (b != 0)
agree = (a[both] == b[both]).mean()
print(
    f"{scene} reprojected by odc-geo vs loaded alone by mosaic: {agree:.2%} of {both.sum()} pixels identical"
)
assert both.sum() > 10_000 and agree > 0.97

fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
native = node.B02.isel(time=0)
native.where(native != 0).plot.imshow(ax=axes[0], cmap="viridis", robust=True)
axes[0].set_title(f"the node on its own grid ({node.attrs['crs']})")
mosaic_b02 = mos.B02.isel(time=0)
mosaic_b02.where(mosaic_b02 != 0).plot.imshow(ax=axes[1], cmap="viridis", robust=True)
axes[1].set_title("mosaic.load: every scene, EPSG:4326")
one.B02.where(one.B02 != 0).plot.imshow(ax=axes[2], cmap="viridis", robust=True)
axes[2].set_title("the node reprojected onto load's grid")
for ax in axes:
    ax.set_facecolor("0.85")
for ax in axes[1:]:
    ax.set_aspect(1 / np.cos(np.radians(45.5)))
plt.show()
plt.close(fig)

# %% [markdown]
# ## One cube per zone: `group_by="crs"`
#
# With `group_by="crs"` a node holds every scene of one CRS, resolution and pixel phase, placed on
# the union of their grids whole pixels apart (no resampling) and fused per solar day as `load` fuses
# them. The plan (`mosaic.outputs.tree.plan_tree`) tells which scenes each time step holds, without reading.

# %%
plan = plan_tree(index, bbox=(11.9, 45.35, 15.1, 45.8), bands="B02", group_by="crs")
print(plan)
zone = plan.node("/EPSG_32633/20m")
for step in zone.steps:
    print(f"  {step.group}: {[s.id for s in step.scenes]}")
assert max(len(step.scenes) for step in zone.steps) == 2  # the 12E and 15E scenes of one day

# %% [markdown]
# ## The tree as a virtual Zarr store, opened by plain xarray
#
# `mosaic.export_virtual` writes the nodes as a Zarr store whose chunks are references to byte ranges of
# the COGs' own tiles (Kerchunk references: no pixel is copied), from an index that recorded the tiles'
# offsets (`tile_ranges=True`). Beside it, `<store>.open.json` holds the arguments of
# `xarray.open_datatree`: a process without mosaic opens it with xarray and imagecodecs' codecs.

# %%
import json  # noqa: E402

import imagecodecs.numcodecs  # noqa: E402
import xarray as xr  # noqa: E402

files = sorted({r.href for r in index if r.asset == "B02"})
# the same files, indexed again with their tiles' byte ranges (scene ids from the folder names)
with_tiles = mosaic.TileIndex.from_files(
    files, pattern=r"(?P<id>[^/]+)/(?P<asset>B02)\.tif$", tile_ranges=True, progress=False
)
store, opener = mosaic.export_virtual(with_tiles, workdir / "b02.json")
print(f"{store.name}: {store.stat().st_size / 1e3:.0f} kB of references for {len(files)} files")

imagecodecs.numcodecs.register_codecs()  # what a reader without mosaic needs
plain = xr.open_datatree(**json.loads(opener.read_text()))
tree_b02 = mosaic.open_tree(with_tiles)
for leaf in tree_b02.leaves:
    same = np.array_equal(plain[leaf.path].to_dataset()["B02"].values, leaf.to_dataset()["B02"].values)
    print(f"  {leaf.path}: {'identical' if same else 'DIFFERENT'}")
    assert same
