"""Quality masks before fusion (mosaic.masks): specs, presets, and masked loads against a known field.

The collection: the demo's scenes straddling the 12E seam between UTM 32N and 33N on three dates,
with clouds (:func:`mosaic.synthetic.demo_clouds`) whose pixels hold ``CLOUD_VALUE`` in every truth
band, and two quality bands saying where they are: ``SCL`` (SCL classes, at B8A's resolution, twice
B02's pixel) and ``QA_PIXEL`` (QA_PIXEL bit flags, at B02's resolution).

A masked load is checked against the truth (no cloud value survives, every pixel clear on some date
has data and the field's value), and against blanking: the pixels the mask drops, computed here on
the files with NumPy (the quality pixel holding each data pixel's centre, dilated by a brute-force
disc), set to nodata in copies of the files written with rasterio, and those loaded without a mask,
must give the same arrays.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pystac
import pytest

import mosaic
from masking import CLOUDY, SEAM_BBOX, blanked_index, cloudy_specs, disc
from mosaic import InvalidInputError, InvalidMaskError, TileIndex
from mosaic import synthetic as syn
from mosaic.masks import (
    LANDSAT_C2_QA_DROPPED,
    SENTINEL2_SCL_EXCLUDED,
    AllOf,
    AnyOf,
    Bits,
    Classes,
    Range,
    as_mask,
    dilate,
    landsat_c2_qa,
    masked,
    sentinel2_scl,
)

# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pystac.Item]]:
    """The 12E seam scenes of the demo with clouds (6 scenes: 2 CRSs x 3 dates)."""
    root = tmp_path_factory.mktemp("cloudy")
    return root, syn.make_collection(cloudy_specs(), root)


@pytest.fixture(scope="module")
def cloudy_index(cloudy: tuple[Path, list[pystac.Item]]) -> TileIndex:
    return TileIndex.from_stac(cloudy[1])


def _request(index: TileIndex, crs: str, **kwargs: object) -> dict[str, object]:
    grid: dict[str, object] = (
        {"crs": "EPSG:4326", "resolution": 0.0008}
        if crs == "EPSG:4326"
        else {"crs": crs, "resolution": 80.0}  # B02's own grid in 33N: pasted there, warped from 32N
    )
    return {"index": index, "bands": ["B02"], "groupby": None, "chunks": 96, **grid, **kwargs}


# ----------------------------------------------------------------------------------------- specs


def test_rules_flag_what_they_say() -> None:
    values = np.array([[0, 3, 4], [8, 9, np.nan]], dtype="float32")
    assert Classes("SCL", exclude=[3, 9]).flags(values).tolist() == [
        [False, True, False],
        [False, True, False],
    ]
    # include: everything else is dropped, but no data is not "flagged" (masked() adds it separately)
    assert Classes("SCL", include=[4]).flags(values).tolist() == [[True, True, False], [True, True, False]]
    qa = np.array([syn.QA_CLEAR, syn.QA_CLOUD, 1, 1 << 4], dtype="uint16")
    assert Bits("QA", bits=[3, 4]).flags(qa).tolist() == [False, True, False, True]
    assert Bits("QA", bits=[0]).flags(qa.astype("float32")).tolist() == [False, False, True, False]
    assert Range("AOT", min=1, max=5).flags(np.array([0.5, 1, 5, 7])).tolist() == [True, False, False, True]


def test_masked_combines_rules_and_counts_no_data_as_dropped() -> None:
    scl = np.array([[4, 9, 4], [3, 4, np.nan]], dtype="float32")
    qa = np.array([[syn.QA_CLOUD, syn.QA_CLEAR, syn.QA_CLEAR], [syn.QA_CLOUD, syn.QA_CLEAR, syn.QA_CLEAR]])
    either = Classes("SCL", exclude=[9]) | Bits("QA", bits=[3])
    both = Classes("SCL", exclude=[3, 9]) & Bits("QA", bits=[3])
    bands = {"SCL": scl, "QA": qa.astype("float32")}
    assert masked(either, bands).tolist() == [[True, True, False], [True, False, True]]
    # SCL's no data drops (1, 2) for its own rule; & keeps it, since QA says it is clear
    assert masked(both, bands).tolist() == [[False, False, False], [True, False, False]]
    assert masked(both, {**bands, "QA": qa}).tolist() == masked(both, bands).tolist()  # integers as well
    with pytest.raises(InvalidMaskError, match="QA"):
        masked(either, {"SCL": scl})


def test_dilation_is_a_disc_that_does_not_grow_the_no_data_edge() -> None:
    rng = np.random.default_rng(7)
    for radius in range(5):
        flags = rng.random((23, 31)) > 0.97
        assert np.array_equal(dilate(flags, radius), disc(flags, radius)), radius
    values = np.full((9, 9), 4.0, dtype="float32")
    values[4, 4] = 9
    values[:, 0] = np.nan  # no data: dropped, but not dilated
    out = masked(Classes("SCL", exclude=[9], dilate=2), {"SCL": values})
    assert out[:, 0].all() and not out[:, 1].any()
    assert out.sum() == 9 + 13  # the no-data column and a disc of radius 2


def test_specs_are_frozen_picklable_hashable_and_round_trip_as_text() -> None:
    spec = (Classes("SCL", exclude=[9, 8, 9], dilate=3) | Bits("QA_PIXEL", bits=[4, 3])) & Range(
        "AOT", max=0.5
    )
    assert isinstance(spec, AllOf) and isinstance(spec.parts[0], AnyOf)
    assert spec.bands == ("SCL", "QA_PIXEL", "AOT")
    assert spec.dilation("SCL") == 3 and spec.dilation("AOT") == 0
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert hash(spec) == hash(as_mask(repr(spec)))
    assert as_mask(repr(spec)) == spec
    assert as_mask(spec) is spec and as_mask(None) is None
    with pytest.raises(AttributeError):
        spec.parts = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Classes("SCL", exclude=[9]).band = "other"  # type: ignore[misc]


def test_presets_follow_the_product_guides() -> None:
    assert SENTINEL2_SCL_EXCLUDED == (0, 1, 3, 8, 9, 10)
    assert sentinel2_scl() == Classes("SCL", exclude=[0, 1, 3, 8, 9, 10])
    assert sentinel2_scl("scl", snow=True, dilate=2) == Classes(
        "scl", exclude=[0, 1, 3, 8, 9, 10, 11], dilate=2
    )
    assert LANDSAT_C2_QA_DROPPED == (0, 1, 2, 3, 4)
    assert landsat_c2_qa() == Bits("qa_pixel", bits=[0, 1, 2, 3, 4])
    assert landsat_c2_qa(snow=True).bits == (0, 1, 2, 3, 4, 5)
    assert as_mask("sentinel2-scl") == sentinel2_scl()
    assert as_mask("landsat-c2-qa") == landsat_c2_qa()
    assert as_mask("sentinel2_scl(band='scl', dilate=3)") == sentinel2_scl("scl", dilate=3)
    # the synthetic QA_PIXEL values: a cloud has bit 3, a clear pixel none of the dropped bits
    flags = landsat_c2_qa().flags(np.array([syn.QA_CLEAR, syn.QA_CLOUD, 1]))
    assert flags.tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Classes("SCL"), "exclude"),
        (lambda: Classes("SCL", exclude=[3], include=[4]), "one of the two"),
        (lambda: Classes("SCL", exclude=["cloud"]), "whole numbers"),
        (lambda: Classes("", exclude=[3]), "asset name"),
        (lambda: Bits("QA", bits=[64]), "0..63"),
        (lambda: Bits("QA", bits=[]), "bits"),
        (lambda: Range("AOT"), "min=, max="),
        (lambda: Range("AOT", min=5, max=1), "above"),
        (lambda: Range("AOT", min=math.nan), "finite"),
        (lambda: Classes("SCL", exclude=[3], dilate=-1), "dilate"),
        (lambda: Classes("SCL", exclude=[3], dilate=1.5), "dilate"),
        (lambda: Classes("SCL", exclude=[3]) | 3, "only with other mask specs"),
        (lambda: as_mask(3), "mask must be"),
        (lambda: as_mask("cloudy-preset"), "not a preset"),
        (lambda: as_mask("Classes('SCL', exclude=[3]) +"), "not a preset"),
        (lambda: as_mask("__import__('os').system('true')"), "not a preset"),
        (lambda: as_mask("eval('1')"), "unknown call eval()"),
        (lambda: as_mask("Classes('SCL', exclude=[3], colour=1)"), "colour"),
        (lambda: as_mask("Classes('SCL', exclude=[3]) | 4"), "not a preset"),
    ],
)
def test_bad_specs_are_one_line_errors(make: object, words: str) -> None:
    with pytest.raises(InvalidMaskError) as info:
        make()  # type: ignore[operator]
    message = str(info.value)
    assert words in message and "\n" not in message
    assert isinstance(info.value, InvalidInputError)


# ----------------------------------------------------------------------------------------- planning


def test_plan_adds_one_mask_read_per_band_of_the_spec(cloudy_index: TileIndex) -> None:
    plain = mosaic.plan(SEAM_BBOX, **_request(cloudy_index, "EPSG:4326"))
    one = mosaic.plan(SEAM_BBOX, **_request(cloudy_index, "EPSG:4326", mask="sentinel2-scl"))
    two = mosaic.plan(
        SEAM_BBOX,
        **_request(cloudy_index, "EPSG:4326", mask=Classes("SCL", exclude=[9]) | Bits("QA_PIXEL", bits=[3])),
    )
    assert plain.summary()["mask_reads"] == 0 and plain.summary()["mask"] is None
    reads = one.summary()["reads"]
    assert reads == plain.summary()["reads"] > 0
    assert one.summary()["mask_reads"] == reads and two.summary()["mask_reads"] == 2 * reads
    assert one.summary()["estimated_read_bytes"] > plain.summary()["estimated_read_bytes"]
    read = one.tasks[0].reads[0]
    (scl,) = read.masks
    assert (scl.scene, scl.asset, scl.overview, scl.factor) == (read.scene, "SCL", -1, 1)
    assert [m.asset for m in two.tasks[0].reads[0].masks] == ["SCL", "QA_PIXEL"]
    # records stay frozen and picklable; the mask is part of the plan's identity
    assert pickle.loads(pickle.dumps(one)).tasks == one.tasks
    from dask.base import tokenize

    assert tokenize(one) != tokenize(plain) and tokenize(one) == tokenize(
        mosaic.plan(SEAM_BBOX, **_request(cloudy_index, "EPSG:4326", mask="sentinel2-scl"))
    )


def test_a_mask_band_the_scenes_lack_is_a_one_line_error(cloudy_index: TileIndex) -> None:
    with pytest.raises(InvalidMaskError, match=r"scene S32-seam12-\d+ has no asset 'CLOUDS'") as info:
        mosaic.plan(SEAM_BBOX, **_request(cloudy_index, "EPSG:4326", mask=Classes("CLOUDS", exclude=[9])))
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidMaskError, match="has 1 band"):
        mosaic.plan(SEAM_BBOX, **_request(cloudy_index, "EPSG:4326", mask=Classes("SCL.2", exclude=[9])))
    with pytest.raises(InvalidInputError, match="mask_fraction=True needs mask="):
        mosaic.plan(SEAM_BBOX, **_request(cloudy_index, "EPSG:4326", mask_fraction=True))


# ----------------------------------------------------------------------------------------- loading


def _lonlat(ds: object) -> tuple[np.ndarray, np.ndarray]:
    from pyproj import Transformer

    x, y = np.meshgrid(ds.x.values, ds.y.values)  # type: ignore[attr-defined]
    crs = ds.spatial_ref.attrs["crs_wkt"]  # type: ignore[attr-defined]
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)


def _cloud_distance(items: list[pystac.Item], lon: np.ndarray, lat: np.ndarray) -> dict[str, np.ndarray]:
    """Per date, each pixel's distance (m) past the edge of that date's nearest cloud (< 0: inside)."""
    out: dict[str, np.ndarray] = {}
    for item in items:
        day = str(item.datetime.date())  # type: ignore[union-attr]
        gap = out.get(day, np.full(lon.shape, np.inf))
        for cloud in item.properties["mosaic:clouds"]:
            (clon, clat), radius = cloud["center_lonlat"], cloud["radius_m"]
            dx = (lon - clon) * 111_320.0 * np.cos(np.radians(clat))
            dy = (lat - clat) * 110_540.0
            gap = np.minimum(gap, np.hypot(dx, dy) - radius)
        out[day] = gap
    return out


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32633"])
def test_masked_first_is_the_truth_wherever_a_date_is_clear(
    cloudy: tuple[Path, list[pystac.Item]], cloudy_index: TileIndex, crs: str
) -> None:
    items = cloudy[1]
    request = _request(cloudy_index, crs, chunks=None)
    plain = mosaic.load(SEAM_BBOX, **request).B02.values[0].astype(float)
    daily = mosaic.load(SEAM_BBOX, **{**request, "groupby": "solar_day"}).B02
    out = mosaic.load(SEAM_BBOX, mask="sentinel2-scl", **request)
    values = out.B02.values[0].astype(float)
    lon, lat = _lonlat(out)
    gaps = _cloud_distance(items, lon, lat)
    margin = 3 * 160.0  # SCL pixels (160 m) around a cloud's edge: either side may hold the pixel
    # (a pixel within an SCL pixel of a scene's edge may take an SCL pixel of no data: dropped)
    seen = {str(t)[:10]: daily.sel(time=t).values > 0 for t in daily.time.values}
    covered = {day: ~disc(~data, 3) for day, data in seen.items()}
    assert sorted(covered) == sorted(gaps)
    clear_some_date = np.any([covered[day] & (gaps[day] > margin) for day in gaps], axis=0)
    cloudy_every_date = np.all([~seen[day] | (gaps[day] < -margin) for day in gaps], axis=0)
    scenes = plain > 0
    assert (plain >= CLOUDY).sum() > 1000  # the unmasked composite shows clouds
    assert not (values >= CLOUDY).any()  # no cloud value survives the mask
    assert (values[scenes & clear_some_date] > 0).all()  # clear on some date: data
    assert (values[scenes & cloudy_every_date] == 0).all() and (scenes & cloudy_every_date).sum() > 100
    # the data kept is the field's value on one of the three dates (noise, quantum, nearest pick)
    dates = sorted({item.datetime for item in items})  # type: ignore[type-var]
    errors = np.min([np.abs(values - syn.truth(lon, lat, 1, when=d)) for d in dates], axis=0)
    plain_errors = np.min([np.abs(plain - syn.truth(lon, lat, 1, when=d)) for d in dates], axis=0)
    kept = values > 0
    clear_plain = scenes & (plain < CLOUDY)
    assert errors[kept].max() <= plain_errors[clear_plain].max() < 10
    assert kept.sum() > clear_plain.sum()  # later dates filled what the first date's clouds hid


@pytest.mark.parametrize(
    ("crs", "method", "dilation"),
    [
        ("EPSG:4326", "first", 0),
        ("EPSG:32633", "first", 0),
        ("EPSG:4326", "first", 2),
        ("EPSG:4326", "median", 1),
    ],
)
def test_masked_scl_equals_blanking_the_files(
    cloudy: tuple[Path, list[pystac.Item]],
    cloudy_index: TileIndex,
    tmp_path: Path,
    crs: str,
    method: str,
    dilation: int,
) -> None:
    """SCL at 160 m masks B02 at 80 m, across the UTM seam, as blanked copies of the B02 files load."""
    blanked = blanked_index(
        cloudy[1], tmp_path, "B02", "SCL", lambda v: np.isin(v, SENTINEL2_SCL_EXCLUDED), dilation
    )
    request = _request(cloudy_index, crs, chunks=None, method=method)
    out = mosaic.load(SEAM_BBOX, mask=sentinel2_scl(dilate=dilation), **request).B02.values
    expected = mosaic.load(SEAM_BBOX, **{**request, "index": blanked}).B02.values
    assert np.array_equal(out, expected, equal_nan=True)
    gone = (out == 0) | np.isnan(out)  # nodata: 0 (uint16 first) or NaN (median's float)
    assert gone.sum() > 100 and (out > 0).sum() > 1000 and not (out >= CLOUDY).any()


def test_masked_qa_bits_equal_blanking_a_coarser_band(
    cloudy: tuple[Path, list[pystac.Item]], cloudy_index: TileIndex, tmp_path: Path
) -> None:
    """Bits on QA_PIXEL (80 m) mask B8A (160 m, int16), with a dilation, in lazy chunks across the seam."""
    spec = landsat_c2_qa("QA_PIXEL", dilate=1)
    blanked = blanked_index(cloudy[1], tmp_path, "B8A", "QA_PIXEL", spec.flags, 1)
    request = {**_request(cloudy_index, "EPSG:4326"), "bands": ["B8A"], "chunks": 64}
    out = mosaic.load(SEAM_BBOX, mask=spec, **request).B8A.values
    expected = mosaic.load(SEAM_BBOX, **{**request, "index": blanked}).B8A.values
    assert np.array_equal(out, expected)
    assert (out == 0).sum() > 100


def test_a_coarse_load_reads_overviews_and_full_resolution_masks(
    cloudy: tuple[Path, list[pystac.Item]],
) -> None:
    """Data at an overview, the quality band at full resolution, picked at each coarse pixel's centre."""
    index = TileIndex.from_stac(cloudy[1])
    request = {"index": index, "bands": ["B02"], "groupby": None, "crs": "EPSG:32633", "resolution": 320.0}
    the_plan = mosaic.plan(SEAM_BBOX, mask="sentinel2-scl", **request)
    reads = [r for t in the_plan.tasks for r in t.reads]
    assert min(r.factor for r in reads) > 1  # decimated reads: GDAL picks the overview
    assert {(m.overview, m.factor) for r in reads for m in r.masks} == {(-1, 1)}
    out = mosaic.load(SEAM_BBOX, mask="sentinel2-scl", chunks=None, **request).B02.values
    plain = mosaic.load(SEAM_BBOX, chunks=None, **request).B02.values
    assert (plain >= CLOUDY).sum() > 20 and not (out >= CLOUDY).any()
    assert ((out > 0) & (out == plain)).sum() > 0.5 * (plain > 0).sum()  # most pixels are clear


def test_mask_fraction_is_the_share_of_scenes_dropped(cloudy_index: TileIndex) -> None:
    request = _request(cloudy_index, "EPSG:4326", chunks=None, method="count")
    seen = mosaic.load(SEAM_BBOX, **request).B02.values[0].astype(float)
    out = mosaic.load(SEAM_BBOX, mask="sentinel2-scl", mask_fraction=True, **request)
    kept = out.B02.values[0].astype(float)
    fraction = out.mask_fraction.values[0]
    assert out.mask_fraction.dtype == np.float32 and out.mask_fraction.dims == ("time", "y", "x")
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(seen > 0, (seen - kept) / seen, np.nan)
    np.testing.assert_allclose(fraction, expected, rtol=0, atol=1e-6)
    assert np.isnan(fraction).any() and (fraction == 1).any() and (fraction == 0).any()
    assert ((fraction > 0) & (fraction < 1)).any()


def test_a_mask_dropping_everything_gives_nodata_not_an_error(cloudy_index: TileIndex) -> None:
    for method in ("first", "median", "mean"):
        out = mosaic.load(
            SEAM_BBOX,
            mask=Classes("SCL", include=[200]),
            **_request(cloudy_index, "EPSG:4326", method=method),
        )
        nodata = out.B02.attrs["nodata"]  # 0 for first (uint16), NaN for median's and mean's floats
        assert (out.B02.values == nodata).all() or np.isnan(out.B02.values).all(), method


def test_regrid_and_the_cli_take_a_mask(
    cloudy_index: TileIndex, cloudy: tuple[Path, list[pystac.Item]], tmp_path: Path
) -> None:
    import xarray as xr

    request = _request(cloudy_index, "EPSG:4326")
    expected = mosaic.load(SEAM_BBOX, mask="sentinel2-scl", **request).B02.values  # the same chunks
    store = tmp_path / "masked.zarr"
    request = {k: v for k, v in request.items() if k != "chunks"}
    mosaic.regrid(store, SEAM_BBOX, mask="sentinel2-scl", chunks=96, **request)  # type: ignore[arg-type]
    with xr.open_zarr(store, mask_and_scale=False) as written:
        assert np.array_equal(written.B02.values, expected)
        assert "sentinel2" not in written.attrs["regrid_request"]  # recorded as the spec it stands for
        assert json.loads(written.attrs["regrid_request"])["mask"] == repr(sentinel2_scl())
    index = tmp_path / "cloudy.parquet"
    cloudy_index.write(index)
    from click.testing import CliRunner

    from mosaic.cli import cli

    base = ["plan", "--index", str(index), "--bbox", "11.88,45.4,12.12,45.58", "--crs", "EPSG:4326"]
    base += ["--resolution", "0.0008", "--bands", "B02", "--groupby", "none"]
    runner = CliRunner()
    done = runner.invoke(cli, [*base, "--mask", "sentinel2-scl", "--json"], prog_name="mosaic")
    assert done.exit_code == 0, done.output
    facts = json.loads(done.output)
    assert facts["mask_reads"] == facts["reads"] > 0 and facts["mask"] == repr(sentinel2_scl())
    text = runner.invoke(cli, [*base, "--mask", "Bits('QA_PIXEL', bits=[3], dilate=1)"], prog_name="mosaic")
    assert text.exit_code == 0, text.output
    assert "mask:        Bits('QA_PIXEL', bits=[3], dilate=1);" in text.output
    bad = runner.invoke(cli, [*base, "--mask", "Bits('QA_PIXEL')"], prog_name="mosaic")
    assert bad.exit_code == 2 and "give the bits that drop a pixel" in bad.output


def test_a_synthetic_scene_without_clouds_is_unchanged(tmp_path: Path) -> None:
    """Clouds are an option: the demo's scenes and their fingerprints are as before without it."""
    plain = syn.demo_specs(64)
    assert all(not s.clouds for s in plain)
    assert [a.name for a in syn.demo_specs(64, clouds=True)[0].assets][-2:] == ["SCL", "QA_PIXEL"]
    assert "clouds" not in repr(plain[0])
    item = syn.make_scene(plain[0], tmp_path)
    assert "mosaic:clouds" not in item.properties and "SCL" not in item.assets
