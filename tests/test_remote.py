"""Remote reads against real servers on 127.0.0.1: HTTP (tests/servers.py) and S3 (SeaweedFS).

Same pixels as local files, credentials per href prefix, secrets kept out of sight, the concurrency
limit measured at the server (one process and a two-process cluster), retries of transient faults with
``Retry-After``, and permanent failures that are never silent.
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from pathlib import Path

import dask
import numpy as np
import pytest

import mosaic
from mosaic import AuthenticationError, ReadError, ReadFailedWarning, TileIndex
from mosaic.auth import EarthdataProfile, HTTPProfile, S3Profile, Secret
from mosaic.io.paths import gdal_path
from seam_cases import GRID, SCENES, SEAM12, local_mosaic, moved, s3_profile
from servers import RangeServer, clear_gdal_http_cache


@pytest.fixture
def seam_rows(demo_index, demo_collection):
    """The B02 rows of the two seam scenes, and their paths relative to the demo root."""
    root = Path(demo_collection[0])
    rows = sorted((r for r in demo_index if r.id in SCENES and r.asset == "B02"), key=lambda r: r.id)
    return rows, [Path(r.href).relative_to(root).as_posix() for r in rows]


# ------------------------------------------------------------------------------ same pixels remotely


def test_http_reads_and_index_building_match_local_files(http_server, seam_rows):
    rows, rel = seam_rows
    urls = [http_server.url(p) for p in rel]
    remote = moved(rows, urls)
    got = mosaic.load(SEAM12, "EPSG:4326", index=remote, **GRID).B02.values
    assert np.array_equal(got, local_mosaic(rows))
    assert http_server.stats().by_method.get("GET", 0) > 0  # the pixels really came over HTTP
    pattern = r"(?P<id>[^/]+)/(?P<asset>[^/.]+)\.tif$"
    built = TileIndex.from_files(urls, pattern=pattern, progress=False)  # index building on URLs, too
    key = lambda r: (r.id, r.asset, r.crs, r.transform, r.shape, r.dtype, r.nodata)  # noqa: E731
    on_disk = TileIndex.from_files([r.href for r in rows], pattern=pattern, progress=False)
    assert sorted(map(key, built)) == sorted(map(key, on_disk))
    assert sorted(r.href for r in built) == sorted(urls)
    # indexing opened the files with the cloud settings: no directory listing, no sidecar probing
    assert {r.path for r in http_server.log} == {"/" + p for p in rel}


def test_s3_two_buckets_with_different_keys_in_one_load(seaweedfs, seam_rows):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    hrefs = [seaweedfs.url("bucket-a", rel[0]), seaweedfs.url("bucket-b", rel[1])]
    auth = [s3_profile(seaweedfs, "bucket-a", "alice"), s3_profile(seaweedfs, "bucket-b", "bob")]
    got = mosaic.load(SEAM12, "EPSG:4326", index=moved(rows, hrefs), auth=auth, **GRID).B02.values
    assert np.array_equal(got, local_mosaic(rows))
    public = [seaweedfs.url("public", p) for p in rel]  # unsigned requests on a public bucket
    anon = mosaic.load(
        SEAM12, "EPSG:4326", index=moved(rows, public), auth=s3_profile(seaweedfs, "public", None), **GRID
    )
    assert np.array_equal(anon.B02.values, got)
    # index building on the private buckets, with the same profiles
    built = TileIndex.from_files(
        hrefs, pattern=r"(?P<id>[^/]+)/(?P<asset>[^/.]+)\.tif$", auth=auth, progress=False
    )
    assert sorted((r.id, r.crs, r.shape) for r in built) == sorted((r.id, r.crs, r.shape) for r in rows)
    clear_gdal_http_cache()  # (GDAL would answer from its cache of the files, keyed by URL only)
    with pytest.raises(AuthenticationError, match="authentication") as info:  # bob's keys on alice's
        TileIndex.from_files(hrefs[:1], auth=s3_profile(seaweedfs, "bucket-a", "bob"), progress=False)
    assert hrefs[0] in str(info.value)


def test_profiles_match_by_longest_prefix_and_whole_segments():
    a = S3Profile("s3://bucket-a", access_key_id="A", secret_access_key="x")
    deep = S3Profile("s3://bucket-a/private/", access_key_id="B", secret_access_key="y")
    from mosaic.auth import find_profile

    assert find_profile("s3://bucket-a/x.tif", [a, deep]) is a
    assert find_profile("/vsis3/bucket-a/private/x.tif", [a, deep]) is deep
    assert find_profile("s3://bucket-ab/x.tif", [a, deep]) is None  # not a prefix of a bucket name
    assert gdal_path("s3://bucket-a/x.tif") == "/vsis3/bucket-a/x.tif"


# ------------------------------------------------------------------------------------ credentials


def test_wrong_or_missing_credentials_name_the_href_and_say_authentication(seaweedfs, http_server, seam_rows):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    href = seaweedfs.url("bucket-a", rel[0])
    index = moved(rows[:1], [href])
    with pytest.raises(AuthenticationError, match="authentication") as info:  # bob's keys on alice's bucket
        mosaic.load(
            SEAM12, "EPSG:4326", index=index, auth=s3_profile(seaweedfs, "bucket-a", "bob"), **GRID
        ).compute()
    assert href in str(info.value) and info.value.scene_id == SCENES[0]
    http_server.require("/", bearer="letmein")
    url = http_server.url(rel[0])
    with pytest.raises(AuthenticationError, match="authentication") as info:  # no credentials at all
        mosaic.load(SEAM12, "EPSG:4326", index=moved(rows[:1], [url]), **GRID).compute()
    assert url in str(info.value)


def test_http_bearer_basic_and_earthdata_token(http_server, seam_rows, monkeypatch):
    rows, rel = seam_rows
    expected = local_mosaic(rows[:1])
    urls = [http_server.url(rel[0])]
    http_server.require("/", bearer="tok-123", basic=("ada", "pw-456"))
    for auth in (
        HTTPProfile(http_server.base_url, bearer=Secret("tok-123")),
        HTTPProfile(http_server.base_url, username="ada", password="pw-456"),
    ):
        clear_gdal_http_cache()
        got = mosaic.load(SEAM12, "EPSG:4326", index=moved(rows[:1], urls), auth=auth, **GRID).B02.values
        assert np.array_equal(got, expected)
    monkeypatch.setenv("EARTHDATA_TOKEN", "tok-123")  # the token from the environment, read at read time
    clear_gdal_http_cache()
    profile = EarthdataProfile(http_server.base_url)
    got = mosaic.load(SEAM12, "EPSG:4326", index=moved(rows[:1], urls), auth=profile, **GRID).B02.values
    assert np.array_equal(got, expected)
    schemes = {r.auth_scheme for r in http_server.log if r.status in (200, 206)}
    assert schemes == {"Bearer", "Basic"}
    monkeypatch.delenv("EARTHDATA_TOKEN")  # then user and password from the environment, by .netrc
    monkeypatch.setenv("EARTHDATA_USERNAME", "ada")
    monkeypatch.setenv("EARTHDATA_PASSWORD", "pw-456")
    clear_gdal_http_cache()
    profile = EarthdataProfile(http_server.base_url, login_host="127.0.0.1")
    got = mosaic.load(SEAM12, "EPSG:4326", index=moved(rows[:1], urls), auth=profile, **GRID).B02.values
    assert np.array_equal(got, expected)


def test_authorization_is_not_forwarded_to_another_host_on_redirect(http_server_pair, seam_rows):
    origin, other = http_server_pair
    rows, rel = seam_rows
    origin.redirect("/", other.base_url.replace("127.0.0.1", "localhost"))  # another host name
    auth = HTTPProfile(origin.base_url, bearer=Secret("only-for-origin"))
    got = mosaic.load(SEAM12, "EPSG:4326", index=moved(rows[:1], [origin.url(rel[0])]), auth=auth, **GRID)
    assert np.array_equal(got.B02.values, local_mosaic(rows[:1]))
    assert any(r.status == 302 and r.authorization for r in origin.log)  # the origin got the token
    served = [r for r in other.log if r.method == "GET"]
    assert served and not any(r.authorization for r in served)  # the other host never did


def test_secrets_stay_out_of_reprs_errors_plans_and_graphs(seaweedfs, seam_rows, monkeypatch):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    alice = seaweedfs.users["alice"]
    secret = alice.secret_key
    index = moved(rows[:1], [seaweedfs.url("bucket-a", rel[0])])
    profile = s3_profile(seaweedfs, "bucket-a", "alice")
    plan = mosaic.plan(
        SEAM12, "EPSG:4326", index=index, auth=profile, gdal_options={"GS_SECRET_ACCESS_KEY": secret}, **GRID
    )
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile, **GRID)
    graph = dict(ds.B02.data.__dask_graph__())
    for text in (
        repr(profile),
        str(profile),
        repr(plan),
        str(plan.summary()),
        plan.explain(0, 0),
        repr(graph),
        repr(ds),
    ):
        assert secret not in text
    assert "***" in repr(profile)
    wrong = dataclasses.replace(profile, secret_access_key=Secret("not-" + secret))
    with pytest.raises(AuthenticationError) as info:
        mosaic.load(SEAM12, "EPSG:4326", index=index, auth=wrong, **GRID).compute()
    assert secret not in str(info.value)
    monkeypatch.setenv("ALICE_SECRET", secret)  # from the environment: only its name enters the graph
    by_env = dataclasses.replace(profile, secret_access_key=Secret.from_env("ALICE_SECRET"))
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, auth=by_env, **GRID)
    assert secret.encode() not in pickle.dumps(dict(ds.B02.data.__dask_graph__()))
    assert np.array_equal(ds.B02.values, local_mosaic(rows[:1]))


# ---------------------------------------------------------------------------- limits at the server


def test_max_concurrency_bounds_the_requests_the_server_sees(http_server, seam_rows):
    rows, rel = seam_rows
    http_server.latency = 0.01
    index = moved(rows, [http_server.url(p) for p in rel])
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=32, max_concurrency=3, **GRID)
    with dask.config.set(scheduler="threads", num_workers=64):
        got = ds.B02.values
    assert np.array_equal(got, local_mosaic(rows, chunks=32))
    stats = http_server.stats()
    assert stats.requests >= 10
    assert 2 <= stats.peak_in_flight <= 3  # concurrency was used, and never above the bound


def test_a_chunk_reads_its_next_scene_ahead_within_the_limit(http_server, seam_rows):
    # one dask thread and one chunk fed by both seam scenes: without reading ahead, one request at a
    # time; with it, the second scene's requests overlap the first's, and the pixels do not change
    rows, rel = seam_rows
    http_server.latency = 0.02
    index = moved(rows, [http_server.url(p) for p in rel])
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, max_concurrency=2, **GRID)
    with dask.config.set(scheduler="threads", num_workers=1):
        got = ds.B02.values
    assert np.array_equal(got, local_mosaic(rows))
    stats = http_server.stats()
    overlapping = {
        (a.path, b.path)
        for a in http_server.log
        for b in http_server.log
        if a.path < b.path and a.started < b.started + b.duration and b.started < a.started + a.duration
    }
    assert stats.peak_in_flight == 2 and overlapping  # two scenes in flight at once, never more


def test_cluster_wide_limit_holds_across_worker_processes(http_server, seam_rows):
    from dask.distributed import Client, LocalCluster

    rows, rel = seam_rows
    http_server.latency = 0.01
    index = moved(rows, [http_server.url(p) for p in rel])
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=32, max_concurrency=2, **GRID)
    with (
        LocalCluster(n_workers=2, threads_per_worker=8, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        got = ds.compute().B02.values
        workers = {r.client[0] for r in http_server.log}
        assert len(client.scheduler_info()["workers"]) == 2
    assert np.array_equal(got, local_mosaic(rows, chunks=32))
    stats = http_server.stats()
    assert workers == {"127.0.0.1"} and stats.requests >= 10
    assert stats.peak_in_flight <= 2  # 16 threads in 2 processes, never more than 2 requests at once


# ----------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", [429, 500, 502, 503, 504, "reset", "truncate"])
def test_transient_faults_are_retried_and_the_pixels_are_identical(http_server, seam_rows, kind):
    rows, rel = seam_rows
    index = moved(rows, [http_server.url(p) for p in rel])
    # three in a row on one file (GDAL itself re-requests a failed block once), then sprinkled
    first = http_server.faults.add(kind, path_glob=f"/{rel[0]}", times=3, methods=["GET"])
    later = http_server.faults.every(3, kind, path_glob="*.tif", limit=2, methods=["GET"])
    # one request at a time, so the three faults hit one read in a row (in parallel, GDAL's own
    # re-request of a failed block may absorb them one by one, and ours would not be exercised)
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=64, max_concurrency=1, **GRID)
    got = ds.B02.values
    assert np.array_equal(got, local_mosaic(rows, chunks=64))
    assert first.served == 3 and later.served >= 1
    assert mosaic.read_stats(1).retries >= 1  # ours, counted


def test_timeouts_are_retried(http_server, seam_rows):
    rows, rel = seam_rows
    index = moved(rows, [http_server.url(p) for p in rel])
    http_server.faults.add("timeout", path_glob="*.tif", times=2, methods=["GET"], delay=3)
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, gdal_options={"GDAL_HTTP_TIMEOUT": "1"}, **GRID)
    assert np.array_equal(ds.B02.values, local_mosaic(rows))
    assert http_server.faults.served == 2 and mosaic.read_stats().retries >= 1


def test_retry_after_is_honoured(http_server, seam_rows):
    rows, rel = seam_rows
    index = moved(rows[:1], [http_server.url(rel[0])])
    http_server.faults.add(503, path_glob="*.tif", times=2, methods=["GET", "HEAD"], retry_after=2)
    t0 = time.monotonic()
    got = mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID).B02.values
    assert np.array_equal(got, local_mosaic(rows[:1]))
    faulted = [r for r in http_server.log if r.fault == 503]
    after = [r for r in http_server.log if r.started > faulted[-1].started and r.status in (200, 206)]
    assert len(faulted) == 2 and after
    assert after[0].started - faulted[-1].started >= 1.9  # waited as asked (the backoff alone: < 0.2 s)
    assert time.monotonic() - t0 < 30


def test_permanent_failures_raise_or_are_skipped_loudly(http_server, seam_rows):
    rows, rel = seam_rows
    index = moved(rows, [http_server.url(p) for p in rel])
    http_server.faults.add(404, path_glob=f"/{rel[0]}", times=None)
    with pytest.raises(ReadError, match="404") as info:
        mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID).compute()
    assert info.value.scene_id == SCENES[0] and not isinstance(info.value, AuthenticationError)
    skip = mosaic.load(SEAM12, "EPSG:4326", index=index, on_error="skip", **GRID)
    with pytest.warns(ReadFailedWarning, match=SCENES[0]):
        got = skip.B02.values
    assert np.array_equal(got, local_mosaic(rows[1:]))  # the other scene's pixels, else nodata
    assert skip.attrs["failed_reads"] and all(SCENES[0] in line for line in skip.attrs["failed_reads"])
    http_server.clear_rules()
    clear_gdal_http_cache()
    http_server.forbid(f"/{rel[1]}")
    with pytest.raises(AuthenticationError, match="authentication"):
        mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID).compute()
    skipped = mosaic.load(SEAM12, "EPSG:4326", index=index, on_error="skip", **GRID)
    with pytest.warns(ReadFailedWarning, match=SCENES[1]):
        got = skipped.B02.values
    assert np.array_equal(got, local_mosaic(rows[:1]))
    assert any(SCENES[1] in line and "authentication" in line for line in skipped.attrs["failed_reads"])


def test_a_corrupt_remote_file_raises_or_is_skipped_loudly(seam_rows, demo_collection, tmp_path):
    # the first scene's tiles overwritten with noise (its header intact: it opens, its tiles do not decode)
    rows, rel = seam_rows
    root = Path(demo_collection[0])
    for p in rel:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        raw = (root / p).read_bytes()
        if p == rel[0]:
            noise = np.random.default_rng(0).integers(0, 256, len(raw) - 16384, dtype=np.uint8).tobytes()
            raw = raw[:16384] + noise
        (tmp_path / p).write_bytes(raw)
    clear_gdal_http_cache()
    with RangeServer(tmp_path) as server:
        index = moved(rows, [server.url(p) for p in rel])
        with pytest.raises(ReadError) as info:
            mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID).compute()
        assert info.value.scene_id == SCENES[0] and server.url(rel[0]) in str(info.value)
        assert "Decoding error" in str(info.value)  # the cause, not only rasterio's "Read failed"
        skip = mosaic.load(SEAM12, "EPSG:4326", index=index, on_error="skip", **GRID)
        with pytest.warns(ReadFailedWarning, match=SCENES[0]):
            got = skip.B02.values
    assert np.array_equal(got, local_mosaic(rows[1:]))  # none of the broken scene's pixels
    assert any(SCENES[0] in line for line in skip.attrs["failed_reads"])
