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
# # Cloud-free composites and time series at points
#
# Two things people do first with a collection: a composite without clouds, and the time series of
# a few places. Both take a quality mask (`mask=`, `mosaic.masks`): computed per scene from one of
# its own bands on that band's grid, and applied before the scene enters fusion, so `first` takes
# the next *clear* scene.
#
# The collection: the demo's scenes across the 12E seam between UTM zones 32N and 33N on three dates,
# with clouds. Under a cloud every band holds the cloud value (5000), and the scenes carry two
# quality bands saying where the clouds are: `SCL` (Sentinel-2 scene classes, at twice B02's pixel)
# and `QA_PIXEL` (Landsat bit flags). The pixels are a known field plus noise, so the notebook checks
# what it shows against the truth.
#
# Runs offline (the collection is generated in a few seconds). Unlike the other notebooks it does not
# take a saved index (`MOSAIC_INDEX`): every check below compares with this collection's known truth. It is a
# [jupytext](https://jupytext.readthedocs.io) "percent" script: run it as
# `python composites_and_timeseries.py`, or open it in Jupyter with jupytext installed.
# `MOSAIC_NOTEBOOK_DIR` (where to write) is optional.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from pyproj import Transformer

import mosaic
from mosaic import synthetic as syn

workdir = Path(os.environ.get("MOSAIC_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mosaic-composites-"))
specs = [s for s in syn.demo_specs(192, clouds=True) if "seam12" in s.id]
items = syn.make_collection(specs, workdir / "cloudy")
index = mosaic.TileIndex.from_stac(items)
print(index)
print(sorted({a for item in items for a in item.assets}))

# %% [markdown]
# ## A masked composite beside the unmasked one
#
# `first` over the three dates in lon/lat. Without a mask, a cloud is valid data: the composite
# shows the first date's clouds. With `mask="sentinel2-scl"` (SCL classes 0, 1, 3, 8, 9, 10
# dropped), each scene's cloudy pixels are no data before fusion, so the composite takes the next
# date clear there; where every date is cloudy, it is no data.

# %%
bbox = (11.88, 45.40, 12.12, 45.58)
request = {"index": index, "bands": "B02", "groupby": None, "crs": "EPSG:4326", "resolution": 0.0008}
plain = mosaic.load(bbox, **request).B02.isel(time=0)
clear = mosaic.load(bbox, mask="sentinel2-scl", **request).B02.isel(time=0)
print(mosaic.plan(bbox, mask="sentinel2-scl", **request).summary()["mask_reads"], "mask reads")

cloudy_pixels = int((plain >= syn.CLOUD_VALUE).sum())
print(f"unmasked: {cloudy_pixels} cloud pixels; masked: {int((clear >= syn.CLOUD_VALUE).sum())}")
assert cloudy_pixels > 1000  # the unmasked composite shows clouds
assert not (clear >= syn.CLOUD_VALUE).any()  # the masked one has no cloud value left

# the masked composite is the field (on one of the three dates) wherever it has data
lon, lat = np.meshgrid(clear.x.values, clear.y.values)
dates = sorted({item.datetime for item in items})
error = np.min([np.abs(clear.values - syn.truth(lon, lat, 1, when=d)) for d in dates], axis=0)
kept, scenes = clear.values > 0, plain.values > 0
share = kept.sum() / scenes.sum()
print(
    f"masked composite: data in {share:.1%} of the scenes' pixels, "
    f"at most {error[kept].max():.1f} from the field"
)
assert 0.9 < share < 1 and error[kept].max() < 10  # only where every date is cloudy is it no data

# %%
low, high = np.percentile(clear.values[kept], [2, 98])  # one colour scale, spent on the clear data
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
plain.where(plain != 0).plot.imshow(ax=axes[0], cmap="viridis", vmin=low, vmax=high)
axes[0].set_title("first, unmasked: the clouds of June 1st")
clear.where(clear != 0).plot.imshow(ax=axes[1], cmap="viridis", vmin=low, vmax=high)
axes[1].set_title('first, mask="sentinel2-scl": the next clear date')
plt.show()
plt.close(fig)

# %% [markdown]
# ## Time series at points
#
# `mosaic.sample` reads, per scene, only the tiles holding the points (tiles side by side in one
# read), and with a mask also the quality band's pixels around them (on its own grid). Points: the
# centres of some of June 1st's clouds (cloudy on some dates, clear on others; one cloud stays on
# every date) and two places away from them. A date holds two scenes at a point near the seam: where
# the first is cloudy and the other clear, the masked series takes the other; where both are cloudy
# it is no data on that date, and the unmasked series shows the cloud value.

# %%
first = min(items, key=lambda item: item.datetime)
centres = [tuple(c["center_lonlat"]) for c in first.properties["mosaic:clouds"]]
points = np.array([*centres, (11.95, 45.45), (12.09, 45.43)])
inside = (
    (points[:, 0] > bbox[0]) & (points[:, 0] < bbox[2]) & (points[:, 1] > bbox[1]) & (points[:, 1] < bbox[3])
)
points = points[inside]
raw = mosaic.sample(points, index=index, bands="B02")
masked = mosaic.sample(points, index=index, bands="B02", mask="sentinel2-scl")
print(masked.attrs["reads"], "reads for", len(points), "points")
masked.to_dataframe().head()

# %%
# the truth at the centre of the pixel each point falls in (the sample is that pixel's value)
rec = next(r for r in index if r.asset == "B02" and "S33" in r.id)
to_utm = Transformer.from_crs("EPSG:4326", rec.crs, always_xy=True)
x, y = to_utm.transform(points[:, 0], points[:, 1])
col, row = ~rec.affine * (x, y)
cx, cy = rec.affine * (np.floor(col) + 0.5, np.floor(row) + 0.5)
plon, plat = to_utm.transform(cx, cy, direction="INVERSE")
times = masked.time.values
truth = np.array([syn.truth(plon, plat, 1, when=t.astype("datetime64[us]").item()) for t in times])
# (in 32N, the scene west of the seam, the pixel differs: allow the field's change over one pixel)

values, plain_values = masked.B02.values.astype(float), raw.B02.values.astype(float)
clear_where = values > 0
print(f"{int((plain_values >= syn.CLOUD_VALUE).sum())} cloudy (time, point) samples masked out")
assert (plain_values >= syn.CLOUD_VALUE).any() and clear_where.any()
assert not (values >= syn.CLOUD_VALUE).any()  # every cloud value masked
assert np.abs(values - truth)[clear_where].max() < 10  # the masked series is the truth where clear
clear_first = (plain_values > 0) & (plain_values < syn.CLOUD_VALUE)
assert (values[clear_first] == plain_values[clear_first]).all()  # a clear first scene is kept as is
# a cloud in the first scene of a date, clear in the other scene of that date (across the seam):
# the masked series takes the other scene's value
refilled = (plain_values >= syn.CLOUD_VALUE) & clear_where
print(f"{int(refilled.sum())} cloudy sample(s) filled from the date's other scene")
assert (values > 0).any(axis=0).sum() >= len(points) - 1  # only the cloud on every date stays empty

# %%
fig, axes = plt.subplots(1, len(points), figsize=(3.2 * len(points), 3.2), layout="constrained", sharey=True)
for p, ax in enumerate(np.atleast_1d(axes)):
    ax.plot(times, truth[:, p], "k-", label="truth")
    ax.plot(
        times, np.where(plain_values[:, p] > 0, plain_values[:, p], np.nan), "o", mfc="none", label="unmasked"
    )
    ax.plot(times, np.where(values[:, p] > 0, values[:, p], np.nan), "x", ms=9, label="masked")
    ax.set_title(f"point {p}: {points[p, 0]:.3f}E {points[p, 1]:.3f}N", fontsize=9)
    ax.tick_params(axis="x", labelrotation=45)
np.atleast_1d(axes)[0].set_ylabel("B02")
np.atleast_1d(axes)[0].legend(fontsize=8)
plt.show()
plt.close(fig)
