"""TileIndex: building from files and STAC, errors, GeoParquet round trip, footprint and time queries."""

import copy
import dataclasses
import json
import logging
import math
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import box, mapping

import mosaic
from mosaic import IndexFormatError, InvalidInputError, SkippedSourcesWarning, SourceError, TileIndex
from mosaic.errors import IncompleteMetadataWarning
from mosaic.index.geom import to_lonlat
from real_data import L7, LANDSAT_ITEMS, SENTINEL2_ITEMS, fill_zero_scenes


def in_crs(lonlat_geom, crs):
    """A lon/lat geometry in another CRS (to measure footprint differences in native pixels)."""
    to_crs = Transformer.from_crs(4326, crs, always_xy=True)
    return shapely.transform(lonlat_geom, lambda xy: np.column_stack(to_crs.transform(xy[:, 0], xy[:, 1])))


def write_tif(
    path,
    *,
    crs="EPSG:32633",
    transform=None,
    shape=(200, 300),
    dtype="uint16",
    nodata=0,
    collar=True,
    tags=None,
    count=1,
):
    """A small tiled GeoTIFF whose western part (a slanted edge) is nodata when ``collar``."""
    h, w = shape
    transform = transform or Affine(20.0, 0, 500_000.0, 0, -20.0, 5_000_000.0)
    rows, cols = np.mgrid[0:h, 0:w]
    data = (100 + rows + cols).astype(dtype)
    if collar:
        data[cols < (w * 0.2 + rows * 0.25)] = nodata
    profile = dict(
        driver="GTiff",
        height=h,
        width=w,
        count=count,
        dtype=dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    if crs is None:
        profile.pop("crs")
    with rasterio.open(path, "w", **profile) as dst:
        for b in range(1, count + 1):
            dst.write(data, b)
        dst.build_overviews([2, 4], rasterio.enums.Resampling.nearest)
        if tags:
            dst.update_tags(**tags)
    return Path(path)


@pytest.fixture
def scenes(tmp_path):
    a = (
        write_tif(tmp_path / "a" / "S1_B02.tif", tags={"TIFFTAG_DATETIME": "2024:06:01 10:30:00"})
        if (tmp_path / "a").mkdir() is None
        else None
    )
    b = write_tif(
        tmp_path / "S2_B02.tif",
        transform=Affine(20.0, 0, 504_000.0, 0, -20.0, 5_001_000.0),
        tags={"TIFFTAG_DATETIME": "2024:06:11 10:30:00"},
    )
    c = write_tif(
        tmp_path / "S3_B02.tif",
        crs="EPSG:32634",
        transform=Affine(60.0, 0, 200_000.0, 0, -60.0, 5_000_000.0),
        dtype="float32",
        nodata=math.nan,
        tags={"TIFFTAG_DATETIME": "2024:07:01 09:00:00"},
    )
    return [a, b, c]


def test_from_files_records_every_field(scenes):
    index = TileIndex.from_files(scenes, progress=False)
    assert len(index) == 3
    rows = {r.id: r for r in index.records()}
    a = rows["S1_B02"]
    assert a.href == str(scenes[0])
    assert a.asset == "data"
    assert a.crs == "EPSG:32633"
    assert a.transform == (20.0, 0.0, 500_000.0, 0.0, -20.0, 5_000_000.0)
    assert a.shape == (200, 300)
    assert a.bounds == (500_000.0, 4_996_000.0, 506_000.0, 5_000_000.0)
    assert a.resolution == (20.0, 20.0)
    assert a.dtype == "uint16" and a.nodata == 0.0 and a.band_count == 1
    assert a.overviews == (2, 4)
    assert a.datetime == pd.Timestamp("2024-06-01T10:30:00Z")
    c = rows["S3_B02"]
    assert c.crs == "EPSG:32634" and c.dtype == "float32" and math.isnan(c.nodata)


def test_file_footprint_is_the_data_area_not_the_grid(scenes):
    index = TileIndex.from_files(scenes[:1], progress=False)
    fp = index.footprints[0]
    native = in_crs(fp, "EPSG:32633")
    # the truth: valid where col >= 0.2*w + 0.25*row, i.e. a quadrilateral
    h, w, px = 200, 300, 20.0
    truth = shapely.Polygon([(60, 0), (300, 0), (300, 200), (110, 200)])
    truth = shapely.affinity.affine_transform(truth, [px, 0, 0, -px, 500_000.0, 5_000_000.0])
    assert native.hausdorff_distance(truth) <= px  # within one pixel
    grid = box(500_000.0, 5_000_000.0 - h * px, 500_000.0 + w * px, 5_000_000.0)
    assert native.area < 0.87 * grid.area  # the collar is left out


def test_pattern_names_scene_asset_and_time(tmp_path):
    path = write_tif(tmp_path / "T33UWP_20240603_B8A.tif")
    index = TileIndex.from_files(
        [path], pattern=r"(?P<id>T\w{5}_\d{8})_(?P<asset>B\w\w)\.tif$", progress=False
    )
    (row,) = index.records()
    assert (row.id, row.asset) == ("T33UWP_20240603", "B8A")
    index = TileIndex.from_files([path], pattern=r"_(?P<datetime>\d{8})_", progress=False)
    assert index.records()[0].datetime == pd.Timestamp("2024-06-03", tz="UTC")


def test_globs_and_directories(tmp_path, scenes):
    assert len(TileIndex.from_files(str(tmp_path / "*.tif"), progress=False)) == 2
    assert len(TileIndex.from_files(str(tmp_path / "**" / "*.tif"), progress=False)) == 3
    assert len(TileIndex.from_files(tmp_path, progress=False)) == 3
    with pytest.raises(SourceError, match="no file matches"):
        TileIndex.from_files(str(tmp_path / "*.jp2"), progress=False)


@pytest.fixture
def bad_files(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    no_crs = write_tif(tmp_path / "nocrs.tif", crs=None)
    no_gt = tmp_path / "nogt.tif"
    with rasterio.open(no_gt, "w", driver="GTiff", height=10, width=10, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 10, 10), dtype="uint8"))
    return {
        "missing": tmp_path / "missing.tif",
        "not a raster": text,
        "no CRS": no_crs,
        "no geotransform": no_gt,
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("not a raster", "not a raster"),
        ("no CRS", "has no CRS"),
        ("no geotransform", "has no geotransform and no CRS"),
    ],
)
def test_bad_file_errors_name_the_file_and_the_problem(bad_files, kind, message):
    path = bad_files[kind]
    with pytest.raises(SourceError, match=message) as info:
        TileIndex.from_files([path], progress=False)
    assert info.value.href == str(path)
    assert str(path) in str(info.value)


def test_on_error_skip_reports_what_was_skipped_and_why(bad_files, scenes):
    inputs = [*scenes, *bad_files.values()]
    with pytest.warns(SkippedSourcesWarning) as record:
        index = TileIndex.from_files(inputs, progress=False, on_error="skip")
    assert len(index) == 3
    reasons = {s.href: s.reason for s in index.skipped}
    assert set(reasons) == {str(p) for p in bad_files.values()}
    assert "does not exist" in reasons[str(bad_files["missing"])]
    assert "no CRS" in reasons[str(bad_files["no CRS"])]
    (ours,) = [w for w in record if issubclass(w.category, SkippedSourcesWarning)]
    message = str(ours.message)
    assert "skipped 4" in message and str(bad_files["no geotransform"]) in message
    # the report survives a round trip
    path = index.write(Path(scenes[1]).parent / "index.parquet")
    assert TileIndex.read(path).skipped == index.skipped


def test_on_error_must_be_known(scenes):
    with pytest.raises(InvalidInputError, match="on_error"):
        TileIndex.from_files(scenes, progress=False, on_error="ignore")


# ------------------------------------------------------------------------------------------------ STAC


def _item(path: Path, item_id: str, when: str, *, proj=True) -> dict:
    with rasterio.open(path) as src:
        native = box(*src.bounds)
        fp = to_lonlat(native, src.crs.to_wkt())
        asset = {"href": str(path), "type": "image/tiff; application=geotiff", "roles": ["data"]}
        props = {"datetime": when}
        if proj:
            props["proj:code"] = f"EPSG:{src.crs.to_epsg()}"
            asset.update({"proj:transform": list(src.transform)[:6], "proj:shape": [src.height, src.width]})
            asset["raster:bands"] = [{"data_type": src.dtypes[0], "nodata": src.nodata}]
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "geometry": mapping(fp),
        "bbox": list(fp.bounds),
        "properties": props,
        "links": [],
        "assets": {"B02": asset, "thumbnail": {"href": "x.png", "type": "image/png", "roles": ["thumbnail"]}},
        "stac_extensions": [],
    }


def test_from_stac_accepts_dicts_items_collections_and_files(tmp_path, scenes):
    dicts = [_item(p, f"item{i}", f"2024-06-0{i + 1}T10:00:00Z") for i, p in enumerate(scenes)]
    expected = TileIndex.from_stac(dicts)
    assert len(expected) == 3  # the thumbnail is not a raster asset
    assert {r.asset for r in expected} == {"B02"}
    items = [pystac.Item.from_dict(d) for d in dicts]
    collection = pystac.ItemCollection(items)
    (tmp_path / "items.json").write_text(json.dumps(collection.to_dict()))
    (tmp_path / "items.ndjson").write_text("\n".join(json.dumps(d) for d in dicts))
    for source in (items, collection, tmp_path / "items.json", tmp_path / "items.ndjson", dicts[0]):
        got = TileIndex.from_stac(source)
        assert got.equals(expected) or (len(got) == 1 and got.records()[0].id == "item0")


def test_from_stac_geoparquet(tmp_path, scenes):
    import pyarrow as pa
    import stac_geoparquet.arrow as sga

    dicts = [_item(p, f"item{i}", f"2024-06-0{i + 1}T10:00:00Z") for i, p in enumerate(scenes)]
    table = pa.Table.from_batches(sga.parse_stac_items_to_arrow(dicts))
    sga.to_parquet(table, tmp_path / "items.parquet")
    got = TileIndex.from_stac(tmp_path / "items.parquet")
    want = TileIndex.from_stac(dicts)
    assert [(r.id, r.crs, r.transform, r.shape) for r in got] == [
        (r.id, r.crs, r.transform, r.shape) for r in want
    ]


def test_stac_item_without_projection_opens_the_file_or_fails_clearly(scenes):
    item = _item(scenes[0], "noproj", "2024-06-01T10:00:00Z", proj=False)
    (row,) = TileIndex.from_stac([item]).records()
    assert row.crs == "EPSG:32633" and row.shape == (200, 300) and row.dtype == "uint16"
    item["assets"]["B02"]["href"] = "/nonexistent/scene.tif"
    with pytest.raises(
        SourceError, match=r"no proj:code, proj:transform, proj:shape and opening the file failed"
    ) as info:
        TileIndex.from_stac([item])
    assert info.value.scene_id == "noproj"
    assert "/nonexistent/scene.tif" in str(info.value)


def test_stac_asset_selection_and_errors(scenes):
    item = _item(scenes[0], "x", "2024-06-01T10:00:00Z")
    assert len(TileIndex.from_stac([item], assets=["B02"])) == 1
    with pytest.raises(SourceError, match=r"has no asset\(s\) \['B99'\]"):
        TileIndex.from_stac([item], assets=["B99"])
    with pytest.raises(SourceError, match="not a STAC Item"):
        TileIndex.from_stac([{"type": "Collection"}])


@pytest.mark.filterwarnings("ignore::mosaic.errors.IncompleteMetadataWarning")  # tested below
def test_real_sentinel2_items_across_the_zone_seam():
    index = TileIndex.from_stac(SENTINEL2_ITEMS)
    assert index.crs_counts() == {"EPSG:32647": 32, "EPSG:32646": 32}  # 16 raster assets x 2 tiles each
    rows = {(r.id.split("_")[4][1:], r.asset): r for r in index}
    b02 = rows[("47XML", "B02")]
    assert b02.shape == (10980, 10980) and b02.resolution == (10.0, 10.0)
    assert b02.transform == (10.0, 0.0, 399960.0, 0.0, -10.0, 9100020.0)
    assert rows[("47XML", "B01")].shape == (1830, 1830)
    assert rows[("47XML", "visual")].band_count == 3
    assert b02.datetime == pd.Timestamp("2024-04-19T09:55:49.024Z")
    # 47XML overlaps both 46X tiles across the 96E seam; a box at the seam finds tiles of both zones
    seam = index.query((95.8, 81.2, 96.2, 81.4), time="2024-04-19")
    assert {r.crs for r in seam} == {"EPSG:32646", "EPSG:32647"}
    assert index.query((95.8, 81.2, 96.2, 81.4), time="2024-04-20").table.num_rows == 0


def test_real_landsat_items_scale_offset_and_zones():
    index = TileIndex.from_stac(LANDSAT_ITEMS, assets=["red", "qa"])
    assert len(index) == 8
    assert index.crs_counts() == {"EPSG:32655": 6, "EPSG:32656": 2}
    red = next(r for r in index if r.asset == "red")
    assert (red.dtype, red.nodata, red.scale, red.offset) == ("uint16", 0.0, 2.75e-05, -0.2)
    assert red.shape[0] > 7000 and red.resolution == (30.0, 30.0)


# ------------------------------------------------------------------------------------ storage & query


def test_geoparquet_round_trip_is_exact_and_readable_by_geopandas(tmp_path, scenes):
    import geopandas as gpd

    index = TileIndex.from_files(scenes, progress=False)
    path = index.write(tmp_path / "idx.parquet")
    back = TileIndex.read(path)
    assert back.equals(index)
    assert [(r.id, r.href, r.transform, r.datetime) for r in back] == [
        (r.id, r.href, r.transform, r.datetime) for r in index
    ]
    assert math.isnan(back.records()[[r.id for r in back].index("S3_B02")].nodata)
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    gdf = gpd.read_parquet(path)
    assert len(gdf) == 3 and gdf.crs.equals("OGC:CRS84")
    assert shapely.equals_exact(np.asarray(gdf.geometry), index.footprints, tolerance=0).all()
    assert index.to_geodataframe().shape[0] == 3


def test_read_rejects_non_index_files(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        TileIndex.read(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("junk")
    with pytest.raises(IndexFormatError, match="not a Parquet file"):
        TileIndex.read(tmp_path / "junk.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"a": [1]}), tmp_path / "other.parquet")
    with pytest.raises(IndexFormatError, match="not a mosaic tile index"):
        TileIndex.read(tmp_path / "other.parquet")


def test_query_uses_the_footprint_not_the_bounding_box(scenes):
    index = TileIndex.from_files(scenes[:1], progress=False)
    to_ll = Transformer.from_crs(32633, 4326, always_xy=True)
    # a small box in the south-west corner: inside the grid's bbox but in the nodata collar
    lon, lat = to_ll.transform(500_000.0 + 20 * 80, 5_000_000.0 - 20 * 190)
    corner = (lon - 0.0005, lat - 0.0005, lon + 0.0005, lat + 0.0005)
    assert index.footprints[0].envelope.intersects(box(*corner))
    assert len(index.query(corner)) == 0
    lon, lat = to_ll.transform(500_000.0 + 20 * 250, 5_000_000.0 - 20 * 100)
    assert len(index.query((lon - 0.001, lat - 0.001, lon + 0.001, lat + 0.001))) == 1


def test_query_by_time_and_in_another_crs(scenes):
    index = TileIndex.from_files(scenes, progress=False)
    assert {r.id for r in index.query(time="2024-06")} == {"S1_B02", "S2_B02"}
    assert {r.id for r in index.query(time="2024-06-11")} == {"S2_B02"}
    assert {r.id for r in index.query(time=("2024-06-02", "2024-07-01"))} == {"S2_B02", "S3_B02"}
    assert len(index.query(time="2023")) == 0
    utm_box = (505_600.0, 4_999_800.0, 505_900.0, 4_999_900.0)  # valid in both, collar-free
    assert {r.id for r in index.query(utm_box, bbox_crs="EPSG:32633")} == {"S1_B02", "S2_B02"}


def _antimeridian_index(tmp_path):
    to_utm = Transformer.from_crs(4326, 32760, always_xy=True)
    x, y = to_utm.transform(179.95, -17.0)
    x0, y0 = math.floor(x / 60) * 60 - 18_000, math.floor(y / 60) * 60 + 18_000
    east = write_tif(
        tmp_path / "z60.tif",
        crs="EPSG:32760",
        transform=Affine(60, 0, x0, 0, -60, y0),
        shape=(600, 600),
        collar=False,
        tags={"TIFFTAG_DATETIME": "2024:01:01 00:00:00"},
    )
    to_utm1 = Transformer.from_crs(4326, 32701, always_xy=True)
    x, y = to_utm1.transform(-179.8, -17.0)
    x0, y0 = math.floor(x / 60) * 60 - 18_000, math.floor(y / 60) * 60 + 18_000
    west = write_tif(
        tmp_path / "z01.tif",
        crs="EPSG:32701",
        transform=Affine(60, 0, x0, 0, -60, y0),
        shape=(600, 600),
        collar=False,
        tags={"TIFFTAG_DATETIME": "2024:01:01 00:00:00"},
    )
    pole = write_tif(
        tmp_path / "pole.tif",
        crs="EPSG:3413",
        transform=Affine(1000, 0, -200_000, 0, -1000, 200_000),
        shape=(400, 400),
        collar=False,
    )
    return TileIndex.from_files([east, west, pole], progress=False)


def test_query_across_the_antimeridian_and_at_the_pole(tmp_path):
    index = _antimeridian_index(tmp_path)
    fp = {r.id: r.footprint for r in index}
    assert fp["z60"].geom_type == "MultiPolygon"  # the zone 60 scene crosses 180
    assert fp["z01"].geom_type == "Polygon"
    assert {r.id for r in index.query((179.9, -17.1, -179.9, -16.9))} == {"z60", "z01"}
    assert {r.id for r in index.query((-179.95, -17.1, -179.9, -16.9))} == {"z60", "z01"}
    assert {r.id for r in index.query((170, -18, 179, -16))} == set()
    # the polar scene covers the pole: any longitude above ~88.5N finds it
    assert {r.id for r in index.query((-179, 89.5, -178, 89.6))} == {"pole"}
    assert {r.id for r in index.query((100, 88.5, 101, 88.6))} == {"pole"}
    assert {r.id for r in index.query((-50_000, -50_000, 50_000, 50_000), bbox_crs="EPSG:3413")} == {"pole"}
    assert {r.id for r in index.query((0, 85, 10, 86))} == set()


def test_pushdown_read_matches_in_memory_query(tmp_path, scenes):
    index = _antimeridian_index(tmp_path)
    path = index.write(tmp_path / "am.parquet", row_group_size=1)
    for bbox in [(179.9, -17.1, -179.9, -16.9), (-179, 89.5, -178, 89.6), (0, 0, 1, 1)]:
        subset = TileIndex.read(path, bbox=bbox)
        assert {r.id for r in subset.query(bbox)} == {r.id for r in index.query(bbox)}
        assert len(subset) <= len(index)
    assert len(TileIndex.read(path, bbox=(0, 0, 1, 1))) == 0  # row groups pruned by the covering bbox


def test_duplicate_rows_are_rejected(scenes):
    rows = TileIndex.from_files(scenes[:1], progress=False).records()
    with pytest.raises(InvalidInputError, match="duplicate"):
        TileIndex.from_records(rows + rows)


def test_index_from_files_agrees_with_index_from_their_stac_items(demo_collection):
    root, items = demo_collection
    stac = {(r.id, r.asset): r for r in TileIndex.from_stac(items)}
    files = TileIndex.from_files(
        root / "*" / "*.tif", pattern=r"/(?P<id>[^/]+)/(?P<asset>[^/]+)\.tif$", progress=False
    )
    assert len(files) == len(stac) == 114
    crs_seen = set()
    for row in files:
        other = stac[(row.id, row.asset)]
        assert (row.crs, row.transform, row.shape, row.datetime) == (
            other.crs,
            other.transform,
            other.shape,
            other.datetime,
        )
        assert (row.dtype, row.band_count) == (other.dtype, other.band_count)
        assert row.nodata == other.nodata or (math.isnan(row.nodata) and math.isnan(other.nodata))
        # footprints agree within one native pixel, measured in the native CRS
        native = [in_crs(fp, row.crs) for fp in (row.footprint, other.footprint)]
        assert native[0].hausdorff_distance(native[1]) <= row.resolution[0], (row.id, row.asset)
        crs_seen.add(row.crs)
    assert {
        "EPSG:3413",
        "EPSG:3031",
        "EPSG:32760",
        "EPSG:32701",
        "EPSG:32632",
        "EPSG:32633",
        "EPSG:32634",
    } <= crs_seen


def test_indexing_in_threads_leaves_the_warning_filters_alone(demo_collection):
    # shapely/antimeridian use warnings.catch_warnings, which is not thread-safe before Python 3.14:
    # run in interleaved worker threads it can leave an "ignore everything" filter behind
    root, items = demo_collection
    before = list(warnings.filters)
    for _ in range(3):
        TileIndex.from_files(
            root / "*" / "*.tif", pattern=r"/(?P<id>[^/]+)/(?P<asset>[^/]+)\.tif$", progress=False, workers=16
        )
        TileIndex.from_stac(items, workers=16)
    assert warnings.filters == before
    with pytest.warns(UserWarning, match="still heard"):
        warnings.warn("still heard", UserWarning, stacklevel=1)


# ---------------------------------------------------------------------- STAC Items without pixel facts

_STARTED = re.compile(r"DatasetReader name='([^']+)' mode='r'> is started")  # open, or closed since


def _opened(caplog) -> list[str]:
    """The files rasterio opened, from its own log (needs DEBUG on ``rasterio._base``)."""
    return [
        m.group(1)
        for r in caplog.records
        if r.name == "rasterio._base" and (m := _STARTED.search(r.getMessage()))
    ]


def _strip(item: dict, *keys: str) -> dict:
    """A copy of an Item dict without ``keys`` in its properties and assets."""
    out = copy.deepcopy(item)
    for where in (out["properties"], *out["assets"].values()):
        for key in keys:
            where.pop(key, None)
    return out


def test_stac_without_raster_bands_reads_one_header_per_asset_and_collection(
    demo_collection, demo_index, caplog
):
    _, items = demo_collection
    dicts = [_strip(i.to_dict(transform_hrefs=False), "raster:bands") for i in items]
    for n, d in enumerate(dicts):
        d["collection"] = ("even", "odd")[n % 2]
    caplog.set_level(logging.DEBUG, logger="rasterio._base")
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteMetadataWarning)
        index = TileIndex.from_stac(dicts, workers=4)
    opened = _opened(caplog)
    # one header per (collection, asset): the first Item's file of each, never one file twice
    assert len(opened) == len(set(opened)) == 12
    first = {c: next(d for d in dicts if d["collection"] == c) for c in ("even", "odd")}
    assert set(opened) == {a["href"] for d in first.values() for a in d["assets"].values()}
    # every row of the asset gets what the header said: the Items' own raster:bands, as the demo has them
    assert len(index) == 114
    truth = {(r.id, r.asset): r for r in demo_index}
    for row in index:
        want = truth[(row.id, row.asset)]
        assert (row.dtype, row.band_count, row.scale) == (want.dtype, want.band_count, None)
        assert row.nodata == want.nodata or (math.isnan(row.nodata) and math.isnan(want.nodata))
        if row.href in opened:  # overviews are known only where the file was opened
            with rasterio.open(row.href) as src:
                assert row.overviews == tuple(src.overviews(1)) != ()
        else:
            assert row.overviews is None
    assert {r.dtype for r in index} == {"uint16", "int16", "float32", "uint8"}


def test_stac_without_projection_or_raster_bands_opens_each_file_once(demo_collection, demo_index, caplog):
    _, items = demo_collection
    keys = ("raster:bands", "proj:code", "proj:transform", "proj:shape")
    dicts = [_strip(i.to_dict(transform_hrefs=False), *keys) for i in items[:3]]
    caplog.set_level(logging.DEBUG, logger="rasterio._base")
    index = TileIndex.from_stac(dicts, workers=4)
    opened = _opened(caplog)
    assert sorted(opened) == sorted(r.href for r in index) and len(opened) == 18  # each once, for its grid
    truth = {(r.id, r.asset): r for r in demo_index}
    for row in index:
        want = truth[(row.id, row.asset)]
        assert (row.crs, row.transform, row.dtype, row.band_count) == (
            want.crs,
            want.transform,
            want.dtype,
            want.band_count,
        )


S2_RASTER_ASSETS = {
    *(f"B{n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12)),
    *("B8A", "AOT", "SCL", "WVP", "visual"),
}


def test_real_sentinel2_items_without_dtypes_and_unreachable_files_warn_once_per_asset(caplog):
    # Planetary Computer's Items have eo:bands but no raster:bands, and their hrefs are not reachable
    # here. GDAL logs each URL it tries (CPL_DEBUG), every time (the host is left out of its cache).
    host = "https://sentinel2l2a01.blob.core.windows.net"
    gdal = {"CPL_DEBUG": "ON", "CPL_VSIL_CURL_NON_CACHED": f"/vsicurl/{host}"}
    caplog.set_level(logging.DEBUG, logger="rasterio._env")
    with pytest.warns(IncompleteMetadataWarning) as record:
        index = TileIndex.from_stac(SENTINEL2_ITEMS, gdal_options=gdal, workers=4)
    messages = [str(w.message) for w in record if issubclass(w.category, IncompleteMetadataWarning)]
    named = [re.match(r"asset '(\w+)' of collection 'sentinel-2-l2a': ", m).group(1) for m in messages]
    assert sorted(named) == sorted(S2_RASTER_ASSETS)  # once per asset, not per Item (4) or file
    scl = messages[named.index("SCL")]
    assert "give no data type, nodata and band count" in scl and "2 tried" in scl
    assert "float32 with NaN nodata" in scl and "1 band" in scl
    assert "band count" not in messages[named.index("visual")]  # eo:bands lists 3 bands
    tried = [
        m.group(1)
        for r in caplog.records
        if (m := re.search(rf"GetFileSize\(({host}[^)]+)\)", r.getMessage()))
    ]
    per_asset = Counter(re.search(r"_([A-Z0-9]{3})_\d+m\.tif$", url).group(1) for url in tried)
    assert len(per_asset) == 16 and set(per_asset.values()) == {2}  # 32 tries of the 64 files
    assert {r.dtype for r in index} == {None} and len(index) == 64
    rows = {(r.id.split("_")[4][1:], r.asset): r for r in index}
    assert rows[("47XML", "visual")].band_count == 3 and rows[("47XML", "SCL")].band_count == 1


def test_stac_header_fills_scale_offset_and_band_count_the_items_leave_out(tmp_path, caplog):
    path = tmp_path / "scaled.tif"
    write_tif(path, count=2, dtype="int16", nodata=-1)
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = (0.5, 0.5), (10.0, 10.0)
    item = _item(path, "scaled", "2024-06-01T10:00:00Z")
    del item["assets"]["B02"]["raster:bands"]
    caplog.set_level(logging.DEBUG, logger="rasterio._base")
    (row,) = TileIndex.from_stac([item]).records()
    assert _opened(caplog) == [str(path)]
    assert (row.dtype, row.nodata, row.band_count, row.scale, row.offset) == ("int16", -1.0, 2, 0.5, 10.0)
    assert row.overviews == (2, 4)
    # what the Items do say wins over the header
    item["assets"]["B02"]["raster:bands"] = [{"data_type": "int16", "nodata": -1, "scale": 2.0}] * 2
    caplog.clear()
    (row,) = TileIndex.from_stac([item]).records()
    assert _opened(caplog) == [] and (row.scale, row.offset, row.overviews) == (2.0, None, None)


# -------------------------------------------------------------------------------------- common names


@pytest.mark.filterwarnings("ignore::mosaic.errors.IncompleteMetadataWarning")
def test_common_names_from_real_items():
    s2 = {(r.id.split("_")[4][1:], r.asset): r for r in TileIndex.from_stac(SENTINEL2_ITEMS)}
    assert s2[("47XML", "B04")].common_names == ("red",)
    assert s2[("47XML", "B08")].common_names == ("nir",)
    assert s2[("47XML", "visual")].common_names == ("red", "green", "blue")
    assert s2[("47XML", "visual")].band_names == ("B04", "B03", "B02")
    assert s2[("47XML", "B09")].common_names == () == s2[("47XML", "SCL")].common_names
    landsat = {r.asset: r for r in TileIndex.from_stac(LANDSAT_ITEMS, assets=["red", "nir08", "qa"])}
    assert (landsat["red"].common_names, landsat["nir08"].common_names) == (("red",), ("nir08",))
    assert landsat["qa"].common_names == ()


def test_common_names_from_stac_1_1_bands_and_from_file_descriptions(tmp_path, scenes):
    item = _item(scenes[0], "v11", "2024-06-01T10:00:00Z")
    asset = item["assets"]["B02"]
    del asset["raster:bands"]
    asset["bands"] = [
        {"name": "B8", "eo:common_name": "nir", "data_type": "uint16", "nodata": 0},
        {"name": "QA", "data_type": "uint16", "nodata": 0},
    ]
    (row,) = TileIndex.from_stac([item]).records()
    assert (row.common_names, row.band_names, row.band_count) == (("nir", ""), ("B8", "QA"), 2)
    # STAC 0.9: the asset lists indices into the Item's eo:bands
    del asset["bands"]
    asset.update({"eo:bands": [1], "raster:bands": [{"data_type": "uint16", "nodata": 0}]})
    item["properties"]["eo:bands"] = [
        {"name": "B3", "common_name": "green"},
        {"name": "B4", "common_name": "red"},
    ]
    (row,) = TileIndex.from_stac([item]).records()
    assert (row.common_names, row.band_names, row.band_count) == (("red",), ("B4",), 1)
    # files: a band description that is exactly a common name (in any case) is one
    path = write_tif(tmp_path / "described.tif", count=3)
    with rasterio.open(path, "r+") as dst:
        dst.descriptions = ("Red", "NIR", "elevation")
    rows = {r.id: r for r in TileIndex.from_files([path, scenes[1]], progress=False)}
    assert rows["described"].common_names == ("red", "nir", "")
    assert rows["described"].band_names == ("Red", "NIR", "elevation")
    assert rows["S2_B02"].common_names == ()


def test_common_names_round_trip_and_index_files_of_format_1_still_read(tmp_path, scenes):
    path = write_tif(tmp_path / "rgb.tif", count=3)
    with rasterio.open(path, "r+") as dst:
        dst.descriptions = ("red", "green", "blue")
    index = TileIndex.from_files([path, scenes[0], scenes[1]], progress=False)
    saved = index.write(tmp_path / "v2.parquet")
    back = TileIndex.read(saved)
    assert back.equals(index) and {r.common_names for r in back} == {("red", "green", "blue"), ()}
    # an index as mosaic wrote it before common names: format 1, no such column
    table = pq.read_table(saved)
    meta = dict(table.schema.metadata)
    meta[b"mosaic"] = json.dumps({"format_version": 1, "skipped": []}).encode()
    pq.write_table(
        table.drop_columns(["common_names"]).replace_schema_metadata(meta), tmp_path / "v1.parquet"
    )
    old = TileIndex.read(tmp_path / "v1.parquet")
    assert [r.common_names for r in old] == [()] * 3
    assert [dataclasses.replace(r, common_names=()) for r in index] == old.records()
    assert old.table.schema == index.table.schema
    lon, lat = shapely.get_coordinates(index.footprints[0].centroid)[0]
    assert len(TileIndex.read(tmp_path / "v1.parquet", bbox=(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01)))
    # a file of a newer format is refused with what to do; format 2 must have the column
    meta[b"mosaic"] = json.dumps({"format_version": 99}).encode()
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "v99.parquet")
    with pytest.raises(IndexFormatError, match=r"newer mosaic .*upgrade"):
        TileIndex.read(tmp_path / "v99.parquet")
    meta[b"mosaic"] = json.dumps({"format_version": 2}).encode()
    pq.write_table(
        table.drop_columns(["common_names"]).replace_schema_metadata(meta), tmp_path / "bad.parquet"
    )
    with pytest.raises(IndexFormatError, match=r"missing \['common_names'\]"):
        TileIndex.read(tmp_path / "bad.parquet")


# ------------------------------------------------------------------------ source nodata at index build


def _nonzero_hull(path: Path) -> shapely.Polygon:
    """The convex hull of the corners of a file's nonzero pixels, in its CRS (traced without mosaic)."""
    with rasterio.open(path) as src:
        data, transform = src.read(1), src.transform
    rows, cols = np.nonzero(data)
    corners = np.concatenate([np.column_stack([cols + dx, rows + dy]) for dx in (0, 1) for dy in (0, 1)])
    xs, ys = transform * (corners[:, 0], corners[:, 1])
    return shapely.MultiPoint(np.column_stack([xs, ys])).convex_hull


def _iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def test_src_nodata_gives_fill_zero_scenes_their_swath_as_footprint(tmp_path):
    paths = fill_zero_scenes(tmp_path)
    plain = TileIndex.from_files(paths, progress=False)
    index = TileIndex.from_files(paths, nodata=0, progress=False)
    assert [r.nodata for r in plain] == [None, None] and [r.nodata for r in index] == [0.0, 0.0]
    pixel = 28.5
    for path, before, after in zip(paths, plain, index, strict=True):
        hull = _nonzero_hull(path)
        native, grid = in_crs(after.footprint, "EPSG:31985"), in_crs(before.footprint, "EPSG:31985")
        assert _iou(native, hull) > 0.98 and native.hausdorff_distance(hull) <= 1.5 * pixel
        assert _iou(grid, hull) < 0.85  # without it: the whole grid, fill included
        assert native.area < 0.85 * grid.area
    # the same by asset name; a name no row has, and a value the pixels cannot hold, are refused
    by_asset = TileIndex.from_files(paths, nodata={"data": 0}, progress=False)
    assert by_asset.equals(index)
    with pytest.raises(
        InvalidInputError, match=r"\['B99'\] that no indexed row has; the assets are \['data'\]"
    ):
        TileIndex.from_files(paths, nodata={"B99": 0}, progress=False)
    for bad in (-1, 0.5, math.nan):
        with pytest.raises(SourceError, match="uint8 pixels cannot hold the nodata given"):
            TileIndex.from_files(paths, nodata=bad, progress=False)
    for bad in ("0", True, {"data": "0"}):
        with pytest.raises(InvalidInputError, match="must be a number"):
            TileIndex.from_files(paths, nodata=bad, progress=False)


def test_src_nodata_footprint_leaves_out_nan_pixels_too(tmp_path):
    # a float file whose west third is NaN and east third -9999, neither declared: the reader takes both
    # as no data once -9999 is given, so the footprint is the middle third
    data = np.full((90, 90), 5.0, dtype="float32")
    data[:, :30], data[:, 60:] = np.nan, -9999.0
    path = tmp_path / "float.tif"
    transform = Affine(20.0, 0, 500_000.0, 0, -20.0, 5_000_000.0)
    with rasterio.open(
        path, "w", driver="GTiff", height=90, width=90, count=1, dtype="float32", crs="EPSG:32633",
        transform=transform,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    (row,) = TileIndex.from_files([path], nodata=-9999, progress=False).records()
    middle = box(500_000.0 + 30 * 20, 5_000_000.0 - 90 * 20, 500_000.0 + 60 * 20, 5_000_000.0)
    native = in_crs(row.footprint, "EPSG:32633")
    assert row.nodata == -9999.0 and native.hausdorff_distance(middle) <= 20.0
    (row,) = TileIndex.from_files([path], nodata=math.nan, progress=False).records()
    assert math.isnan(row.nodata) and in_crs(row.footprint, "EPSG:32633").area > 1.9 * middle.area


def test_src_nodata_stops_fill_of_a_later_scene_painting_over_an_earlier_one(tmp_path):
    paths = fill_zero_scenes(tmp_path)
    index = TileIndex.from_files(paths, nodata=0, progress=False)
    with rasterio.open(L7) as src:
        gbox = GeoBox((src.height, src.width), src.transform, src.crs)
    ds = mosaic.load(index=index, geobox=gbox, bands=["data"], method="last", groupby=None, chunks=128)
    got = ds["data"].values[0]
    # what the files hold, the later scene's data over the earlier's (paths are in time order)
    expected = np.zeros(gbox.shape, dtype=np.uint8)
    painted = 0
    for path in paths:
        with rasterio.open(path) as src:
            data = src.read(1)
            window = rasterio.windows.from_bounds(*src.bounds, transform=gbox.affine).round_offsets()
            view = expected[window.toslices()]
            painted += int(((data == 0) & (view != 0)).sum())  # 0 fill over an earlier scene's data
            view[data != 0] = data[data != 0]
    assert painted > 1000
    np.testing.assert_array_equal(got, expected)
    assert ds["data"].attrs["nodata"] == 0


def test_src_nodata_for_stac_items_is_recorded_and_the_geometry_stays_the_footprint(
    demo_collection, demo_index, caplog
):
    _, items = demo_collection
    caplog.set_level(logging.DEBUG, logger="rasterio._base")
    index = TileIndex.from_stac(items[:2], nodata={"AOT": -1, "visual": 255})
    assert _opened(caplog) == []  # the Items say everything else
    truth = {(r.id, r.asset): r for r in demo_index}
    for row in index:
        want = truth[(row.id, row.asset)]
        override = {"AOT": -1.0, "visual": 255.0}.get(row.asset)
        assert (
            row.nodata == override
            if override is not None
            else row.nodata == want.nodata or (math.isnan(row.nodata) and math.isnan(want.nodata))
        )
        assert shapely.equals_exact(row.footprint, want.footprint, tolerance=0)
    assert {r.nodata for r in TileIndex.from_stac(items[:2], nodata=0)} == {0.0}
    with pytest.raises(InvalidInputError, match=r"\['SCL'\] that no indexed row has"):
        TileIndex.from_stac(items[:2], nodata={"SCL": 0})


def test_items_and_files_without_a_time_are_indexed_with_an_unknown_time(tmp_path, scenes):
    # files without a time tag get datetime None; a STAC Item without one is indexed the same way
    undated = write_tif(tmp_path / "undated.tif")
    (file_row,) = TileIndex.from_files([undated], progress=False).records()
    item = _item(scenes[0], "undated", "2024-06-01T10:00:00Z")
    item["properties"]["datetime"] = None
    stac = TileIndex.from_stac([item])
    assert file_row.datetime is None and stac.records()[0].datetime is None
    assert len(stac.query(time="2024-06")) == len(stac.query(time="1990")) == 1  # unknown: every time
    item["properties"].update(start_datetime="2024-06-01T00:00:00Z", end_datetime="2024-06-02T00:00:00Z")
    ranged = TileIndex.from_stac([item])
    assert len(ranged.query(time="2024-06-01")) == 1 and len(ranged.query(time="2024-07")) == 0


def test_cli_index_build_src_nodata_and_info_per_asset(tmp_path):
    from click.testing import CliRunner

    from mosaic.cli import cli

    paths = [str(p) for p in fill_zero_scenes(tmp_path / "scenes")]
    runner = CliRunner()
    for value in ("0", "data=0"):
        out = tmp_path / f"{value}.parquet"
        result = runner.invoke(cli, ["index", "build", *paths, "--src-nodata", value, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert [r.nodata for r in TileIndex.read(out)] == [0.0, 0.0]
    info = runner.invoke(cli, ["index", "info", "--index", str(out)])
    assert re.search(r"^  data  uint8, nodata 0$", info.output, re.MULTILINE), info.output
    for bad, message in (("zero", "'zero' is not a number"), ("B01=0,SCL", "'SCL' is not ASSET=VALUE")):
        result = runner.invoke(cli, ["index", "build", *paths, "--src-nodata", bad, "-o", str(out)])
        assert result.exit_code == 2 and message in result.output


def test_index_info_shows_dtype_nodata_bands_and_common_names_per_asset(demo_index):
    from mosaic.cli.index import describe, format_info

    facts = describe(demo_index)
    info = facts["asset_info"]
    assert info["AOT"] == {"dtype": ["float32"], "nodata": [-9999.0], "band_count": [1], "common_names": [[]]}
    assert info["WVP"]["nodata"] == ["nan"] and info["visual"]["band_count"] == [3]
    json.dumps(facts, allow_nan=False)  # plain JSON, no NaN
    text = format_info(facts)
    assert "  visual   uint8 x 3 bands, nodata 0\n" in text and "  WVP      float32, nodata nan\n" in text
