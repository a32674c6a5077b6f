"""Requests the way people pass them: resampling names and per-band dicts, source nodata, anchors,
polygons instead of boxes, reserved band names. Checked against the files' own pixels and rioxarray."""

import dataclasses
import math
import re
import warnings

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.enums import Resampling
from shapely.geometry import Polygon, mapping

import mosaic
import real_data
from mosaic import InvalidInputError, MosaicWarning, TileIndex

SEAM12 = (11.88, 45.40, 12.12, 45.58)
POLY = Polygon([(11.9, 45.42), (12.1, 45.45), (12.05, 45.57), (11.92, 45.5)])


def plan(index, **kwargs):
    args = dict(index=index, resolution=0.002, bands="B02") | kwargs
    return mosaic.plan(SEAM12, "EPSG:4326", "2024-06-01", **args)


# ------------------------------------------------------------------------------------------ resampling


@pytest.mark.parametrize(
    "value",
    ["bilinear", "Bilinear", "BILINEAR", " bilinear ", Resampling.bilinear, "Resampling.bilinear"[11:]],
)
def test_resampling_any_case_or_a_rasterio_enum(demo_index, value):
    assert plan(demo_index, resampling=value).band("B02").resampling == "bilinear"


def test_gdal_spellings_of_resampling(demo_index):
    assert plan(demo_index, resampling="cubicspline").band("B02").resampling == "cubic_spline"
    assert plan(demo_index, resampling="near").band("B02").resampling == "nearest"


def test_per_band_resampling_dict_reads_each_band_with_its_kernel(demo_index):
    both = ["B02", "quality"]
    mixed = mosaic.load(
        SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.0005, bands=both,
        resampling={"*": "bilinear", "quality": "nearest"},
    )  # fmt: skip
    assert mixed.attrs["resampling"] == "B02=bilinear, quality=nearest"
    for band, kernel in (("B02", "bilinear"), ("quality", "nearest")):
        alone = mosaic.load(
            SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.0005, bands=band,
            resampling=kernel,
        )  # fmt: skip
        np.testing.assert_array_equal(mixed[band].values, alone[band].values)
    # and the kernel mattered: nearest and bilinear differ on B02
    nearest = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.0005, bands="B02")
    assert (nearest.B02.values != mixed.B02.values).mean() > 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resampling": "bilinaer"}, "unknown resampling 'bilinaer'; choose from nearest, bilinear"),
        ({"resampling": {"B03": "bilinear"}}, "resampling= names ['B03'], which the request does not load"),
        ({"resampling": {"*": "nope"}}, "unknown resampling 'nope'"),
        ({"dtype": {"B2": "float32"}}, "dtype= names ['B2']"),
        ({"nodata": {"B8A": 1}}, "nodata= names ['B8A']"),
        ({"nodata": -1}, "band 'B02': nodata -1.0 does not fit its dtype uint16 (0..65535)"),
        ({"dtype": "uint8", "nodata": 300}, "nodata 300.0 does not fit its dtype uint8"),
        ({"dtype": "nonsense"}, "dtype 'nonsense' is not a NumPy dtype"),
        ({"src_nodata": {"B99": 0}}, "src_nodata= names ['B99'], which the selected scenes do not have"),
        ({"src_nodata": "zero"}, "src_nodata 'zero' is not a number"),
    ],
)
def test_bad_per_band_options_are_one_line_errors(demo_index, kwargs, message):
    with pytest.raises(InvalidInputError, match=re.escape(message)) as err:
        plan(demo_index, **kwargs)
    assert "\n" not in str(err.value)


def test_a_per_band_nodata_mapping_need_not_name_every_band(demo_index):
    # (it used to raise TypeError: float(None) for the bands it did not name)
    the_plan = plan(demo_index, bands=["B02", "B8A"], nodata={"B02": 7})
    assert the_plan.band("B02").nodata == 7 and the_plan.band("B8A").nodata == 0  # B8A's own
    assert plan(demo_index, bands=["B02", "B8A"], dtype={"*": "float32"}).band("B8A").dtype == "float32"


# ----------------------------------------------------------------------------------- reserved names


@pytest.mark.parametrize("name", ["x", "y", "time", "spatial_ref"])
def test_an_asset_named_like_a_coordinate_is_loaded_under_a_safe_name(demo_index, name):
    rows = [dataclasses.replace(r, asset=name) for r in demo_index if r.asset == "B02"]
    index = TileIndex.from_records(rows)
    with pytest.warns(MosaicWarning, match=f"band '{name}' is loaded as variable '{name}_band'"):
        ds = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=index, resolution=0.002, bands=name)
    reference = plan(demo_index)
    expected = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.002, bands="B02")
    assert list(ds.data_vars) == [f"{name}_band"] and ds[f"{name}_band"].attrs["asset"] == name
    assert ds.sizes == expected.sizes and reference.scenes == tuple(
        sorted({r.id for r in rows} & set(reference.scenes))
    )
    np.testing.assert_array_equal(ds[f"{name}_band"].values, expected.B02.values)
    assert set(ds.coords) >= {"x", "y", "time", "spatial_ref"}


def test_a_band_asked_for_twice_is_loaded_once(demo_index):
    assert [b.name for b in plan(demo_index, bands=["B02", "B02"]).bands] == ["B02"]


# ----------------------------------------------------------------------------- source nodata override


@pytest.fixture(scope="module")
def fill_zero(tmp_path_factory):
    """Two real-pixel scenes with 0 fill and no nodata tag, indexed as they are (nodata unknown)."""
    paths = real_data.fill_zero_scenes(tmp_path_factory.mktemp("fill0"))
    index = TileIndex.from_files(paths, progress=False)
    assert {r.nodata for r in index} == {None}
    return paths, index


def _union_bounds(paths):
    boxes = []
    for p in paths:
        with rasterio.open(p) as src:
            boxes.append(src.bounds)
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _expected_last(paths, geobox, *, skip_zero: bool) -> np.ndarray:
    """What method='last' must give on the scenes' own grid: later scenes pasted over earlier ones."""
    out = np.zeros(geobox.shape, dtype=np.uint8)
    for p in paths:  # a (2001-07-01) then b (2001-07-17)
        with rasterio.open(p) as src:
            data = src.read(1)
            col, row = ~geobox.affine * (src.transform.c, src.transform.f)
            r, c = round(row), round(col)
            assert abs(row - r) < 1e-6 and abs(col - c) < 1e-6  # the same pixel grid
            view = out[r : r + data.shape[0], c : c + data.shape[1]]
            np.copyto(view, data, where=(data != 0) if skip_zero else True)
    return out


@pytest.mark.parametrize("src_nodata", [None, 0, {"data": 0}])
def test_src_nodata_keeps_fill_zeros_from_painting_over_the_other_scene(fill_zero, src_nodata):
    paths, index = fill_zero
    ds = mosaic.load(
        _union_bounds(paths), "EPSG:31985", index=index, bbox_crs="EPSG:31985", anchor="native",
        method="last", groupby=None, src_nodata=src_nodata, chunks=96,
    )  # fmt: skip
    got = ds.data.values[0]
    expected = _expected_last(paths, ds.odc.geobox, skip_zero=src_nodata is not None)
    np.testing.assert_array_equal(got, expected)  # pixel for pixel, the files' own values
    assert ds.data.attrs["nodata"] == 0 and ds.data.rio.nodata == 0  # the output carries it
    if src_nodata is None:  # the premise: without it, b's fill paints zeros over a's data
        with_override = _expected_last(paths, ds.odc.geobox, skip_zero=True)
        assert ((got == 0) & (with_override != 0)).sum() > 5000


def test_src_nodata_also_applies_in_another_crs(fill_zero):
    _, index = fill_zero
    kwargs = dict(index=index, resolution=0.0003, method="last", groupby=None, bands="data")
    area = (-34.96, -8.06, -34.87, -7.98)
    painted = mosaic.load(area, "EPSG:4326", **kwargs).data.values[0]
    fixed = mosaic.load(area, "EPSG:4326", src_nodata=0, **kwargs).data.values[0]
    # where b has fill and a data, the override shows a; elsewhere the two agree
    differs = painted != fixed
    assert differs.sum() > 1000 and (painted[differs] == 0).all() and (fixed[differs] != 0).all()


# -------------------------------------------------------------------------------------------- anchor


def test_native_anchor_gives_the_raw_pixels_of_a_real_scene():
    index = TileIndex.from_files([real_data.L7], progress=False)
    with rasterio.open(real_data.L7) as src:
        raw, transform, bounds = src.read(), src.transform, src.bounds
    ds = mosaic.load(bounds, "EPSG:31985", index=index, bbox_crs="EPSG:31985", anchor="native", chunks=128)
    assert tuple(ds.odc.geobox.affine)[:6] == pytest.approx(tuple(transform)[:6], abs=1e-6)
    assert ds.odc.geobox.shape == raw.shape[1:]
    assert ds.sizes["time"] == 1 and np.isnat(ds.time.values[0])  # an undated file: one layer, no time
    for b in range(6):
        np.testing.assert_array_equal(ds[f"data.{b + 1}"].values[0], raw[b])
    # the default grid is edge-aligned: half a pixel off this scene's grid (its origin is at k + 0.5 pixels)
    edge = mosaic.plan(bounds, "EPSG:31985", index=index, bbox_crs="EPSG:31985")
    offset = (edge.geobox.affine.c - transform.c) / transform.a
    assert abs(abs(offset) % 1 - 0.5) < 1e-6


@pytest.mark.parametrize(
    ("anchor", "phase"),
    [("edge", (0, 0)), ("center", (10, 10)), ("centre", (10, 10)), ((0.25, 0.75), (5, 15))],
)
def test_anchor_sets_where_pixel_edges_fall(demo_index, anchor, phase):
    the_plan = mosaic.plan(
        (11.9, 45.42, 12.1, 45.5), "EPSG:32632", "2024-06-01", index=demo_index, resolution=20, anchor=anchor,
        bands="B02",
    )  # fmt: skip
    aff = the_plan.geobox.affine
    assert (aff.c % 20, aff.f % 20) == pytest.approx(phase)
    # the grid covers the request box whatever the anchor
    box = shapely.geometry.box(*the_plan.geobox.boundingbox)
    request = mosaic.index.geom.lonlat_to_crs(shapely.geometry.box(11.9, 45.42, 12.1, 45.5), "EPSG:32632")
    assert box.buffer(1e-6).contains(request.envelope)


def test_anchor_matches_odc_geo_from_bbox_up_to_its_tolerance():
    from odc.geo.geobox import GeoBox

    bbox = (500_003.0, 4_000_007.0, 520_011.0, 4_012_009.0)
    for anchor in ("edge", "center", (0.25, 0.75)):
        ours = mosaic.planning.grid.make_geobox(
            bbox, "EPSG:32633", resolution=20, shape=None, geobox=None, like=None, bbox_crs="EPSG:32633",
            anchor=mosaic.planning.grid.anchor_phase(anchor),
        )  # fmt: skip
        odc_anchor = anchor if isinstance(anchor, str) else __import__("odc.geo").geo.xy_(*anchor)
        theirs = GeoBox.from_bbox(bbox, "EPSG:32633", resolution=20, anchor=odc_anchor, tol=1e-9)
        assert ours == theirs, anchor


def test_native_anchor_errors(demo_index):
    with pytest.raises(InvalidInputError, match="no selected scene is in the target CRS EPSG:3035"):
        mosaic.plan(SEAM12, "EPSG:3035", "2024-06-01", index=demo_index, resolution=20, anchor="native")
    rows = [r for r in demo_index.query(SEAM12, "2024-06") if r.crs == "EPSG:32632" and r.asset == "B02"]
    a, b, c, d, e, f = rows[1].transform
    shifted = [rows[0], dataclasses.replace(rows[1], transform=(a, b, c + 5.0, d, e, f))]  # a quarter pixel
    with pytest.raises(InvalidInputError, match="grids are out of phase on a 20 x 20 grid"):
        mosaic.plan(
            SEAM12,
            "EPSG:32632",
            "2024-06",
            index=TileIndex.from_records(shifted),
            resolution=20,
            anchor="native",
        )
    with pytest.raises(
        InvalidInputError, match=re.escape("anchor 'middle': give 'edge', 'center', 'native'")
    ):
        plan(demo_index, anchor="middle")
    with pytest.raises(InvalidInputError, match=re.escape("pixel fractions must lie in [0, 1)")):
        plan(demo_index, anchor=(0.5, 1.5))
    with pytest.raises(InvalidInputError, match="not one given by shape="):
        plan(demo_index, resolution=None, shape=(10, 10), anchor="center")


# ------------------------------------------------------------------------------------- polygon areas


@pytest.mark.parametrize(
    "area",
    [POLY, mapping(POLY), {"type": "Feature", "properties": {}, "geometry": mapping(POLY)}],
    ids=["shapely", "geojson", "feature"],
)
def test_geopolygon_grid_covers_its_bounds(demo_index, area):
    by_poly = mosaic.plan(
        None, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.002, geopolygon=area
    )
    by_box = mosaic.plan(POLY.bounds, "EPSG:4326", "2024-06-01", index=demo_index, resolution=0.002)
    assert by_poly.geobox == by_box.geobox and by_poly.scenes == by_box.scenes and by_poly.clip is None


def test_geopolygon_from_geopandas_and_odc_geo_bring_their_own_crs(demo_index):
    import geopandas as gpd
    from odc.geo.geom import Geometry

    utm = gpd.GeoSeries([POLY], crs="EPSG:4326").to_crs("EPSG:32632")
    for area in (utm, gpd.GeoDataFrame(geometry=utm), Geometry(utm.iloc[0], "EPSG:32632")):
        got = mosaic.plan(None, "EPSG:32632", "2024-06-01", index=demo_index, resolution=20, geopolygon=area)
        want = mosaic.plan(
            utm.total_bounds,
            "EPSG:32632",
            "2024-06-01",
            index=demo_index,
            resolution=20,
            bbox_crs="EPSG:32632",
        )
        assert got.geobox == want.geobox, type(area).__name__


def test_clip_sets_pixels_outside_the_polygon_to_nodata_as_rio_clip(demo_index):
    kwargs = dict(index=demo_index, resolution=0.001, bands=["B02", "WVP"], chunks=64)
    whole = mosaic.load(None, "EPSG:4326", "2024-06-01", geopolygon=POLY, **kwargs)
    clipped = mosaic.load(None, "EPSG:4326", "2024-06-01", geopolygon=POLY, clip=True, **kwargs)
    # centres on the polygon's edges (to 1e-9 degrees) are ties either way may break
    xx, yy = np.meshgrid(whole.x.values, whole.y.values)
    edge = shapely.distance(POLY.exterior, shapely.points(xx, yy)) < 1e-9
    inside = shapely.contains_xy(POLY, xx, yy)
    for band, nodata in (("B02", 0), ("WVP", math.nan)):
        got, full = clipped[band].values[0], whole[band].values[0]
        np.testing.assert_array_equal(got[inside & ~edge], full[inside & ~edge])
        outside = ~inside & ~edge
        assert (np.isnan(got[outside]) if math.isnan(nodata) else (got[outside] == nodata)).all()
        ref = whole[band].rio.clip([POLY], crs="EPSG:4326", drop=False).values[0]  # rioxarray's own clip
        np.testing.assert_array_equal(got[~edge], ref[~edge])
    # chunks the polygon does not touch are not read; the others are masked only where they reach out
    the_plan = mosaic.plan(None, "EPSG:4326", "2024-06-01", geopolygon=POLY, clip=True, **kwargs)
    unclipped = mosaic.plan(None, "EPSG:4326", "2024-06-01", geopolygon=POLY, **kwargs)
    assert len(the_plan.tasks) < len(unclipped.tasks)
    assert any(t.clipped for t in the_plan.tasks) and not all(t.clipped for t in the_plan.tasks)


def test_clip_does_not_depend_on_the_chunking(demo_index):
    kwargs = dict(index=demo_index, resolution=0.001, bands="B02", geopolygon=POLY, clip=True)
    a = mosaic.load(None, "EPSG:4326", "2024-06-01", chunks=64, **kwargs).B02.values
    b = mosaic.load(None, "EPSG:4326", "2024-06-01", chunks=(37, 91), **kwargs).B02.values
    xx, yy = np.meshgrid(
        *(mosaic.load(None, "EPSG:4326", "2024-06-01", **kwargs)[c].values for c in ("x", "y"))
    )
    edge = shapely.distance(POLY.exterior, shapely.points(xx, yy)) < 1e-9
    # (the values themselves may differ by a nearest pick where chunk edges fall elsewhere)
    np.testing.assert_array_equal((a[0] == 0)[~edge], (b[0] == 0)[~edge])


def test_polygon_across_the_antimeridian(demo_index):
    # a GeoJSON polygon split at 180, as RFC 7946 asks
    split = {
        "type": "MultiPolygon",
        "coordinates": [
            [[(179.9, -17.1), (180.0, -17.1), (180.0, -16.97), (179.9, -16.97), (179.9, -17.1)]],
            [[(-180.0, -17.1), (-179.9, -17.1), (-179.9, -16.97), (-180.0, -16.97), (-180.0, -17.1)]],
        ],
    }
    ds = mosaic.load(
        None, "EPSG:4326", "2024-06-10", index=demo_index, resolution=0.0005, bands="B02", groupby=None,
        geopolygon=split, clip=True,
    )  # fmt: skip
    box = mosaic.load(
        (179.9, -17.1, -179.9, -16.97), "EPSG:4326", "2024-06-10", index=demo_index, resolution=0.0005,
        bands="B02", groupby=None,
    )  # fmt: skip
    assert ds.odc.geobox == box.odc.geobox and float(ds.x.max()) > 180  # one grid across 180
    np.testing.assert_array_equal(ds.B02.values, box.B02.values)  # the polygon is the whole box


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"geopolygon": POLY, "bbox": SEAM12}, "give bbox= or geopolygon=, not both"),
        ({"clip": True}, "clip=True needs geopolygon="),
        ({"geopolygon": shapely.Point(12, 45.5)}, "geopolygon must be a polygon with an area, got Point"),
        ({"geopolygon": {"type": "Polygon"}}, "geopolygon is not valid GeoJSON"),
        ({"geopolygon": 42}, "geopolygon must be a shapely geometry, a GeoJSON dict"),
    ],
)
def test_bad_areas_are_one_line_errors(demo_index, kwargs, message):
    kwargs = {"bbox": None} | kwargs
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mosaic.plan(crs="EPSG:4326", time="2024-06-01", index=demo_index, resolution=0.002, **kwargs)


def test_undated_files_beside_dated_scenes_cannot_be_grouped_by_solar_day(fill_zero):
    _, index = fill_zero
    undated = TileIndex.from_files([real_data.L7], progress=False)
    both = TileIndex.from_records([*index, *undated])
    bounds = (-34.96, -8.06, -34.87, -7.98)
    with pytest.raises(
        InvalidInputError, match="'L7_ETMs' has no datetime while other selected scenes have one"
    ):
        mosaic.plan(bounds, "EPSG:4326", index=both, resolution=0.001)
    assert len(mosaic.plan(bounds, "EPSG:4326", index=both, resolution=0.001, groupby=None).times) == 1


# ------------------------------------------------------------------------------------- common names


@pytest.fixture(scope="module")
def sentinel2_real():
    """The real Planetary Computer Sentinel-2 Items (files unreachable here: planning only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mosaic.errors.IncompleteMetadataWarning)
        return TileIndex.from_stac(real_data.SENTINEL2_ITEMS)


def test_common_names_select_bands_as_odc_stac_aliases(sentinel2_real):
    area = (95.8, 81.2, 96.2, 81.4)
    the_plan = mosaic.plan(
        area, "EPSG:32647", "2024-04-19", index=sentinel2_real, resolution=60, bands=["red", "nir", "B02"]
    )
    assert [(b.name, b.asset, b.band) for b in the_plan.bands] == [
        ("red", "B04", 1),  # the single-band asset, not visual.1 which is red too
        ("nir", "B08", 1),
        ("B02", "B02", 1),
    ]
    assert {r.asset for t in the_plan.tasks for r in t.reads} == {"B04", "B08", "B02"}
    # a common name several single-band assets carry is an error that lists them
    with pytest.raises(InvalidInputError, match=re.escape("'rededge' is the common name of several bands")):
        mosaic.plan(area, "EPSG:32647", "2024-04-19", index=sentinel2_real, resolution=60, bands="rededge")
    with pytest.raises(InvalidInputError, match=r"common names: .*'swir16'"):
        mosaic.plan(area, "EPSG:32647", "2024-04-19", index=sentinel2_real, resolution=60, bands="purple")


def test_a_common_name_loads_the_same_pixels_under_its_own_name(demo_index):
    named = [
        dataclasses.replace(r, common_names=("blue",) if r.asset == "B02" else ("red", "green", "blue"))
        for r in demo_index
        if r.asset in ("B02", "visual", "quality")
    ]
    index = TileIndex.from_records(named)
    kwargs = dict(index=index, resolution=0.002)
    by_alias = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", bands=["blue", "green"], **kwargs)
    by_name = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", bands=["B02", "visual.2"], **kwargs)
    assert list(by_alias.data_vars) == ["blue", "green"]
    assert by_alias.blue.attrs["asset"] == "B02" and by_alias.green.attrs["asset"] == "visual"
    np.testing.assert_array_equal(by_alias.blue.values, by_name.B02.values)
    np.testing.assert_array_equal(by_alias.green.values, by_name["visual.2"].values)
    # per-band options take the name as asked; and a ranking band may be a common name too
    assert (
        mosaic.plan(SEAM12, "EPSG:4326", "2024-06-01", bands="blue", dtype={"blue": "float32"}, **kwargs)
        .band("blue")
        .dtype
        == "float32"
    )
    ranked = mosaic.plan(SEAM12, "EPSG:4326", "2024-06", bands="quality", method="highest:blue", **kwargs)
    assert {r.asset for t in ranked.tasks for r in t.aux} == {"B02"}


def test_explain_says_when_the_clip_polygon_decides(demo_index):
    kwargs = dict(index=demo_index, resolution=0.001, bands="B02", chunks=64, geopolygon=POLY, clip=True)
    the_plan = mosaic.plan(None, "EPSG:4326", "2024-06-01", **kwargs)
    ny, nx = the_plan.chunk_grid
    texts = [the_plan.explain(iy, ix) for iy in range(ny) for ix in range(nx)]
    assert any("outside the clip polygon (it is a constant fill)" in t for t in texts)
    assert any("the clip polygon crosses the chunk" in t for t in texts)
    unclipped = mosaic.plan(None, "EPSG:4326", "2024-06-01", **(kwargs | {"clip": False}))
    assert not any("clip polygon" in unclipped.explain(iy, ix) for iy in range(ny) for ix in range(nx))
