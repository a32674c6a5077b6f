"""Partitioned tile indexes: a folder or glob of GeoParquet files (local or S3) read as one index.

The index here is the real MGRS grid (``tile_indexes/sentinel2_grid.parquet``) around three places where
partitions meet (the UTM zone seam at 12E, the antimeridian at 65N, Svalbard's wide tiles), over dates
on both sides of New Year 2024, written in small row groups so that what a query reads is visible in
the ``mosaic.index`` DEBUG record (:class:`mosaic.index._store.ReadReport`): files opened, row groups
read.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

import mosaic
from mosaic import IndexFormatError, InvalidInputError, TileIndex
from mosaic.auth import S3Profile
from mosaic.cli import main
from mosaic.planning.records import SceneAsset

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "tile_indexes" / "sentinel2_grid.parquet"
AREAS = [(8.0, 43.0, 16.0, 48.0), (176.0, 63.0, -176.0, 67.0), (10.0, 77.0, 20.0, 80.0)]
DATES = pd.date_range("2023-12-17 10:30", periods=8, freq="5D", tz="UTC")  # 2023-12-17 .. 2024-01-21
ROWS_PER_GROUP = 24

QUERIES = {
    "UTM seam, across New Year": ((11.5, 44.5, 12.5, 45.5), "2023-12-28/2024-01-03"),
    "antimeridian, January": ((179.5, 64.5, -179.5, 65.5), "2024-01"),
    "Svalbard, December": ((15.0, 78.0, 16.0, 79.0), "2023-12"),
    "Bavaria, any time": ((11.0, 48.0, 12.0, 49.0), None),
    "everywhere, one day": (None, "2024-01-01"),
}


def _record(base: SceneAsset, when: pd.Timestamp) -> SceneAsset:
    return SceneAsset(
        id=f"S2_{when:%Y%m%d}_T{base.id}",
        asset="B04",
        href=f"/data/{when:%Y%m%d}/{base.id}/B04.tif",
        crs=base.crs,
        transform=None,
        shape=None,
        footprint=base.footprint,
        datetime=when,
    )


@pytest.fixture(scope="module")
def archive() -> TileIndex:
    """The MGRS tiles of the three areas x 8 dates around New Year, in canonical order."""
    grid = TileIndex.read(GRID)
    picked = {t.id: t for box in AREAS for t in grid.query(box).records()}
    return TileIndex.from_records(_record(t, d) for t in picked.values() for d in DATES)


@pytest.fixture(scope="module")
def written(archive: TileIndex, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The archive as one file and as a folder partitioned by year and UTM zone."""
    folder = tmp_path_factory.mktemp("partitioned")
    single = archive.write(folder / "single.parquet", row_group_size=ROWS_PER_GROUP)
    parts = archive.write(
        folder / "archive", partition_by=("year", "utm_zone"), row_group_size=ROWS_PER_GROUP
    )
    return single, parts


def ids(index: TileIndex) -> list[str]:
    return sorted(index.table.column("id").to_pylist())


def by_id(index: TileIndex) -> TileIndex:
    return index.take(np.argsort(index.table.column("id").to_numpy(zero_copy_only=False), kind="stable"))


def read_report(caplog: pytest.LogCaptureFixture, path, **query):
    """``TileIndex.read(path, **query)`` and the report of what it opened and read."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mosaic.index"):
        index = TileIndex.read(path, **query)
    reports = [r.index_read for r in caplog.records if hasattr(r, "index_read")]
    assert len(reports) == 1
    return index, reports[0]


# ============================================================================================ layout


def test_the_writer_makes_hive_partitions_in_canonical_order_and_row_groups(archive, written):
    _, folder = written
    files = sorted(folder.rglob("*.parquet"))
    relative = {f.relative_to(folder).as_posix() for f in files}
    # both years, the zones of the seam (32, 33) and of the antimeridian (1, 60), and the null partition
    # of footprints wider than their zone (Svalbard's) or split at 180 (the antimeridian's)
    for expected in (
        "year=2023/utm_zone=32/part-0.parquet",
        "year=2024/utm_zone=33/part-0.parquet",
        "year=2024/utm_zone=1/part-0.parquet",
        "year=2023/utm_zone=60/part-0.parquet",
        "year=2024/utm_zone=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
    ):
        assert expected in relative
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temporaries left
    total = 0
    for f in files:
        part = TileIndex.read(f)
        total += len(part)
        assert part._sorted() is part  # each file in Hilbert-then-time order, as a single file
        years = {str(t.year) for t in part.table.column("datetime").to_pandas()}
        assert years == {f.parent.parent.name.removeprefix("year=")}
        md = pq.ParquetFile(f).metadata
        assert all(md.row_group(g).num_rows <= ROWS_PER_GROUP for g in range(md.num_row_groups))
        zone = f.parent.name.removeprefix("utm_zone=")
        bounds = shapely.bounds(part.footprints)
        if zone.isdigit():  # footprints within a degree of their zone
            west = -180 + (int(zone) - 1) * 6
            assert bounds[:, 0].min() >= west - 1 and bounds[:, 2].max() <= west + 7
    assert total == len(archive)


def test_a_partitioned_index_reads_back_as_the_single_file(archive, written):
    single, folder = written
    whole = TileIndex.read(folder)
    assert whole.source == str(folder)
    assert by_id(whole).equals(by_id(TileIndex.read(single)))
    assert by_id(whole).equals(by_id(archive))


@pytest.mark.parametrize("name", list(QUERIES))
def test_queries_across_partition_borders_find_the_rows_of_the_single_file(archive, written, name):
    single, folder = written
    bbox, when = QUERIES[name]
    expected = ids(archive.query(bbox, when))
    assert expected  # each query finds rows
    from_folder = TileIndex.read(folder, bbox=bbox, time=when)
    assert ids(from_folder.query(bbox, when)) == expected
    assert ids(TileIndex.read(single, bbox=bbox, time=when).query(bbox, when)) == expected
    # candidates are what the single file gives: the same row group and row tests
    assert set(ids(from_folder)) >= set(expected)


def test_a_query_opens_only_the_partitions_and_reads_only_the_row_groups_it_needs(written, caplog):
    single, folder = written
    bbox, when = QUERIES["UTM seam, across New Year"]
    _, report = read_report(caplog, folder, bbox=bbox, time=when)
    opened = {Path(p).relative_to(folder).parent.as_posix() for p in report.opened}
    # years 2023 and 2024; zones 32 and 33 (the box reaches 1 degree beyond it, not zone 31 or 34);
    # and the null partitions, which any query reads
    null = "utm_zone=__HIVE_DEFAULT_PARTITION__"
    present = {p.relative_to(folder).parent.as_posix() for p in folder.rglob("*.parquet")}
    wanted = {f"year={y}/{z}" for y in (2023, 2024) for z in ("utm_zone=32", "utm_zone=33", null)}
    assert opened == wanted & present
    assert report.files_opened == report.files < len(present)  # folders of other zones: not even listed
    # statistics pruned within the files too, and of the groups they kept, those without a candidate row
    # had only their bbox and time columns read
    assert report.row_groups_read <= report.row_groups_probed < report.row_groups
    assert report.rows_read < len(TileIndex.read(folder))
    # one year only: the other year's partitions are not opened
    _, january = read_report(caplog, folder, bbox=bbox, time="2024-01")
    assert all("year=2024/" in p for p in january.opened)
    # a single file: one file, only the row groups that can match
    _, one = read_report(caplog, single, bbox=bbox, time=when)
    assert one.files == one.files_opened == 1
    assert 0 < one.row_groups_read < one.row_groups


def test_a_glob_and_a_folder_both_read(archive, written, caplog):
    _, folder = written
    year = TileIndex.read(f"{folder}/year=2024/*/*.parquet")
    assert ids(year) == ids(archive.query(time="2024"))
    everything = TileIndex.read(f"{folder}/**/part-*.parquet")
    assert ids(everything) == ids(archive)
    odd = folder.parent / "index [v1].parquet"  # a file whose name has glob characters is that file
    odd.write_bytes((folder / "year=2024" / "utm_zone=1" / "part-0.parquet").read_bytes())
    assert len(TileIndex.read(odd)) == len(TileIndex.read(folder / "year=2024" / "utm_zone=1"))
    odd.unlink()
    bbox, when = QUERIES["antimeridian, January"]
    got, report = read_report(caplog, f"{folder}/year=2024/*/*.parquet", bbox=bbox, time=when)
    assert ids(got.query(bbox, when)) == ids(archive.query(bbox, when))
    assert {Path(p).parent.name for p in report.opened} == {
        "utm_zone=1",
        "utm_zone=60",
        "utm_zone=__HIVE_DEFAULT_PARTITION__",
    }


def test_rewriting_replaces_the_folder_unless_told_to_keep_other_partitions(archive, tmp_path):
    folder = tmp_path / "index"
    archive.write(folder, partition_by="year")
    assert sorted(p.name for p in folder.iterdir()) == ["year=2023", "year=2024"]
    december = archive.query(time="2023-12")
    december.write(folder, partition_by="year")  # the folder now holds December only
    assert sorted(p.name for p in folder.iterdir()) == ["year=2023"]
    assert ids(TileIndex.read(folder)) == ids(december)
    january = archive.query(time="2024-01")
    january.write(folder, partition_by="year", keep_other_partitions=True)  # a year added
    assert ids(TileIndex.read(folder)) == ids(archive)


def test_bad_partition_arguments_are_refused(archive, tmp_path):
    with pytest.raises(InvalidInputError, match="partition_by takes one or more of"):
        archive.write(tmp_path / "x", partition_by="month")
    with pytest.raises(InvalidInputError, match="partition_by takes one or more of"):
        archive.write(tmp_path / "x", partition_by=("year", "year"))
    file = archive.write(tmp_path / "one.parquet")
    with pytest.raises(InvalidInputError, match="is a file; a partitioned index is written to a folder"):
        archive.write(file, partition_by="year")


# ========================================================================== bad partitions, errors


def run_cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_a_bad_partition_file_is_a_one_line_error_naming_it(written, tmp_path, capsys):
    _, good = written
    folder = tmp_path / "archive"
    subprocess.run(["cp", "-r", str(good), str(folder)], check=True)
    bad = folder / "year=2024" / "utm_zone=33" / "part-0.parquet"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated, as by an interrupted copy
    other = folder / "year=2024" / "utm_zone=1" / "part-0.parquet"
    other.write_bytes(b"id,href\nx,y.tif\n")  # not Parquet at all
    foreign = folder / "year=2023" / "utm_zone=32" / "part-0.parquet"
    pq.write_table(pq.read_table(foreign).drop_columns(["geometry"]), foreign)  # not an index
    seam = (11.5, 44.5, 12.5, 45.5)
    cases = {
        "2024-01": (bad, "not a Parquet file"),
        "2023-12": (foreign, "not a mosaic tile index (missing ['geometry'])"),
    }
    for when, (path, why) in cases.items():
        with pytest.raises(IndexFormatError) as info:
            TileIndex.read(folder, bbox=seam, time=when)
        message = str(info.value)
        assert message.startswith(f"{path}: {why}") and "\n" not in message
        with pytest.raises(IndexFormatError, match=str(path)):
            mosaic.plan(seam, "EPSG:4326", index=folder, time=when, resolution=0.01)
    # a query away from the bad files does not open them
    antimeridian = TileIndex.read(folder, bbox=(179.5, 64.5, -179.5, 65.5), time="2023-12")
    assert len(antimeridian) > 0
    code, err = run_cli(capsys, "index", "info", "--index", folder)  # reads every file: the first bad one
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {foreign}: not a mosaic tile index"), err


def test_an_empty_folder_or_a_glob_matching_nothing_names_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match=r"empty: the folder holds no index file \(\*\.parquet\)"):
        TileIndex.read(tmp_path / "empty")
    with pytest.raises(IndexFormatError, match=r"nothing-\*\.parquet: the glob holds no index file"):
        TileIndex.read(f"{tmp_path}/nothing-*.parquet")
    with pytest.raises(IndexFormatError, match="empty: the folder holds no index file"):
        mosaic.plan((0, 0, 1, 1), "EPSG:4326", index=tmp_path / "empty", resolution=0.01)


# ======================================================================== every reader, the CLI


def test_load_plan_gti_export_and_the_cli_read_a_partitioned_index(demo_index, tmp_path, capsys):
    single = demo_index.write(tmp_path / "demo.parquet")
    folder = demo_index.write(tmp_path / "demo", partition_by=("year", "utm_zone"))
    assert len(list(folder.rglob("*.parquet"))) > 1
    seam = (11.88, 45.40, 12.12, 45.58)
    small = dict(resolution=0.001, bands="B02", time="2024-06-01")
    expected = mosaic.load(seam, "EPSG:4326", index=single, **small).B02.values
    for index in (folder, str(folder), f"{folder}/*/*/*.parquet"):
        got = mosaic.load(seam, "EPSG:4326", index=index, **small).B02.values
        assert np.array_equal(got, expected, equal_nan=True)
    assert mosaic.plan(seam, "EPSG:4326", index=folder, **small).summary() == (
        mosaic.plan(seam, "EPSG:4326", index=single, **small).summary()
    )
    gti = mosaic.export_gti(folder, tmp_path / "x.gti.gpkg", crs="EPSG:4326", resolution=0.001, bbox=seam)
    assert gti
    capsys.readouterr()
    assert main(["index", "info", "--index", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == len(demo_index)
    code, err = run_cli(capsys, "index", "info", "--index", f"{folder}/**/*.parquet")
    assert code == 0, err
    code, err = run_cli(
        capsys, "plan", "--index", folder, "--bbox", ",".join(map(str, seam)), "--crs", "EPSG:4326",
        "--resolution", "0.001", "--time", "2024-06-01",
    )  # fmt: skip
    assert code == 0, err


def test_the_cli_builds_a_partitioned_index(demo_collection, demo_index, tmp_path, capsys):
    _, items = demo_collection
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps({"type": "FeatureCollection", "features": [i.to_dict() for i in items]}))
    out = tmp_path / "archive"
    code, err = run_cli(capsys, "index", "build", items_file, "--partition-by", "year,utm_zone", "-o", out)
    assert code == 0, err
    assert out.is_dir() and all(p.match("year=*/utm_zone=*/part-0.parquet") for p in out.rglob("*.parquet"))
    assert by_id(TileIndex.read(out)).equals(by_id(demo_index))
    code, err = run_cli(capsys, "index", "build", items_file, "-o", out)  # a folder without --partition-by
    assert code == 2 and "--partition-by" in err


# ============================================================================================ S3


@pytest.fixture
def uploads(seaweedfs):
    """Upload ``folder`` under ``prefix`` of bucket-a; every object is deleted after the test (the server
    and its buckets are shared by the session, and other tests list them)."""
    admin = seaweedfs.client("admin")
    keys: list[str] = []

    def upload(folder: Path, prefix: str) -> None:
        for f in folder.rglob("*.parquet"):
            key = f"{prefix}/{f.relative_to(folder).as_posix()}"
            admin.upload_file(str(f), "bucket-a", key)
            keys.append(key)

    yield upload
    for key in keys:
        admin.delete_object(Bucket="bucket-a", Key=key)


def test_a_partitioned_index_on_s3_reads_as_the_local_one(
    seaweedfs, uploads, archive, written, demo_index, tmp_path, caplog
):
    _, folder = written
    uploads(folder, "archive")
    alice = seaweedfs.users["alice"]
    auth = S3Profile(
        "s3://bucket-a",
        access_key_id=alice.access_key,
        secret_access_key=alice.secret_key,
        endpoint=seaweedfs.endpoint_url,
        region=seaweedfs.region,
    )
    bbox, when = QUERIES["UTM seam, across New Year"]
    for url in (
        "s3://bucket-a/archive/",
        "s3://bucket-a/archive",
        "s3://bucket-a/archive/year=*/*/*.parquet",
    ):
        got, report = read_report(caplog, url, bbox=bbox, time=when, auth=auth)
        assert ids(got.query(bbox, when)) == ids(archive.query(bbox, when))
        assert 0 < report.files_opened < report.files
        assert all(p.startswith("s3://bucket-a/archive/year=") for p in report.opened)
    assert by_id(TileIndex.read("s3://bucket-a/archive/", auth=auth)).equals(by_id(archive))
    # wrong credentials: one line naming the URL
    bob = seaweedfs.users["bob"]
    wrong = S3Profile(
        "s3://bucket-a",
        access_key_id=bob.access_key,
        secret_access_key=bob.secret_key,
        endpoint=seaweedfs.endpoint_url,
        region=seaweedfs.region,
    )
    with pytest.raises(IndexFormatError) as info:
        TileIndex.read("s3://bucket-a/archive/", auth=wrong)
    assert str(info.value).startswith("s3://bucket-a/archive/: ") and "\n" not in str(info.value)
    assert bob.secret_key not in str(info.value)
    # a load reads its index from S3 with the same auth= as its pixels
    uploads(demo_index.write(tmp_path / "demo", partition_by="utm_zone"), "demo-index")
    seam = (11.88, 45.40, 12.12, 45.58)
    small = dict(resolution=0.001, bands="B02", time="2024-06-01")
    expected = mosaic.load(seam, "EPSG:4326", index=demo_index, **small).B02.values
    got = mosaic.load(seam, "EPSG:4326", index="s3://bucket-a/demo-index/", auth=auth, **small).B02.values
    assert np.array_equal(got, expected, equal_nan=True)
