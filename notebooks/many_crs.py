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
# # Many CRSs: the same scenes on any grid
#
# `mosaic` keeps every scene in its own grid and CRS and warps it onto the grid you ask for. This
# notebook loads the demo scenes into lon/lat (EPSG:4326), UTM zones, polar stereographic
# (EPSG:3413) at the North Pole, and a lon/lat grid across the antimeridian, and draws each result with
# the scenes' data footprints over it.
#
# The demo scenes are samples of a known field (`mosaic.synthetic.truth`) plus noise of at most +-2,
# so each mosaic is checked against the field at its pixel centres, in whatever CRS it is.
#
# Runs offline on the embedded demo collection. It is a [jupytext](https://jupytext.readthedocs.io)
# "percent" script: run it as `python many_crs.py`, or open it in Jupyter with jupytext installed.
# `MOSAIC_INDEX` (a saved tile index) and `MOSAIC_NOTEBOOK_DIR` (where to write) are optional.

# %%
import datetime as dt
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import shapely
from pyproj import Transformer

import mosaic
from mosaic import synthetic
from mosaic.demo import demo_index
from mosaic.index.geom import centre_lon, lonlat_to_crs

workdir = Path(os.environ.get("MOSAIC_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="mosaic-many-crs-"))
# a saved tile index, else the demo collection and its index, generated offline in a few seconds
index_path = os.environ.get("MOSAIC_INDEX") or str(demo_index(workdir))
index = mosaic.TileIndex.read(index_path)
print(index)

# %% [markdown]
# ## Where the scenes are
#
# One row per scene asset; here one point per scene (its B02 footprint's centre), coloured by its CRS.

# %%
print(index.crs_counts())
scenes = [rec for rec in index if rec.asset == "B02"]
crs_colour = {crs: plt.get_cmap("tab10")(i) for i, crs in enumerate(sorted(index.crs_counts()))}

fig, ax = plt.subplots(figsize=(11, 5.5))
for crs, colour in crs_colour.items():
    mine = [rec for rec in scenes if rec.crs == crs]
    lons = [centre_lon(rec.footprint) for rec in mine]
    lats = [rec.footprint.centroid.y for rec in mine]
    ax.scatter(
        lons, lats, s=60, color=colour, label=f"{crs} ({len(mine)} scene{'s' * (len(mine) > 1)})", zorder=3
    )
labels = {}  # one label per region (scenes close together on this map), right of its eastmost scene
for rec in scenes:
    lon, lat = centre_lon(rec.footprint), rec.footprint.centroid.y
    label = labels.setdefault((round(lon / 20), round(lat / 20)), {"at": (lon, lat), "names": set()})
    label["at"] = max(label["at"], (lon, lat))
    label["names"].add(rec.id.rsplit("-", 1)[0])
for label in labels.values():
    text = "\n".join(sorted(label["names"]))
    ax.annotate(text, label["at"], textcoords="offset points", xytext=(12, 0), va="center", fontsize=8)
ax.set_xlim(-180, 180)
ax.set_ylim(-90, 90)
ax.set_xticks(range(-180, 181, 60))
ax.set_yticks(range(-90, 91, 30))
ax.grid(color="0.85")
ax.set_xlabel("longitude")
ax.set_ylabel("latitude")
ax.legend(loc="lower left", fontsize=8)
ax.set_title("the demo collection: 19 scenes of 15 km in 7 CRSs")
plt.show()
plt.close(fig)
assert len({rec.id for rec in index}) == 19 and len(index.crs_counts()) == 7


# %% [markdown]
# Two helpers: one checks a mosaic against the known field, one draws it with the footprints of the
# scenes it was made from (the index holds footprints in lon/lat; `lonlat_to_crs` reprojects them).


# %%
def check(da, day):
    """Share of valid pixels and mean/max |value - known field| of a (y, x) B02 mosaic on ``day``."""
    valid = da.values != da.attrs["nodata"]
    xx, yy = np.meshgrid(da.x.values, da.y.values)
    lon, lat = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True).transform(xx, yy)
    error = np.abs(da.values.astype(float) - synthetic.truth(lon, lat, band=1, when=day))[valid]
    return valid.mean(), error.mean(), error.max()


def footprint_in(rec, da):
    """The scene's data footprint in the CRS of ``da`` (in lon/lat, on the side of 180 the grid is on)."""
    crs = da.rio.crs
    if not crs.is_geographic:
        # the halves of a footprint split at 180 may come back a few nanometres apart: snap them together
        return shapely.union_all(
            shapely.get_parts(lonlat_to_crs(rec.footprint, crs.to_wkt())), grid_size=1e-3
        )
    west, east = float(da.x.min()), float(da.x.max())
    parts = [
        shapely.affinity.translate(p, 360) if east > 180 and p.bounds[2] <= west else p
        for p in shapely.get_parts(rec.footprint)
    ]
    return shapely.union_all(parts)


def draw(ax, da, recs, title, day):
    """Plot a (y, x) B02 mosaic with nodata hidden, the footprints of ``recs`` over it, and its check."""
    da.where(da != da.attrs["nodata"]).plot.imshow(ax=ax, cmap="viridis", robust=True, add_colorbar=False)
    for rec in recs:
        for i, part in enumerate(shapely.get_parts(footprint_in(rec, da))):
            x, y = part.exterior.xy
            ax.plot(
                x, y, color=crs_colour[rec.crs], linewidth=2, label=None if i else f"{rec.id} ({rec.crs})"
            )
    ax.set_xlim(float(da.x.min()), float(da.x.max()))
    ax.set_ylim(float(da.y.min()), float(da.y.max()))
    ax.set_facecolor("0.85")
    if da.rio.crs.is_geographic:
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        ax.set_xlabel(f"x ({da.rio.crs.linear_units})")
        ax.set_ylabel(f"y ({da.rio.crs.linear_units})")
        ax.ticklabel_format(useOffset=False, style="plain")  # whole metres, not "1e6" offsets
    valid, mean_error, max_error = check(da, day)
    ax.set_title(f"{title}\nvalid {valid:.0%}, error vs truth: mean {mean_error:.2f}, max {max_error:.2f}")
    ax.legend(loc="lower right", fontsize=7)
    return valid, mean_error, max_error


# %% [markdown]
# ## One area, three CRSs
#
# The two scenes on either side of the 12E seam between UTM zones 32N and 33N, loaded into lon/lat,
# into `"utm"` (the UTM zone of the box centre: 33N here) and into the other zone, 32N. Same box,
# same scenes, each result on its own grid: in lon/lat the box is a rectangle of degrees; in UTM it is
# the smallest grid covering the box, so it shows a little more around it.

# %%
SEAM, JUNE1 = (11.88, 45.40, 12.12, 45.58), dt.date(2024, 6, 1)
seam_scenes = [rec for rec in index.query(SEAM, "2024-06-01") if rec.asset == "B02"]
requests = {
    "EPSG:4326 (lon/lat)": dict(crs="EPSG:4326", resolution=0.0004),
    '"utm"': dict(crs="utm", resolution=40),
    "EPSG:32632 (UTM 32N)": dict(crs="EPSG:32632", resolution=40),
}
seam = {
    name: mosaic.load(SEAM, time="2024-06-01", index=index, bands="B02", **args).B02.isel(time=0).compute()
    for name, args in requests.items()
}
print({name: f"{da.rio.crs} {da.shape}" for name, da in seam.items()})
assert seam['"utm"'].rio.crs.to_epsg() == 32633

fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), layout="constrained")
for ax, (name, da) in zip(axes, seam.items(), strict=True):
    valid, mean_error, max_error = draw(ax, da, seam_scenes, f"B02 in {name}", JUNE1)
    assert valid > 0.7 and mean_error < 1.3 and max_error < 4, name
axes[0].set_aspect(1 / np.cos(np.radians(45.5)))
fig.suptitle("B02 of June 1st 2024 across the 12E UTM seam, loaded into three CRSs (nodata in grey)")
plt.show()
plt.close(fig)

# %% [markdown]
# ## At the North Pole
#
# Find the polar scenes with the index: `query` selects rows whose footprint (not just its bounding
# box) meets a box, here everything north of 70N. The `NP` scene is in EPSG:3413 (NSIDC polar
# stereographic north) and contains the pole; `N80` is a UTM 33N scene at 80N.

# %%
polar = index.query((-180, 70, 180, 90))
polar_scenes = [rec for rec in polar if rec.asset == "B02"]
print(polar.crs_counts(), [rec.id for rec in polar_scenes])
assert {rec.id for rec in polar_scenes} == {"NP-20240702", "N80-20240702"}
JULY2 = dt.date(2024, 7, 2)

# %% [markdown]
# Three views: a 24 x 24 km box around the pole given in EPSG:3413 coordinates (`bbox_crs`); the UTM
# scene at 80N warped into the polar projection (its grid north is turned by 15 degrees there); and the
# pole scene in lon/lat, where the cap around the pole becomes a strip 360 degrees wide (so the
# resolution is given per axis, `(x, y)`).

# %%
pole = mosaic.load(
    (-12_000, -12_000, 12_000, 12_000),
    "EPSG:3413",
    "2024-07-02",
    bbox_crs="EPSG:3413",
    index=index,
    resolution=50,
    bands="B02",
).B02.isel(time=0)
utm80 = mosaic.load(
    (14.8, 79.95, 15.2, 80.05), "EPSG:3413", "2024-07-02", index=index, resolution=50, bands="B02"
).B02.isel(time=0)
cap = mosaic.load(
    (-180, 89.86, 180, 90), "EPSG:4326", "2024-07-02", index=index, resolution=(0.5, 0.002), bands="B02"
).B02.isel(time=0)
pole, utm80, cap = pole.compute(), utm80.compute(), cap.compute()
assert pole.sel(x=0, y=0, method="nearest") != pole.attrs["nodata"]  # data at the pole itself

pole_scene = next(rec for rec in polar_scenes if rec.crs == "EPSG:3413")
utm_scene = next(rec for rec in polar_scenes if rec.crs != "EPSG:3413")

fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), width_ratios=(1, 1, 1.6), layout="constrained")
axes[0].plot(0, 0, "k+", markersize=14, label="North Pole")
checks = [
    draw(axes[0], pole, [pole_scene], "the pole scene in EPSG:3413", JULY2),
    draw(axes[1], utm80, [utm_scene], "a UTM 33N scene in EPSG:3413", JULY2),
    draw(axes[2], cap, [pole_scene], "the pole scene in lon/lat", JULY2),
]
axes[0].set_aspect("equal")
axes[1].set_aspect("equal")
fig.suptitle("B02 of July 2nd 2024 at the North Pole: polar stereographic (EPSG:3413) and lon/lat")
plt.show()
plt.close(fig)
for valid, mean_error, max_error in checks:
    assert valid > 0.3 and mean_error < 1.3 and max_error < 4.5

# %% [markdown]
# ## Across the antimeridian
#
# Two scenes near Fiji, in UTM 60S and UTM 1S, both crossing 180. In lon/lat, a box whose west edge is
# greater than its east edge crosses the antimeridian (the GeoJSON convention): `(179.85, ..., -179.85,
# ...)`. The output stays one contiguous grid: its x coordinates run past 180 (180.1 is -179.9).
#
# Both scenes were taken at 22:30 UTC on June 10th, one pass; but local solar time is already June
# 11th east of 180, so the default `groupby="solar_day"` makes two time steps. `groupby=None` fuses
# them into one layer.

# %%
FIJI, JUNE10 = (179.85, -17.12, -179.85, -16.95), dt.date(2024, 6, 10)
fiji_scenes = [rec for rec in index.query(FIJI, "2024-06-10") if rec.asset == "B02"]
print([f"{rec.id} ({rec.crs})" for rec in fiji_scenes])
print(
    "solar days:",
    mosaic.plan(FIJI, "EPSG:4326", "2024-06-10", index=index, resolution=0.001, bands="B02").groups,
)

FIJI_REQUEST = dict(index=index, bands="B02", groupby=None)
fiji = {
    "EPSG:4326 across 180": mosaic.load(FIJI, "EPSG:4326", "2024-06-10", resolution=0.0005, **FIJI_REQUEST),
    "EPSG:32760 (UTM 60S)": mosaic.load(FIJI, "EPSG:32760", "2024-06-10", resolution=50, **FIJI_REQUEST),
    "EPSG:32701 (UTM 1S)": mosaic.load(FIJI, "EPSG:32701", "2024-06-10", resolution=50, **FIJI_REQUEST),
}
fiji = {name: ds.B02.isel(time=0).compute() for name, ds in fiji.items()}
lonlat = fiji["EPSG:4326 across 180"]
print(f"x from {float(lonlat.x.min()):.4f} to {float(lonlat.x.max()):.4f}")
assert float(lonlat.x.min()) < 180 < float(lonlat.x.max())
east = lonlat.x.values > 180
valid = lonlat.values != lonlat.attrs["nodata"]
assert valid[:, east].mean() > 0.4 and valid[:, ~east].mean() > 0.4  # data on both sides of 180

fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
for ax, (name, da) in zip(axes, fiji.items(), strict=True):
    valid, mean_error, max_error = draw(ax, da, fiji_scenes, f"B02 in {name}", JUNE10)
    assert valid > 0.4 and mean_error < 1.3 and max_error < 5, name
axes[0].axvline(180, color="black", linestyle="--", linewidth=1)
axes[0].set_aspect(1 / np.cos(np.radians(17.0)))
fig.suptitle("B02 of June 10th 2024 near Fiji, across the antimeridian, in lon/lat and both UTM zones")
plt.show()
plt.close(fig)
