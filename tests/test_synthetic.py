"""Tests for mosaic.synthetic: the generated collection matches its analytic truth and its STAC metadata."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from shapely.geometry import MultiPolygon, shape

from mosaic import synthetic as syn
from mosaic.errors import InvalidInputError

# truth bands of the demo assets, written out here so the tests do not trust the generator's metadata
DEMO_TRUTH_BANDS = {"B02": [1], "B8A": [2], "WVP": [3], "AOT": [7], "visual": [4, 5, 6]}


@pytest.fixture(scope="session")
def demo(demo_collection: tuple[Path, list[pystac.Item]]) -> tuple[Path, dict[str, pystac.Item]]:
    root, items = demo_collection
    return root, {item.id: item for item in items}


@pytest.fixture(scope="session")
def items(demo: tuple[Path, dict[str, pystac.Item]]) -> dict[str, pystac.Item]:
    return demo[1]


def pick(items: dict[str, pystac.Item], prefix: str) -> pystac.Item:
    return next(item for item_id, item in sorted(items.items()) if item_id.startswith(prefix))


def read(item: pystac.Item, asset: str) -> np.ndarray:
    with rasterio.open(item.assets[asset].href) as src:
        return src.read()


def native_centres(item: pystac.Item, asset: str) -> tuple[np.ndarray, np.ndarray]:
    a, _, c, _, e, f = item.assets[asset].extra_fields["proj:transform"]
    rows, cols = item.assets[asset].extra_fields["proj:shape"]
    return np.meshgrid(c + (np.arange(cols) + 0.5) * a, f + (np.arange(rows) + 0.5) * e)


def to_lonlat(item: pystac.Item, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tr = Transformer.from_crs(item.properties["proj:code"], "EPSG:4326", always_xy=True)
    return tr.transform(x, y)


def collar_side(item: pystac.Item, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (m) from the collar line, negative on the nodata side."""
    collar = item.properties["mosaic:collar"]
    (px, py), (nx, ny) = collar["point"], collar["normal"]
    return (x - px) * nx + (y - py) * ny


def nodata_mask(array: np.ndarray, nodata: float | str) -> np.ndarray:
    return np.isnan(array) if nodata == "nan" else array == nodata


# ------------------------------------------------------------------------------------------- truth


def test_truth_is_continuous_across_the_antimeridian() -> None:
    lat = np.linspace(-89.9, 89.9, 2001)
    assert np.abs(syn.truth(180 - 1e-9, lat) - syn.truth(-180 + 1e-9, lat)).max() < 1e-4
    assert np.abs(syn.truth(180.0, lat) - syn.truth(-180.0, lat)).max() < 1e-6
    # 179.9999 and -179.9999 are at most 22 m apart: the difference is bounded by the gradient
    gap_m = 2e-4 * 111_195 * np.cos(np.radians(lat))
    assert np.all(np.abs(syn.truth(179.9999, lat) - syn.truth(-179.9999, lat)) <= 0.1 * gap_m + 1e-6)


def test_truth_is_continuous_at_the_poles() -> None:
    lon = np.linspace(-180, 180, 721)
    for pole in (90.0, -90.0):
        at_pole = syn.truth(lon, np.full_like(lon, pole))
        assert np.ptp(at_pole) < 1e-6
        near = syn.truth(lon, np.full_like(lon, np.sign(pole) * 89.9999))
        assert np.ptp(near) < 0.1 * 2 * 11.2  # within 11.2 m of the pole
        assert np.abs(near - at_pole[0]).max() < 0.1 * 11.2


def test_truth_range_bands_time_and_texture() -> None:
    rng = np.random.default_rng(0)
    lon = rng.uniform(-180, 180, 200_000)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 200_000)))
    value = syn.truth(lon, lat)
    assert 1000 < value.min() and value.max() < 4000
    assert syn.truth(lon, lat, syn.MAX_BAND).max() < 4000
    np.testing.assert_allclose(syn.truth(lon, lat, 3) - value, 2 * syn.BAND_STEP)
    when = dt.datetime(2024, 1, 11, 23, tzinfo=dt.UTC)
    np.testing.assert_allclose(syn.truth(lon, lat, when=when) - value, 2.0)
    assert syn.time_term(dt.datetime(2024, 1, 11, 23, tzinfo=dt.timezone(dt.timedelta(hours=-2)))) == 2.2
    # texture: the gradient is a few hundredths of a value unit per metre everywhere
    step = 1.0 / 111_195  # 1 m of latitude
    near = np.abs(lat) < 89
    grad_n = (syn.truth(lon, lat + step) - syn.truth(lon, lat - step))[near] / 2
    grad_e = (
        syn.truth(lon + step / np.cos(np.radians(lat)), lat)
        - syn.truth(lon - step / np.cos(np.radians(lat)), lat)
    )[near] / 2
    grad = np.hypot(grad_n, grad_e)
    assert 0.03 < grad.mean() < 0.05
    assert np.percentile(grad, 99) < 0.1


def test_truth_rejects_bad_bands() -> None:
    for band in (0, syn.MAX_BAND + 1, 1.5, True):
        with pytest.raises(InvalidInputError):
            syn.truth(0.0, 0.0, band)


# ------------------------------------------------------------------------------------------- coverage


def test_collection_covers_zones_poles_antimeridian_dates(items: dict[str, pystac.Item]) -> None:
    codes = {item.properties["proj:code"] for item in items.values()}
    assert {"EPSG:32632", "EPSG:32633", "EPSG:32634", "EPSG:3413", "EPSG:3031"} <= codes
    assert {"EPSG:32760", "EPSG:32701"} <= codes
    by_day: dict[dt.date, set[str]] = defaultdict(set)
    for item in items.values():
        assert item.datetime is not None
        by_day[item.datetime.date()].add(item.properties["proj:code"])
    assert len(by_day) >= 5
    assert any(len(zones) >= 3 for zones in by_day.values())  # one day, three zones
    seam_dates = {item.datetime.date() for item in items.values() if item.id.startswith("S32-seam12")}
    assert len(seam_dates) == 3
    # seam scenes reach across 12E and 18E
    for prefix, seam in (("S32-seam12", 12), ("S33-seam12", 12), ("S33-seam18", 18), ("S34-seam18", 18)):
        west, _, east, _ = pick(items, prefix).bbox
        assert west < seam < east
    # three zones along the 12E-18E path
    zones = {item.properties["proj:code"] for item in items.values() if item.id.startswith(("S3",))}
    assert zones == {"EPSG:32632", "EPSG:32633", "EPSG:32634"}


def test_scene_has_mixed_dtypes_resolutions_and_a_multiband_asset(items: dict[str, pystac.Item]) -> None:
    item = pick(items, "S33-mid")
    dtypes = {band["data_type"] for a in item.assets.values() for band in a.extra_fields["raster:bands"]}
    assert {"uint8", "uint16", "int16", "float32"} <= dtypes
    resolutions = {a.extra_fields["raster:bands"][0]["spatial_resolution"] for a in item.assets.values()}
    assert resolutions == {20.0, 40.0, 60.0}
    assert len(item.assets["visual"].extra_fields["raster:bands"]) == 3
    assert item.assets["B02"].extra_fields["proj:shape"] == [768, 768]
    assert item.assets["WVP"].extra_fields["proj:shape"] == [256, 256]
    nodatas = {a.extra_fields["raster:bands"][0]["nodata"] for a in item.assets.values()}
    assert {"nan", -9999, 0} <= nodatas


def test_stac_files_on_disk(demo: tuple[Path, dict[str, pystac.Item]]) -> None:
    root, items = demo
    collection = json.loads((root / "items.json").read_text())
    assert collection["type"] == "FeatureCollection"
    assert sorted(f["id"] for f in collection["features"]) == sorted(items)
    for item_id, item in items.items():
        on_disk = pystac.Item.from_file(str(root / item_id / f"{item_id}.json"))
        assert on_disk.to_dict(include_self_link=False) == item.to_dict(include_self_link=False)
        assert syn.PROJECTION_EXTENSION in on_disk.stac_extensions
        assert syn.RASTER_EXTENSION in on_disk.stac_extensions
        assert on_disk.properties["proj:code"].startswith("EPSG:")
        assert 1 <= on_disk.properties["mosaic:quality"] <= 250
        for name, asset in on_disk.assets.items():
            assert Path(asset.href).is_absolute()
            assert Path(asset.href) == root.resolve() / item_id / f"{name}.tif"


# ------------------------------------------------------------------------------------------- COGs


def test_files_are_cogs_matching_their_items(items: dict[str, pystac.Item]) -> None:
    for item in items.values():
        for name, asset in item.assets.items():
            with rasterio.open(asset.href) as src:
                assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert src.block_shapes[0] == (256, 256)
                # rasterio only reports "tiled" when a tile is narrower than the image
                assert src.profile["tiled"] or src.width <= 256
                assert src.profile["compress"] == "deflate"
                overviews = src.overviews(1)
                assert len(overviews) >= (3 if name == "B02" else 1)
                assert f"EPSG:{src.crs.to_epsg()}" == item.properties["proj:code"]
                assert src.transform == Affine(*asset.extra_fields["proj:transform"])
                assert [src.height, src.width] == asset.extra_fields["proj:shape"]
                bands = asset.extra_fields["raster:bands"]
                assert src.count == len(bands)
                assert src.dtypes[0] == bands[0]["data_type"]
                if bands[0]["nodata"] == "nan":
                    assert np.isnan(src.nodata)
                else:
                    assert src.nodata == bands[0]["nodata"]
                left, bottom, right, top = src.bounds
                assert [left, bottom, right, top] == pytest.approx(item.properties["proj:bbox"])


# ------------------------------------------------------------------------------------------- values

VALUE_CASES = [
    ("S32-seam12", "B02"),
    ("S33-seam18", "B8A"),
    ("S34-seam18", "visual"),
    ("NP", "B02"),
    ("NP", "WVP"),
    ("SP", "AOT"),
    ("AM60", "B02"),
    ("AM01", "WVP"),
    ("N80", "visual"),
]


@pytest.mark.parametrize(("prefix", "asset"), VALUE_CASES)
def test_pixels_are_truth_at_pixel_centres_plus_noise(
    items: dict[str, pystac.Item], prefix: str, asset: str
) -> None:
    item = pick(items, prefix)
    data = read(item, asset)
    x, y = native_centres(item, asset)
    rng = np.random.default_rng(1)
    for index, band_info in enumerate(item.assets[asset].extra_fields["raster:bands"]):
        stored = data[index]
        valid = ~nodata_mask(stored, band_info["nodata"])
        rows, cols = np.nonzero(valid)
        pick_ = rng.choice(rows.size, size=min(5000, rows.size), replace=False)
        rows, cols = rows[pick_], cols[pick_]
        lon, lat = to_lonlat(item, x[rows, cols], y[rows, cols])
        physical = stored[rows, cols] * band_info.get("scale", 1.0) + band_info.get("offset", 0.0)
        expected = syn.truth(lon, lat, DEMO_TRUTH_BANDS[asset][index], when=item.datetime)
        diff = physical - expected
        scale = band_info.get("scale", 1.0)
        rounding = 0.5 * scale if band_info["data_type"].startswith(("uint", "int")) else 1e-3
        assert np.abs(diff).max() <= syn.NOISE_AMPLITUDE + rounding + 1e-9
        assert np.abs(diff).max() > 0.8 * syn.NOISE_AMPLITUDE  # the noise is really there
        assert abs(diff.mean()) < 0.1 + 0.05 * scale
        # the helpers agree with the hand computation
        np.testing.assert_allclose(syn.to_physical(stored[rows, cols], item, asset, index + 1), physical)
        np.testing.assert_allclose(syn.expected_value(item, asset, lon, lat, index + 1), expected)
        assert syn.tolerance(item, asset, index + 1) == pytest.approx(syn.NOISE_AMPLITUDE + rounding)


def test_misregistration_is_visible(items: dict[str, pystac.Item]) -> None:
    item = pick(items, "S33-mid")  # no collar: every pixel valid
    stored = read(item, "B02")[0].astype("float64")
    x, y = native_centres(item, "B02")

    def rmse(dx: float) -> float:
        lon, lat = to_lonlat(item, x + dx, y)
        return float(np.sqrt(np.mean((stored - syn.truth(lon, lat, 1, when=item.datetime)) ** 2)))

    exact, half, one = rmse(0.0), rmse(10.0), rmse(20.0)
    assert exact == pytest.approx(np.sqrt(syn.NOISE_AMPLITUDE**2 / 3 + 1 / 12), rel=0.02)  # noise + rounding
    assert exact < half < one
    assert half > 1.01 * exact and one > 1.05 * exact


def test_quality_asset_holds_the_scene_quality(items: dict[str, pystac.Item]) -> None:
    qualities = set()
    for item in items.values():
        data = read(item, "quality")[0]
        quality = item.properties["mosaic:quality"]
        qualities.add(quality)
        assert set(np.unique(data)) <= {0, quality}
        assert (data == quality).mean() > 0.5
        assert syn.expected_value(item, "quality", 10.0, 45.0) == quality
        assert syn.tolerance(item, "quality") == 0.0
    assert len(qualities) > 10


def test_nodata_lies_exactly_on_the_collar_side(items: dict[str, pystac.Item]) -> None:
    collared = 0
    for item in items.values():
        for asset in ("B02", "B8A", "WVP", "AOT", "visual"):
            data = read(item, asset)
            nodata = item.assets[asset].extra_fields["raster:bands"][0]["nodata"]
            empty = nodata_mask(data, nodata)
            assert (empty == empty[0]).all()  # all bands share the mask
            if item.properties["mosaic:collar"] is None:
                assert not empty.any()
                continue
            x, y = native_centres(item, asset)
            np.testing.assert_array_equal(empty[0], collar_side(item, x, y) < 0)
            assert 0.65 < 1 - empty[0].mean() < 0.92
        collared += item.properties["mosaic:collar"] is not None
    assert collared >= len(items) - 3


# ------------------------------------------------------------------------------------------- geometry


def test_geometry_contains_valid_pixels_and_not_the_collar(items: dict[str, pystac.Item]) -> None:
    for item in items.values():
        geom = shape(item.geometry)
        shapely.prepare(geom)
        data = read(item, "WVP")[0]
        x, y = native_centres(item, "WVP")
        valid = ~np.isnan(data)
        lon, lat = to_lonlat(item, x[valid], y[valid])
        assert shapely.intersects_xy(geom, lon, lat).all(), item.id
        if item.properties["mosaic:collar"] is not None:
            far = collar_side(item, x, y) < -120  # two 60 m pixels inside the collar
            lon, lat = to_lonlat(item, x[far], y[far])
            assert not shapely.intersects_xy(geom, lon, lat).any(), item.id
        _, south, _, north = item.bbox
        assert south == pytest.approx(geom.bounds[1]) and north == pytest.approx(geom.bounds[3])


def test_north_polar_scene_encloses_the_pole(items: dict[str, pystac.Item]) -> None:
    item = pick(items, "NP")
    geom = shape(item.geometry)
    assert geom.bounds[3] == pytest.approx(90.0)
    assert item.bbox[0] == -180 and item.bbox[2] == 180
    assert geom.intersects(shapely.LineString([(-180, 90), (180, 90)]))
    # the pole itself falls in a valid pixel
    a, _, c, _, e, f = item.assets["B02"].extra_fields["proj:transform"]
    row, col = int((0.0 - f) / e), int((0.0 - c) / a)
    assert read(item, "B02")[0, row, col] != 0


def test_south_polar_scene_is_near_but_not_over_the_pole(items: dict[str, pystac.Item]) -> None:
    geom = shape(pick(items, "SP").geometry)
    assert -90 < geom.bounds[1] < -89.8 and geom.bounds[3] < -89.7
    assert geom.bounds[2] - geom.bounds[0] > 40  # wide in longitude so close to the pole


def test_antimeridian_scenes_are_split(items: dict[str, pystac.Item]) -> None:
    for prefix in ("AM60", "AM01"):
        item = pick(items, prefix)
        geom = shape(item.geometry)
        assert isinstance(geom, MultiPolygon) and len(geom.geoms) == 2
        edges = {round(p.bounds[0]) for p in geom.geoms} | {round(p.bounds[2]) for p in geom.geoms}
        assert {-180, 180} <= edges
        west, south, east, north = item.bbox
        assert 179.8 < west < 180 and -180 < east < -179.8 and -17.3 < south < north < -16.8
    assert pick(items, "AM60").datetime == pick(items, "AM01").datetime


# ------------------------------------------------------------------------------------------- determinism


def test_regeneration_is_skipped_when_files_match(demo: tuple[Path, dict[str, pystac.Item]]) -> None:
    root, items = demo
    files = sorted(root.rglob("*.tif"))
    before = {p: p.stat().st_mtime_ns for p in files}
    again = syn.demo_collection(root)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert [i.to_dict() for i in again] == [items[i.id].to_dict() for i in again]


def test_generation_is_deterministic(items: dict[str, pystac.Item], tmp_path: Path) -> None:
    specs = [s for s in syn.demo_specs() if s.id.startswith(("AM60", "NP"))]
    regenerated = syn.make_collection(specs, tmp_path)
    for item in regenerated:
        original = items[item.id]
        for name, asset in item.assets.items():
            assert Path(asset.href).read_bytes() == Path(original.assets[name].href).read_bytes()
        assert item.geometry == original.geometry and item.bbox == original.bbox
        assert item.properties == original.properties


def test_stale_files_are_regenerated(tmp_path: Path) -> None:
    spec = syn.demo_specs(size=96)[0]
    item = syn.make_scene(spec, tmp_path)
    path = Path(item.assets["B02"].href)
    good = path.read_bytes()
    path.write_bytes(b"corrupt")
    syn.make_scene(spec, tmp_path)
    assert path.read_bytes() == good


def test_size_scales_pixels_not_footprints(items: dict[str, pystac.Item], tmp_path: Path) -> None:
    spec = next(s for s in syn.demo_specs(size=96) if s.id.startswith("S33-mid"))
    small = syn.make_scene(spec, tmp_path)
    assert small.assets["B02"].extra_fields["proj:shape"] == [96, 96]
    assert small.assets["WVP"].extra_fields["proj:shape"] == [32, 32]
    # same footprint, within one common grid step (6 x 160 m)
    assert small.properties["proj:bbox"] == pytest.approx(items[spec.id].properties["proj:bbox"], abs=960)


# ------------------------------------------------------------------------------------------- general API


def make_spec(**changes: object) -> syn.SceneSpec:
    fields: dict[str, object] = {
        "id": "x",
        "crs": "EPSG:32633",
        "center_lonlat": (15.0, 45.0),
        "width_m": 3000.0,
        "height_m": 2000.0,
        "datetime": dt.datetime(2024, 3, 1, 10),
        "assets": (syn.AssetSpec("a", "uint16", 30.0), syn.AssetSpec("b", "float32", 45.0)),
    }
    fields.update(changes)
    return syn.SceneSpec(**fields)  # type: ignore[arg-type]


def test_scene_grid_is_aligned_and_shared(tmp_path: Path) -> None:
    spec = make_spec(collar=syn.Collar("east", 0.2, -8.0))
    assert spec.seed is not None and spec.datetime.tzinfo is not None
    item = syn.make_scene(spec, tmp_path)
    left, bottom, right, top = item.properties["proj:bbox"]
    for value in (left, bottom, right, top):
        assert value % 90 == pytest.approx(0) or value % 90 == pytest.approx(90)
    assert (right - left, top - bottom) == (2970.0, 1980.0)  # 33 and 22 steps of 90 m
    assert item.assets["a"].extra_fields["proj:shape"] == [66, 99]
    assert item.assets["b"].extra_fields["proj:shape"] == [44, 66]
    data = read(item, "a")[0]
    assert (data[:, -3:] == 0).all() and (data[:, :20] != 0).all()  # east collar


@pytest.mark.parametrize(
    "make",
    [
        lambda: syn.AssetSpec("a", "complex64", 10.0),
        lambda: syn.AssetSpec("a", "uint8", 0.0),
        lambda: syn.AssetSpec("a/b", "uint8", 10.0),
        lambda: syn.AssetSpec("a", "uint8", 10.0, nodata=300),
        lambda: syn.AssetSpec("a", "uint8", 10.0, bands=0),
        lambda: syn.AssetSpec("a", "uint8", 10.0, scale=0.0),
        lambda: syn.AssetSpec("a", "float32", 10.0, content="quality"),
        lambda: syn.AssetSpec("a", "uint16", 10.0, bands=3, truth_band=7),
        lambda: syn.Collar("north"),
        lambda: syn.Collar("west", 0.95),
        lambda: syn.Collar("west", 0.1, 60.0),
        lambda: make_spec(crs="EPSG:4326"),
        lambda: make_spec(crs="not a crs"),
        lambda: make_spec(id=""),
        lambda: make_spec(center_lonlat=(200.0, 0.0)),
        lambda: make_spec(width_m=-1.0),
        lambda: make_spec(datetime="2024-01-01"),
        lambda: make_spec(assets=()),
        lambda: make_spec(assets=(syn.AssetSpec("a", "uint8", 10.0),) * 2),
        lambda: make_spec(seed=-1),
        lambda: make_spec(width_m=50.0),  # smaller than the 90 m common grid
        lambda: syn.demo_specs(size=10),
    ],
)
def test_invalid_specs_raise(make: object) -> None:
    with pytest.raises(InvalidInputError):
        make()  # type: ignore[operator]


def test_values_that_do_not_fit_the_dtype_raise(tmp_path: Path) -> None:
    spec = make_spec(assets=(syn.AssetSpec("a", "uint8", 30.0),))  # unscaled ~2500 in a uint8
    with pytest.raises(InvalidInputError, match="do not fit uint8"):
        syn.make_scene(spec, tmp_path)


def test_make_collection_rejects_duplicates(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        syn.make_collection([make_spec(), make_spec()], tmp_path)
    with pytest.raises(InvalidInputError):
        syn.make_collection([], tmp_path)


def test_write_raster_makes_a_cog(tmp_path: Path) -> None:
    data = np.arange(600 * 500, dtype="float32").reshape(600, 500)
    path = syn.write_raster(tmp_path / "r.tif", data, "EPSG:3413", Affine(100, 0, -3e5, 0, -100, 2e5), -9999)
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 3413 and src.nodata == -9999 and src.overviews(1) == [2, 4, 8]
        np.testing.assert_array_equal(src.read(1), data)
    with pytest.raises(InvalidInputError):
        syn.write_raster(tmp_path / "bad.tif", np.zeros(5), None, Affine.identity())


def test_bad_files(tmp_path: Path) -> None:
    bad = syn.make_bad_files(tmp_path)
    assert set(bad) == {"not_a_raster", "empty", "no_crs", "no_transform", "truncated"}
    for kind in ("not_a_raster", "empty"):
        with pytest.raises(RasterioIOError):
            rasterio.open(bad[kind])
    with rasterio.open(bad["no_crs"]) as src:
        assert src.crs is None and not src.transform.is_identity
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)
        with pytest.raises(NotGeoreferencedWarning):
            rasterio.open(bad["no_transform"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(bad["no_transform"]) as src:
            assert src.transform.is_identity and src.crs is not None
    with rasterio.open(bad["truncated"]) as src:
        assert src.crs is not None
        with pytest.raises(RasterioIOError):
            src.read(1)
