"""What ``mosaic.load`` returns works with rioxarray, odc-geo and xarray's writers.

The nodata of an unmasked band (integers with a nodata value, floats with NaN) is in ``attrs``
(``nodata`` and ``_FillValue``), never in ``encoding["_FillValue"]``, which rioxarray reads as "these
data were masked to NaN and X is the value they had on disk". Stored scale and offset are CF's
``scale_factor``/``add_offset``. Each rioxarray and odc-geo call, and each writer, is checked on the
demo collection and on the real Landsat 7 subset (uint8, no nodata tag) and DEM (float32).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import rasterio
import rioxarray
import shapely
import xarray as xr
import zarr
from pyproj import Transformer
from rasterio.features import geometry_mask
from shapely.geometry import box, mapping

import mosaic
import real_data
from mosaic import TileIndex
from mosaic.outputs.batch import regrid

SEAM = (11.88, 45.40, 12.12, 45.58)  # the demo's UTM 32/33 seam, with nodata around the scenes
DEMO_BANDS = {"B02": ("uint16", 0), "WVP": ("float32", math.nan), "visual.1": ("uint8", 0)}
REAL_BANDS = {"L7_ETMs": ("data.1", "uint8", 0), "olinda_dem_utm25s": ("data", "float32", math.nan)}
CASES = [f"demo:{name}" for name in DEMO_BANDS] + [f"real:{rid}" for rid in REAL_BANDS]


@pytest.fixture(scope="module")
def demo_ds(demo_index: TileIndex) -> xr.Dataset:
    """A lazy load of the seam: B02 uint16 (nodata 0), WVP float32 (NaN), visual.1 uint8 (scale 20)."""
    return mosaic.load(
        SEAM, "EPSG:32633", "2024-06-01", index=demo_index, resolution=200, bands=list(DEMO_BANDS), chunks=128
    )


@pytest.fixture(scope="module")
def real_arrays() -> dict[str, xr.DataArray]:
    """Lazy loads of the real Landsat 7 band 1 (uint8 without a nodata tag: 0) and the DEM (float32: NaN)."""
    index = TileIndex.from_files(
        [real_data.L7, real_data.DEM], pattern=r"(?P<id>[^/]+)\.tif$", progress=False
    )
    out = {}
    for rid, (band, _, _) in REAL_BANDS.items():
        single = TileIndex.from_records([r for r in index if r.id == rid])
        ds = mosaic.load(
            single.footprints[0].bounds, "EPSG:31985", index=single, resolution=60, bands=band, groupby=None
        )
        out[rid] = ds[band].isel(time=0)
    return out


@pytest.fixture(params=CASES)
def case(request, demo_ds, real_arrays) -> tuple[xr.DataArray, str, float]:
    """(a (y, x) band of a load, its dtype, its nodata)."""
    source, name = request.param.split(":")
    if source == "demo":
        dtype, nodata = DEMO_BANDS[name]
        return demo_ds[name].isel(time=0), dtype, nodata
    _, dtype, nodata = REAL_BANDS[name]
    return real_arrays[name], dtype, nodata


def is_nodata(values: np.ndarray, nodata: float) -> np.ndarray:
    return np.isnan(values) if math.isnan(nodata) else values == nodata


def same(a: float | None, b: float) -> bool:
    return a is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def inner_polygon(da: xr.DataArray):
    """A lon/lat triangle well inside ``da`` (so clipping keeps data and drops data)."""
    x0, y0, x1, y1 = da.rio.bounds()
    w, h = x1 - x0, y1 - y0
    tri = box(x0 + 0.2 * w, y0 + 0.2 * h, x1 - 0.2 * w, y1 - 0.2 * h).convex_hull
    tri = tri.difference(box(x0 + 0.5 * w, y0 + 0.5 * h, x1, y1))  # an L: not a box rioxarray could crop
    to_lonlat = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True).transform
    return _transformed(tri, to_lonlat)


def _transformed(geom, transform):
    """``geom`` with each (x, y) through a pyproj ``transform`` (shapely 2.0 has no ``interleaved=``)."""
    return shapely.transform(geom, lambda xy: np.column_stack(transform(xy[:, 0], xy[:, 1])))


# ----------------------------------------------------------------------------------- the accessors


def test_nodata_is_in_attrs_as_rioxarray_and_odc_geo_read_it(case):
    da, dtype, nodata = case
    assert da.dtype == dtype
    assert "_FillValue" not in da.encoding  # that would say "masked": rio.nodata NaN on an integer band
    assert same(da.attrs["nodata"], nodata) and same(da.attrs["_FillValue"], nodata)
    assert same(da.rio.nodata, nodata) and np.asarray(da.rio.nodata).dtype == dtype
    assert da.rio.encoded_nodata is None
    assert same(da.odc.nodata, nodata)
    values = da.values
    assert 0 < is_nodata(values, nodata).mean() < 0.5  # the checks below see data and nodata


def test_rio_reproject_keeps_dtype_and_nodata(case):
    da, dtype, nodata = case
    out = da.rio.reproject("EPSG:4326")
    assert out.dtype == dtype and same(out.rio.nodata, nodata) and out.rio.encoded_nodata is None
    values, source = out.values, da.values
    empty = is_nodata(values, nodata)
    assert 0 < empty.mean() < 0.6  # the corners of the turned grid are nodata
    assert np.isin(values[~empty], source[~is_nodata(source, nodata)]).all()  # nearest: source values


@pytest.mark.parametrize("form", ["geojson", "shapely"])
def test_rio_clip_to_a_lonlat_geometry(case, form):
    da, dtype, nodata = case
    polygon = inner_polygon(da)
    geometry = mapping(polygon) if form == "geojson" else polygon
    out = da.rio.clip([geometry], crs="EPSG:4326", drop=False)
    assert out.dtype == dtype and same(out.rio.nodata, nodata) and out.rio.encoded_nodata is None
    to_grid = Transformer.from_crs("EPSG:4326", da.rio.crs, always_xy=True).transform
    inside = geometry_mask(
        [_transformed(polygon, to_grid)],
        out_shape=da.shape,
        transform=da.rio.transform(),
        invert=True,
    )
    assert 0.1 < inside.mean() < 0.6
    assert is_nodata(out.values[~inside], nodata).all()
    np.testing.assert_array_equal(out.values[inside], da.values[inside])


def test_rio_to_raster_writes_dtype_nodata_scale_and_pixels(case, tmp_path):
    da, dtype, nodata = case
    path = tmp_path / "band.tif"
    da.rio.to_raster(path)
    with rasterio.open(path) as src:
        assert src.dtypes == (dtype,) and same(src.nodata, nodata)
        assert src.crs == da.rio.crs and src.transform == da.rio.transform()
        assert src.scales == (da.attrs.get("scale_factor", 1.0),) and src.offsets == (0.0,)
        assert not {"nodata", "_FillValue", "scale_factor", "scale"} & set(src.tags())
        np.testing.assert_array_equal(src.read(1), da.values)
    back = rioxarray.open_rasterio(path).squeeze("band", drop=True)
    assert same(back.rio.nodata, nodata) and back.dtype == dtype
    np.testing.assert_array_equal(back.values, da.values)


def test_odc_reproject_keeps_dtype_and_nodata(case):
    da, dtype, nodata = case
    out = da.odc.reproject("EPSG:4326")
    assert out.dtype == dtype
    values, source = out.values, da.values
    empty = is_nodata(values, nodata)
    assert 0 < empty.mean() < 0.6
    assert np.isin(values[~empty], source[~is_nodata(source, nodata)]).all()
    if not math.isnan(nodata):  # odc-geo leaves a float's NaN implicit (no attribute)
        assert same(out.odc.nodata, nodata) and same(out.rio.nodata, nodata)  # both accessors agree


def test_a_count_band_has_no_nodata(demo_index, tmp_path):
    ds = mosaic.load(
        SEAM, "EPSG:32633", "2024-06", index=demo_index, resolution=400, bands="B02", method="count"
    )
    da = ds.B02.isel(time=0)
    assert not {"nodata", "_FillValue"} & set(da.attrs) and "_FillValue" not in da.encoding
    assert da.rio.nodata is None and da.odc.nodata is None
    da.rio.to_raster(tmp_path / "count.tif")
    with rasterio.open(tmp_path / "count.tif") as src:
        assert src.nodata is None
        np.testing.assert_array_equal(src.read(1), da.values)


# ------------------------------------------------------------------------------- writing and reading


def check_round_trip(ds: xr.Dataset, open_: callable, tmp_path) -> None:
    """What a CF writer (Zarr, netCDF) stores reads back: exactly raw, or masked and scaled once."""
    expected = ds.compute()
    with open_(mask_and_scale=False) as raw:
        assert raw.rio.crs == ds.rio.crs
        for name, (dtype, nodata) in DEMO_BANDS.items():
            band = raw[name]
            assert band.dtype == dtype and same(band.rio.nodata, nodata) and same(band.odc.nodata, nodata)
            np.testing.assert_array_equal(band.values, expected[name].values)
    with open_() as decoded:  # CF decoding: nodata to NaN, stored values to physical ones
        for name, (_, nodata) in DEMO_BANDS.items():
            band, stored = decoded[name], expected[name].values
            empty = is_nodata(stored, nodata)
            assert np.isnan(band.values).sum() == empty.sum() > 0 and np.isnan(band.values[empty]).all()
            assert math.isnan(band.rio.nodata) and same(band.rio.encoded_nodata, nodata)
            scale = expected[name].attrs.get("scale_factor", 1.0)
            np.testing.assert_allclose(band.values[~empty], stored[~empty] * scale)  # scaled once
        # and back to a GeoTIFF: the stored values, nodata and scale again (no second scaling)
        decoded["visual.1"].isel(time=0).rio.to_raster(tmp_path / "again.tif")
    with rasterio.open(tmp_path / "again.tif") as src:
        assert src.dtypes == ("uint8",) and src.nodata == 0 and src.scales == (20.0,)
        np.testing.assert_array_equal(src.read(1), expected["visual.1"].isel(time=0).values)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_round_trip(demo_ds, tmp_path, zarr_format):
    assert demo_ds["visual.1"].attrs["scale_factor"] == 20.0 and "scale" not in demo_ds["visual.1"].attrs
    store = tmp_path / "out.zarr"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata", category=UserWarning)
        demo_ds.to_zarr(store, zarr_format=zarr_format)
    group = zarr.open_group(store, mode="r")
    for name, (_, nodata) in DEMO_BANDS.items():
        assert same(group[name].fill_value, nodata)  # a chunk never written reads as nodata

    def open_(**kw):
        return xr.open_zarr(store, decode_coords="all", **kw)

    check_round_trip(demo_ds, open_, tmp_path)


@pytest.mark.parametrize(
    ("engine", "modules"), [("netcdf4", ["netCDF4"]), ("h5netcdf", ["h5netcdf", "h5py"])]
)
def test_netcdf_round_trip(demo_ds, tmp_path, engine, modules):
    for module in modules:
        pytest.importorskip(module, reason=f"the {engine} backend of xarray needs {module}")
    path = tmp_path / "out.nc"
    demo_ds.to_netcdf(path, engine=engine)
    with rasterio.open(f"netcdf:{path}:B02") as src:  # GDAL sees the nodata too
        assert src.nodata == 0

    def open_(**kw):
        return xr.open_dataset(path, engine=engine, decode_coords="all", **kw)

    check_round_trip(demo_ds, open_, tmp_path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_regrid_store_reads_regions_never_written_as_nodata(demo_index, tmp_path, zarr_format):
    index = demo_index.write(tmp_path / "index.parquet")
    args = dict(index=index, resolution=0.002, bands=["B02", "WVP"])
    wide = (11.5, 45.2, 12.5, 45.9)  # wider than the scenes: regions no scene touches are not written
    store = tmp_path / "out.zarr"
    report = regrid(store, wide, "EPSG:4326", "2024-06-01", chunks=64, zarr_format=zarr_format, **args)
    assert report.empty > 0
    group = zarr.open_group(store, mode="r")
    assert group["B02"].fill_value == 0 and math.isnan(group["WVP"].fill_value)
    expected = mosaic.load(wide, "EPSG:4326", "2024-06-01", chunks=64, **args).compute()
    with xr.open_zarr(store, mask_and_scale=False) as raw:
        for name in ("B02", "WVP"):
            np.testing.assert_array_equal(raw[name].values, expected[name].values)
