"""``mosaic regrid`` and :mod:`mosaic.outputs.batch`: Zarr (v2, v3) and COG outputs, resume
after SIGKILL, clusters.

The CLI tests run the installed console script in a subprocess. The reference store is written once
per module by an uninterrupted, threaded run; the resumed and the distributed runs must reproduce it
byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
import zarr

import mosaic
from mosaic.cli.options import parse_layout
from mosaic.outputs.batch import STATE_DIR, regrid
from processes import kill_regrid_after

MOSAIC = Path(sys.executable).parent / "mosaic"
SEAM = (11.88, 45.40, 12.12, 45.58)
RES = 0.0002
GRID = ["--bbox", ",".join(map(str, SEAM)), "--crs", "EPSG:4326", "--resolution", str(RES)]
JOB = [*GRID, "--time", "2024-06", "--bands", "B02,B8A", "--chunks", "y=128,x=128", "--json"]
"""The CLI job of the reference, resume and cluster tests: 3 x 900 x 1200, 240 regions of 128 x 128."""


def run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MOSAIC_INDEX"}
    return subprocess.run(
        [str(MOSAIC), *map(str, args)], capture_output=True, text=True, timeout=180, env=env, **kwargs
    )


def ok(*args: object) -> dict:
    proc = run(*args)
    assert proc.returncode == 0, f"mosaic {args} failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)


def tree(root: Path) -> dict[str, str]:
    """Every file of a store, by relative path, with the SHA-256 of its bytes."""
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def index_path(demo_index: mosaic.TileIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("regrid") / "index.parquet"
    demo_index.write(path)
    return path


@pytest.fixture(scope="module")
def reference(index_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The job, uninterrupted, on the threaded scheduler."""
    out = tmp_path_factory.mktemp("reference") / "ref.zarr"
    report = ok("regrid", "--index", index_path, *JOB, "-o", out)
    return out, report


# ------------------------------------------------------------------------------------------ Zarr


@pytest.mark.parametrize(
    ("zarr_format", "chunks"),
    [(3, {"time": 1, "y": 256, "x": 256}), (2, {"time": 3, "y": 128, "x": 160})],
    ids=["v3-pancakes", "v2-churros"],
)
def test_zarr_round_trip_equals_load(index_path, tmp_path, zarr_format, chunks):
    args = dict(index=index_path, resolution=RES, bands=["B02", "WVP"])
    out = tmp_path / "out.zarr"
    report = regrid(out, SEAM, "EPSG:4326", "2024-06", chunks=chunks, zarr_format=zarr_format, **args)
    expected = mosaic.load(SEAM, "EPSG:4326", "2024-06", chunks=(chunks["y"], chunks["x"]), **args).compute()

    assert zarr.open_group(out, mode="r").metadata.zarr_format == zarr_format
    assert report.shape == (3, 900, 1200) and report.chunks == (chunks["time"], chunks["y"], chunks["x"])
    assert report.written + report.empty == report.regions and report.skipped == 0
    assert not (out / STATE_DIR).exists()  # the resume state is dropped once complete

    with xr.open_zarr(out, decode_coords="all", mask_and_scale=False) as raw:
        assert raw.rio.crs.to_epsg() == 4326
        assert raw.B02.encoding["chunks"] == (chunks["time"], chunks["y"], chunks["x"])
        assert raw.B02.dtype == np.uint16 and raw.WVP.dtype == np.float32
        for name in ("x", "y", "time"):
            np.testing.assert_array_equal(raw[name].values, expected[name].values)
        for band in ("B02", "WVP"):
            np.testing.assert_array_equal(raw[band].values, expected[band].values)
        assert raw.B02.encoding["grid_mapping"] == "spatial_ref" and "spatial_ref" in raw.coords
        assert raw.attrs["regrid_status"] == "complete"
        record = json.loads(raw.attrs["regrid_request"])
        assert record["index"] == str(index_path) and record["bbox"] == list(SEAM)
        assert record["time"] == "2024-06" and record["resolution"] == RES and record["method"] == "first"
        assert record["mosaic_version"] == mosaic.__version__ == raw.attrs["mosaic_version"]
        assert record["chunks"] == chunks and record["zarr_format"] == zarr_format
    with xr.open_zarr(out, decode_coords="all") as decoded:  # nodata decodes to NaN, as CF readers expect
        b02 = decoded.B02.values
        assert np.isnan(b02).sum() == (expected.B02.values == 0).sum() > 0
        assert decoded.rio.transform() == expected.rio.transform()


def test_mosaic_regrid_is_the_function(index_path, tmp_path):
    """``mosaic.regrid(...)`` writes (it was the module: not callable); the writers are public too."""
    assert mosaic.regrid is regrid and callable(mosaic.regrid)
    assert all(hasattr(mosaic, name) for name in mosaic.__all__)
    args = dict(index=index_path, resolution=0.001, bands=["B02"], chunks=64)
    report = mosaic.regrid(tmp_path / "one.tif", SEAM, "EPSG:4326", "2024-06-01", **args)
    assert isinstance(report, mosaic.RegridReport) and report.kind == "cog" and report.written > 0
    the_plan = mosaic.plan(SEAM, "EPSG:4326", "2024-06-01", **args)
    again = mosaic.write_cog(the_plan, tmp_path / "again.tif")
    store = mosaic.write_zarr(the_plan, tmp_path / "one.zarr")
    assert again.written == store.written == report.written
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "again.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    with (
        xr.open_zarr(tmp_path / "one.zarr", mask_and_scale=False) as ds,
        rasterio.open(tmp_path / "one.tif") as a,
    ):
        np.testing.assert_array_equal(ds.B02.values[0], a.read(1))


def test_existing_outputs_are_not_clobbered(index_path, tmp_path):
    args = dict(index=index_path, resolution=0.001, bands="B02", chunks=64)
    store = tmp_path / "a.zarr"
    first = regrid(store, SEAM, "EPSG:4326", "2024-06-01", **args)
    leftover = store / "B02" / "c" / "0" / "0" / f"0.{'ab' * 16}.partial"  # as a killed zarr write leaves
    leftover.write_bytes(b"")
    again = regrid(store, SEAM, "EPSG:4326", "2024-06-01", **args)  # complete: nothing to do
    assert again.written == 0 and again.skipped == first.written > 0
    assert not leftover.exists()
    with pytest.raises(mosaic.InvalidInputError, match=r"different request \(time differs\)"):
        regrid(store, SEAM, "EPSG:4326", "2024-06-11", **args)
    replaced = regrid(store, SEAM, "EPSG:4326", "2024-06-11", overwrite=True, **args)
    assert replaced.written > 0 and replaced.skipped == 0
    with xr.open_zarr(store) as ds:
        assert json.loads(ds.attrs["regrid_request"])["time"] == "2024-06-11"

    foreign = tmp_path / "foreign.zarr"  # a Zarr store mosaic did not write: never deleted without overwrite
    zarr.open_group(foreign, mode="w", attributes={"title": "mine"}).create_array("v", shape=(2,), dtype="u1")
    before = tree(foreign)
    with pytest.raises(mosaic.InvalidInputError, match="different request"):
        regrid(foreign, SEAM, "EPSG:4326", "2024-06-01", **args)
    assert tree(foreign) == before and not Path(f"{foreign}.mosaic-lock").exists()

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(mosaic.InvalidInputError, match="not a Zarr store"):
            regrid(folder, SEAM, "EPSG:4326", "2024-06-01", overwrite=overwrite, **args)
    assert (folder / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------ resume, cluster


def test_resume_after_sigkill_equals_uninterrupted_run(index_path, reference, tmp_path):
    ref_path, ref_report = reference
    out = tmp_path / "killed.zarr"
    command = [str(MOSAIC), "regrid", "--index", str(index_path), *JOB, "-o", str(out)]
    target = ref_report["written"] // 4
    marked = kill_regrid_after(command, out, target)
    assert target <= len(marked) < ref_report["written"]
    with xr.open_zarr(out) as partial:
        assert partial.attrs["regrid_status"] == "incomplete"
    finished = {}  # chunk files of finished regions: (mtime, inode) must survive the resume
    for band in ("B02", "B8A"):
        for key in marked:
            chunk = out / band / "c" / Path(*key.split("."))
            if chunk.exists():
                finished[chunk] = (chunk.stat().st_mtime_ns, chunk.stat().st_ino)
    assert finished

    report = ok(*command[1:])
    assert report["skipped"] == len(marked)
    assert report["written"] == ref_report["written"] - len(marked)
    assert report["empty"] == ref_report["empty"]
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in finished} == finished
    assert tree(out) == tree(ref_path)  # byte for byte, metadata included


def test_local_cluster_gives_the_threaded_result(index_path, reference, tmp_path):
    ref_path, ref_report = reference
    out = tmp_path / "cluster.zarr"
    report = ok("regrid", "--index", index_path, *JOB, "--workers", "2", "-o", out)
    assert report["written"] == ref_report["written"] and report["fingerprint"] == ref_report["fingerprint"]
    assert tree(out) == tree(ref_path)


# ------------------------------------------------------------------------------------------ COG


def test_cog_is_tiled_with_overviews_and_equals_load(index_path, tmp_path):
    out = tmp_path / "visual.tif"
    wide = (11.7, *SEAM[1:])  # west of the scenes: regions no scene touches stay nodata
    area = ["--bbox", ",".join(map(str, wide)), "--crs", "EPSG:4326", "--resolution", str(RES)]
    args = ["--index", index_path, *area, "--time", "2024-06-01", "--bands", "visual", "--chunks", "256"]
    report = ok("regrid", *args, "-o", out, "--json")
    assert report["kind"] == "cog" and report["shape"] == [1, 900, 2100] and report["empty"] > 0
    expected = mosaic.load(
        wide, "EPSG:4326", "2024-06-01", index=index_path, resolution=RES, bands="visual", chunks=256
    ).compute()
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (512, 512)
        assert src.overviews(1)[:2] == [2, 4]
        assert src.crs.to_epsg() == 4326 and src.transform == expected.rio.transform()
        assert src.descriptions == ("visual.1", "visual.2", "visual.3") and src.nodata == 0
        assert json.loads(src.tags()["regrid_request"])["bands"] == ["visual"]
        data = src.read()
    for i, band in enumerate(("visual.1", "visual.2", "visual.3")):
        np.testing.assert_array_equal(data[i], expected[band].values[0])
    assert (data[:, :, :256] == 0).all() and (data > 0).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visual.tif"]  # no staging files left


def test_errors_are_one_line(index_path, reference, tmp_path):
    ref_path, _ = reference
    before = tree(ref_path)
    calls = [
        ("regrid", "--index", index_path, *GRID, "--time", "2024-06", "-o", tmp_path / "x.tif"),
        ("regrid", "--index", index_path, *JOB[:-1], "--time", "2024-06-01", "-o", ref_path),
        (
            "regrid",
            "--index",
            index_path,
            *GRID,
            "--time",
            "2024-06",
            "--chunks",
            "t=2",
            "-o",
            tmp_path / "y",
        ),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        cog, mismatch, usage = pool.map(lambda args: run(*args), calls)
    for proc, words in ((cog, "a COG holds one time step"), (mismatch, "time differs")):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert words in lines[0] and "Traceback" not in proc.stderr
    assert "--overwrite" in mismatch.stderr
    assert usage.returncode == 2 and "the dimensions are time, y and x" in usage.stderr
    assert tree(ref_path) == before
    assert not (tmp_path / "x.tif").exists()


def test_parse_layout():
    assert parse_layout("time=64,y=256,x=256") == {"time": 64, "y": 256, "x": 256}
    assert parse_layout("y=512, x=1024") == {"time": 1, "y": 512, "x": 1024}
    assert parse_layout("512") == {"time": 1, "y": 512, "x": 512}
    assert parse_layout("256,512") == {"time": 1, "y": 256, "x": 512}
    for bad in ("band=3", "time=0", "y=1.5", "0"):
        with pytest.raises(click.BadParameter):
            parse_layout(bad)
