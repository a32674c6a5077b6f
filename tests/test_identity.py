"""Source identities: recorded in the index, checked by the reader, and by a regrid before it resumes.

Real files rewritten on disk, real HTTP (RangeServer) and S3 (SeaweedFS) servers whose request counts
show the reader's check costs no request, and a real ``mosaic regrid`` killed with SIGKILL.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import shapely
import xarray as xr

import mosaic
from mosaic import ChangedSourcesError, ChangedSourceWarning, TileIndex
from mosaic.io.identity import change, parse_identity
from mosaic.outputs.batch import STATE_DIR
from processes import kill_regrid_after
from real_data import fill_zero_scenes
from servers import RangeServer, SeaweedFS, clear_gdal_http_cache

MOSAIC = Path(sys.executable).parent / "mosaic"
SEAM = (11.88, 45.40, 12.12, 45.58)


def stat_identity(path: Path) -> dict[str, str]:
    st = path.stat()
    seconds, nanos = divmod(st.st_mtime_ns, 10**9)
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"
    return {"size": str(st.st_size), "mtime": when}


def rewrite(path: Path, *, later: float = 3600.0) -> None:
    """Change a scene's pixels in place, as a reprocessing would, and move its time on by ``later`` s."""
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
        data = dst.read()
        dst.write((data // 2 + 1).astype(data.dtype))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(later * 1e9)))


def changed_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ChangedSourceWarning)]


def load_all(index: TileIndex, **kwargs: object) -> xr.Dataset:
    """Every scene of the index, on its first scene's grid, computed (so every file is opened)."""
    first = index.records()[0]
    box = tuple(float(v) for v in shapely.total_bounds(index.footprints))
    res = first.resolution[0]
    return mosaic.load(box, first.crs, index=index, resolution=res, groupby=None, **kwargs).compute()


# ------------------------------------------------------------------------------------------ index


def test_files_are_indexed_with_their_size_and_time_and_older_indexes_still_read(tmp_path):
    paths = fill_zero_scenes(tmp_path / "scenes")
    index = TileIndex.from_files(paths, nodata=0, progress=False)
    by_id = {r.id: r for r in index}
    for path in paths:
        assert parse_identity(by_id[path.stem].identity) == stat_identity(path)

    saved = index.write(tmp_path / "index.parquet")
    back = TileIndex.read(saved)
    assert back.equals(index) and [r.identity for r in back] == [r.identity for r in index]
    assert json.loads(pq.read_schema(saved).metadata[b"mosaic"])["format_version"] == 5

    # an index written before identities (format 2) reads with none: nothing to check
    table = pq.read_table(saved)
    meta = dict(table.schema.metadata)
    meta[b"mosaic"] = json.dumps({"format_version": 2, "skipped": []}).encode()
    pq.write_table(table.drop_columns(["identity"]).replace_schema_metadata(meta), tmp_path / "v2.parquet")
    old = TileIndex.read(tmp_path / "v2.parquet")
    assert [r.identity for r in old] == [None, None]
    assert [r.id for r in old] == [r.id for r in index]
    # ...but a format-3 file without the column is not an index
    meta[b"mosaic"] = json.dumps({"format_version": 3, "skipped": []}).encode()
    pq.write_table(table.drop_columns(["identity"]).replace_schema_metadata(meta), tmp_path / "bad.parquet")
    with pytest.raises(mosaic.IndexFormatError, match=r"missing \['identity'\]"):
        TileIndex.read(tmp_path / "bad.parquet")


@pytest.mark.gdal_cli
def test_gti_tiles_are_indexed_with_their_size_and_time(tmp_path):
    paths = fill_zero_scenes(tmp_path / "scenes")
    gti = tmp_path / "tiles.gpkg"
    command = ["gdaltindex", "-f", "GPKG", "-write_absolute_path", str(gti), *map(str, paths)]
    subprocess.run(command, check=True, capture_output=True)
    rows = {r.href: r.identity for r in TileIndex.read(gti)}
    assert {h: parse_identity(i) for h, i in rows.items()} == {str(p): stat_identity(p) for p in paths}


def test_stac_items_record_file_checksum_and_size_else_updated(demo_collection, tmp_path):
    _, items = demo_collection
    # (deep copies: an Item's to_dict shares its properties, and the demo Items serve the session)
    dicts = [copy.deepcopy(item.to_dict(transform_hrefs=False)) for item in items[:3]]
    first, second, third = dicts
    first["assets"]["B02"]["file:checksum"] = "1220" + "ab" * 32
    first["assets"]["B02"]["file:size"] = 12345
    second["properties"]["updated"] = "2024-07-01T08:00:00Z"
    # an asset without projection info has its file opened: its stat joins the catalogue's facts
    for key in ("proj:shape", "proj:transform"):
        third["assets"]["B8A"].pop(key, None)
    third["assets"]["B8A"]["file:checksum"] = "1220" + "cd" * 32
    index = TileIndex.from_stac(dicts, assets=["B02", "B8A"])
    rows = {(r.id, r.asset): r for r in index}
    assert rows[(first["id"], "B02")].identity == f"size=12345;checksum=1220{'ab' * 32}"
    assert rows[(first["id"], "B8A")].identity is None  # the Item says nothing: unknown, not guessed
    assert rows[(second["id"], "B02")].identity == "updated=2024-07-01T08:00:00Z"
    opened = parse_identity(rows[(third["id"], "B8A")].identity)
    assert opened == {**stat_identity(Path(third["assets"]["B8A"]["href"])), "checksum": "1220" + "cd" * 32}
    # a checksum alone cannot be checked without reading the bytes: it is never reported as a change
    assert change(f"checksum=1220{'ab' * 32}", "size=1;mtime=2026-01-01T00:00:00Z") is None
    assert change("size=1;checksum=x", "size=2;mtime=2026-01-01T00:00:00Z") == "size 1 -> 2"


# ------------------------------------------------------------------------------------------ reads


def test_a_load_warns_once_naming_a_file_rewritten_since_indexing(tmp_path):
    paths = fill_zero_scenes(tmp_path / "scenes")
    index = TileIndex.read(
        TileIndex.from_files(paths, nodata=0, progress=False).write(tmp_path / "i.parquet")
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        before = load_all(index)
    assert changed_warnings(record) == []  # nothing changed: no warning

    rewrite(paths[1])
    mosaic.io.runtime.reset()  # a new process, as far as the reader's verdicts go
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        after = load_all(index)
        again = load_all(index)  # same process: warned once per file
    said = changed_warnings(record)
    assert len(said) == 1, said
    old, new = (
        parse_identity(index.records()[[r.id for r in index].index("L7_b")].identity),
        stat_identity(paths[1]),
    )
    assert said[0].startswith(f"scene L7_b asset data ({paths[1]}) changed since it was indexed: ")
    assert f"modified {old['mtime']} -> {new['mtime']}" in said[0] and "rebuild the index" in said[0]
    assert "L7_a" not in said[0]
    xr.testing.assert_identical(after, again)
    assert not after.equals(before)  # the warning is about real pixels


def test_a_worker_logs_the_change_as_a_cluster_event(tmp_path):
    from dask.distributed import Client, LocalCluster

    paths = fill_zero_scenes(tmp_path / "scenes")
    index = TileIndex.from_files(paths, nodata=0, progress=False)
    rewrite(paths[0])
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        load_all(index)
        events = [message for _, message in client.get_events("mosaic-changed-sources")]
    assert len(events) == 1 and events[0].startswith(f"scene L7_a asset data ({paths[0]}) changed")


def _strip(index: TileIndex) -> TileIndex:
    """The same index with no identities (nothing for the reader to check)."""
    import dataclasses

    return TileIndex.from_records(dataclasses.replace(r, identity=None) for r in index)


def test_http_files_changed_since_indexing_are_told_from_the_headers_of_the_open(tmp_path):
    root = tmp_path / "served"
    paths = fill_zero_scenes(root)
    clear_gdal_http_cache()
    with RangeServer(root) as server:
        urls = [server.url(p.name) for p in paths]
        index = TileIndex.from_files(urls, nodata=0, progress=False)
        for url, path in zip(urls, paths, strict=True):
            identity = parse_identity(next(r.identity for r in index if r.href == url))
            local = stat_identity(path)
            assert identity == {"size": local["size"], "mtime": local["mtime"][:19] + "Z"}  # Last-Modified

        rewrite(paths[1], later=7200)
        counts = {}
        for label, which in (("unchecked", _strip(index)), ("checked", index)):
            clear_gdal_http_cache()  # a new process: GDAL remembers a URL's size for its life
            mosaic.io.runtime.reset()
            server.reset_stats()
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                load_all(which)
            counts[label] = (
                server.stats().by_method,
                sorted((r.method, r.path, r.range) for r in server.log),
            )
            said = changed_warnings(record)
        assert counts["checked"] == counts["unchecked"]  # the check made no request of its own
        assert counts["checked"][0]["HEAD"] == 2  # one per file: GDAL's own, at the open
    assert len(said) == 1 and said[0].startswith(f"scene L7_b asset data ({urls[1]}) changed")
    assert "modified" in said[0]


def _gdal_requests() -> dict[str, int]:
    """Requests GDAL's network file systems made since the last reset, by method."""
    import ctypes

    from mosaic.io.read import _libgdal

    lib = _libgdal()
    lib.VSINetworkStatsGetAsSerializedJSON.restype = ctypes.c_void_p
    lib.VSINetworkStatsGetAsSerializedJSON.argtypes = [ctypes.c_void_p]
    lib.VSIFree.argtypes = [ctypes.c_void_p]
    pointer = lib.VSINetworkStatsGetAsSerializedJSON(None)
    stats = json.loads(ctypes.string_at(pointer).decode())
    lib.VSIFree(pointer)
    return {method: v["count"] for method, v in stats.get("methods", {}).items()}


@pytest.fixture
def s3_scenes(seaweedfs: SeaweedFS, tmp_path: Path):
    """Two real scenes uploaded to SeaweedFS's ``public`` bucket under a fresh prefix (removed after)."""
    paths = fill_zero_scenes(tmp_path / "scenes")
    client = seaweedfs.client("admin")
    keys = [f"identity-{os.getpid()}-{time.monotonic_ns()}/{p.name}" for p in paths]
    try:
        for path, key in zip(paths, keys, strict=True):
            client.put_object(Bucket="public", Key=key, Body=path.read_bytes())
        yield client, paths, keys
    finally:  # the session's buckets hold the demo collection only (tests/test_servers.py)
        client.delete_objects(Bucket="public", Delete={"Objects": [{"Key": k} for k in keys]})


def test_s3_objects_replaced_since_indexing_are_told_from_what_gdal_already_has(
    seaweedfs: SeaweedFS, s3_scenes, monkeypatch
):
    from mosaic.io.read import _libgdal

    client, paths, keys = s3_scenes
    urls = [seaweedfs.url("public", key) for key in keys]
    options = seaweedfs.gdal_options(None)
    clear_gdal_http_cache()
    index = TileIndex.from_files(urls, nodata=0, progress=False, gdal_options=options)
    recorded = {r.href: parse_identity(r.identity) for r in index}
    for url, path, key in zip(urls, paths, keys, strict=True):
        head = client.head_object(Bucket="public", Key=key)
        when = head["LastModified"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert recorded[url] == {"size": str(path.stat().st_size), "mtime": when}

    time.sleep(1.1)  # S3's Last-Modified is to the second
    rewrite(paths[0])
    client.put_object(Bucket="public", Key=keys[0], Body=paths[0].read_bytes())
    monkeypatch.setenv("CPL_VSIL_NETWORK_STATS_ENABLED", "YES")
    counts = {}
    for label, which in (("unchecked", _strip(index)), ("checked", index)):
        clear_gdal_http_cache()
        mosaic.io.runtime.reset()
        _libgdal().VSINetworkStatsReset()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            load_all(which, gdal_options={**options, "CPL_VSIL_NETWORK_STATS_ENABLED": "YES"})
        counts[label] = _gdal_requests()
        said = changed_warnings(record)
    assert counts["checked"] == counts["unchecked"] and counts["checked"].get("GET", 0) > 0
    assert len(said) == 1 and said[0].startswith(f"scene L7_a asset data ({urls[0]}) changed"), said
    assert "modified" in said[0]


# ------------------------------------------------------------------------------------------ regrid


def _copy_collection(demo_collection: tuple[Path, list[pystac.Item]], root: Path) -> list[dict]:
    """The demo collection's files copied under ``root``, and its Items pointing at the copies."""
    source, items = demo_collection
    shutil.copytree(source, root)
    dicts = []
    for item in items:
        d = copy.deepcopy(item.to_dict(transform_hrefs=False))
        for asset in d["assets"].values():
            asset["href"] = str(root / Path(asset["href"]).relative_to(source))
        dicts.append(d)
    return dicts


def test_a_regrid_resumed_after_a_source_changed_refuses_naming_it(demo_collection, tmp_path):
    items = _copy_collection(demo_collection, tmp_path / "scenes")
    index_path = TileIndex.from_stac(items).write(tmp_path / "index.parquet")
    out = tmp_path / "out.zarr"
    grid = ["--bbox", ",".join(map(str, SEAM)), "--crs", "EPSG:4326", "--resolution", "0.0002"]
    job = [str(MOSAIC), "regrid", "--index", str(index_path), *grid, "--time", "2024-06", "--bands", "B02"]
    job += ["--chunks", "y=128,x=128", "--json", "-o", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "MOSAIC_INDEX"}
    kill_regrid_after(job, out, 10, env=env)
    # the Items give no file facts: the files were stat'ed when the store was made (hrefs hashed)
    recorded = json.loads((out / STATE_DIR / "sources.json").read_text())["files"]
    scenes = tmp_path / "scenes"
    assert {e["scene"] for e in recorded.values()} >= {"S32-seam12-20240601", "S33-seam12-20240611"}
    for key, entry in recorded.items():
        path = scenes / entry["scene"] / "B02.tif"
        assert key == hashlib.sha256(str(path).encode()).hexdigest() and entry["href"] == str(path)
        assert parse_identity(entry["identity"]) == stat_identity(path)

    changed = tmp_path / "scenes" / "S32-seam12-20240601" / "B02.tif"
    rewrite(changed)
    refused = subprocess.run(job, capture_output=True, text=True, timeout=180, env=env)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    # (the killed run's lease is taken over first, with a warning; then one error line)
    assert len(lines) == 2 and "taking over the lease of pid" in lines[0], refused.stderr
    error = lines[1]
    assert error.startswith("error: ")
    assert "1 source file(s) changed since they were indexed or this regrid began" in error
    assert f"scene S32-seam12-20240601 ({changed}: modified " in error and "--overwrite" in error
    with xr.open_zarr(out) as partial:
        assert partial.attrs["regrid_status"] == "incomplete"  # untouched: not resumed, not finished

    finished = subprocess.run([*job, "--overwrite"], capture_output=True, text=True, timeout=180, env=env)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["skipped"] == 0


@pytest.mark.parametrize("indexed", [True, False], ids=["index-identities", "format-2-index"])
def test_a_remote_resume_checks_each_file_once_before_any_region(tmp_path, indexed):
    """The store keeps the index's identities or, without them (an index of format 2), the files' own."""
    root = tmp_path / "served"
    paths = fill_zero_scenes(root)
    clear_gdal_http_cache()
    with RangeServer(root) as server:
        index = TileIndex.from_files([server.url(p.name) for p in paths], nodata=0, progress=False)
        index = index if indexed else _strip(index)
        first = index.records()[0]
        args = dict(index=index, resolution=first.resolution[0], groupby=None, chunks=64)
        box = tuple(np.round(mosaic.index.geom.grid_outline(first.transform, first.shape).bounds, 3))
        out = tmp_path / "out.zarr"
        # one file's pixels cannot be fetched: the regrid stops after creating its store
        server.faults.add(404, path_glob="/L7_b.tif", times=None, methods=["GET"])
        clear_gdal_http_cache()
        server.reset_stats()
        with pytest.raises(mosaic.ReadError):  # (one region at a time: none still runs after the error)
            mosaic.regrid(out, box, first.crs, bbox_crs=first.crs, batch_size=1, **args)
        assert (out / STATE_DIR / "request.json").exists()
        recorded = json.loads((out / STATE_DIR / "sources.json").read_text())["files"]
        served = [stat_identity(p) for p in paths]
        # as the index has them, or as the server's headers say
        assert sorted(e["identity"] for e in recorded.values()) == sorted(
            f"size={s['size']};mtime={s['mtime'][:19]}Z" for s in served
        )
        server.faults.clear()

        rewrite(paths[0], later=7200)  # a different file changes meanwhile
        clear_gdal_http_cache()
        mosaic.io.runtime.reset()
        server.reset_stats()
        with pytest.raises(ChangedSourcesError, match=r"1 source file\(s\) changed.*scene L7_a \(") as caught:
            mosaic.regrid(out, box, first.crs, bbox_crs=first.crs, **args)
        assert "\n" not in str(caught.value) and "modified" in str(caught.value)
        log = [(r.method, r.path) for r in server.log]
        assert sorted(log) == [("HEAD", "/L7_a.tif"), ("HEAD", "/L7_b.tif")]  # each once, no pixel read
