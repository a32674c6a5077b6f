"""Point time series (mosaic.sample): values against direct rasterio reads, mosaic.load and GDAL.

Real files only: the demo collection (UTM seams, polar stereographic scenes, scenes across the
antimeridian), the real Landsat 7 subset and its two overlapping fill-0 scenes, and the suite's HTTP
range server, whose request log counts what a sample reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

import mosaic
import real_data
from masking import CLOUDY, SEAM_BBOX, blanked_index, cloudy_specs
from mosaic import InvalidInputError, NoDataError, TileIndex
from mosaic import synthetic as syn
from mosaic.cli import cli
from mosaic.io import runtime
from mosaic.io.cog import decode_layout
from mosaic.masks import SENTINEL2_SCL_EXCLUDED, Classes, sentinel2_scl
from mosaic.outputs.sampling import plan_sample
from servers import RangeServer, clear_gdal_http_cache

SEAM12 = ("S32-seam12-20240601", "S33-seam12-20240601")
POLAR = ("NP-20240702", "SP-20241215", "N80-20240702")
ANTIMERIDIAN = ("AM01-20240610", "AM60-20240610")
PATTERN = r"(?P<id>[^/]+)/(?P<asset>[^/.]+)\.tif$"


def _rec(index: TileIndex, scene: str, asset: str = "B02"):
    return next(r for r in index if r.id == scene and r.asset == asset)


def _points_in(rec, n: int, seed: int, margin: float = 40.0) -> np.ndarray:
    """``n`` random lon/lat points over a scene's pixel grid and ``margin`` pixels beyond it."""
    rng = np.random.default_rng(seed)
    h, w = rec.shape
    rows = rng.uniform(-margin, h + margin, n)
    cols = rng.uniform(-margin, w + margin, n)
    x, y = rec.affine * (cols, rows)
    lon, lat = Transformer.from_crs(rec.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return np.column_stack([lon, lat])


def _pixel(rec, lon: float, lat: float, band: int = 1) -> float | None:
    """The value of the pixel holding the point, read by rasterio (None when off the grid)."""
    with rasterio.open(rec.href) as ds:
        x, y = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True).transform(lon, lat)
        if not (math.isfinite(x) and math.isfinite(y)) or max(abs(x), abs(y)) > 1e9:  # (the other pole)
            return None
        row, col = ds.index(x, y)
        if not (0 <= row < ds.height and 0 <= col < ds.width):
            return None
        return float(ds.read(band, window=Window(col, row, 1, 1))[0, 0])


def _expected_first(
    index: TileIndex, points: np.ndarray, times: np.ndarray, asset: str = "B02"
) -> np.ndarray:
    """Per (time, point), the first valid pixel of that time's scenes (by id) whose grid holds it."""
    out = np.zeros((len(times), len(points)))
    for t, when in enumerate(times):
        scenes = sorted(
            (
                r
                for r in index
                if r.asset == asset and np.datetime64(r.datetime.tz_localize(None), "ns") == when
            ),
            key=lambda r: r.id,
        )
        for p, (lon, lat) in enumerate(points):
            for rec in scenes:
                value = _pixel(rec, lon, lat)
                if value is not None and value != rec.nodata:
                    out[t, p] = value
                    break
    return out


# ------------------------------------------------------------------------------ against rasterio reads


@pytest.mark.parametrize("scenes", [SEAM12, POLAR, ANTIMERIDIAN], ids=["utm-seam", "polar", "antimeridian"])
def test_values_are_the_pixels_holding_the_points(demo_index, scenes):
    points = np.concatenate([_points_in(_rec(demo_index, s), 25, seed) for seed, s in enumerate(scenes)])
    ds = mosaic.sample(points, index=demo_index, bands="B02", groupby="time")
    assert ds.B02.dims == ("time", "point") and ds.B02.dtype == np.uint16
    np.testing.assert_array_equal(ds.x.values, points[:, 0])  # order kept, nothing dropped
    expected = _expected_first(demo_index, points, ds.time.values)
    np.testing.assert_array_equal(ds.B02.values, expected)
    hit = (ds.B02.values != 0).any(axis=0)
    assert 0.6 * len(points) < hit.sum() < len(points)  # most points hold data; some lie off every scene
    if scenes == ANTIMERIDIAN:  # both sides of 180 have values
        assert (hit & (points[:, 0] > 170)).any() and (hit & (points[:, 0] < -170)).any()


def test_points_in_the_scenes_crs_and_outside_every_scene(demo_index):
    rec = _rec(demo_index, "NP-20240702")  # EPSG:3413, containing the North Pole
    rows = np.array([0.5, 383.7, 700.2, 384.0])
    cols = np.array([2.5, 383.2, 12.9, 384.0])
    x, y = rec.affine * (cols, rows)
    pts = np.column_stack([np.r_[x, 3e6], np.r_[y, 3e6]])  # and one point far from any scene
    ds = mosaic.sample(pts, index=demo_index, bands="B02", crs="EPSG:3413", on_empty="warn")
    with rasterio.open(rec.href) as src:
        raw = src.read(1)
    got = ds.B02.sel(time=ds.time.values[0]).values
    assert got[-1] == 0  # nodata, no error, not dropped
    np.testing.assert_array_equal(got[:-1], raw[rows.astype(int), cols.astype(int)])
    assert ds.attrs["crs"] == "EPSG:3413"


def test_bilinear_is_gdals_bilinear_at_the_point_nodata_and_edges_included(demo_index):
    rec = _rec(demo_index, "S33-seam12-20240601")
    with rasterio.open(rec.href) as src:
        raw, transform, crs = src.read(1), src.transform, src.crs
    valid = raw != 0
    edges = np.argwhere(valid & ~np.roll(valid, 1, axis=1))[:40]  # the collar's edge: nodata neighbours
    rng = np.random.default_rng(3)
    rows = np.r_[edges[:, 0] + rng.uniform(-1.5, 1.5, len(edges)), rng.uniform(0, 768, 60), 767.8, 0.3]
    cols = np.r_[edges[:, 1] + rng.uniform(-1.5, 1.5, len(edges)), rng.uniform(0, 768, 60), 767.8, 0.3]
    xs, ys = transform * (cols, rows)
    expected = []
    for x, y in zip(xs, ys, strict=True):  # GDAL's warp onto one pixel centred on the point
        dst = np.full((1, 1), np.nan, dtype="float32")
        reproject(
            raw,
            dst,
            src_transform=transform,
            src_crs=crs,
            src_nodata=0,
            dst_transform=Affine(1, 0, x - 0.5, 0, -1, y + 0.5),
            dst_crs=crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
        expected.append(dst[0, 0])
    ds = mosaic.sample(
        np.column_stack([xs, ys]),
        "2024-06-01",
        index=demo_index,
        bands="B02",
        crs="EPSG:32633",
        groupby="time",
        resampling="bilinear",
        dtype="float32",
        nodata=float("nan"),
    )
    got = ds.B02.sel(time=np.datetime64(rec.datetime.tz_localize(None), "ns")).values
    assert np.isnan(expected).sum() > 5 and (~np.isnan(expected)).sum() > 60
    np.testing.assert_allclose(got, np.asarray(expected), rtol=0, atol=1e-3, equal_nan=True)


# ------------------------------------------------------------------------------------ against load


def test_equals_load_on_the_scenes_native_grid(demo_index):
    rec = _rec(demo_index, "S33-mid-20240601")  # two dates, no other scene near
    left, bottom, _, _ = rec.bounds
    box = (left + 2000, bottom + 2000, left + 9000, bottom + 9000)
    loaded = mosaic.load(
        box,
        "EPSG:32633",
        index=demo_index,
        bbox_crs="EPSG:32633",
        bands=["B02", "B8A"],
        anchor="native",
        chunks=None,
    )
    assert loaded.odc.geobox.resolution.x == rec.resolution[0]
    rng = np.random.default_rng(5)
    xs, ys = rng.uniform(box[0] + 1, box[2] - 1, 80), rng.uniform(box[1] + 1, box[3] - 1, 80)
    ds = mosaic.sample(np.column_stack([xs, ys]), index=demo_index, bands=["B02", "B8A"], crs="EPSG:32633")
    np.testing.assert_array_equal(ds.time.values, loaded.time.values)  # the same time labels
    for band in ("B02", "B8A"):
        at = loaded[band].sel(x=xr_points(xs), y=xr_points(ys), method="nearest")
        np.testing.assert_array_equal(ds[band].values, at.values)
        assert (
            ds[band].dtype == loaded[band].dtype and ds[band].attrs["nodata"] == loaded[band].attrs["nodata"]
        )


def xr_points(values: np.ndarray):
    import xarray as xr

    return xr.DataArray(values, dims="point")


def test_equals_load_on_the_real_landsat_subset():
    index = TileIndex.from_files([real_data.L7], progress=False)
    with rasterio.open(real_data.L7) as src:
        bounds, crs, raw = src.bounds, src.crs, src.read()
    loaded = mosaic.load(bounds, crs, index=index, bbox_crs=crs, anchor="native", chunks=None)
    rng = np.random.default_rng(7)
    xs = rng.uniform(bounds.left, bounds.right, 60)
    ys = rng.uniform(bounds.bottom, bounds.top, 60)
    pts = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)  # given in lon/lat
    ds = mosaic.sample(np.column_stack(pts), index=index)
    assert ds.sizes["time"] == 1 and np.isnat(ds.time.values[0])  # undated: one step, as load
    with rasterio.open(real_data.L7) as src:
        rc = [src.index(x, y) for x, y in zip(xs, ys, strict=True)]
    for b in range(6):
        name = f"data.{b + 1}"
        at = loaded[name].sel(x=xr_points(xs), y=xr_points(ys), method="nearest").values
        np.testing.assert_array_equal(ds[name].values, at)
        np.testing.assert_array_equal(ds[name].values[0], [raw[b, r, c] for r, c in rc])


# ---------------------------------------------------------------------------------------- fusion


def test_first_median_and_last_across_the_utm_seam_equal_a_hand_fusion(demo_index):
    """S32 (10:20:00) and S33 (10:20:04) of 2024-06-01, one solar day, fused at points both may hold."""
    s32, s33 = _rec(demo_index, SEAM12[0]), _rec(demo_index, SEAM12[1])
    rng = np.random.default_rng(11)
    pts = np.column_stack([rng.uniform(11.93, 12.08, 60), rng.uniform(45.42, 45.54, 60)])

    def value(rec, lon, lat):
        v = _pixel(rec, lon, lat)
        return np.nan if v is None or v == 0 else v

    stack = np.array([[value(rec, lon, lat) for lon, lat in pts] for rec in (s32, s33)])
    assert (~np.isnan(stack).any(axis=0)).sum() > 10  # points both scenes hold, with different values
    first = mosaic.sample(pts, "2024-06-01", index=demo_index, bands="B02")
    last = mosaic.sample(pts, "2024-06-01", index=demo_index, bands="B02", method="last")
    median = mosaic.sample(pts, "2024-06-01", index=demo_index, bands="B02", method="median")
    assert first.sizes["time"] == 1
    np.testing.assert_array_equal(
        first.B02.values[0], np.nan_to_num(np.where(np.isnan(stack[0]), stack[1], stack[0]))
    )
    np.testing.assert_array_equal(
        last.B02.values[0], np.nan_to_num(np.where(np.isnan(stack[1]), stack[0], stack[1]))
    )
    with (
        np.errstate(all="ignore"),
        pytest.warns(RuntimeWarning) if np.isnan(stack).all(axis=0).any() else nullctx(),
    ):
        hand = np.nanmedian(stack, axis=0)
    assert median.B02.dtype == np.float32
    np.testing.assert_allclose(median.B02.values[0], hand.astype(np.float32), equal_nan=True)


class nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fill_zero_scenes_first_and_median(tmp_path):
    """Two overlapping real-pixel scenes with 0 fill and no nodata tag (src_nodata=0), one layer."""
    paths = real_data.fill_zero_scenes(tmp_path)
    index = TileIndex.from_files(paths, progress=False)
    with rasterio.open(paths[0]) as a, rasterio.open(paths[1]) as b:
        left, top = b.bounds.left, a.bounds.top
        right, bottom = a.bounds.right, b.bounds.bottom
        rng = np.random.default_rng(2)
        xs, ys = rng.uniform(left, right, 80), rng.uniform(bottom, top, 80)
        stack = []
        for src in (a, b):
            vals = []
            for x, y in zip(xs, ys, strict=True):
                r, c = src.index(x, y)
                inside = 0 <= r < src.height and 0 <= c < src.width
                v = float(src.read(1, window=Window(c, r, 1, 1))[0, 0]) if inside else 0.0
                vals.append(np.nan if v == 0 else v)
            stack.append(vals)
        crs = a.crs
    stack = np.array(stack)
    assert (~np.isnan(stack).any(axis=0)).sum() > 10
    pts = np.column_stack([xs, ys])
    first = mosaic.sample(pts, index=index, crs=crs, groupby=None, src_nodata=0)
    median = mosaic.sample(pts, index=index, crs=crs, groupby=None, src_nodata=0, method="median")
    np.testing.assert_array_equal(
        first.data.values[0], np.nan_to_num(np.where(np.isnan(stack[0]), stack[1], stack[0]))
    )
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        hand = np.nanmedian(stack, axis=0)
    np.testing.assert_allclose(median.data.values[0], hand, equal_nan=True)


# ------------------------------------------------------------------------------------ reads counted


def _cluster_points(rec, tiles: dict[tuple[int, int], int], seed: int) -> np.ndarray:
    """Lon/lat points in given 256-px tiles of a scene: ``{(tile_row, tile_col): n_points}``."""
    rng = np.random.default_rng(seed)
    out = []
    for (tr, tc), n in tiles.items():
        rows = rng.uniform(tr * 256 + 100, tr * 256 + 200, n)  # inside the footprint, not the collar
        cols = rng.uniform(tc * 256 + 100, tc * 256 + 200, n)
        x, y = rec.affine * (cols, rows)
        out.append(
            np.column_stack(Transformer.from_crs(rec.crs, "EPSG:4326", always_xy=True).transform(x, y))
        )
    return np.concatenate(out)


def _mid_rows(index: TileIndex) -> list:
    """The B02 rows of the S33-mid scene on its two dates, in date order."""
    return sorted((r for r in index if r.id.startswith("S33-mid") and r.asset == "B02"), key=lambda r: r.id)


def _remote_mid_scenes(demo_index, demo_collection, http_server) -> tuple[list, TileIndex]:
    """The two dates of the S33-mid B02 files: their local rows, and an index of them over HTTP with
    their tile ranges recorded; the server's counters and GDAL's and mosaic's caches emptied."""
    root = Path(demo_collection[0])
    rows = _mid_rows(demo_index)
    urls = [http_server.url(Path(r.href).relative_to(root).as_posix()) for r in rows]
    indexed = TileIndex.from_files(urls, pattern=PATTERN, progress=False, tile_ranges=True)  # two dates
    remote = TileIndex.from_records(
        [
            dataclasses.replace(r, datetime=rows[i].datetime)
            for i, r in enumerate(sorted(indexed, key=lambda r: r.id))
        ]
    )
    assert all(r.tiles is not None for r in remote)
    clear_gdal_http_cache()  # (what GDAL fetched indexing them would hide its requests)
    http_server.reset_stats()
    runtime.reset()
    return rows, remote


def test_one_read_per_scene_and_tile_cluster_over_http(demo_index, demo_collection, http_server):
    rows, remote = _remote_mid_scenes(demo_index, demo_collection, http_server)
    pts = _cluster_points(rows[0], {(0, 1): 6, (2, 2): 4}, seed=1)
    plan = plan_sample(pts, index=remote, bands="B02")
    assert plan.summary()["reads"] == 4  # 2 scenes x 2 tile clusters
    ds = mosaic.sample(pts, index=remote, bands="B02")
    stats = mosaic.read_stats()
    gets = [r for r in http_server.log if r.method == "GET"]
    assert stats.reads == 4 and stats.tile_range_reads == 4
    assert len(gets) == 4 and not [r for r in http_server.log if r.method == "HEAD"]
    for rec in remote:  # each request is exactly one tile of full resolution
        level = decode_layout(rec.tiles).levels[0]
        tiles = {
            f"bytes={o}-{o + s - 1}"
            for o, s in zip(level.offsets.tolist(), level.sizes.tolist(), strict=True)
        }
        mine = [r.range for r in gets if rec.href.endswith(r.path)]
        assert len(mine) == 2 and set(mine) <= tiles
    same = mosaic.sample(pts, index=TileIndex.from_records(rows), bands="B02")  # the local files
    np.testing.assert_array_equal(ds.B02.values, same.B02.values)
    assert (ds.B02.values != 0).all()


def test_points_in_tiles_side_by_side_are_one_request_of_exactly_those_tiles(
    demo_index, demo_collection, http_server
):
    # a tiled TIFF stores tiles (1, 0) and (1, 1) one after the other: their points are one read and
    # one GET from the first byte of (1, 0) to the last of (1, 1); (0, 0) and (0, 2) have a tile no
    # point needs between them, and (2, 1) is in another tile row: a read each
    rows, remote = _remote_mid_scenes(demo_index, demo_collection, http_server)
    pts = _cluster_points(rows[0], {(1, 0): 2, (1, 1): 3, (0, 0): 1, (0, 2): 2, (2, 1): 2}, seed=5)
    plan = plan_sample(pts, index=remote, bands="B02")
    assert plan.summary()["reads"] == 2 * 4
    ds = mosaic.sample(pts, index=remote, bands="B02")
    gets = [r for r in http_server.log if r.method == "GET"]
    assert mosaic.read_stats().tile_range_reads == 8 and len(gets) == 8
    for rec in remote:
        level = decode_layout(rec.tiles).levels[0]
        assert level.offsets.size == 9  # 3 x 3 tiles of 256 px

        def span(first: tuple[int, int], last: tuple[int, int], level=level) -> str:
            a, b = first[0] * 3 + first[1], last[0] * 3 + last[1]
            return f"bytes={level.offsets[a]}-{level.offsets[b] + level.sizes[b] - 1}"

        mine = sorted(r.range for r in gets if rec.href.endswith(r.path))
        assert mine == sorted(
            [span((1, 0), (1, 1)), span((0, 0), (0, 0)), span((0, 2), (0, 2)), span((2, 1), (2, 1))]
        )
    same = mosaic.sample(pts, index=TileIndex.from_records(rows), bands="B02")  # the local files
    np.testing.assert_array_equal(ds.B02.values, same.B02.values)
    assert (ds.B02.values != 0).all()


def test_first_reads_only_the_tiles_of_the_points_still_without_a_value(demo_index, tmp_path):
    # points in tiles (1, 0) and (1, 1), side by side: one read per date. The first date has no data
    # in tile (1, 1), so the second date's read is cut to what its points still need: tile (1, 1)
    rows = _mid_rows(demo_index)
    with rasterio.open(rows[0].href) as src:
        pixels, nodata = src.read(1), src.nodata
    pixels[256:512, 256:512] = nodata
    (tmp_path / "first").mkdir()
    syn.write_raster(tmp_path / "first" / "B02.tif", pixels, rows[0].crs, rows[0].affine, nodata)
    (tmp_path / "second").mkdir()
    shutil.copyfile(rows[1].href, tmp_path / "second" / "B02.tif")
    with RangeServer(tmp_path) as server:
        urls = [server.url(f"{name}/B02.tif") for name in ("first", "second")]
        files = TileIndex.from_files(urls, pattern=PATTERN, progress=False, tile_ranges=True)
        indexed = {r.href: r for r in files}
        remote = TileIndex.from_records(  # the ids, dates and footprints of the originals
            [
                dataclasses.replace(indexed[url], id=row.id, datetime=row.datetime, footprint=row.footprint)
                for url, row in zip(urls, rows, strict=True)
            ]
        )
        clear_gdal_http_cache()
        server.reset_stats()
        runtime.reset()
        pts = _cluster_points(rows[0], {(1, 0): 2, (1, 1): 3}, seed=7)
        ds = mosaic.sample(pts, index=remote, bands="B02", groupby=None)
        gets = [r for r in server.log if r.method == "GET"]
    second = [r.range for r in gets if urls[1].endswith(r.path)]
    level = decode_layout(indexed[urls[1]].tiles).levels[0]
    assert second == [f"bytes={level.offsets[4]}-{level.offsets[4] + level.sizes[4] - 1}"]  # tile (1, 1)
    assert len(gets) == 2
    expected = []
    to_utm = Transformer.from_crs("EPSG:4326", rows[0].crs, always_xy=True)
    for i, (x, y) in enumerate(to_utm.itransform(pts)):  # the (1, 0) points, then the (1, 1) points
        with rasterio.open(rows[0].href if i < 2 else rows[1].href) as src:
            expected.append(next(src.sample([(x, y)]))[0])
    np.testing.assert_array_equal(ds.B02.values[0], expected)


def test_gdal_path_counts_one_limiter_read_per_cluster(demo_index):
    rec = _rec(demo_index, "S33-mid-20240601")
    pts = _cluster_points(rec, {(0, 0): 3, (1, 2): 5, (2, 0): 1}, seed=4)
    mosaic.sample(pts, index=demo_index, bands=["B02", "B8A"])
    # B02 (10 m, 3 x 3 tiles): 3 tiles apart; B8A (40 m, 2 x 2 tiles): the points fall in its tiles
    # (0, 0), (0, 1) and (1, 0), and the first two are side by side: 2 reads; on each of 2 dates
    assert mosaic.read_stats().reads == 2 * (3 + 2)


def test_first_skips_reads_whose_points_have_their_value(demo_index):
    pts = _cluster_points(_rec(demo_index, "S33-mid-20240601"), {(1, 1): 3}, seed=8)
    mosaic.sample(pts, index=demo_index, bands="B02", groupby=None)  # one layer: the first date fills all
    assert mosaic.read_stats().reads == 1
    mosaic.sample(pts, index=demo_index, bands="B02", groupby=None, method="mean")
    assert mosaic.read_stats().reads == 1 + 2


# ------------------------------------------------------------------------------------- inputs


def test_geodataframe_crs_and_ids_are_honoured(demo_index):
    pts = _points_in(_rec(demo_index, "S33-mid-20240601"), 12, seed=9, margin=-100)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(pts[:, 0], pts[:, 1])
    frame = gpd.GeoDataFrame(
        {"site": [f"s{i}" for i in range(12)], "plot_no": np.arange(12) * 10},
        geometry=gpd.points_from_xy(x, y),
        crs="EPSG:32633",
    )
    ds = mosaic.sample(frame, index=demo_index, bands="B02", crs="EPSG:4326")  # the frame's CRS wins
    ref = mosaic.sample(pts, index=demo_index, bands="B02")
    np.testing.assert_array_equal(ds.B02.values, ref.B02.values)
    assert list(ds.site.values) == list(frame.site) and list(ds.plot_no.values) == list(frame.plot_no)
    np.testing.assert_allclose(ds.x.values, x) and ds.attrs["crs"] == "EPSG:32633"
    table = ds.to_dataframe()
    assert table.index.names == ["time", "point"] and len(table) == ds.sizes["time"] * 12
    assert {"site", "plot_no", "x", "y", "B02"} <= set(table.columns)
    # shapely points and a MultiPoint give the same
    as_shapely = mosaic.sample(list(shapely.points(pts)), index=demo_index, bands="B02")
    as_multi = mosaic.sample(shapely.MultiPoint(pts), index=demo_index, bands="B02")
    np.testing.assert_array_equal(as_shapely.B02.values, ref.B02.values)
    np.testing.assert_array_equal(as_multi.B02.values, ref.B02.values)


@pytest.mark.parametrize(
    ("points", "kwargs", "message"),
    [
        ([(12.0, 45.5), (np.nan, 45.5)], {}, "point 1 is"),
        (np.zeros((3, 3)), {}, "must be (n, 2)"),
        ([], {}, "points is empty"),
        (np.zeros((0, 2)), {}, "points is empty"),
        ([shapely.box(0, 0, 1, 1)], {}, "point 0 is Polygon"),
        ([shapely.Point()], {}, "(empty)"),
        ("12,45", {}, "points must be"),
        ([(12.0, 95.0)], {}, "not a place on Earth"),
        ([(12.0, 45.5)], {"resampling": "cubic"}, "'nearest' or 'bilinear'"),
        ([(12.0, 45.5)], {"method": "highest:B8A"}, "ranking methods"),
        ([(12.0, 45.5)], {"crs": "EPSG:0"}, "crs 'EPSG:0'"),
    ],
)
def test_bad_inputs_are_one_line_errors(demo_index, points, kwargs, message):
    with pytest.raises(InvalidInputError) as info:
        mosaic.sample(points, index=demo_index, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_no_scene_holds_any_point(demo_index):
    with pytest.raises(NoDataError, match="holds any of the 2 points"):
        mosaic.sample([(0.0, 0.0), (1.0, 1.0)], index=demo_index)


def test_mosaic_sample_is_the_function_after_its_module_is_imported():
    import mosaic.outputs.sampling

    assert callable(mosaic.sample) and mosaic.sample is mosaic.outputs.sampling.sample


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_sample_csv_and_geojson_to_csv_and_parquet(demo_index, tmp_path):
    index = tmp_path / "demo.parquet"
    demo_index.write(index)
    pts = _points_in(_rec(demo_index, "S33-seam12-20240601"), 5, seed=12, margin=-120)
    frame = pd.DataFrame({"site": list("abcde"), "lon": pts[:, 0], "lat": pts[:, 1]})
    frame.to_csv(tmp_path / "points.csv", index=False)
    gpd.GeoDataFrame(frame[["site"]], geometry=gpd.points_from_xy(frame.lon, frame.lat), crs=4326).to_file(
        tmp_path / "points.geojson"
    )
    runner = CliRunner()
    ref = mosaic.sample(pts, "2024-06", index=demo_index, bands="B02").to_dataframe().reset_index()
    for source, out in (("points.csv", "out.csv"), ("points.geojson", "out.parquet")):
        args = ["sample", "--index", str(index), "--points", str(tmp_path / source), "--time", "2024-06"]
        result = runner.invoke(cli, [*args, "--bands", "B02", "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        table = pd.read_csv(tmp_path / out) if out.endswith(".csv") else pd.read_parquet(tmp_path / out)
        assert list(table.site) == list(np.tile(list("abcde"), ref.time.nunique()))
        np.testing.assert_array_equal(table.B02.values, ref.B02.values)
    bad = runner.invoke(
        cli, ["sample", "--index", str(index), "--points", str(tmp_path / "nope.csv"), "-o", "x.csv"]
    )
    assert bad.exit_code != 0 and "nope.csv" in bad.output


def test_a_failed_read_raises_or_is_skipped_with_a_warning(demo_index, tmp_path):
    rows = _mid_rows(demo_index)
    broken = tmp_path / "broken.tif"
    raw = Path(rows[0].href).read_bytes()
    broken.write_bytes(raw[: len(raw) // 3])  # the header holds, the tiles are cut off
    index = TileIndex.from_records([dataclasses.replace(rows[0], href=str(broken), identity=None), rows[1]])
    pts = _cluster_points(rows[0], {(1, 1): 2, (2, 2): 2}, seed=3)
    with pytest.raises(mosaic.ReadError, match=r"broken\.tif"):
        mosaic.sample(pts, index=index)
    with pytest.warns(mosaic.ReadFailedWarning, match="S33-mid-20240601"):
        ds = mosaic.sample(pts, index=index, on_error="skip")
    assert (ds.B02.values[0] == 0).all() and (ds.B02.values[1] != 0).all()  # the other date is read


# ------------------------------------------------------------------------------------- quality masks


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory):
    """The demo's 12E seam scenes with clouds and SCL/QA_PIXEL bands (2 CRSs x 3 dates)."""
    items = syn.make_collection(cloudy_specs(), tmp_path_factory.mktemp("cloudy"))
    return items, TileIndex.from_stac(items)


def _seam_points(n: int, seed: int) -> np.ndarray:
    west, south, east, north = SEAM_BBOX
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(west, east, n), rng.uniform(south, north, n)])


@pytest.mark.parametrize(
    ("dilation", "groupby", "resampling"),
    [(0, "solar_day", "nearest"), (0, None, "nearest"), (2, "solar_day", "nearest"), (2, None, "bilinear")],
)
def test_a_masked_sample_equals_sampling_files_whose_masked_pixels_are_blanked(
    cloudy, tmp_path, dilation, groupby, resampling
):
    """SCL (160 m) masks B02 (80 m) per scene across the seam: as blanked copies of the B02 files sample."""
    items, index = cloudy
    pts = _seam_points(400, seed=18)
    drop = lambda v: np.isin(v, SENTINEL2_SCL_EXCLUDED)  # noqa: E731
    blanked = blanked_index(items, tmp_path / "blanked", "B02", "SCL", drop, dilation)
    request = {"index": index, "bands": "B02", "groupby": groupby, "resampling": resampling}
    out = mosaic.sample(pts, mask=sentinel2_scl(dilate=dilation), **request).B02.values
    expected = mosaic.sample(pts, **{**request, "index": blanked}).B02.values
    plain = mosaic.sample(pts, **request).B02.values
    np.testing.assert_array_equal(out, expected)
    assert (plain >= CLOUDY).sum() > 10 and not (out >= CLOUDY).any()
    if (
        groupby == "solar_day" and resampling == "nearest"
    ):  # one scene per date at a point: the mask drops clouds, nothing else
        kept = out > 0
        np.testing.assert_array_equal(out[kept], plain[kept])
    else:  # first takes the next date holding the point clear
        refilled = (plain[0] >= CLOUDY) & (out[0] > 0)
        assert refilled.sum() > 5


def test_dilation_masks_more_points_and_mask_reads_are_counted(cloudy):
    _, index = cloudy
    pts = _seam_points(400, seed=18)
    request = {"index": index, "bands": "B02"}
    sharp = mosaic.sample(pts, mask=sentinel2_scl(), **request).B02.values
    wide = mosaic.sample(pts, mask=sentinel2_scl(dilate=3), **request).B02.values
    assert ((sharp > 0) & (wide == 0)).sum() > 5 and not ((wide > 0) & (sharp == 0)).any()
    plain = plan_sample(pts, **request)
    spec = Classes("SCL", exclude=[9]) | Classes("QA_PIXEL", exclude=[1])
    two = plan_sample(pts, mask=spec, **request)
    assert plain.summary()["mask_reads"] == 0 and plain.summary()["mask"] is None
    reads = two.summary()["reads"]
    assert reads == plain.summary()["reads"] and two.summary()["mask_reads"] == 2 * reads
    read = two.tasks[0].reads[0].read
    assert [m.asset for m in read.masks] == ["SCL", "QA_PIXEL"]
    assert all(m.scene == read.scene for m in read.masks)
    # the mask window holds the points' window, on the mask band's grid, grown by the dilation
    wide_plan = plan_sample(pts, mask=sentinel2_scl(dilate=3), **request)
    (scl,) = wide_plan.tasks[0].reads[0].read.masks
    (scl0,) = plan_sample(pts, mask=sentinel2_scl(), **request).tasks[0].reads[0].read.masks
    assert scl.window[2] >= scl0.window[2] and scl.window[3] > scl0.window[3]
    assert pickle.loads(pickle.dumps(two)) == two
    with pytest.raises(dataclasses.FrozenInstanceError):
        two.mask = None  # type: ignore[misc]


def test_a_mask_band_the_scenes_lack_is_a_one_line_error(cloudy, demo_index):
    _, index = cloudy
    with pytest.raises(mosaic.InvalidMaskError, match="has no asset 'CLOUDS'"):
        mosaic.sample(_seam_points(3, seed=1), index=index, bands="B02", mask=Classes("CLOUDS", exclude=[9]))
    with pytest.raises(mosaic.InvalidMaskError, match="not a preset"):
        mosaic.sample(_seam_points(3, seed=1), index=index, bands="B02", mask="clouds")


def test_cli_sample_mask(cloudy, tmp_path):
    _, index = cloudy
    index.write(tmp_path / "cloudy.parquet")
    pts = _seam_points(50, seed=3)
    pd.DataFrame({"lon": pts[:, 0], "lat": pts[:, 1]}).to_csv(tmp_path / "points.csv", index=False)
    args = ["sample", "--index", str(tmp_path / "cloudy.parquet"), "--points", str(tmp_path / "points.csv")]
    result = CliRunner().invoke(
        cli, [*args, "--bands", "B02", "--mask", "sentinel2-scl", "-o", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 0, result.output
    ref = mosaic.sample(pts, index=index, bands="B02", mask="sentinel2-scl").to_dataframe().reset_index()
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "o.csv").B02.values, ref.B02.values)


def test_a_failed_mask_read_fails_its_read_as_on_error_says(cloudy, tmp_path):
    _, index = cloudy
    rows = list(index)
    scene = min(r.id for r in rows if r.asset == "SCL")
    scl = next(r for r in rows if r.id == scene and r.asset == "SCL")
    broken = tmp_path / "broken-scl.tif"
    raw = Path(scl.href).read_bytes()
    broken.write_bytes(raw[: len(raw) // 3])
    rows = [dataclasses.replace(r, href=str(broken), identity=None) if r is scl else r for r in rows]
    pts = _seam_points(200, seed=5)
    request = {"bands": "B02", "mask": "sentinel2-scl"}
    with pytest.raises(mosaic.ReadError, match=r"broken-scl\.tif"):
        mosaic.sample(pts, index=TileIndex.from_records(rows), **request)
    with pytest.warns(mosaic.ReadFailedWarning, match=scene):
        out = mosaic.sample(pts, index=TileIndex.from_records(rows), on_error="skip", **request)
    without = TileIndex.from_records([r for r in rows if r.id != scene])
    np.testing.assert_array_equal(out.B02.values, mosaic.sample(pts, index=without, **request).B02.values)


def test_filter_and_sortby_select_and_order_the_scenes_as_load_does(demo_index):
    points = [(12.0, 45.48), (11.95, 45.45), (12.05, 45.5)]
    options = {"filter": "eo:cloud_cover < 70", "sortby": "eo:cloud_cover", "groupby": None}
    got = mosaic.sample(points, "2024-06", index=demo_index, bands=["B02"], **options)
    plain = mosaic.sample(points, "2024-06", index=demo_index, bands=["B02"], groupby=None)
    scenes = [r for r in demo_index if r.asset == "B02" and "seam12" in r.id]
    cloud = {r.id: json.loads(r.properties)["eo:cloud_cover"] for r in scenes}
    kept = sorted((c, s) for s, c in cloud.items() if c < 70)
    assert 0 < len(kept) < len(cloud)
    # first takes, at each point, the least cloudy kept scene holding data there: the loop over the rows
    want = []
    for x, y in points:
        value = 0
        for _, scene in kept:
            one = mosaic.sample(
                [(x, y)],
                "2024-06",
                index=demo_index.take([i for i, r in enumerate(demo_index) if r.id == scene]),
                bands=["B02"],
                groupby=None,
            )
            if one.sizes["time"] and int(one.B02.values[0, 0]) != 0:
                value = int(one.B02.values[0, 0])
                break
        want.append(value)
    assert got.B02.values[0].tolist() == want
    assert got.B02.values[0].tolist() != plain.B02.values[0].tolist() or len(kept) == len(cloud)
