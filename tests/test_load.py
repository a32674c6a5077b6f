"""mosaic.load and mosaic.plan: correctness against the known truth and GDAL; planner and graph behaviour."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer
from shapely.geometry import box

import mosaic
import real_data
from mosaic import InvalidInputError, MissingIndexError, NoDataError, ReadError, ReadFailedWarning, TileIndex
from mosaic import synthetic as syn
from mosaic.graph import band_array

SEAM12 = (11.88, 45.40, 12.12, 45.58)
JUNE1 = dt.date(2024, 6, 1)


def errors_vs_truth(
    da: xr.DataArray, *, truth_band: int = 1, when=JUNE1, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Absolute errors at valid pixels, and the valid mask, of a (y, x) array against the known field."""
    values = da.values.astype(float) * scale
    nodata = da.attrs.get("nodata")
    valid = ~np.isnan(values) if nodata is None or math.isnan(nodata) else da.values != nodata
    yy, xx = np.meshgrid(da.y.values, da.x.values, indexing="ij")
    crs = da.odc.geobox.crs if hasattr(da, "odc") else None
    lon, lat = Transformer.from_crs(crs.to_wkt(), 4326, always_xy=True).transform(xx, yy)
    truth = syn.truth(lon, lat, truth_band, when=when)
    return np.abs(values - truth)[valid], valid


def item(items, prefix):
    return next(i for i in items if i.id.startswith(prefix))


# --------------------------------------------------------------------------------- accuracy vs truth


@pytest.mark.parametrize(("crs", "res"), [("EPSG:4326", 0.0002), ("EPSG:32633", 20), ("EPSG:32632", 20)])
def test_nearest_across_a_utm_seam_matches_the_truth_at_noise_level(demo_index, crs, res):
    ds = mosaic.load(SEAM12, crs, "2024-06-01", index=demo_index, resolution=res, bands="B02", chunks=256)
    err, valid = errors_vs_truth(ds.B02.isel(time=0))
    assert valid.mean() > 0.75  # both seam scenes, minus their collars and the box margin
    assert err.mean() < 1.3  # noise is uniform in +-2 (mean 1.0), plus integer rounding
    assert err.max() < 4.0
    # both zones contributed: valid pixels on both sides of 12E
    lon = Transformer.from_crs(ds.odc.geobox.crs.to_wkt(), 4326, always_xy=True).transform(
        *np.meshgrid(ds.x, ds.y)
    )[0]
    assert valid[lon < 11.99].mean() > 0.6 and valid[lon > 12.01].mean() > 0.6


def test_bilinear_and_average_errors_are_below_nearest(demo_index):
    maes = {}
    for resampling, res in (("nearest", 0.0002), ("bilinear", 0.0002), ("average", 0.0006)):
        ds = mosaic.load(
            SEAM12,
            "EPSG:4326",
            "2024-06-01",
            index=demo_index,
            resolution=res,
            bands="B02",
            resampling=resampling,
        )
        maes[resampling] = errors_vs_truth(ds.B02.isel(time=0))[0].mean()
    assert maes["bilinear"] < maes["nearest"] * 0.85
    assert maes["average"] < maes["bilinear"]


def test_target_grid_across_the_antimeridian(demo_index):
    bbox = (179.85, -17.12, -179.85, -16.95)
    ds = mosaic.load(
        bbox, "EPSG:4326", "2024-06-10", index=demo_index, resolution=0.0005, bands="B02", groupby=None
    )
    assert float(ds.x.min()) < 180 < float(ds.x.max())  # one contiguous grid across 180
    da = ds.B02.isel(time=0)
    err, valid = errors_vs_truth(da, when=dt.date(2024, 6, 10))
    assert err.mean() < 1.3 and err.max() < 5.0
    east = ds.x.values > 180
    assert valid[:, east].mean() > 0.4 and valid[:, ~east].mean() > 0.4
    assert set(ds.attrs["groups"]) == {"all"} and ds.attrs["scenes"] == 2


@pytest.mark.parametrize("crs", ["EPSG:32760", "EPSG:32701"])
def test_antimeridian_scenes_into_either_utm_zone(demo_index, crs):
    ds = mosaic.load(
        (179.85, -17.12, -179.85, -16.95),
        crs,
        "2024-06-10",
        index=demo_index,
        resolution=50,
        bands="B02",
        groupby=None,
    )
    err, valid = errors_vs_truth(ds.B02.isel(time=0), when=dt.date(2024, 6, 10))
    assert valid.mean() > 0.4 and err.mean() < 1.3


def test_solar_day_splits_one_utc_pass_across_the_antimeridian(demo_index):
    # both scenes at 22:30 UTC on 06-10: local solar day is 06-11 east of 180 and 06-10 west of it
    ds = mosaic.load(
        (179.85, -17.12, -179.85, -16.95),
        "EPSG:4326",
        "2024-06-10",
        index=demo_index,
        resolution=0.001,
        bands="B02",
    )
    assert list(ds.attrs["groups"]) == ["2024-06-10", "2024-06-11"]
    assert ds.sizes["time"] == 2


@pytest.mark.parametrize(
    ("bbox", "crs", "bbox_crs", "day"),
    [
        (
            (14.8, 79.95, 15.2, 80.05),
            "EPSG:3413",
            "EPSG:4326",
            "2024-07-02",
        ),  # UTM 33N scene at 80N into polar stereo
        ((-20_000, -20_000, 20_000, 20_000), "EPSG:3413", "EPSG:3413", "2024-07-02"),  # the North Pole itself
        ((-20_000, -20_000, 20_000, 20_000), "EPSG:3031", "EPSG:3031", "2024-12-15"),  # near the South Pole
        ((-180, 89.9, 180, 90), "EPSG:4326", "EPSG:4326", "2024-07-02"),  # the polar cap in lon/lat
    ],
)
def test_polar_targets(demo_index, bbox, crs, bbox_crs, day):
    ds = mosaic.load(
        bbox,
        crs,
        day,
        index=demo_index,
        resolution=0.01 if crs == "EPSG:4326" else 50,
        bbox_crs=bbox_crs,
        bands="B02",
    )
    err, valid = errors_vs_truth(ds.B02.isel(time=0), when=dt.date.fromisoformat(day))
    assert valid.mean() > 0.05
    assert err.mean() < 1.3 and err.max() < 4.5


def test_mixed_resolutions_dtypes_and_multiband_assets(demo_collection, demo_index):
    items = demo_collection[1]
    ds = mosaic.load(
        SEAM12,
        "EPSG:32633",
        "2024-06-01",
        index=demo_index,
        resolution=40,
        bands=["B02", "B8A", "WVP", "AOT", "visual"],
    )
    assert {k: str(v.dtype) for k, v in ds.data_vars.items()} == {
        "B02": "uint16",
        "B8A": "int16",
        "WVP": "float32",
        "AOT": "float32",
        "visual.1": "uint8",
        "visual.2": "uint8",
        "visual.3": "uint8",
    }
    assert ds.B02.attrs["nodata"] == ds.B02.attrs["_FillValue"] == 0 and "_FillValue" not in ds.B02.encoding
    assert math.isnan(ds.WVP.attrs["nodata"]) and math.isnan(ds.AOT.attrs["nodata"])  # float output: NaN
    seam = item(items, "S33-seam12-20240601")
    for name, truth_band in (
        ("B02", 1),
        ("B8A", 2),
        ("WVP", 3),
        ("AOT", 7),
        ("visual.1", 4),
        ("visual.3", 6),
    ):
        asset = name.split(".")[0]
        scale = ds[name].attrs.get("scale_factor", 1.0)
        err, valid = errors_vs_truth(ds[name].isel(time=0), truth_band=truth_band, scale=scale)
        tol = syn.tolerance(seam, asset, 1 if "." not in name else int(name[-1]))
        assert valid.mean() > 0.7, name
        # nearest from coarser sources: error = noise + rounding + the gradient over half a source pixel
        assert err.mean() < tol + 1.5, (name, err.mean(), tol)


# ----------------------------------------------------------------------------------- time and methods


def test_time_grouping_by_solar_day(demo_index):
    ds = mosaic.load(SEAM12, "EPSG:4326", "2024-06", index=demo_index, resolution=0.0004, bands="B02")
    assert [str(t)[:10] for t in ds.time.values] == ["2024-06-01", "2024-06-11", "2024-06-21"]
    for i, day in enumerate((1, 11, 21)):
        da = ds.B02.isel(time=i)
        values = da.values.astype(float)
        valid = values != 0
        yy, xx = np.meshgrid(da.y, da.x, indexing="ij")
        right = syn.truth(xx, yy, 1, when=dt.date(2024, 6, day))
        # the time term (0.2/day) tells the dates apart: the signed error is centred on the right date
        assert abs(np.mean(values[valid] - right[valid])) < 0.3
        assert abs(np.mean(values[valid] - (right[valid] - 2.0))) > 1.5


def test_methods_first_last_count_mean_median_min_max(demo_index):
    kw = dict(index=demo_index, resolution=0.0004, bands="B02", groupby=None)
    out = {
        m: mosaic.load(SEAM12, "EPSG:4326", "2024-06", method=m, **kw).B02.isel(time=0).values
        for m in ("first", "last", "count", "mean", "median", "min", "max")
    }
    per_day = mosaic.load(SEAM12, "EPSG:4326", "2024-06", **{**kw, "groupby": "solar_day"}).B02.values
    valid = per_day != 0
    stack = np.where(valid, per_day.astype(float), np.nan)
    first = np.where(valid[0], per_day[0], np.where(valid[1], per_day[1], per_day[2]))
    # "last" is the last valid pixel in datetime-then-id order, within each day too
    per_day_last = mosaic.load(
        SEAM12, "EPSG:4326", "2024-06", **{**kw, "groupby": "solar_day", "method": "last"}
    ).B02.values
    last = np.where(valid[2], per_day_last[2], np.where(valid[1], per_day_last[1], per_day_last[0]))
    assert np.array_equal(out["first"], first)
    assert np.array_equal(out["last"], last)
    # count is per scene: in the seam overlap two scenes a day, elsewhere one
    days = valid.sum(axis=0)
    assert (out["count"] >= days).all() and out["count"].max() == 6
    single = out["count"] == days  # no same-day overlap: per-day layers are the scenes themselves
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.allclose(out["mean"][single], np.nanmean(stack, axis=0)[single], equal_nan=True)
        assert np.allclose(out["median"][single], np.nanmedian(stack, axis=0)[single], equal_nan=True)
    seen = out["count"] > 0
    assert (out["min"][seen] <= out["median"][seen]).all() and (out["median"][seen] <= out["max"][seen]).all()
    assert np.isnan(out["median"][~seen]).all() and (out["min"][~seen] == 0).all()
    lo = np.where(valid, per_day, 65535).min(axis=0)
    assert np.array_equal(out["min"][single], np.where(lo == 65535, 0, lo)[single])
    assert np.array_equal(out["max"][single], per_day.max(axis=0)[single])
    assert out["mean"].dtype == np.float32 and out["count"].dtype == np.uint16


def test_highest_quality_picks_the_best_scene_per_pixel(demo_collection, demo_index):
    items = [i for i in demo_collection[1] if i.id.startswith(("S32-seam12", "S33-seam12"))]
    quality = {i.id: i.properties["mosaic:quality"] for i in items}
    ds = mosaic.load(
        SEAM12,
        "EPSG:32633",
        "2024-06",
        index=demo_index,
        resolution=60,
        bands="B02",
        groupby=None,
        method="highest:quality",
    )
    got = ds.B02.isel(time=0).values
    # reference: each scene on its own, then per pixel the one with the highest quality
    layers, scores = [], []
    for sid in sorted(quality):
        single = TileIndex.from_records([r for r in demo_index if r.id == sid])
        one = mosaic.load(
            SEAM12, "EPSG:32633", index=single, resolution=60, bands=["B02", "quality"], groupby=None
        )
        layers.append(one.B02.isel(time=0).values)
        scores.append(np.where(one.quality.isel(time=0).values > 0, quality[sid], -1))
    best = np.argmax(np.stack(scores), axis=0)
    want = np.take_along_axis(np.stack(layers), best[None], axis=0)[0]
    want = np.where(np.max(np.stack(scores), axis=0) >= 0, want, 0)
    agree = (got == want)[want != 0]
    assert agree.mean() > 0.995  # quality is at 60 m, B02 at 20 m: edges may differ by a pixel
    assert len(set(quality.values())) > 1


def test_a_chunk_of_local_scenes_reads_ahead_while_a_core_is_idle(demo_index):
    # one chunk fed by both seam scenes on one dask thread: a core is idle, so the second scene is read
    # in a read-ahead thread while the first is read, and the pixels are those of reading in turn
    # (first on top: scene A where it has data, else scene B, each loaded on its own)
    import os
    import threading

    import dask

    from mosaic import graph

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    kw = dict(resolution=0.0004, bands="B02", groupby=None, chunks=4096)
    ds = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, **kw)
    plan = mosaic.plan(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, **kw)
    assert len(plan.tasks) == 1 and len(plan.tasks[0].reads) == 2
    graph._read_pool.cache_clear()  # a new pool: its threads exist only if a read was started ahead
    # (threads, not their idents: the old pool's threads end as it is collected, and a new thread may
    # be given the ident of one of them)
    before = set(threading.enumerate())
    with dask.config.set(scheduler="threads", num_workers=1):
        got = ds.B02.isel(time=0).values
    helpers = [t for t in threading.enumerate() if t not in before and "read-ahead" in t.name]
    assert helpers
    layers = []
    for read in plan.tasks[0].reads:
        single = TileIndex.from_records([r for r in demo_index if r.id == read.scene])
        one = mosaic.load(index=single, geobox=ds.odc.geobox, **kw)
        layers.append(one.B02.isel(time=0).values)
    want = np.where(layers[0] != 0, layers[0], layers[1])
    assert (want != 0).mean() > 0.5 and (layers[0] != 0).any() and (layers[1][layers[0] == 0] != 0).any()
    assert np.array_equal(got, want)


def test_callable_method(demo_index):
    ds = mosaic.load(
        SEAM12,
        "EPSG:4326",
        "2024-06",
        index=demo_index,
        resolution=0.0004,
        bands="B02",
        groupby=None,
        method=lambda s: np.nanmax(s, axis=0) - np.nanmin(s, axis=0),
        dtype="float32",
    )
    spread = ds.B02.isel(time=0).values
    finite = spread[np.isfinite(spread)]
    assert finite.size and 0 <= finite.min() and finite.max() < 20  # dates differ by the time term + noise


def test_scenes_with_different_scale_offset_are_mosaicked_in_physical_values(tmp_path):
    # two neighbours overlapping by 20 px that store the same physical value 100 differently
    from affine import Affine

    def write(name, x0, value, scale, offset):
        profile = dict(
            driver="GTiff", width=60, height=40, count=1, dtype="uint16", nodata=0, crs="EPSG:32633",
            transform=Affine(10, 0, x0, 0, -10, 5_000_400),
        )  # fmt: skip
        with rasterio.open(tmp_path / f"{name}.tif", "w", **profile) as dst:
            dst.write(np.full((1, 40, 60), value, "uint16"))
            dst.scales, dst.offsets = (scale,), (offset,)

    write("a", 500_000, 100, 1.0, 0.0)
    write("b", 500_400, 190, 0.5, 5.0)  # 190 * 0.5 + 5 = 100
    index = TileIndex.from_files(
        tmp_path, pattern=r"(?P<id>[ab])\.tif$", datetime="2024-06-01", progress=False
    )
    bbox = (500_000, 5_000_000, 501_000, 5_000_400)
    common = dict(index=index, resolution=10, bbox_crs="EPSG:32633", groupby=None)
    for method in ("first", "last", "mean", "max"):
        ds = mosaic.load(bbox, "EPSG:32633", **common, method=method)
        band = ds.data
        assert band.dtype == np.float32 and "scale_factor" not in band.attrs and "units_note" in band.attrs
        assert (band.values == 100).all(), method  # stored 190 from b would be wrong
    count = mosaic.load(bbox, "EPSG:32633", **common, method="count").data
    assert count.values.max() == 2 and count.attrs.get("nodata") is None
    with pytest.raises(InvalidInputError, match="different scale/offset"):
        mosaic.export_gti(
            index, tmp_path / "m.gti.gpkg", crs="EPSG:32633", resolution=10, bbox=bbox, bbox_crs="EPSG:32633"
        )


def test_ranking_by_a_band_whose_scale_differs_between_scenes_ranks_physical_values(tmp_path):
    # quality stored as 50 (scale 1) in a and as 60 (scale 0.5, i.e. 30) in b: a is the better scene,
    # though its stored value is lower
    from affine import Affine

    profile = dict(
        driver="GTiff", width=40, height=40, count=1, dtype="uint16", nodata=0, crs="EPSG:32633",
        transform=Affine(10, 0, 500_000, 0, -10, 5_000_400),
    )  # fmt: skip
    for scene, value, quality, scale in (("a", 1, 50, 1.0), ("b", 2, 60, 0.5)):
        with rasterio.open(tmp_path / f"{scene}_B.tif", "w", **profile) as dst:
            dst.write(np.full((1, 40, 40), value, "uint16"))
        with rasterio.open(tmp_path / f"{scene}_Q.tif", "w", **profile) as dst:
            dst.write(np.full((1, 40, 40), quality, "uint16"))
            dst.scales = (scale,)
    index = TileIndex.from_files(
        tmp_path, pattern=r"(?P<id>[ab])_(?P<asset>[BQ])\.tif$", datetime="2024-06-01", progress=False
    )
    bbox = (500_000, 5_000_000, 500_400, 5_000_400)
    common = dict(index=index, resolution=10, bbox_crs="EPSG:32633", groupby=None, bands="B")
    best = mosaic.load(bbox, "EPSG:32633", **common, method="highest:Q").B.values
    worst = mosaic.load(bbox, "EPSG:32633", **common, method="lowest:Q").B.values
    assert (best == 1).all() and (worst == 2).all()


# ------------------------------------------------------------------------------------------ planner


def test_chunks_without_data_have_no_reads_and_no_tasks(demo_index):
    wide = (11.8, 45.3, 18.2, 46.1)  # 12E seam to 18E seam: mostly no data in between
    plan = mosaic.plan(
        wide, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.002, bands="B02", chunks=64
    )
    s = plan.summary()
    assert s["chunks"] == s["nonempty_chunks"] + s["empty_chunks"]
    assert 0 < s["nonempty_chunks"] < s["chunks"] / 4
    arr = band_array(plan, plan.bands[0])
    graph = dict(arr.__dask_graph__())
    real_tasks = [
        v for v in graph.values() if isinstance(v, tuple) and callable(v[0]) and v[0] is not np.full
    ]
    assert len(real_tasks) == s["nonempty_chunks"]
    # an empty chunk computes to nodata without a single read
    empty = next(
        (iy, ix)
        for iy in range(plan.chunk_grid[0])
        for ix in range(plan.chunk_grid[1])
        if not any((t.iy, t.ix) == (iy, ix) for t in plan.tasks)
    )
    before = mosaic.read_stats().reads
    block = arr.blocks[0, empty[0], empty[1]].compute()
    assert (block == 0).all() and mosaic.read_stats().reads == before


def test_plan_token_ignores_href_secrets_only_and_names_each_band_apart(demo_index):
    """The plan's dask token (graph keys, regrid fingerprints) hashes every read field, hrefs redacted."""
    import dataclasses

    from dask.base import tokenize

    from mosaic.api import to_dataset

    plan = mosaic.plan(
        SEAM12, "EPSG:32633", "2024-06-01", index=demo_index, resolution=20, bands=["B02", "B8A"], chunks=512
    )

    def with_reads(change) -> mosaic.Plan:
        tasks = tuple(dataclasses.replace(t, reads=tuple(change(r) for r in t.reads)) for t in plan.tasks)
        return dataclasses.replace(plan, tasks=tasks)

    signed = {
        s: with_reads(lambda r, s=s: dataclasses.replace(r, href=f"{r.href}?sv=1&sig={s}")) for s in "ab"
    }
    assert tokenize(signed["a"]) == tokenize(signed["b"])  # only the signature differs: redacted
    assert tokenize(signed["a"]) != tokenize(plan)
    moved = with_reads(lambda r: dataclasses.replace(r, window=(r.window[0] + 1, *r.window[1:])))
    assert tokenize(moved) != tokenize(plan)
    assert tokenize(with_reads(lambda r: r)) == tokenize(plan)
    first, again = to_dataset(plan), to_dataset(with_reads(lambda r: r))
    names = {band: first[band].data.name for band in ("B02", "B8A")}
    assert names["B02"] != names["B8A"]
    assert names == {band: again[band].data.name for band in ("B02", "B8A")}
    assert to_dataset(moved).B02.data.name != names["B02"]


def test_footprint_not_bbox_decides_which_scenes_feed_a_chunk(demo_index):
    plan = mosaic.plan(
        SEAM12, "EPSG:32633", "2024-06-21", index=demo_index, resolution=20, bands="B02", chunks=32
    )
    fed_by: dict[tuple[int, int], set[str]] = {}
    for t in plan.tasks:
        fed_by.setdefault((t.iy, t.ix), set()).update(r.scene for r in t.reads)
    considered = {r.id: r for r in plan.considered if r.asset == "B02"}
    skipped = []
    for iy in range(plan.chunk_grid[0]):
        for ix in range(plan.chunk_grid[1]):
            chunk = plan.chunk_geobox(iy, ix)
            ll = mosaic.index.geom.to_lonlat(box(*chunk.boundingbox), chunk.crs.to_wkt())
            for sid, rec in considered.items():
                touches = rec.footprint.intersects(ll)
                assert (sid in fed_by.get((iy, ix), set())) == touches, (iy, ix, sid)
                if not touches and rec.footprint.envelope.intersects(ll):
                    skipped.append((iy, ix, sid))
    assert skipped  # some chunks are inside a scene's bounding box but in its collar: not read
    text = plan.explain(*next(iter(fed_by)))
    assert "footprint intersects the chunk" in text
    iy, ix, sid = skipped[0]
    text = plan.explain(iy, ix)
    assert (
        f"not read: {sid} [B02]: its bounding box touches the chunk but its data footprint does not" in text
    )
    assert "[B02]" in text and not any(f"[{a}]" in text for a in ("AOT", "B8A", "quality", "visual"))


@pytest.mark.parametrize(
    ("bbox", "crs", "res", "bbox_crs", "day", "narrows"),
    [
        (SEAM12, "EPSG:32633", 40, "EPSG:4326", "2024-06-01", True),  # UTM 32N scenes warped into 33N
        (SEAM12, "EPSG:4326", 0.0004, "EPSG:4326", "2024-06-01", True),
        (
            (179.85, -17.12, -179.85, -16.95),
            "EPSG:4326",
            0.001,
            "EPSG:4326",
            "2024-06-10",
            True,
        ),  # across 180
        ((179.85, -17.12, -179.85, -16.95), "EPSG:32701", 100, "EPSG:4326", "2024-06-10", True),
        ((14.8, 79.95, 15.2, 80.05), "EPSG:3413", 100, "EPSG:4326", "2024-07-02", False),
        ((-20_000, -20_000, 20_000, 20_000), "EPSG:3413", 100, "EPSG:3413", "2024-07-02", True),  # the pole
        ((-180, 89.9, 180, 90), "EPSG:4326", 0.02, "EPSG:4326", "2024-07-02", False),  # polar cap in lon/lat
    ],
)
def test_every_pixel_a_read_gives_lands_inside_its_planned_target_box(
    demo_index, bbox, crs, res, bbox_crs, day, narrows
):
    # the planner narrows each read to the box of its chunk the scene's grid covers, so warps compute
    # just that box; warping the whole chunk instead must put no pixel outside it
    import dataclasses

    from mosaic.io.limits import get_limiter
    from mosaic.io.read import warp_read

    plan = mosaic.plan(
        bbox, crs, day, index=demo_index, resolution=res, bbox_crs=bbox_crs, bands="B02", chunks=96
    )
    narrowed = 0
    for task in plan.tasks:
        shape = tuple(s.stop - s.start for s in plan.chunk_slices(task.iy, task.ix))
        affine = plan.chunk_geobox(task.iy, task.ix).affine
        for read in task.reads:
            assert read.target is not None
            row, col, h, w = read.target
            assert 0 <= row and 0 <= col and h > 0 and w > 0 and row + h <= shape[0] and col + w <= shape[1]
            narrowed += h * w < shape[0] * shape[1]
            whole = warp_read(
                dataclasses.replace(read, target=None),
                dst_affine=affine,
                dst_shape=shape,
                dst_crs=plan.geobox.crs.to_wkt(),
                resampling=plan.resampling,
                limiter=get_limiter(),
            )
            valid = np.zeros(shape, bool)
            valid[whole.region] = ~np.isnan(whole.data)
            inside = np.zeros(shape, bool)
            inside[row : row + h, col : col + w] = True
            assert not (valid & ~inside).any(), (task.iy, task.ix, read.scene, read.target)
    assert (narrowed > 0) == narrows  # where a scene edge crosses a chunk, its box is narrower


def test_overview_level_follows_the_target_resolution(demo_collection, demo_index):
    files = TileIndex.from_files(
        [p for i in demo_collection[1] if i.id.startswith("S33-mid") for p in [i.assets["B02"].href]],
        pattern=r"(?P<id>S33-mid-\d+)/(?P<asset>\w+)\.tif$",
        progress=False,
    )
    assert files.records()[0].overviews == (2, 4, 8)
    bbox = (14.95, 45.65, 15.05, 45.75)
    for res, factor in ((20, 1), (45, 2), (100, 4), (200, 8), (1000, 8)):
        plan = mosaic.plan(bbox, "EPSG:32633", index=files, resolution=res, groupby=None)
        assert plan.summary()["overview_factors"] == {str(factor): plan.summary()["reads"]}, res
    # STAC Items do not list overviews: a decimated read lets GDAL pick one
    plan = mosaic.plan(bbox, "EPSG:32633", "2024-06-01", index=demo_index, resolution=200, bands="B02")
    assert plan.summary()["overview_factors"] == {"8": plan.summary()["reads"]}
    coarse = mosaic.load(
        bbox, "EPSG:32633", "2024-06-01", index=demo_index, resolution=200, bands="B02", resampling="average"
    )
    err, valid = errors_vs_truth(coarse.B02.isel(time=0))
    assert valid.mean() > 0.9 and err.mean() < 40  # averaging over 200 m smooths the ~100-unit texture


def test_grid_is_aligned_to_the_resolution_like_tap(demo_index):
    plan = mosaic.plan(
        (12.0001, 45.4501, 12.0502, 45.5003), "EPSG:32633", index=demo_index, resolution=30, groupby=None
    )
    a = plan.geobox.affine
    assert a.c % 30 == 0 and a.f % 30 == 0 and a.a == 30 and a.e == -30


def test_geobox_and_like_give_exact_grids(demo_index):
    ds = mosaic.load(SEAM12, "utm", "2024-06-01", index=demo_index, resolution=40, bands="B02")
    assert ds.rio.crs.to_epsg() == 32633  # the zone of the bbox centre: 12.0E starts zone 33
    again = mosaic.load(like=ds, time="2024-06-01", index=demo_index, bands="B02")
    assert again.odc.geobox == ds.odc.geobox
    assert np.array_equal(again.B02.values, ds.B02.values)
    by_geobox = mosaic.load(geobox=ds.odc.geobox, time="2024-06-01", index=demo_index, bands="B02")
    assert by_geobox.odc.geobox == ds.odc.geobox


def test_dataset_metadata(demo_index):
    ds = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.001, bands="B02")
    assert ds.B02.dims == ("time", "y", "x")
    assert ds.rio.crs.to_epsg() == 4326 and ds.odc.geobox.crs.epsg == 4326
    assert ds.x.values[0] == pytest.approx(ds.odc.geobox.affine.c + 0.0005)  # pixel centres
    summary = json.loads(ds.attrs["plan_summary"])
    assert summary["scenes"] == ds.attrs["scenes"] == 2 and summary["reads"] > 0
    assert ds.B02.data.dask is not None  # lazy until computed


def test_distributed_cluster_gives_identical_results(demo_index):
    from dask.distributed import Client, LocalCluster

    ds = mosaic.load(
        SEAM12, "EPSG:4326", "2024-06", index=demo_index, resolution=0.0004, bands=["B02", "WVP"], chunks=128
    )
    local = ds.compute(scheduler="threads")
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        remote = ds.compute()
    xr.testing.assert_identical(local, remote)


# ------------------------------------------------------------------------------------- input errors


def test_no_silent_emptiness(demo_index):
    with pytest.raises(NoDataError, match="no scene in the index"):
        mosaic.load((0, 0, 1, 1), "EPSG:4326", index=demo_index, resolution=0.01)
    with pytest.raises(NoDataError, match="time '2023-01'"):
        mosaic.load(SEAM12, "EPSG:4326", "2023-01", index=demo_index, resolution=0.01)
    with pytest.warns(mosaic.MosaicWarning, match="no scene"):
        ds = mosaic.load((0, 0, 1, 1), "EPSG:4326", index=demo_index, resolution=0.01, on_empty="warn")
    assert len(ds.data_vars) == 0


def test_argument_errors(demo_index, monkeypatch):
    monkeypatch.delenv("MOSAIC_INDEX", raising=False)
    with pytest.raises(MissingIndexError, match="MOSAIC_INDEX"):
        mosaic.load(SEAM12, "EPSG:4326", resolution=0.01)
    for kwargs, message in (
        (dict(method="best"), "unknown method"),
        (dict(resampling="fancy"), "unknown resampling"),
        (dict(bands="B99"), "band 'B99'"),
        (dict(method="highest:nope"), "band 'nope'"),
        (dict(groupby="no:such"), "no such property"),
        (dict(crs="EPSG:999999"), "not a CRS"),
    ):
        args = dict(index=demo_index, resolution=0.01, crs="EPSG:4326") | kwargs
        with pytest.raises(InvalidInputError, match=message):
            mosaic.load(SEAM12, args.pop("crs"), "2024-06-01", **args)


def test_index_from_a_path_or_the_environment(demo_index, tmp_path, monkeypatch):
    path = demo_index.write(tmp_path / "demo.parquet")
    a = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=str(path), resolution=0.001, bands="B02")
    monkeypatch.setenv("MOSAIC_INDEX", str(path))
    b = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", resolution=0.001, bands="B02")
    assert a.attrs["index"] == str(path)
    xr.testing.assert_identical(a.compute(), b.compute())


def test_failed_reads_raise_or_are_skipped_loudly(demo_index, tmp_path):
    rows = sorted(
        (
            r
            for r in demo_index
            if r.id in ("S32-seam12-20240601", "S33-seam12-20240601") and r.asset == "B02"
        ),
        key=lambda r: r.id,
    )
    broken = tmp_path / "broken.tif"
    broken.write_bytes(open(rows[0].href, "rb").read()[:5000])  # a truncated COG: opens, fails to read
    import dataclasses

    index = TileIndex.from_records([dataclasses.replace(rows[0], href=str(broken)), rows[1]])
    ds = mosaic.load(SEAM12, "EPSG:32633", index=index, resolution=60, bands="B02")
    with pytest.raises(ReadError) as info:
        ds.compute()
    assert info.value.scene_id == "S32-seam12-20240601" and str(broken) in str(info.value)
    skip = mosaic.load(SEAM12, "EPSG:32633", index=index, resolution=60, bands="B02", on_error="skip")
    assert list(skip.attrs["failed_reads"]) == []  # nothing computed yet
    with pytest.warns(ReadFailedWarning, match="S32-seam12-20240601"):
        values = skip.B02.isel(time=0).values
    failed = skip.attrs["failed_reads"]  # filled as the load computed
    assert failed and all(line.startswith(f"S32-seam12-20240601 ({broken})") for line in failed)
    good = mosaic.load(
        SEAM12, "EPSG:32633", index=TileIndex.from_records([rows[1]]), resolution=60, bands="B02"
    )
    assert np.array_equal(values, good.B02.isel(time=0).values)  # filled from the other scene, else nodata


def test_limiter_bounds_and_counts_reads(demo_index):
    ds = mosaic.load(
        SEAM12,
        "EPSG:4326",
        "2024-06",
        index=demo_index,
        resolution=0.0002,
        bands="B02",
        chunks=64,
        max_concurrency=2,
    )
    ds.compute(scheduler="threads", num_workers=8)
    stats = mosaic.read_stats(2)
    plan_reads = json.loads(ds.attrs["plan_summary"])["reads"]
    assert 0 < stats.reads <= plan_reads  # "first" stops early once a chunk is full
    assert stats.peak_in_flight <= 2 and stats.in_flight == 0


def test_plan_plot_writes_a_png(demo_index, tmp_path):
    plan = mosaic.plan(
        (11.8, 45.3, 18.2, 46.1),
        "EPSG:4326",
        "2024-06-01",
        index=demo_index,
        resolution=0.002,
        bands="B02",
        chunks=64,
    )
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # stands for a notebook's inline backend: not Agg
    try:
        figures = plt.get_fignums()
        plan.plot(tmp_path / "plan.png")
        # saving a picture leaves pyplot alone: a notebook keeps showing its later figures
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures
    finally:
        plt.switch_backend(before)
    data = (tmp_path / "plan.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


# ----------------------------------------------------------------------------------------- vs GDAL


def _gdalwarp(sources, out, gbox, resampling="near"):
    b = gbox.boundingbox
    cmd = [
        "gdalwarp",
        "-q",
        "-overwrite",
        "-t_srs",
        gbox.crs.to_wkt(),
        "-te",
        str(b.left),
        str(b.bottom),
        str(b.right),
        str(b.top),
        "-ts",
        str(gbox.shape[1]),
        str(gbox.shape[0]),
        "-r",
        resampling,
        "-et",
        "0",
        "-dstnodata",
        "0",
        *map(str, sources),
        str(out),
    ]
    subprocess.run(cmd, check=True)
    with rasterio.open(out) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def gdalwarp_bin():
    if shutil.which("gdalwarp") is None:
        pytest.fail("gdalwarp is missing: `make test` installs Debian's gdal-bin (run `make gdal-tools`)")
    return shutil.which("gdalwarp")


@pytest.mark.parametrize(("crs", "res"), [("EPSG:4326", 0.0002), ("EPSG:3857", 25)])
def test_parity_with_gdalwarp_across_the_seam(demo_index, gdalwarp_bin, tmp_path, crs, res):
    ds = mosaic.load(SEAM12, crs, "2024-06-01", index=demo_index, resolution=res, bands="B02", chunks=256)
    ours = ds.B02.isel(time=0).values
    rows = sorted(
        (r for r in demo_index.query(SEAM12, "2024-06-01") if r.asset == "B02"),
        key=lambda r: (r.datetime, r.id),
    )
    # gdalwarp draws later inputs on top: pass them last-to-first so the first (earliest) wins, as ours
    ref = _gdalwarp([r.href for r in reversed(rows)], tmp_path / "ref.tif", ds.odc.geobox)
    mask_ours, mask_ref = ours != 0, ref != 0
    assert (mask_ours == mask_ref).mean() > 0.999
    both = mask_ours & mask_ref
    assert (ours[both] == ref[both]).mean() > 0.995


def test_parity_with_gdalwarp_on_real_landsat_and_a_custom_crs(gdalwarp_bin, tmp_path):
    files = [real_data.L7, real_data.DEM]
    index = TileIndex.from_files(files, pattern=r"(?P<id>[^/]+)\.tif$", progress=False)
    crs = {r.id: r.crs for r in index}
    assert crs["L7_ETMs"] == "EPSG:31985" and crs["olinda_dem_utm25s"].startswith(("PROJCRS", "BOUNDCRS"))
    for rid, band in (("L7_ETMs", "data.1"), ("olinda_dem_utm25s", "data")):
        single = TileIndex.from_records([r for r in index if r.id == rid])
        ds = mosaic.load(
            single.footprints[0].bounds,
            "EPSG:4326",
            index=single,
            resolution=0.0004,
            bands=band,
            groupby=None,
        )
        ours = ds[band].isel(time=0).values
        ref = _gdalwarp([next(iter(single)).href], tmp_path / f"{rid}.tif", ds.odc.geobox)
        valid = np.isfinite(ours) & (ref != 0) if ours.dtype.kind == "f" else (ours != 0) & (ref != 0)
        assert valid.mean() > 0.5
        assert (np.isclose(ours[valid], ref[valid])).mean() > 0.995, rid


def test_groupby_an_item_property(demo_index):
    ds = mosaic.load(
        SEAM12, "EPSG:4326", "2024-06", index=demo_index, resolution=0.001, bands="B02", groupby="mosaic:seed"
    )
    seeds = {
        json.loads(r.properties)["mosaic:seed"]
        for r in demo_index.query(SEAM12, "2024-06")
        if r.asset == "B02"
    }
    assert sorted(ds.attrs["groups"]) == sorted(str(s) for s in seeds)
    assert ds.sizes["time"] == len(seeds) == 6  # one scene per seed: 2 zones x 3 dates


def test_gdal_options_reach_the_worker_threads(demo_index, monkeypatch):
    import threading

    import rasterio.env

    import mosaic.graph

    seen: list[tuple[int, dict]] = []
    real = mosaic.graph.warp_read

    def spy(read, **kwargs):  # the real read, recording the GDAL config in force in this thread
        seen.append((threading.get_ident(), dict(rasterio.env.getenv())))
        return real(read, **kwargs)

    monkeypatch.setattr(mosaic.graph, "warp_read", spy)
    ds = mosaic.load(
        SEAM12,
        "EPSG:4326",
        "2024-06",
        index=demo_index,
        resolution=0.001,
        bands="B02",
        chunks=64,
        gdal_options={"GDAL_CACHEMAX": "123", "VSI_CACHE": "FALSE"},
    )
    ds.compute(scheduler="threads", num_workers=3)
    assert seen and {t for t, _ in seen} != {threading.get_ident()}  # reads ran in worker threads
    for _, env in seen:
        assert (
            str(env["GDAL_CACHEMAX"]) == "123" and str(env["VSI_CACHE"]).upper() == "FALSE"
        )  # the user's override
        assert env["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"  # our cloud default


def test_a_read_failing_half_way_leaves_no_partial_pixels(demo_index, tmp_path):
    """A truncated file whose first blocks decode: under on_error="skip" none of its pixels remain.

    On the scene's own grid the first read goes straight into the chunk's accumulator, so a read that
    fails after some blocks must be undone.
    """
    scene = next(r for r in demo_index if r.id == "S32-seam12-20240601" and r.asset == "B02")
    broken = tmp_path / "half.tif"
    raw = open(scene.href, "rb").read()
    broken.write_bytes(raw[: len(raw) * 3 // 4])
    import dataclasses

    with rasterio.open(broken) as src:  # the premise: the first blocks still decode
        assert src.read(1, window=((0, 256), (0, 256))).any()
    index = TileIndex.from_records([dataclasses.replace(scene, href=str(broken))])
    ds = mosaic.load(
        scene.bounds, "EPSG:32632", index=index, bbox_crs="EPSG:32632", resolution=20, bands="B02",
        on_error="skip",
    )  # fmt: skip
    assert ds.B02.odc.geobox.affine == scene.affine  # the scene's own grid: a paste, not a warp
    with pytest.warns(ReadFailedWarning, match="S32-seam12-20240601"):
        values = ds.B02.values
    assert (values == 0).all()  # nodata everywhere, as the warning says


def test_each_band_of_a_file_reads_with_its_own_nodata(tmp_path):
    """A VRT may give each band its own nodata (a GeoTIFF cannot): each band is masked with its own."""
    data = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], dtype=np.uint8).repeat(8, axis=1).repeat(8, axis=2)
    tif = tmp_path / "two.tif"
    profile = dict(driver="GTiff", width=16, height=16, count=2, dtype="uint8", crs="EPSG:32633",
                   transform=rasterio.Affine(10, 0, 500_000, 0, -10, 5_000_160))  # fmt: skip
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write(data)
    vrt = tmp_path / "two.vrt"
    subprocess.run(["gdal_translate", "-q", "-of", "VRT", str(tif), str(vrt)], check=True)
    text = vrt.read_text()
    for band, nodata in ((1, 1), (2, 8)):  # band 1: value 1 is nodata; band 2: value 8
        text = text.replace(f'band="{band}">', f'band="{band}">\n    <NoDataValue>{nodata}</NoDataValue>', 1)
    vrt.write_text(text)
    with rasterio.open(vrt) as src:
        assert src.nodatavals == (1.0, 8.0)
    index = TileIndex.from_files([vrt], progress=False)
    assert next(iter(index)).nodata is None  # no one value for the file: each band says its own
    ds = mosaic.load(
        (500_000, 5_000_000, 500_160, 5_000_160), "EPSG:32633", index=index, bbox_crs="EPSG:32633",
        resolution=10, nodata=0,
    )  # fmt: skip
    one, two = ds["data.1"].values[0], ds["data.2"].values[0]
    assert (one == 0).sum() == 64 and set(np.unique(one[one != 0])) == {2, 3, 4}
    assert (two == 0).sum() == 64 and set(np.unique(two[two != 0])) == {5, 6, 7}
