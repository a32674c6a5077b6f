"""Inputs that would hurt: guards on the grid's size and units, the CRS's area, the index file, every
argument, and authentication failures classified whatever GDAL's wording.

Each test makes the real request (the demo collection, real files, the real CLI in this process, a
real S3 server) and checks the one-line error or the warning a user gets instead of a traceback, a
terabyte allocation, a silently doubled count, or a retried "transient" refusal.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from affine import Affine

import mosaic
from mosaic import (
    AuthenticationError,
    CRSAreaWarning,
    DuplicateRowsWarning,
    GridSizeError,
    IndexFormatError,
    MosaicError,
    OutputError,
    TileIndex,
)
from mosaic.cli import main
from mosaic.io.limits import is_auth_failure, is_transient
from mosaic.planning import windows as windows_module
from servers import clear_gdal_http_cache

SEAM = (11.88, 45.40, 12.12, 45.58)
EUROPE = (-10.0, 35.0, 30.0, 70.0)
SMALL = dict(resolution=0.001, bands="B02", time="2024-06-01")  # 240 x 180 px of the seam


@pytest.fixture(scope="module")
def index_file(tmp_path_factory: pytest.TempPathFactory, demo_index: TileIndex) -> Path:
    """The demo index, saved."""
    return demo_index.write(tmp_path_factory.mktemp("guards") / "index.parquet")


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """Run the ``mosaic`` command in this process; its exit code and stderr (an escaping exception fails)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_one_error_line(code: int, err: str) -> str:
    """Exit 1 with one ``error:`` line that is not a bug report; or click's usage error (exit 2)."""
    assert "Traceback" not in err and "unexpected" not in err, err
    if code == 2:
        assert "Error: " in err and "Usage:" in err, err
        return err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


# ================================================================================ the size guard


def test_a_resolution_in_the_wrong_units_is_refused_naming_the_size_and_the_slip(index_file, tmp_path):
    # degrees given to a CRS in metres: 0.2 mm pixels; today the planner dies allocating 1.1 TiB
    with pytest.raises(GridSizeError) as info:
        mosaic.plan(SEAM, "EPSG:32632", index=index_file, resolution=0.0002)
    text = str(info.value)
    assert "resolution 0.0002 is in metres for EPSG:32632 (WGS 84 / UTM zone 32N)" in text
    assert "did you mean degrees? 0.0002 degrees is about 22.3 m" in text
    assert "100,000 times finer" in text and " pixels (1e16; " in text and "PiB per band" in text
    assert isinstance(info.value, mosaic.InvalidInputError)
    for call in (mosaic.load, mosaic.regrid):  # every way in
        args = (tmp_path / "slip.zarr",) if call is mosaic.regrid else ()
        with pytest.raises(GridSizeError, match="did you mean degrees"):
            call(*args, SEAM, "EPSG:32632", index=index_file, resolution=0.0002)
    assert not (tmp_path / "slip.zarr").exists()  # refused before the store is created
    with pytest.raises(GridSizeError, match="did you mean degrees"):
        mosaic.export_gti(
            index_file, tmp_path / "slip.gti.gpkg", crs="EPSG:32632", resolution=0.0002, bbox=SEAM
        )


def test_a_grid_above_max_pixels_is_refused_unless_asked_for(index_file, monkeypatch):
    with pytest.raises(GridSizeError) as info:  # 875,000 x 1,000,000 px: lazily 3.2 TiB a band
        mosaic.plan(EUROPE, "EPSG:4326", "2024-06", index=index_file, resolution=0.00004, bands="B02")
    text = str(info.value)
    assert "875,000 x 1,000,000 pixels (8.8e11; 1.6 TiB per band and time step as uint16)" in text
    assert "max_pixels=1e11" in text and "degrees" in text
    # asked for: planned, and the work follows the chunks the scenes touch, not the 1e12-pixel grid
    built, lattices = [], []
    boxes = windows_module.chunk_boxes
    compute = windows_module.WindowFinder._compute
    monkeypatch.setattr(windows_module, "chunk_boxes", lambda *a: built.append(len(a[2])) or boxes(*a))
    monkeypatch.setattr(
        windows_module.WindowFinder,
        "_compute",
        lambda self, tr, flat: lattices.append(flat.size) or compute(self, tr, flat),
    )
    plan = mosaic.plan(
        EUROPE, "EPSG:4326", "2024-06", index=index_file, resolution=0.00004, bands="B02", max_pixels=1e12
    )
    grid = plan.chunk_grid[0] * plan.chunk_grid[1]
    touched = {(r.scene, r.asset, t.iy, t.ix) for t in plan.tasks for r in t.reads}
    assert plan.geobox.shape == (875_000, 1_000_000) and grid == 428 * 489
    assert 0 < len(touched) <= sum(built) <= 9 * len(touched)  # a ring of one chunk around each scene
    assert sum(lattices) <= sum(built)
    with pytest.raises(GridSizeError, match="more than max_pixels=1e11"):
        mosaic.plan(EUROPE, "EPSG:4326", "2024-06", index=index_file, resolution=0.0001, bands="B02")
    assert mosaic.plan(EUROPE, "EPSG:4326", "2024-06", index=index_file, resolution=0.0001, max_pixels=None)


def test_the_resolution_check_is_lifted_only_by_max_pixels_none(index_file, demo_index):
    scene = next(r for r in demo_index if r.crs == "EPSG:32632" and r.asset == "B02")
    x0, y0 = scene.bounds[0] + 2000.0, scene.bounds[1] + 2000.0
    tiny = (x0, y0, x0 + 0.2, y0 + 0.2)  # 20 cm square: 1,000 x 1,000 pixels of 0.2 mm
    common = dict(index=index_file, resolution=0.0002, bbox_crs="EPSG:32632", bands="B02")
    with pytest.raises(GridSizeError, match="did you mean degrees"):
        mosaic.plan(tiny, "EPSG:32632", **common)
    with pytest.raises(GridSizeError, match="did you mean degrees"):
        mosaic.plan(tiny, "EPSG:32632", **common, max_pixels=1e13)  # a larger limit is not enough
    plan = mosaic.plan(tiny, "EPSG:32632", **common, max_pixels=None)
    assert plan.geobox.shape == (1000, 1000) and plan.tasks


def test_the_default_resolution_of_scenes_in_degrees_is_converted_for_a_grid_in_metres(tmp_path):
    # a lon/lat scene of 0.0001 degree pixels (11 m): the default UTM grid was 0.0001 m before
    path = tmp_path / "lonlat.tif"
    profile = dict(driver="GTiff", width=100, height=100, count=1, dtype="uint16", crs="EPSG:4326")
    transform = Affine(0.0001, 0, 11.95, 0, -0.0001, 45.5)
    with rasterio.open(path, "w", **profile, transform=transform, nodata=0) as dst:
        dst.write(np.arange(1, 10_001, dtype="uint16").reshape(1, 100, 100))
    index = TileIndex.from_files([str(path)], progress=False)
    plan = mosaic.plan((11.95, 45.49, 11.96, 45.5), "EPSG:32632", index=index)
    assert plan.geobox.resolution.x == pytest.approx(0.0001 * 111_320)
    on_lonlat = mosaic.plan((11.95, 45.49, 11.96, 45.5), "EPSG:4326", index=index)
    assert on_lonlat.geobox.resolution.x == pytest.approx(0.0001)


def test_the_cli_refuses_before_writing(index_file, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    for args in (
        ("--bbox", ",".join(map(str, SEAM)), "--crs", "EPSG:32632", "--resolution", "0.0002"),
        ("--bbox", "-10,35,30,70", "--crs", "EPSG:4326", "--resolution", "0.00004"),  # 8.8e11 px
        # a million by 670,000 pixels of 20 m: 159,414 chunks that regrid started writing, silently
        ("--bbox", "-10,30,30,70", "--crs", "EPSG:3035", "--resolution", "4.5"),
    ):
        code, err = run_cli(capsys, "regrid", "--index", index_file, *args, "--bands", "B02", "-o", out)
        line = assert_one_error_line(code, err)
        assert "pixels (" in line and ("did you mean degrees" in line or "max_pixels" in line), line
        assert not out.exists()
    code, err = run_cli(
        capsys,
        "plan",
        "--index",
        index_file,
        "--bbox",
        "-10,35,30,70",
        "--crs",
        "EPSG:4326",
        "--resolution",
        "0.0001",
        "--time",
        "2024-06",
        "--max-pixels",
        "2e11",
    )
    assert code == 0, err
    code, err = run_cli(
        capsys,
        "plan",
        "--index",
        index_file,
        "--bbox",
        "-10,35,30,70",
        "--crs",
        "EPSG:4326",
        "--resolution",
        "0.0001",
        "--max-pixels",
        "1e10",
    )
    assert "more than max_pixels=1e10" in assert_one_error_line(code, err)


# ============================================================================= the CRS's area of use


@pytest.mark.parametrize(
    ("bbox", "crs", "warns"),
    [
        ((140.0, -35.0, 150.0, -30.0), "EPSG:32632", True),  # UTM 32N for a box in Australia
        (EUROPE, "EPSG:32632", True),  # 16 degrees past the zone
        (SEAM, "EPSG:32632", False),  # across the seam into 33N: common, and fine
        ((5.9, 47.3, 15.0, 55.0), "EPSG:25832", False),  # Germany in ETRS89 / UTM 32N
        ((179.85, -17.12, -179.85, -16.95), "EPSG:3832", False),  # across 180, in a CRS made for it
        ((179.85, -17.12, -179.85, -16.95), "EPSG:4326", False),  # the world
    ],
)
def test_a_crs_far_from_the_request_warns(index_file, bbox, crs, warns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mosaic.plan(
            bbox, crs, index=index_file, resolution=1000 if crs != "EPSG:4326" else 0.01, on_empty="warn"
        )
    area = [w for w in caught if issubclass(w.category, CRSAreaWarning)]
    assert len(area) == int(warns), [str(w.message) for w in caught]
    if warns:
        assert crs in str(area[0].message) and "area of use" in str(area[0].message)


def test_load_and_export_gti_warn_too(index_file, tmp_path):
    australia = (140.0, -35.0, 150.0, -30.0)
    with pytest.warns(CRSAreaWarning, match="UTM zone 32N"), pytest.raises(mosaic.NoDataError):
        mosaic.load(australia, "EPSG:32632", index=index_file, resolution=1000)
    with pytest.warns(CRSAreaWarning), pytest.raises(mosaic.NoDataError):
        mosaic.export_gti(
            index_file, tmp_path / "x.gti.gpkg", crs="EPSG:32632", resolution=1000, bbox=australia
        )


# ================================================================================== the index file


def _bad_index_files(folder: Path, good: Path) -> dict[str, Path]:
    """Files that are not tile indexes, each as users make them."""
    folder.mkdir(exist_ok=True)
    data = good.read_bytes()
    files = {
        "truncated": (folder / "truncated.parquet", data[: len(data) // 2]),
        "empty": (folder / "empty.parquet", b""),
        "text": (folder / "text.parquet", b"id,href\nx,y.tif\n"),
        "collection json": (
            folder / "collection.json",
            json.dumps({"type": "Collection", "id": "c"}).encode(),
        ),
        "json of numbers": (folder / "numbers.json", b"[1, 2, 3]"),
        "broken json": (folder / "broken.json", b'{"type": "Feature", '),
        "empty json list": (folder / "nothing.json", b"[]"),
    }
    out = {}
    for name, (path, content) in files.items():
        path.write_bytes(content)
        out[name] = path
    (folder / "folder.parquet").mkdir(exist_ok=True)
    out["folder named .parquet"] = folder / "folder.parquet"
    out["folder"] = folder
    out["missing"] = folder / "missing.parquet"
    parts = folder / "partitioned"  # a partitioned index whose files were cut short by a copy
    TileIndex.read(good).write(parts, partition_by="utm_zone")
    for part in parts.rglob("*.parquet"):
        part.write_bytes(part.read_bytes()[:200])
    out["partitioned, files truncated"] = parts
    foreign = folder / "foreign.parquet"  # a GeoParquet of something else
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_parquet(foreign)
    out["foreign geoparquet"] = foreign
    return out


@pytest.fixture(scope="module")
def bad_indexes(tmp_path_factory, index_file) -> dict[str, Path]:
    return _bad_index_files(tmp_path_factory.mktemp("bad") / "bad", index_file)


BAD = [
    "truncated",
    "empty",
    "text",
    "collection json",
    "json of numbers",
    "broken json",
    "empty json list",
    "folder named .parquet",
    "folder",
    "partitioned, files truncated",
    "missing",
    "foreign geoparquet",
]


@pytest.mark.parametrize("kind", BAD)
def test_every_way_into_a_bad_index_names_the_file(
    bad_indexes, demo_collection, tmp_path, monkeypatch, capsys, kind
):
    path = bad_indexes[kind]
    name = str(path)
    calls = {
        "plan": lambda: mosaic.plan(SEAM, "EPSG:4326", index=path, **SMALL),
        "load": lambda: mosaic.load(SEAM, "EPSG:4326", index=str(path), **SMALL),
        "regrid": lambda: mosaic.regrid(tmp_path / "o.zarr", SEAM, "EPSG:4326", index=path, **SMALL),
        "export_gti": lambda: mosaic.export_gti(
            path, tmp_path / "o.gti.gpkg", crs="EPSG:4326", resolution=0.001
        ),
        "$MOSAIC_INDEX": lambda: mosaic.plan(SEAM, "EPSG:4326", **SMALL),
    }
    if path.suffix == ".parquet" or path.is_dir():
        calls["TileIndex.read"] = lambda: TileIndex.read(path)
    monkeypatch.setenv("MOSAIC_INDEX", name)
    for where, call in calls.items():
        with pytest.raises(IndexFormatError) as info:
            call()
        assert str(path.name) in str(info.value), (where, str(info.value))
        if where == "$MOSAIC_INDEX":
            assert "$MOSAIC_INDEX" in str(info.value)
    monkeypatch.delenv("MOSAIC_INDEX")
    seam = ["--bbox", ",".join(map(str, SEAM)), "--crs", "EPSG:4326", "--resolution", "0.001"]
    for args in (
        ("index", "info", "--index", path),
        ("plan", "--index", path, *seam),
        ("regrid", "--index", path, *seam, "-o", tmp_path / "c.zarr"),
        (
            "gti",
            "export",
            "--index",
            path,
            "--crs",
            "EPSG:4326",
            "--resolution",
            "0.001",
            "-o",
            tmp_path / "c.gti.gpkg",
        ),
    ):
        line = assert_one_error_line(*run_cli(capsys, *args))
        assert path.name in line, line
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "c.zarr").exists()


def test_a_raster_given_as_the_index_says_to_index_it(demo_collection, capsys):
    tif = next(Path(demo_collection[0]).glob("S32-seam12-20240601/B02.tif"))
    with pytest.raises(IndexFormatError, match="is a raster, not a tile index; index it first"):
        mosaic.plan(SEAM, "EPSG:4326", index=tif, **SMALL)
    line = assert_one_error_line(*run_cli(capsys, "index", "info", "--index", tif))
    assert "mosaic index build" in line


def test_duplicate_rows_of_a_concatenated_index_are_dropped_once_and_conflicts_refused(index_file, tmp_path):
    table = pq.read_table(index_file)
    seam_b02 = [
        i
        for i, (scene, asset) in enumerate(
            zip(table["id"].to_pylist(), table["asset"].to_pylist(), strict=True)
        )
        if "seam12-20240601" in scene and asset == "B02"
    ]
    twice = tmp_path / "twice.parquet"  # the same rows appended again, as `cat`-like tools do
    pq.write_table(
        pa.concat_tables([table, table.take(seam_b02)]).replace_schema_metadata(table.schema.metadata), twice
    )
    common = dict(resolution=0.001, bands="B02", time="2024-06-01", method="count", groupby=None)
    expected = mosaic.load(SEAM, "EPSG:4326", index=index_file, **common).B02.values
    assert expected.max() == 2  # the two seam scenes overlap
    with pytest.warns(DuplicateRowsWarning, match=r"2 duplicate row\(s\) of 2 scene asset\(s\)"):
        got = mosaic.load(SEAM, "EPSG:4326", index=twice, **common).B02.values
    assert np.array_equal(got, expected)  # not doubled
    changed = table.take(seam_b02[:1]).to_pylist()
    changed[0]["href"] = "/elsewhere/B02.tif"
    conflict = tmp_path / "conflict.parquet"
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist(changed, schema=table.schema)]), conflict)
    with pytest.raises(
        IndexFormatError,
        match=r"conflict\.parquet: scene '.*seam12-20240601' asset 'B02' appears 2 times with different href",
    ):
        TileIndex.read(conflict)


# ========================================================================== bad arguments, one table

# (keyword arguments over a valid request) -> each must be refused by a MosaicError, never a raw one
BAD_ARGUMENTS = {
    "bbox_crs unknown": dict(bbox_crs="EPSG:999999"),
    "bbox_crs garbage": dict(bbox_crs="not a crs"),
    "bbox_crs None": dict(bbox_crs=None),
    "chunks 1.5": dict(chunks=1.5),
    "chunks text": dict(chunks="big"),
    "chunks one of two": dict(chunks=(256,)),
    "chunks zero": dict(chunks=0),
    "bbox NaN": dict(bbox=(np.nan, 45.4, 12.12, 45.58)),
    "bbox inf": dict(bbox=(11.88, 45.4, np.inf, 45.58)),
    "bbox text": dict(bbox="11.88,45.4,12.12,45.58"),
    "bbox of words": dict(bbox=("a", "b", "c", "d")),
    "bbox three numbers": dict(bbox=(1, 2, 3)),
    "bbox without width": dict(bbox=(11.88, 45.4, 11.88, 45.58)),
    "bbox upside down": dict(bbox=(11.88, 45.58, 12.12, 45.4)),
    "resolution text": dict(resolution="10m"),
    "resolution negative zero": dict(resolution=-0.0),
    "resolution zero": dict(resolution=0),
    "resolution NaN": dict(resolution=float("nan")),
    "resolution inf": dict(resolution=float("inf")),
    "resolution three": dict(resolution=(1, 2, 3)),
    "resolution huge": dict(resolution=1e9),  # one pixel of a billion degrees: no scene in it
    "shape one number": dict(shape=5, resolution=None),
    "shape fractions": dict(shape=(1.5, 5), resolution=None),
    "shape negative": dict(shape=(-1, 5), resolution=None),
    "bands=5": dict(bands=5),
    "bands [5]": dict(bands=[5]),
    "bands unknown": dict(bands="nope"),
    "time=5": dict(time=5),
    "time words": dict(time="yesterday"),
    "time backwards": dict(time="2024-07/2024-06"),
    "groupby unknown": dict(groupby="nope"),
    "groupby=5": dict(groupby=5),
    "method unknown": dict(method="avg"),
    "method=5": dict(method=5),
    "resampling unknown": dict(resampling="smooth"),
    "crs None": dict(crs=None),
    "crs garbage": dict(crs="not a crs"),
    "crs=5": dict(crs=5),
    "index=5": dict(index=5),
    "index missing": dict(index="no/such/index.parquet"),
    "like not xarray": dict(like=5, resolution=None),
    "geobox not a GeoBox": dict(geobox=(1, 2), resolution=None),
    "dtype unknown": dict(dtype="uint7"),
    "dtype complex": dict(dtype="complex64"),
    "nodata text": dict(nodata="x"),
    "nodata out of range": dict(nodata=-5, dtype="uint8"),
    "src_nodata text": dict(src_nodata="x"),
    "max_concurrency 0": dict(max_concurrency=0),
    "max_concurrency text": dict(max_concurrency="many"),
    "max_pixels 0": dict(max_pixels=0),
    "max_pixels text": dict(max_pixels="1e12"),
    "on_error unknown": dict(on_error="ignore"),
    "anchor unknown": dict(anchor="corner"),
    "geopolygon=5": dict(geopolygon=5, bbox=None),
    "geopolygon broken": dict(geopolygon={"type": "Polygon"}, bbox=None),
    "gdal_options=5": dict(gdal_options=5),
    "auth=5": dict(auth=5),
    "clip without polygon": dict(clip=True),
}


GTI_ARGUMENTS = {"index", "bbox", "bbox_crs", "crs", "resolution", "time", "bands", "anchor", "max_pixels"}
"""What ``export_gti`` takes of a request."""


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_the_api_refuses_bad_arguments_with_its_own_errors(index_file, tmp_path, case):
    request = dict(bbox=SEAM, crs="EPSG:4326", index=index_file, **SMALL)
    request.update(BAD_ARGUMENTS[case])
    args = (request.pop("bbox"), request.pop("crs"), request.pop("time"))
    for call in (mosaic.plan, mosaic.load):
        with pytest.raises(MosaicError):
            call(*args, **request)
    if not set(BAD_ARGUMENTS[case]) & {"shape", "geobox", "like", "on_error"}:  # what regrid takes
        with pytest.raises(MosaicError):
            mosaic.regrid(tmp_path / "x.zarr", *args, **request)
        assert not (tmp_path / "x.zarr").exists()
    if set(BAD_ARGUMENTS[case]) <= GTI_ARGUMENTS:  # the GTI export takes the grid's part of the request
        bbox, crs, when = args
        gti = {k: v for k, v in request.items() if k in GTI_ARGUMENTS}
        with pytest.raises(MosaicError):
            mosaic.export_gti(gti.pop("index"), tmp_path / "x.gti.gpkg", crs=crs, bbox=bbox, time=when, **gti)


def test_the_other_entry_points_refuse_bad_arguments_with_their_own_errors(index_file):
    index = TileIndex.read(index_file)
    plan = mosaic.plan(SEAM, "EPSG:4326", index=index, **SMALL)
    for call in (
        lambda: TileIndex.read(5),
        lambda: TileIndex.read(index_file, bbox=SEAM, bbox_crs="EPSG:999999"),
        lambda: index.query(SEAM, bbox_crs="not a crs"),
        lambda: mosaic.read_stats("many"),
        lambda: plan.explain("0", 0),
        lambda: TileIndex.from_files(5),
        lambda: TileIndex.from_files([index_file, 5]),
        lambda: mosaic.regrid("x.zarr", SEAM, "EPSG:4326", index=index, batch_size=0, **SMALL),
        lambda: mosaic.write_zarr(plan, "x.zarr", batch_size=0),
        lambda: mosaic.write_cog(plan, "x.tif", batch_size=-1),
    ):
        with pytest.raises(MosaicError):
            call()


def test_an_unwritable_output_is_an_output_error(index_file, tmp_path):
    (tmp_path / "a_file").write_text("")
    for where in ("/proc/x.gti.gpkg", tmp_path / "a_file" / "x.gti.gpkg"):
        with pytest.raises(OutputError, match="cannot write the GTI here") as info:
            mosaic.export_gti(index_file, where, crs="EPSG:4326", resolution=0.001, bbox=SEAM, bands="B02")
        assert isinstance(info.value, OSError)
    assert "a_file is a file, not a folder" in str(info.value)
    assert not list(tmp_path.glob(".x*"))  # no temporary file left
    for name in ("x.zarr", "x.tif"):
        with pytest.raises(OutputError, match="a_file is a file, not a folder"):
            mosaic.regrid(tmp_path / "a_file" / name, SEAM, "EPSG:4326", index=index_file, **SMALL)


def _cli_table(index: Path, tmp: Path, scene: Path) -> dict[str, tuple[object, ...]]:
    seam = (
        "--bbox",
        ",".join(map(str, SEAM)),
        "--crs",
        "EPSG:4326",
        "--resolution",
        "0.001",
        "--bands",
        "B02",
    )
    plan = ("plan", "--index", index, *seam)
    regrid = ("regrid", "--index", index, *seam, "--time", "2024-06-01")
    gti = (
        "gti",
        "export",
        "--index",
        index,
        "--crs",
        "EPSG:4326",
        "--resolution",
        "0.001",
        "--bbox",
        ",".join(map(str, SEAM)),
        "--bands",
        "B02",
    )
    (tmp / "a_file").write_text("")
    (tmp / "not_a_raster.tif").write_text("hello")
    return {
        "plan: unknown bbox CRS": (*plan, "--bbox-crs", "EPSG:999999"),
        "plan: chunks 1.5": (*plan, "--chunks", "1.5"),
        "plan: resolution 0": (*plan, "--resolution", "0"),
        "plan: resolution 10m": (*plan, "--resolution", "10m"),
        "plan: bbox NaN": (*plan, "--bbox", "nan,45.4,12.12,45.58"),
        "plan: bbox without width": (*plan, "--bbox", "12,45.4,12,45.58"),
        "plan: unknown band": (*plan, "--bands", "nope"),
        "plan: unknown groupby": (*plan, "--groupby", "nope"),
        "plan: unknown method": (*plan, "--method", "avg"),
        "plan: time in words": (*plan, "--time", "yesterday"),
        "plan: unknown crs": (*plan, "--crs", "not-a-crs"),
        "plan: complex dtype": (*plan, "--dtype", "complex64"),
        "plan: max-pixels 0": (*plan, "--max-pixels", "0"),
        "plan: unit slip": (
            "plan",
            "--index",
            index,
            "--bbox",
            ",".join(map(str, SEAM)),
            "--crs",
            "EPSG:32632",
            "--resolution",
            "0.0002",
        ),
        "plan: chunk outside the grid": (*plan, "--explain", "99,99"),
        "plan: picture in /proc": (*plan, "--png", "/proc/plan.png"),
        "plan: no index": ("plan", *seam),
        "regrid: into /proc": (*regrid, "-o", "/proc/x.zarr"),
        "regrid: under a file": (*regrid, "-o", tmp / "a_file" / "x.zarr"),
        "regrid: COG in /proc": (*regrid, "-o", "/proc/x.tif"),
        "regrid: time chunk 0": (*regrid, "--chunks", "time=0", "-o", tmp / "t0.zarr"),
        "regrid: workers and scheduler": (
            *regrid,
            "--workers",
            "1",
            "--scheduler",
            "tcp://127.0.0.1:9",
            "-o",
            tmp / "w.zarr",
        ),
        "gti export: into /proc": (*gti, "-o", "/proc/x.gti.gpkg"),
        "gti export: under a file": (*gti, "-o", tmp / "a_file" / "x.gti.gpkg"),
        "gti export: unknown bbox CRS": (*gti, "--bbox-crs", "EPSG:999999", "-o", tmp / "y.gti.gpkg"),
        "gti export: unknown band": (*gti[:-2], "--bands", "nope", "-o", tmp / "y.gti.gpkg"),
        "gti export: method mean": (*gti, "--method", "mean", "-o", tmp / "y.gti.gpkg"),
        "index info: missing": ("index", "info", "--index", tmp / "missing.parquet"),
        "index info: a raster": ("index", "info", "--index", scene),
        "index build: nothing matches": (
            "index",
            "build",
            str(tmp / "nope" / "*.tif"),
            "-o",
            tmp / "i.parquet",
        ),
        "index build: missing file": ("index", "build", tmp / "nope.tif", "-o", tmp / "i.parquet"),
        "index build: not a raster": ("index", "build", tmp / "not_a_raster.tif", "-o", tmp / "i.parquet"),
        "index build: into /proc": ("index", "build", scene, "-o", "/proc/i.parquet"),
        "index build: under a file": ("index", "build", scene, "-o", tmp / "a_file" / "i.parquet"),
        "index build: not STAC Items": ("index", "build", tmp / "collection.json", "-o", tmp / "i.parquet"),
        "index build: bad src-nodata": (
            "index",
            "build",
            scene,
            "--src-nodata",
            "x",
            "-o",
            tmp / "i.parquet",
        ),
        "index build: bad pattern": ("index", "build", scene, "--pattern", "(", "-o", tmp / "i.parquet"),
        "index build: STAC API unreachable": (
            "index",
            "build",
            "--stac-url",
            "http://127.0.0.1:9/",
            "-o",
            tmp / "i.parquet",
        ),
        "demo: into /proc": ("demo", "--out", "/proc/demo"),
        "demo: onto a file": ("demo", "--out", tmp / "a_file"),
    }


def test_every_command_turns_bad_inputs_into_one_line(
    index_file, demo_collection, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("MOSAIC_INDEX", raising=False)
    (tmp_path / "collection.json").write_text(json.dumps({"type": "Collection", "id": "c"}))
    scene = Path(demo_collection[0]) / "S32-seam12-20240601" / "B02.tif"
    failures = {}
    for case, args in _cli_table(index_file, tmp_path, scene).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code, err = run_cli(capsys, *args)
        try:
            assert_one_error_line(code, err)
        except AssertionError as exc:
            failures[case] = str(exc)
    assert not failures, failures
    assert not list(tmp_path.glob("*.zarr"))


# ======================================================================= authentication, real S3


def test_auth_failures_are_classified_by_gdal_class_and_wording():
    import rasterio._err as gdal_errors

    missing = gdal_errors.CPLE_AWSInvalidCredentialsError(
        3,
        15,
        "AWS_SECRET_ACCESS_KEY and AWS_NO_SIGN_REQUEST configuration options not defined, "
        "and /srv/keys.ini not filled",
    )
    summary = rasterio.errors.RasterioIOError("Read or write failed. See previous exception for details.")
    summary.__cause__ = missing  # rasterio chains GDAL's error to its summary
    for exc in (
        missing,  # GDAL's class for missing keys, whatever the credentials file is called
        summary,
        OSError("The AWS Access Key Id you provided does not exist in our records."),  # AWS's wording
        OSError("The access key ID you provided does not exist in our records."),  # SeaweedFS's, MinIO's
        OSError("Server failed to authenticate the request."),  # Azure
        OSError("HTTP response code: 403"),
    ):
        assert is_auth_failure(exc) and not is_transient(exc, remote=True), exc
    assert not is_auth_failure(OSError("HTTP response code: 503")) and is_transient(
        OSError("HTTP response code: 503")
    )


@pytest.fixture
def aws_home(tmp_path, monkeypatch):
    """No AWS settings from the environment, and a home folder without ``.aws``."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "CPL_AWS_CREDENTIALS_FILE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_s3_refusals_are_authentication_errors_at_indexing_and_loading(
    seaweedfs, demo_index, demo_collection, aws_home, monkeypatch
):
    import dataclasses

    from mosaic.auth import S3Profile, Secret

    root = Path(demo_collection[0])
    row = next(r for r in demo_index if r.id == "S32-seam12-20240601" and r.asset == "B02")
    href = seaweedfs.url("bucket-a", Path(row.href).relative_to(root).as_posix())
    index = TileIndex.from_records([dataclasses.replace(row, href=href)])
    alice = seaweedfs.users["alice"]
    where = dict(endpoint=seaweedfs.endpoint_url, region=seaweedfs.region)
    keyed = lambda key, secret: S3Profile(  # noqa: E731
        "s3://bucket-a", access_key_id=key, secret_access_key=Secret(secret), **where
    )
    keys = aws_home / "keys.ini"  # a credentials file whose path does not say "credentials"

    def file_with(text: str | None) -> None:
        if text is None:
            monkeypatch.delenv("CPL_AWS_CREDENTIALS_FILE", raising=False)
            return
        keys.write_text(text)
        monkeypatch.setenv("CPL_AWS_CREDENTIALS_FILE", str(keys))

    def ini(key: str, secret: str) -> str:
        return f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"

    cases = {
        "wrong key id": (keyed("NOSUCHKEY0000000", alice.secret_key), None),
        "wrong secret": (keyed(alice.access_key, "not-the-secret"), None),
        "no key at all": (S3Profile("s3://bucket-a", **where), None),
        "empty keys.ini": (S3Profile("s3://bucket-a", **where), ""),
        "wrong key id in keys.ini": (S3Profile("s3://bucket-a", **where), ini("NOSUCHKEY0000000", "x")),
    }
    for case, (profile, credentials) in cases.items():
        file_with(credentials)
        clear_gdal_http_cache()
        with pytest.raises(AuthenticationError, match="authentication failed") as info:
            TileIndex.from_files([href], auth=profile, progress=False)
        assert href in str(info.value), case
        clear_gdal_http_cache()
        before = mosaic.read_stats()
        with pytest.raises(AuthenticationError, match="authentication failed") as info:
            mosaic.load(SEAM, "EPSG:4326", index=index, auth=profile, resolution=0.002, bands="B02").compute()
        after = mosaic.read_stats()
        assert info.value.scene_id == row.id, case
        assert after.retries == before.retries and after.failures > before.failures, case  # not retried
    # the same file with alice's keys reads: the refusals above were about the keys, nothing else
    file_with(ini(alice.access_key, alice.secret_key))
    clear_gdal_http_cache()
    assert TileIndex.from_files([href], auth=S3Profile("s3://bucket-a", **where), progress=False)
    load = mosaic.load(
        SEAM, "EPSG:4326", index=index, auth=S3Profile("s3://bucket-a", **where), resolution=0.002
    )
    assert load.B02.values.any()
