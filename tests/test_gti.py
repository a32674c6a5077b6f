"""GDAL GTI export and import: GDAL shows the mosaic mosaic.load makes; GTI files index back."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner

import mosaic
from agreement import agreement, assert_same_mosaic
from mosaic import GDALVersionError, IndexFormatError, InvalidInputError, SourceError, TileIndex
from mosaic.cli import cli
from mosaic.io.paths import credentials_in, gdal_path
from mosaic.outputs import gti as gti_module
from mosaic.outputs.gti import export_gti, gti_tiles
from real_data import DEM, L7, fill_zero_scenes
from servers import RangeServer, clear_gdal_http_cache

SEAM12 = (11.88, 45.40, 12.12, 45.58)
FIJI = (179.9, -17.15, -179.9, -16.9)  # across the antimeridian: UTM 60S and 1S scenes
PATTERN = r"(?P<id>[\w-]+)/(?P<asset>\w+)\.tif$"


# ------------------------------------------------------------------------------------------ helpers


def read_gti(path: Path, band: int = 1, **open_options: str) -> tuple[np.ndarray, rasterio.Affine, str]:
    with rasterio.open(path, **open_options) as ds:
        assert ds.driver == "GTI"
        return ds.read(band), ds.transform, ds.crs.to_wkt()


def load(index: TileIndex, bbox, crs, res, band, **kw) -> tuple[np.ndarray, object]:
    ds = mosaic.load(bbox, crs, index=index, resolution=res, bands=[band], groupby=None, chunks=512, **kw)
    return ds[band].isel(time=0).values, ds.odc.geobox


# ------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("https://example.com/a/b.tif", "/vsicurl/https://example.com/a/b.tif"),
        ("http://example.com/b.tif?x=1", "/vsicurl/http://example.com/b.tif?x=1"),
        ("s3://bucket/key/b.tif", "/vsis3/bucket/key/b.tif"),
        ("S3://bucket/b.tif", "/vsis3/bucket/b.tif"),
        ("gs://bucket/b.tif", "/vsigs/bucket/b.tif"),
        ("az://container/b.tif", "/vsiaz/container/b.tif"),
        ("abfs://container@acct.dfs.core.windows.net/d/b.tif", "/vsiaz/container/d/b.tif"),
        ("/vsis3/bucket/b.tif", "/vsis3/bucket/b.tif"),
        ("/vsizip//data/a.zip/b.tif", "/vsizip//data/a.zip/b.tif"),
        ("vrt:///data/b.tif?bands=1", "vrt:///data/b.tif?bands=1"),
        ('NETCDF:"/data/f.nc":sst', 'NETCDF:"/data/f.nc":sst'),
        ("file:///data/with%20space/b.tif", "/data/with space/b.tif"),
        ("file://localhost/data/b.tif", "/data/b.tif"),
        ("/data/./x/../b.tif", "/data/b.tif"),
    ],
)
def test_gdal_path(href, expected):
    assert gdal_path(href) == expected


def test_gdal_path_makes_local_paths_absolute_and_rejects_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gdal_path("scenes/b.tif") == str(tmp_path / "scenes" / "b.tif")
    assert gdal_path(Path("b.tif")) == str(tmp_path / "b.tif")
    assert gdal_path("~/b.tif") == os.path.join(os.path.expanduser("~"), "b.tif")
    for bad in ("", "  ", "mailto://x", "file://otherhost/b.tif"):
        with pytest.raises(InvalidInputError):
            gdal_path(bad)


def test_credentials_in():
    assert credentials_in("https://user:pw@example.com/b.tif") is not None
    assert "X-Amz-Signature" in credentials_in("https://b.s3.amazonaws.com/k.tif?X-Amz-Signature=ab&x=1")
    assert "sig" in credentials_in("/vsicurl/https://a.blob.core.windows.net/c/b.tif?sv=1&sig=abc")
    for clean in ("https://example.com/b.tif?x=1", "s3://bucket/b.tif", "/data/b.tif", "/vsis3/b/k.tif"):
        assert credentials_in(clean) is None


# -------------------------------------------------------------------------------- export vs load


@pytest.mark.parametrize(
    ("bbox", "bbox_crs", "crs", "res", "band"),
    [
        (SEAM12, "EPSG:4326", "EPSG:4326", 0.0002, "B02"),  # UTM 32N + 33N into lon/lat
        (SEAM12, "EPSG:4326", "EPSG:32633", 20, "B02"),  # 32N warped, 33N pasted
        (FIJI, "EPSG:4326", "EPSG:4326", 0.0002, "B8A"),  # one grid across the antimeridian
        ((-9000, -9000, 9000, 9000), "EPSG:3995", "EPSG:3995", 20, "B02"),  # EPSG:3413 scene over the pole
    ],
    ids=["seam-4326", "seam-utm33", "antimeridian-4326", "north-pole-3995"],
)
def test_gdal_shows_the_mosaic_load_makes(demo_index, tmp_path, caplog, bbox, bbox_crs, crs, res, band):
    (path,) = export_gti(
        demo_index, tmp_path / "m.gti.gpkg", crs=crs, resolution=res, bbox=bbox, bbox_crs=bbox_crs, bands=band
    )
    assert path == tmp_path / "m.gti.gpkg"
    gdal, transform, _ = read_gti(path)
    ours, gbox = load(demo_index, bbox, crs, res, band, bbox_crs=bbox_crs)
    assert transform == gbox.affine and gdal.shape == ours.shape  # the very grid of mosaic.load
    assert gdal.dtype == ours.dtype
    assert_same_mosaic(gdal, ours, 0)
    assert "out of sync" not in caplog.text  # every feature contains its tile, as GDAL expects


def test_float_and_multiband_assets(demo_index, tmp_path):
    paths = export_gti(
        demo_index,
        tmp_path / "seam",
        crs="EPSG:4326",
        resolution=0.0004,
        bbox=SEAM12,
        time="2024-06-01",
        bands=["AOT", "visual"],
        xml=True,
    )
    names = [p.name for p in paths]
    assert names == ["seam.AOT.gti.gpkg", "seam.AOT.gti", "seam.visual.gti.gpkg", "seam.visual.gti"]
    with rasterio.open(paths[2]) as ds:
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3 and ds.nodata == 0
        assert ds.scales == (20.0,) * 3  # the assets' raster:bands scale, for physical values in QGIS
    with rasterio.open(paths[0]) as ds:
        assert ds.dtypes == ("float32",) and math.isnan(ds.nodata)  # -9999 in the files, NaN as ours
    aot, _, _ = read_gti(paths[0])
    ours, _ = load(demo_index, SEAM12, "EPSG:4326", 0.0004, "AOT", time="2024-06-01")
    assert_same_mosaic(aot, ours, math.nan)
    visual2, _, _ = read_gti(paths[3], band=2)  # through the .gti XML wrapper
    ours, _ = load(demo_index, SEAM12, "EPSG:4326", 0.0004, "visual.2", time="2024-06-01")
    assert_same_mosaic(visual2, ours, 0)
    assert np.array_equal(read_gti(paths[2], band=2)[0], visual2)


def test_gdal_warp_mode_writes_plain_paths(demo_index, tmp_path, caplog):
    (path,) = export_gti(
        demo_index,
        tmp_path / "p.gti.gpkg",
        crs="EPSG:4326",
        resolution=0.0002,
        bbox=SEAM12,
        bands="B02",
        warp="gdal",
    )
    frame = pyogrio.read_dataframe(path, read_geometry=False)
    assert (frame.location == frame.href).all() and frame.href.str.startswith("/").all()
    gdal, _, _ = read_gti(path)
    ours, _ = load(demo_index, SEAM12, "EPSG:4326", 0.0002, "B02")
    stats = agreement(gdal, ours, 0)
    # GDAL's own warp (0.125 px approximate transformer) picks another neighbour for ~4% of pixels
    assert 0.9 < stats["identical"] < 0.995 and stats["mask_diff_off_edges"] == 0
    assert "out of sync" not in caplog.text
    with pytest.raises(InvalidInputError, match="antimeridian"):
        export_gti(
            demo_index, tmp_path / "am.gti.gpkg", crs="EPSG:4326", resolution=0.0002, bbox=FIJI, warp="gdal"
        )


# ------------------------------------------------------------------------- nodata: what is missing
# GDAL's GTI draws a tile through its nodata or its mask band (alpha), else opaquely over its whole
# grid; mosaic.load counts a pixel missing where it equals the index row's nodata (the file's tag when
# the row has none) or the file's mask says so, and where a float file holds NaN. A source without
# nodata is data everywhere on its grid: its 0 fill paints over earlier scenes, as load paints it.


def _snapped(files: list[Path], res: float = 28.5) -> list[Path]:
    """The scenes moved (< 1 px) onto multiples of ``res``: a ``res`` mosaic is then on their own grid."""
    for path in files:
        with rasterio.open(path, "r+") as ds:
            t = ds.transform
            ds.transform = Affine(res, 0, round(t.c / res) * res, 0, -res, round(t.f / res) * res)
    return files


@pytest.fixture(scope="module")
def fill_zero(tmp_path_factory) -> dict[str, list[Path]]:
    """The real fill-0 scenes (no nodata tag; b later than a), as written and on a 28.5 m grid."""
    root = tmp_path_factory.mktemp("fill0")
    return {"own": fill_zero_scenes(root / "own"), "grid": _snapped(fill_zero_scenes(root / "grid"))}


def _with_nodata(files: list[Path], nodata: float | None) -> TileIndex:
    """The files' index; with ``nodata``, every row declares it (the files themselves do not)."""
    index = TileIndex.from_files([str(f) for f in files], progress=False)
    if nodata is None:
        return index
    return TileIndex.from_records([dataclasses.replace(r, nodata=nodata) for r in index])


def _read_in_windows(path: Path, size: int = 40) -> np.ndarray:
    """The GTI read window by window: GDAL draws a window one tile covers alone without compositing."""
    with rasterio.open(path) as ds:
        out = np.empty(ds.shape, ds.dtypes[0])
        for row in range(0, ds.height, size):
            for col in range(0, ds.width, size):
                window = rasterio.windows.Window(col, row, size, size).intersection(
                    rasterio.windows.Window(0, 0, ds.width, ds.height)
                )
                out[row : row + window.height, col : col + window.width] = ds.read(1, window=window)
    return out


def _lonlat_bbox(index: TileIndex) -> tuple[float, ...]:
    return tuple(shapely.union_all(list(index.footprints)).bounds)


def _export_and_load(index, tmp_path, crs, res, method, band="data", *, read=1, **kw):
    bbox = _lonlat_bbox(index)
    name = f"{method}-{crs.replace(':', '')}-{kw.get('warp', 'exact')}-{len(list(tmp_path.iterdir()))}"
    paths = export_gti(
        index, tmp_path / f"{name}.gti.gpkg", crs=crs, resolution=res, bbox=bbox, method=method, **kw
    )
    ours, gbox = load(index, bbox, crs, res, band, method=method)
    gdal, transform, _ = read_gti(paths[-1], band=read)
    assert transform == gbox.affine and gdal.shape == ours.shape and gdal.dtype == ours.dtype
    return gdal, ours, paths[0]


CASES = {  # the mosaic CRS and resolution, the scenes, warp: GDAL opens on-grid tiles itself, others not
    "own-grid": ("EPSG:31985", 28.5, "grid", "exact"),
    "utm-32725": ("EPSG:32725", 30.0, "own", "exact"),
    "lonlat-4326": ("EPSG:4326", 0.0003, "own", "exact"),
    "utm-32725-gdal-warp": ("EPSG:32725", 30.0, "own", "gdal"),  # plain paths: GDAL warps them itself
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", ["first", "last"])
def test_gdal_sees_through_exactly_what_load_sees_through(fill_zero, tmp_path, case, method):
    """Declared or not, fill 0 is missing in GDAL exactly where load finds it missing, both methods."""
    crs, res, scenes, warp = CASES[case]
    drawn = {}
    for nodata in (None, 0.0):
        index = _with_nodata(fill_zero[scenes], nodata)
        gdal, ours, path = _export_and_load(index, tmp_path, crs, res, method, warp=warp)
        assert np.array_equal(gdal != 0, ours != 0)  # not one pixel shown by one and missing in the other
        assert np.array_equal(_read_in_windows(path), gdal)
        same = float((gdal == ours).mean())
        if crs == "EPSG:4326":  # nearest-neighbour ties within the 0.01 px warp tolerance: 11 of 70,000
            assert same >= 0.9995, same
        else:
            assert same == 1.0, same
        frame = pyogrio.read_dataframe(path, read_geometry=False)
        plain = frame.location == frame.href
        if case == "own-grid":  # GDAL opens a file itself unless it must be told the row's nodata
            assert plain.all() if nodata is None else not plain.any()
        elif warp == "gdal":
            assert plain.all() if nodata is None else frame.location.str.contains("<NoDataValue>0<").all()
        else:  # warped: a source without nodata gets an alpha band, one with a nodata keeps it
            has_alpha = frame.location.str.contains("<DstAlphaBand>").all()
            assert has_alpha if nodata is None else not has_alpha
        drawn[nodata] = ours
    # the case has teeth: declaring the fill as nodata uncovers thousands of earlier/later pixels
    assert ((drawn[0.0] != 0) & (drawn[None] == 0)).sum() > 5000


def test_scenes_with_and_without_nodata_mix_as_in_load(fill_zero, tmp_path):
    """Scene a declares 0 in the index, b declares nothing: 0 is missing in a only, through the .gti too."""
    a, b = sorted(
        TileIndex.from_files([str(f) for f in fill_zero["own"]], progress=False), key=lambda r: r.id
    )
    index = TileIndex.from_records([dataclasses.replace(a, nodata=0.0), b])
    for method in ("first", "last"):
        gdal, ours, path = _export_and_load(index, tmp_path, "EPSG:32725", 30.0, method, xml=True)
        assert np.array_equal(gdal, ours)
        wrapper = path.with_name(path.name[: -len(".gpkg")])
        assert np.array_equal(read_gti(wrapper)[0], ours)  # the .gti XML says the same NODATA
        with rasterio.open(path) as ds, rasterio.open(wrapper) as xml:
            assert ds.nodata == xml.nodata == 0


def _rgb_scenes(scenes: list[Path], folder: Path) -> list[Path]:
    """The fill-0 scenes with three real bands each (a: Landsat bands 1-3, b: 4-6), fill where theirs is."""
    folder.mkdir()
    paths = []
    with rasterio.open(L7) as src:
        for scene, bands in zip(scenes, ([1, 2, 3], [4, 5, 6]), strict=True):
            with rasterio.open(scene) as one:
                fill, profile, tags = one.read(1) == 0, one.profile, one.tags()
                window = rasterio.windows.from_bounds(*one.bounds, transform=src.transform).round_offsets()
            data = src.read(bands, window=window.round_lengths())
            data[:, fill] = 0
            path = folder / scene.name
            with rasterio.open(path, "w", **(profile | {"count": 3})) as dst:
                dst.write(data)
                dst.update_tags(**tags)
            paths.append(path)
    return paths


def test_multiband_fill_is_drawn_as_load_draws_it(fill_zero, tmp_path):
    """Every band of a warped three-band asset without nodata: the alpha band follows the grid, not 0."""
    index = _with_nodata(_rgb_scenes(fill_zero["own"], tmp_path / "rgb"), None)
    for band in (1, 3):
        gdal, ours, _ = _export_and_load(
            index, tmp_path, "EPSG:32725", 30.0, "last", f"data.{band}", read=band
        )
        assert np.array_equal(gdal, ours)


def _dem_scenes(folder: Path, nodata: float | None) -> list[Path]:
    """Two overlapping cuts of the real float DEM; the later one has a NaN void (and ``nodata`` fill)."""
    folder.mkdir()
    paths = []
    with rasterio.open(DEM) as src:
        for name, (r0, r1), (c0, c1), when in (
            ("a", (0, 80), (0, 80), "2001:07:01 12:30:00"),
            ("b", (30, 111), (30, 111), "2001:07:17 12:30:00"),
        ):
            data = src.read(1, window=((r0, r1), (c0, c1)))
            if name == "b":
                data[10:40, 5:35] = np.nan  # a void over scene a
                if nodata is not None:
                    data[:, -10:] = nodata
            path = folder / f"dem_{name}.tif"
            profile = {"driver": "GTiff", "width": c1 - c0, "height": r1 - r0, "count": 1, "dtype": "float32"}
            profile |= {
                "crs": src.crs,
                "transform": src.transform * Affine.translation(c0, r0),
                "nodata": nodata,
            }
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data, 1)
                dst.update_tags(TIFFTAG_DATETIME=when)
            paths.append(path)
    return paths


@pytest.mark.parametrize("nodata", [None, -9999.0], ids=["no-tag", "tag-9999"])
@pytest.mark.parametrize("warp", ["exact", "gdal"])
def test_float_nan_voids_are_missing_in_gdal_too(tmp_path, nodata, warp):
    """load treats NaN as missing in float files: GDAL must not paint a later scene's NaN void on top."""
    index = _with_nodata(_dem_scenes(tmp_path / "dem", nodata), None)
    gdal, ours, _ = _export_and_load(index, tmp_path, "EPSG:32725", 90.0, "last", warp=warp)
    assert np.isnan(ours).mean() < 0.5 and not np.isnan(ours[60:80, 40:60]).any()
    assert np.array_equal(gdal, ours, equal_nan=True)


def test_exported_nodata_reads_back(fill_zero, tmp_path):
    """The index row's nodata travels in src_nodata, so the GTI indexes back as the index it came from."""
    index = _with_nodata(fill_zero["own"], 0.0)
    (path,) = export_gti(index, tmp_path / "n.gti.gpkg", crs="EPSG:4326", resolution=0.0003)
    frame = pyogrio.read_dataframe(path, read_geometry=False)
    assert (frame.src_nodata == "0.0").all()
    back = TileIndex.read(path)
    assert sorted(r.nodata for r in back) == [0.0, 0.0]  # though the files have no nodata tag
    bbox = _lonlat_bbox(index)
    assert np.array_equal(
        load(back, bbox, "EPSG:32725", 30, "data")[0], load(index, bbox, "EPSG:32725", 30, "data")[0]
    )
    (plain,) = export_gti(
        _with_nodata(fill_zero["own"], None), tmp_path / "p.gti.gpkg", crs="EPSG:4326", resolution=0.0003
    )
    assert [r.nodata for r in TileIndex.read(plain)] == [None, None]


def test_remote_scenes_are_read_for_their_nodata_and_drawn_as_load_draws_them(fill_zero, tmp_path):
    """Over HTTP: the export reads the files' headers where it must, and GDAL draws the GTI as load."""
    folder = fill_zero["grid"][0].parent
    clear_gdal_http_cache()
    try:
        with RangeServer(folder) as server:
            urls = [server.url(f.name) for f in fill_zero["grid"]]
            for nodata, crs, res in ((None, "EPSG:32725", 30.0), (0.0, "EPSG:31985", 28.5)):
                index = _with_nodata(urls, nodata)  # warped without nodata / on the grid with it
                gdal, ours, path = _export_and_load(index, tmp_path, crs, res, "last")
                assert np.array_equal(gdal, ours)
                locations = pyogrio.read_dataframe(path, read_geometry=False).location
                assert locations.str.contains("/vsicurl/http").all()
                assert locations.str.startswith("<VRTDataset").all()  # an alpha band / the row's nodata
    finally:
        clear_gdal_http_cache()


def test_a_file_whose_nodata_is_unknown_and_unreadable_is_named(fill_zero, tmp_path):
    """A warped tile's source nodata is the file's when the row has none: an unreadable file is an error."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    files = [Path(shutil.copy(f, folder / f.name)) for f in fill_zero["grid"]]
    undeclared, declared = _with_nodata(files, None), _with_nodata(files, 0.0)
    files[0].write_bytes(b"not a GeoTIFF any more")
    with pytest.raises(SourceError, match=r"L7_a\.tif.*nodata"):
        export_gti(undeclared, tmp_path / "u.gti.gpkg", crs="EPSG:32725", resolution=30)
    # on its own grid, a tile whose row gives the nodata needs nothing from the file: a VRT says it
    (path,) = export_gti(declared, tmp_path / "d.gti.gpkg", crs="EPSG:31985", resolution=28.5)
    location = pyogrio.read_dataframe(path, read_geometry=False).set_index("id").location["L7_a"]
    assert location.startswith("<VRTDataset") and "<NoDataValue>0</NoDataValue>" in location


# ------------------------------------------------------------------------------ order, time, metadata


def test_overlaps_are_won_as_mosaic_load_first_and_last_pick(demo_index, tmp_path):
    """Three dates of the seam scenes overlap; later dates have wider collars (nodata on the west)."""
    first, last = "2024-06-01", "2024-06-21"
    for method, winner, loser in (("first", first, last), ("last", last, first)):
        # (within a date, the two seam scenes overlap as well: the method orders them too)
        per_date = {
            d: load(demo_index, SEAM12, "EPSG:4326", 0.0004, "B02", time=d, method=method)[0]
            for d in (first, last)
        }
        (path,) = export_gti(
            demo_index,
            tmp_path / f"{method}.gti.gpkg",
            crs="EPSG:4326",
            resolution=0.0004,
            bbox=SEAM12,
            time="2024-06",
            bands="B02",
            method=method,
        )
        frame = pyogrio.read_dataframe(path, read_geometry=False).sort_values("priority")
        assert len(frame) == 6 and frame.priority.is_unique
        assert str(frame.iloc[-1].datetime.date()) == winner  # highest priority: drawn last, on top
        gdal, _, _ = read_gti(path)
        ours, _ = load(demo_index, SEAM12, "EPSG:4326", 0.0004, "B02", time="2024-06", method=method)
        assert_same_mosaic(gdal, ours, 0)
        won, lost = per_date[winner] != 0, per_date[loser] != 0
        assert (gdal[won] == per_date[winner][won]).mean() >= 0.995  # the winner shows where it has data
        assert (gdal[won & lost] != per_date[loser][won & lost]).mean() > 0.5  # not the loser (+4 in time)
    collar = lost & ~won  # where the last date has nodata (its wider collar) but the first has data
    assert collar.sum() > 1000 and (gdal[collar] != 0).all()  # earlier dates show through it


def test_time_slice_is_a_gti_filter(demo_index, tmp_path):
    (path,) = export_gti(
        demo_index,
        tmp_path / "t.gti.gpkg",
        crs="EPSG:32633",
        resolution=40,
        bbox=SEAM12,
        time="2024-06",
        bands="B02",
    )
    gdal, _, _ = read_gti(path, FILTER="datetime >= '2024-06-11' AND datetime < '2024-06-12'")
    ours, _ = load(demo_index, SEAM12, "EPSG:32633", 40, "B02", time="2024-06-11")
    assert_same_mosaic(gdal, ours, 0)
    everything, _, _ = read_gti(path)
    assert (everything != gdal).sum() > 1000  # the filter did select


def test_metadata_sizes_the_mosaic_without_opening_a_tile(demo_collection, tmp_path):
    root, _ = demo_collection
    for scene in ("S32-seam12-20240601", "S33-seam12-20240601"):
        (tmp_path / scene).mkdir()
        shutil.copy(root / scene / "B02.tif", tmp_path / scene / "B02.tif")
    index = TileIndex.from_files(str(tmp_path / "*" / "B02.tif"), pattern=PATTERN, progress=False)
    (path,) = export_gti(index, tmp_path / "m.gti.gpkg", crs="EPSG:32632", resolution=20)  # bbox: the scenes
    meta = pyogrio.read_info(path)["layer_metadata"]
    assert meta["SRS"] == "EPSG:32632" and meta["RESX"] == meta["RESY"] == "20.0"
    assert meta["DATA_TYPE"] == "UInt16" and meta["NODATA"] == "0" and meta["BAND_COUNT"] == "1"
    assert (meta["LOCATION_FIELD"], meta["SORT_FIELD"], meta["SORT_FIELD_ASC"]) == (
        "location",
        "priority",
        "YES",
    )
    with rasterio.open(path) as ds:
        shape, transform = ds.shape, ds.transform
    for scene in ("S32-seam12-20240601", "S33-seam12-20240601"):
        (tmp_path / scene / "B02.tif").rename(tmp_path / scene / "gone.tif")
    with rasterio.open(path) as ds:  # opens and reports the grid though no tile can be opened
        assert ds.shape == shape and ds.transform == transform and ds.crs.to_epsg() == 32632
        assert ds.dtypes == ("uint16",) and ds.nodata == 0
        x0, y0, x1, y1 = ds.bounds
    for fp in index.footprints:  # the default extent covers every scene
        fx0, fy0, fx1, fy1 = mosaic.index.geom.lonlat_to_crs(fp, "EPSG:32632").bounds
        assert x0 - 1e-3 <= fx0 and y0 - 1e-3 <= fy0 and fx1 <= x1 + 1e-3 and fy1 <= y1 + 1e-3


# ------------------------------------------------------------------------------------------- import


def test_exported_gti_reads_back_as_the_same_index(demo_index, tmp_path):
    (path,) = export_gti(
        demo_index, tmp_path / "r.gti.gpkg", crs="EPSG:4326", resolution=0.0004, bbox=SEAM12, bands="B02"
    )
    back = TileIndex.read(path)
    original = {(r.id, r.asset): r for r in demo_index.query(SEAM12) if r.asset == "B02"}
    assert {(r.id, r.asset) for r in back} == set(original)
    for r in back:
        o = original[(r.id, r.asset)]
        assert (r.href, r.crs, r.transform, r.shape, r.datetime, r.dtype, r.nodata) == (
            o.href,
            o.crs,
            o.transform,
            o.shape,
            o.datetime,
            o.dtype,
            o.nodata,
        )
    a, _ = load(back, SEAM12, "EPSG:4326", 0.0004, "B02")
    b, _ = load(demo_index, SEAM12, "EPSG:4326", 0.0004, "B02")
    assert np.array_equal(a, b)
    xml_path = export_gti(
        back, tmp_path / "x.gti.gpkg", crs="EPSG:4326", resolution=0.0004, bbox=SEAM12, xml=True
    )[1]
    assert len(TileIndex.read(xml_path)) == len(back)  # the .gti XML wrapper reads back too


@pytest.fixture(scope="module")
def gdaltindex_bin():
    if shutil.which("gdaltindex") is None or shutil.which("gdalwarp") is None:
        pytest.fail(
            "gdaltindex/gdalwarp missing: `make test` installs Debian's gdal-bin (run `make gdal-tools`)"
        )
    return shutil.which("gdaltindex")


@pytest.mark.gdal_cli
def test_gdaltindex_output_reads_back_and_loads_as_the_scenes(demo_index, gdaltindex_bin, tmp_path):
    rows = sorted(
        (r for r in demo_index.query(SEAM12, "2024-06") if r.asset == "B02"), key=lambda r: (r.datetime, r.id)
    )
    files = [r.href for r in rows]
    out = tmp_path / "tindex.gpkg"
    subprocess.run(
        [
            gdaltindex_bin,
            "-f",
            "GPKG",
            "-write_absolute_path",
            "-t_srs",
            "EPSG:4326",
            "-src_srs_name",
            "src_srs",
            str(out),
            *files,
        ],
        check=True,
        capture_output=True,
    )
    tiles = gti_tiles(out)
    assert [t.crs for t in tiles] == [r.crs for r in rows]  # from gdaltindex's -src_srs_name field
    imported = TileIndex.read(out)
    from_files = TileIndex.from_files(files, pattern=PATTERN, progress=False)
    assert len(imported) == len(from_files) == len(rows)
    key = lambda r: (r.id, r.asset)  # noqa: E731
    for a, b in zip(sorted(imported, key=key), sorted(from_files, key=key), strict=True):
        assert (a.id, a.asset, a.href, a.crs, a.transform, a.shape, a.datetime) == (
            b.id,
            b.asset,
            b.href,
            b.crs,
            b.transform,
            b.shape,
            b.datetime,
        )  # ids from the <scene>/<band>.tif folders, times from the TIFF tags
    ours, gbox = load(imported, SEAM12, "EPSG:4326", 0.0002, "B02")
    assert np.array_equal(ours, load(from_files, SEAM12, "EPSG:4326", 0.0002, "B02")[0])
    by_path = mosaic.load(
        SEAM12, "EPSG:4326", index=str(out), resolution=0.0002, bands="B02", groupby=None, chunks=512
    )
    assert np.array_equal(by_path.B02.isel(time=0).values, ours)  # the path of a GTI works as index=
    # and against the scenes themselves: gdalwarp (exact transform), first scene drawn last (on top)
    b = gbox.boundingbox
    ref_path = tmp_path / "ref.tif"
    subprocess.run(
        [
            "gdalwarp",
            "-q",
            "-t_srs",
            "EPSG:4326",
            "-te",
            *map(str, (b.left, b.bottom, b.right, b.top)),
            "-ts",
            str(gbox.shape[1]),
            str(gbox.shape[0]),
            "-r",
            "near",
            "-et",
            "0",
            "-dstnodata",
            "0",
            *reversed(files),
            str(ref_path),
        ],
        check=True,
    )
    with rasterio.open(ref_path) as src:
        assert_same_mosaic(src.read(1), ours, 0)


# ------------------------------------------------------------------------------------------- errors


def test_no_gti_driver_is_a_clear_error(demo_index, tmp_path, monkeypatch):
    monkeypatch.setattr(gti_module, "_gdal_has_gti", lambda: False)  # the one stand-in: GDAL has GTI here
    with pytest.raises(GDALVersionError) as info:
        export_gti(demo_index, tmp_path / "m.gti.gpkg", crs="EPSG:4326", resolution=0.001, bbox=SEAM12)
    message = str(info.value)
    assert rasterio.__gdal_version__ in message and "3.9" in message and "GTI" in message
    assert not (tmp_path / "m.gti.gpkg").exists()


def test_export_rejects_what_a_gti_cannot_express(demo_index, tmp_path):
    args = dict(crs="EPSG:4326", resolution=0.001, bbox=SEAM12)
    with pytest.raises(InvalidInputError, match="'first' and 'last'"):
        export_gti(demo_index, tmp_path / "m.gti.gpkg", method="mean", **args)
    with pytest.raises(InvalidInputError, match="ask for 'visual'"):
        export_gti(demo_index, tmp_path / "m.gti.gpkg", bands="visual.2", **args)
    with pytest.raises(mosaic.NoDataError):
        export_gti(demo_index, tmp_path / "m.gti.gpkg", time="2023", **args)
    row = next(r for r in demo_index.query(SEAM12) if r.asset == "B02")
    secret = TileIndex.from_records(
        [
            mosaic.SceneAsset(
                **{
                    **{f: getattr(row, f) for f in row.__dataclass_fields__},
                    "href": "https://u:pw@example.com/B02.tif",
                }
            )
        ]
    )
    with pytest.raises(InvalidInputError, match="password") as info:
        export_gti(secret, tmp_path / "s.gti.gpkg", **args)
    assert "pw@" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_import_names_the_file_and_the_problem(demo_collection, tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        TileIndex.read(tmp_path / "nope.gti.gpkg")
    text = tmp_path / "junk.gpkg"
    text.write_text("not a GeoPackage")
    with pytest.raises(IndexFormatError, match=r"junk\.gpkg: not a GTI"):
        TileIndex.read(text)
    raster = demo_collection[0] / "S33-mid-20240601" / "B02.tif"
    with pytest.raises(IndexFormatError, match=r"B02\.tif: not a GTI"):
        TileIndex.from_gti(raster)
    import geopandas as gpd
    from shapely.geometry import box

    no_location = tmp_path / "plain.gpkg"
    pyogrio.write_dataframe(
        gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(0, 0, 1, 1)], crs=4326), no_location
    )
    with pytest.raises(IndexFormatError, match=r"plain\.gpkg: layer 'plain' has no 'location' field"):
        TileIndex.read(no_location)
    bad_xml = tmp_path / "bad.gti"
    bad_xml.write_text("<GDALTileIndexDataset><IndexLayer>x</IndexLayer></GDALTileIndexDataset>")
    with pytest.raises(IndexFormatError, match=r"bad\.gti: GTI XML without"):
        TileIndex.read(bad_xml)


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_gti_export(demo_index, tmp_path):
    index = demo_index.write(tmp_path / "index.parquet")
    runner = CliRunner()
    args = ["gti", "export", "--index", str(index), "-o", str(tmp_path / "cli.gti.gpkg"), "--crs", "4326"]
    args += ["--resolution", "0.0004", "--bbox", "11.88,45.40,12.12,45.58", "--bands", "B02,B8A", "--xml"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    written = [tmp_path / n for n in ("cli.B02.gti.gpkg", "cli.B02.gti", "cli.B8A.gti.gpkg", "cli.B8A.gti")]
    assert result.output.splitlines() == [f"wrote {p}" for p in written]
    with rasterio.open(written[2]) as ds:
        assert ds.dtypes == ("int16",) and ds.shape == (450, 600)
    result = runner.invoke(cli, [*args, "--method", "mean"])
    assert result.exit_code == 2 and "'mean' is not one of 'first', 'last'" in result.output
    nope = ["--index", str(tmp_path / "nope.parquet"), "-o", "x", "--crs", "4326", "--resolution", "1"]
    result = runner.invoke(cli, ["gti", "export", *nope])
    assert result.exit_code == 1 and "error: " in result.output and "nope.parquet" in result.output


def test_native_anchor_exports_the_scenes_own_grid(fill_zero, tmp_path):
    """The scenes as written (origin off 28.5 m multiples by half a pixel): anchor native keeps their grid."""
    index = _with_nodata(fill_zero["own"], 0.0)
    bbox = _lonlat_bbox(index)
    paths = export_gti(index, tmp_path / "native.gti.gpkg", crs="EPSG:31985", bbox=bbox, anchor="native")
    gdal, transform, _ = read_gti(paths[0])
    ours = mosaic.load(
        bbox, "EPSG:31985", index=index, groupby=None, bands="data", anchor="native"
    )  # the same request through load: the same grid, the same pixels
    assert transform == ours.odc.geobox.affine and np.array_equal(gdal, ours.data.values[0])
    with rasterio.open(fill_zero["own"][0]) as src:  # on the scene's own grid: whole-pixel offsets
        col, row = ~transform * (src.transform.c, src.transform.f)
    assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
    frame = pyogrio.read_dataframe(paths[0], read_geometry=False)
    assert not frame.location.str.contains("VRTWarpedDataset").any()  # copied by GDAL, never warped


@pytest.mark.gdal_cli
def test_gti_import_takes_a_source_nodata_and_traces_footprints_with_it(fill_zero, gdaltindex_bin, tmp_path):
    """A gdaltindex of real fill-0 files: nodata=0 at import makes their footprints the swaths."""
    tindex = tmp_path / "fill0.gpkg"
    subprocess.run([gdaltindex_bin, "-f", "GPKG", str(tindex), *map(str, fill_zero["own"])], check=True)
    plain = TileIndex.from_gti(tindex, pattern=r"(?P<id>L7_\w)\.tif$")
    given = TileIndex.from_gti(tindex, pattern=r"(?P<id>L7_\w)\.tif$", nodata={"data": 0})
    assert {r.nodata for r in plain} == {None} and {r.nodata for r in given} == {0.0}
    for whole, swath in zip(plain.footprints, given.footprints, strict=True):
        assert 0.6 < swath.area / whole.area < 0.8  # the tilted swath, not the grid (72% of it)
