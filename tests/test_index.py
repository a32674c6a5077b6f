"""TileIndex: building from files and STAC, errors, GeoParquet round trip, footprint and time queries."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box, mapping

from mosaic import IndexFormatError, InvalidInputError, SkippedSourcesWarning, SourceError, TileIndex
from mosaic.geom import to_lonlat
from real_data import LANDSAT_ITEMS, SENTINEL2_ITEMS


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
    item["properties"].pop("datetime")
    with pytest.raises(SourceError, match="neither datetime nor start_datetime"):
        TileIndex.from_stac([item])
    with pytest.raises(SourceError, match="not a STAC Item"):
        TileIndex.from_stac([{"type": "Collection"}])


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
