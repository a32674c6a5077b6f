"""The test servers are real and correct: RangeServer (tests/servers.py) and SeaweedFS S3, read by GDAL."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import numpy as np
import pytest
import rasterio
import rasterio.errors
from rasterio.windows import Window

from servers import RangeServer, SeaweedFS, clear_gdal_http_cache, parse_range

SCENE = "S33-mid-20240601/B02.tif"  # a demo COG (768 x 768 px, 256 px tiles)
WINDOW = Window(200, 150, 300, 400)  # spans tiles in two tile columns and two tile rows
EMPTY_DIR = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}  # no directory listing, no sidecar probes


@pytest.fixture(scope="module")
def local_window(demo_collection) -> np.ndarray:
    with rasterio.open(demo_collection[0] / SCENE) as ds:
        return ds.read(1, window=WINDOW)


def scene_bytes(demo_collection, rel: str = SCENE) -> bytes:
    return (demo_collection[0] / rel).read_bytes()


def connect(server: RangeServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def get(
    server: RangeServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = connect(server)
    try:
        conn.request(method, "/" + path.lstrip("/"), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------- range parsing


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", [(0, 9)]),
        ("bytes=90-", [(90, 99)]),
        ("bytes=95-200", [(95, 99)]),
        ("bytes=-10", [(90, 99)]),
        ("bytes=-500", [(0, 99)]),
        ("bytes=0-0,10-19", [(0, 0), (10, 19)]),
        ("bytes=100-", []),
        ("bytes=100-120,-0", []),
        ("bytes=200-300,5-6", [(5, 6)]),
        ("bytes=9-3", None),
        ("items=0-9", None),
        ("bytes=a-b", None),
        ("bytes=", None),
    ],
)
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


# ----------------------------------------------------------------------------------- HTTP correctness


def test_range_server_answers_head_full_and_ranged_gets_on_one_keepalive_connection(
    http_server, demo_collection
):
    data = scene_bytes(demo_collection)
    size = len(data)
    conn = connect(http_server)
    answers = []
    for method, rng in [
        ("HEAD", None),
        ("GET", None),
        ("GET", "bytes=100-199"),
        ("GET", f"bytes={size - 10}-"),
        ("GET", "bytes=-16"),
        ("GET", f"bytes={size}-"),
    ]:
        conn.request(method, "/" + SCENE, headers={"Range": rng} if rng else {})
        resp = conn.getresponse()
        answers.append((resp.status, dict(resp.getheaders()), resp.read()))
    conn.close()

    (
        (s_head, h_head, b_head),
        (s_full, h_full, b_full),
        (s1, h1, b1),
        (s2, h2, b2),
        (s3, _, b3),
        (s4, h4, _),
    ) = answers
    assert (s_head, h_head["Content-Length"], h_head["Accept-Ranges"], b_head) == (
        200,
        str(size),
        "bytes",
        b"",
    )
    assert h_head["Content-Type"] == "image/tiff"
    assert (s_full, h_full["Content-Length"], b_full) == (200, str(size), data)
    assert (s1, h1["Content-Range"], h1["Content-Length"], b1) == (
        206,
        f"bytes 100-199/{size}",
        "100",
        data[100:200],
    )
    assert (s2, h2["Content-Range"], b2) == (206, f"bytes {size - 10}-{size - 1}/{size}", data[-10:])
    assert (s3, b3) == (206, data[-16:])
    assert (s4, h4["Content-Range"]) == (416, f"bytes */{size}")

    stats = http_server.stats()
    assert stats.requests == 6
    assert stats.by_method == {"HEAD": 1, "GET": 5}
    assert stats.by_status == {200: 2, 206: 3, 416: 1}
    log = http_server.log
    assert (
        stats.bytes_sent
        == sum(r.body_bytes for r in log)
        == size + 100 + 10 + 16 + len(b"range not satisfiable\n")
    )
    assert [r.range for r in log] == [
        None,
        None,
        "bytes=100-199",
        f"bytes={size - 10}-",
        "bytes=-16",
        f"bytes={size}-",
    ]
    assert len({r.client for r in log}) == 1  # keep-alive: one connection
    assert stats.in_flight == 0 and stats.peak_in_flight == 1

    http_server.reset_stats()
    assert http_server.stats().requests == 0 and http_server.log == []


def test_range_server_answers_multi_range_requests_with_multipart_byteranges(http_server, demo_collection):
    data = scene_bytes(demo_collection)
    status, headers, body = get(http_server, SCENE, {"Range": "bytes=0-9,1000-1099,-5"})
    assert status == 206
    ctype = headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    assert int(headers["Content-Length"]) == len(body)
    parts = [p for p in body.split(b"--" + boundary) if p.strip(b"\r\n-")]
    got = []
    for part in parts:
        head, _, payload = part.partition(b"\r\n\r\n")
        content_range = next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Range"))
        got.append((content_range.decode().split(": ")[1], payload.removesuffix(b"\r\n")))
    size = len(data)
    assert got == [
        (f"bytes 0-9/{size}", data[:10]),
        (f"bytes 1000-1099/{size}", data[1000:1100]),
        (f"bytes {size - 5}-{size - 1}/{size}", data[-5:]),
    ]


def test_range_server_404_for_missing_files_directories_and_paths_outside_the_root(http_server):
    assert get(http_server, "nope.tif")[0] == 404
    assert get(http_server, SCENE.split("/")[0] + "/")[0] == 404
    assert get(http_server, "/%2e%2e" * 20 + "/etc/passwd")[0] == 404  # outside the root
    assert get(http_server, SCENE, method="PUT")[0] == 405


# ---------------------------------------------------------------------------- GDAL reads through it


def test_vsicurl_reads_the_same_pixels_as_the_local_file(http_server, local_window):
    with rasterio.Env(**EMPTY_DIR), rasterio.open(http_server.vsicurl(SCENE)) as ds:
        opened = http_server.requests
        remote = ds.read(1, window=WINDOW)
    np.testing.assert_array_equal(remote, local_window)
    log = http_server.log
    # GDAL 3.10 opens a COG with one HEAD and one GET of its first chunk (16 KiB by default; GDAL fixes
    # the size at the process's first network read, 4 KiB if that was mosaic's), then reads tiles with
    # single-range GETs
    assert opened == 2
    assert [(r.method, r.range) for r in log[:2]] in (
        [("HEAD", None), ("GET", "bytes=0-16383")],
        [("HEAD", None), ("GET", "bytes=0-4095")],
    )
    assert all(r.method == "GET" and r.status == 206 and "," not in r.range for r in log[2:])
    assert len(log) >= 3
    assert all(r.user_agent and r.user_agent.startswith("GDAL/") for r in log)
    assert http_server.bytes_sent == sum(r.body_bytes for r in log)


def test_vsicurl_default_open_lists_the_directory_and_probes_sidecars(http_server):
    with rasterio.open(http_server.vsicurl(SCENE)):
        pass
    log = http_server.log
    folder = "/" + SCENE.split("/")[0] + "/"
    assert ("GET", folder, 404) in [(r.method, r.path, r.status) for r in log]
    assert any(r.method == "HEAD" and r.path.endswith(".aux.xml") and r.status == 404 for r in log)


def test_vsicurl_single_get_mode_sends_multi_range_requests(http_server, local_window):
    with (
        rasterio.Env(GDAL_HTTP_MULTIRANGE="SINGLE_GET", **EMPTY_DIR),
        rasterio.open(http_server.vsicurl(SCENE)) as ds,
    ):
        remote = ds.read(1, window=WINDOW)
    np.testing.assert_array_equal(remote, local_window)
    assert any(r.range and "," in r.range and r.status == 206 for r in http_server.log)


# ------------------------------------------------------------------------------- in-flight accounting


def test_peak_in_flight_counts_concurrent_requests(http_server):
    http_server.latency = 1.0  # long enough for eight threads to overlap on a loaded machine
    n = 8
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def client() -> None:
        barrier.wait()
        statuses.append(get(http_server, SCENE, {"Range": "bytes=0-99"})[0])

    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    seen = 0
    deadline = time.monotonic() + 0.8
    while seen < n and time.monotonic() < deadline:
        seen = max(seen, http_server.in_flight)
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert statuses == [206] * n
    assert seen == n
    stats = http_server.stats()
    assert (stats.peak_in_flight, stats.in_flight, stats.requests) == (n, 0, n)

    http_server.latency = 0.0
    http_server.reset_stats()
    for _ in range(3):
        get(http_server, SCENE, {"Range": "bytes=0-9"})
    assert http_server.peak_in_flight == 1


# --------------------------------------------------------------------------------------------- faults


def test_status_faults_are_served_the_given_number_of_times_with_retry_after(http_server, demo_collection):
    rule = http_server.faults.add(503, path_glob="*.tif", times=2, retry_after=1)
    json_rel = SCENE.split("/")[0] + "/" + SCENE.split("/")[0] + ".json"
    assert get(http_server, json_rel)[0] == 200  # not matched by the glob
    first = get(http_server, SCENE, {"Range": "bytes=0-9"})
    second = get(http_server, SCENE, {"Range": "bytes=0-9"})
    third = get(http_server, SCENE, {"Range": "bytes=0-9"})
    assert [first[0], second[0], third[0]] == [503, 503, 206]
    assert first[1]["Retry-After"] == "1" and second[1]["Retry-After"] == "1"
    assert "Retry-After" not in third[1]
    assert third[2] == scene_bytes(demo_collection)[:10]
    assert (rule.served, rule.remaining) == (2, 0)
    assert http_server.faults.served_by_kind == {503: 2}
    assert [r.fault for r in http_server.log] == [None, 503, 503, None]


@pytest.mark.parametrize("status", [429, 500, 502, 504, 404, 403])
def test_every_status_fault_kind(http_server, status):
    http_server.faults.add(status, times=1)
    assert get(http_server, SCENE, method="HEAD")[0] == status
    assert get(http_server, SCENE, method="HEAD")[0] == 200


def test_every_kth_request_fails(http_server):
    rule = http_server.faults.every(3, 500, path_glob="*.tif", limit=2)
    statuses = [get(http_server, SCENE, {"Range": "bytes=0-9"})[0] for _ in range(9)]
    assert statuses == [206, 206, 500, 206, 206, 500, 206, 206, 206]
    assert rule.served == 2 and rule.matched == 6
    assert http_server.faults.pending == 0


def test_reset_fault_closes_the_connection_without_a_response(http_server):
    http_server.faults.add("reset", times=1)
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=5) as sock:
        sock.sendall(f"GET /{SCENE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n".encode())
        with pytest.raises(ConnectionResetError):
            if sock.recv(1024) == b"":  # an orderly close (FIN) would be a bug: we want an RST
                pytest.fail("connection closed with FIN, not reset")
    assert get(http_server, SCENE, {"Range": "bytes=0-9"})[0] == 206
    first = http_server.log[0]
    assert (first.fault, first.status, first.body_bytes) == ("reset", 0, 0)


def test_truncate_fault_sends_fewer_bytes_than_content_length(http_server, demo_collection):
    http_server.faults.add("truncate", times=1, truncate_at=100)
    conn = connect(http_server)
    conn.request("GET", "/" + SCENE, headers={"Range": "bytes=0-999"})
    resp = conn.getresponse()
    assert resp.status == 206 and resp.getheader("Content-Length") == "1000"
    with pytest.raises(http.client.IncompleteRead) as err:
        resp.read()
    conn.close()
    assert err.value.partial == scene_bytes(demo_collection)[:100]
    assert get(http_server, SCENE, {"Range": "bytes=0-999"})[2] == scene_bytes(demo_collection)[:1000]
    assert http_server.log[0].body_bytes == 100


def test_timeout_fault_holds_the_request(http_server):
    http_server.faults.add("timeout", times=1, delay=5)
    conn = connect(http_server, timeout=0.3)
    t0 = time.monotonic()
    conn.request("GET", "/" + SCENE, headers={"Range": "bytes=0-9"})
    with pytest.raises(TimeoutError):
        conn.getresponse()
    assert 0.25 < time.monotonic() - t0 < 2
    assert http_server.in_flight == 1  # still held by the server
    conn.close()
    assert get(http_server, SCENE, {"Range": "bytes=0-9"})[0] == 206  # others are not held


def test_invalid_faults_are_refused(http_server):
    with pytest.raises(ValueError, match="4xx or 5xx"):
        http_server.faults.add(200)
    with pytest.raises(ValueError, match="unknown fault kind"):
        http_server.faults.add("explode")


def test_gdal_reports_http_errors_at_open_as_response_codes(http_server):
    messages = {}
    for status in (401, 403, 404, 429, 503):
        clear_gdal_http_cache()  # GDAL remembers a failed open (next test)
        http_server.faults.clear()
        http_server.faults.add(status, times=None)
        with pytest.raises(rasterio.errors.RasterioIOError) as err, rasterio.Env(**EMPTY_DIR):
            rasterio.open(http_server.vsicurl(SCENE))
        messages[status] = str(err.value)
    assert messages == {s: f"HTTP response code: {s}" for s in messages}


def test_gdal_caches_a_failed_open_until_its_cache_is_cleared(http_server):
    http_server.faults.add(503, times=1)
    for _ in range(2):
        with pytest.raises(rasterio.errors.RasterioIOError, match="503"), rasterio.Env(**EMPTY_DIR):
            rasterio.open(http_server.vsicurl(SCENE))
    assert [(r.method, r.status) for r in http_server.log] == [("HEAD", 503)]  # the 2nd open sent nothing
    clear_gdal_http_cache()
    with rasterio.Env(**EMPTY_DIR), rasterio.open(http_server.vsicurl(SCENE)) as ds:
        assert ds.shape == (768, 768)
    assert http_server.log[1].status == 200


def test_gdal_retries_transient_errors_but_ignores_retry_after(http_server, local_window):
    http_server.faults.add(503, times=1, retry_after=30)
    t0 = time.monotonic()
    with (
        rasterio.Env(GDAL_HTTP_MAX_RETRY="2", GDAL_HTTP_RETRY_DELAY="0.1", **EMPTY_DIR),
        rasterio.open(http_server.vsicurl(SCENE)) as ds,
    ):
        remote = ds.read(1, window=WINDOW)
    np.testing.assert_array_equal(remote, local_window)
    assert time.monotonic() - t0 < 5  # GDAL waited its own 0.1 s, not the server's 30 s
    assert [(r.method, r.status) for r in http_server.log[:2]] == [("HEAD", 503), ("HEAD", 200)]


# --------------------------------------------------------------------------------------- access rules


def test_bearer_and_basic_auth_and_forbidden_prefixes(http_server):
    folder = "/" + SCENE.split("/")[0] + "/"
    http_server.require(folder, bearer="tok-123")
    assert get(http_server, "/other.tif")[0] == 404  # not under the prefix: no auth needed
    status, headers, _ = get(http_server, SCENE, method="HEAD")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="RangeServer"')
    assert get(http_server, SCENE, {"Authorization": "Bearer wrong"}, "HEAD")[0] == 401
    assert get(http_server, SCENE, {"Authorization": "Bearer tok-123"}, "HEAD")[0] == 200

    http_server.clear_rules()
    http_server.require("/", basic=("user", "pass word"))
    status, headers, _ = get(http_server, SCENE, method="HEAD")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="RangeServer"')
    good = "Basic " + __import__("base64").b64encode(b"user:pass word").decode()
    assert get(http_server, SCENE, {"Authorization": good}, "HEAD")[0] == 200
    http_server.forbid(folder)
    assert get(http_server, SCENE, {"Authorization": good}, "HEAD")[0] == 403

    log = http_server.log
    assert [r.auth_scheme for r in log[1:4]] == [None, "Bearer", "Bearer"]
    assert "tok-123" not in repr(log) and "pass word" not in repr(log)  # only schemes are logged


@pytest.mark.parametrize(
    "options",
    [
        {"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": "tok-123"},
        {"GDAL_HTTP_HEADERS": "Authorization: Bearer tok-123"},
        {"GDAL_HTTP_USERPWD": "user:secret"},
    ],
    ids=["bearer", "header", "basic"],
)
def test_gdal_sends_credentials_and_does_not_forward_them_on_redirect_to_another_host(
    http_server_pair, local_window, options
):
    origin, other = http_server_pair
    origin.require("/", bearer="tok-123", basic=("user", "secret"))
    with rasterio.Env(**options, **EMPTY_DIR), rasterio.open(origin.vsicurl(SCENE)) as ds:
        np.testing.assert_array_equal(ds.read(1, window=WINDOW), local_window)
    assert all(r.status in (200, 206) and r.authorization for r in origin.log)

    origin.clear_rules()
    origin.redirect("/", other.base_url)
    origin.reset_stats()
    clear_gdal_http_cache()
    with rasterio.Env(**options, **EMPTY_DIR), rasterio.open(origin.vsicurl(SCENE)) as ds:
        np.testing.assert_array_equal(ds.read(1, window=WINDOW), local_window)
    assert origin.log and all(r.status == 302 and r.authorization for r in origin.log)
    assert other.log and not any(r.authorization for r in other.log)


def test_redirect_location_keeps_the_path_and_query(http_server_pair):
    origin, other = http_server_pair
    origin.redirect("/S33", other.base_url, status=307)
    status, headers, _ = get(origin, SCENE + "?x=1")
    assert (status, headers["Location"]) == (307, f"{other.base_url}/{SCENE}?x=1")
    assert get(origin, "nope.tif")[0] == 404  # outside the prefix


# ---------------------------------------------------------------------------------------- SeaweedFS S3


def test_seaweedfs_holds_the_demo_files_in_every_bucket(seaweedfs: SeaweedFS, demo_collection):
    local = sorted(
        p.relative_to(demo_collection[0]).as_posix() for p in demo_collection[0].rglob("*") if p.is_file()
    )
    for bucket in ("bucket-a", "bucket-b", "public"):
        assert sorted(seaweedfs.objects(bucket)) == local
    assert seaweedfs.url("bucket-a", SCENE) == f"s3://bucket-a/{SCENE}"
    assert seaweedfs.startup_seconds is not None and seaweedfs.startup_seconds < 30
    assert seaweedfs.running


def test_vsis3_reads_the_same_pixels_as_the_local_file(seaweedfs: SeaweedFS, local_window):
    with (
        seaweedfs.rasterio_env("alice", **EMPTY_DIR),
        rasterio.open(seaweedfs.vsis3("bucket-a", SCENE)) as ds,
    ):
        np.testing.assert_array_equal(ds.read(1, window=WINDOW), local_window)
    with seaweedfs.rasterio_env(None, **EMPTY_DIR), rasterio.open(seaweedfs.vsis3("public", SCENE)) as ds:
        np.testing.assert_array_equal(ds.read(1, window=WINDOW), local_window)
    with rasterio.Env(**EMPTY_DIR), rasterio.open("/vsicurl/" + seaweedfs.http_url("public", SCENE)) as ds:
        np.testing.assert_array_equal(ds.read(1, window=WINDOW), local_window)


def test_vsis3_refuses_other_users_and_anonymous_on_private_buckets(seaweedfs: SeaweedFS):
    clear_gdal_http_cache()  # GDAL would answer from what an earlier test read with alice's keys
    other_scene = "S32-seam12-20240611/B8A.tif"
    for user, bucket in [("bob", "bucket-a"), ("alice", "bucket-b"), (None, "bucket-a")]:
        with (
            pytest.raises(rasterio.errors.RasterioIOError, match=r"Access Denied|HTTP response code: 403"),
            seaweedfs.rasterio_env(user, **EMPTY_DIR),
        ):
            rasterio.open(seaweedfs.vsis3(bucket, other_scene))
    # GDAL cached alice's 403 on bucket-b for the URL, whoever asks next: bob too, until cleared
    with pytest.raises(rasterio.errors.RasterioIOError), seaweedfs.rasterio_env("bob", **EMPTY_DIR):
        rasterio.open(seaweedfs.vsis3("bucket-b", other_scene))
    clear_gdal_http_cache()
    with (
        seaweedfs.rasterio_env("bob", **EMPTY_DIR),
        rasterio.open(seaweedfs.vsis3("bucket-b", other_scene)) as ds,
    ):
        assert ds.shape == (384, 384)


def test_rasterio_env_refuses_aws_keys_as_plain_options(seaweedfs: SeaweedFS):
    options = seaweedfs.gdal_options("alice")
    assert options["AWS_S3_ENDPOINT"] == seaweedfs.endpoint and options["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert options["AWS_ACCESS_KEY_ID"] == seaweedfs.users["alice"].access_key
    assert seaweedfs.gdal_options(None)["AWS_NO_SIGN_REQUEST"] == "YES"
    with pytest.raises(rasterio.errors.EnvError):
        rasterio.Env(**options)
    assert seaweedfs.users["alice"].secret_key not in repr(seaweedfs.users["alice"])
