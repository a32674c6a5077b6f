"""Credentials that expire and refresh themselves, against real servers on 127.0.0.1.

A credentials endpoint of the suite's own (:class:`servers.CredentialsServer`) hands out SeaweedFS keys
(NASA's ``s3credentials`` JSON) or Azurite SAS tokens (Planetary Computer's token JSON) that expire
after a few seconds, and counts its calls. What each test proves:

- SeaweedFS does not expire keys itself: the S3 tests prove the refresh schedule by the endpoint's
  count of fetches against the reads made, and the refusal path with a key SeaweedFS really refuses
  (an unknown key, ``InvalidAccessKeyId``, as an expired one is refused).
- Azurite does enforce a SAS token's expiry (``se``): a load spanning several expiries succeeds only
  because every token was replaced before it lapsed, and an expired token is really refused (403).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pickle
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest

import mosaic
from mosaic import AuthenticationError, TileIndex
from mosaic.auth import (
    AzureProfile,
    GCSProfile,
    PlanetaryComputerProfile,
    RefreshingProfile,
    S3Profile,
    Secret,
    TemporaryS3Profile,
    access_for,
    earthdata,
    gdal_options_for,
)
from mosaic.errors import InvalidInputError
from mosaic.io.credentials import Credentials, current, fetch_count, parse_expiration, refused
from mosaic.io.limits import get_limiter
from seam_cases import GRID, SCENES, SEAM12, local_mosaic, moved
from servers import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Azurite,
    CredentialsServer,
    RangeServer,
    SeaweedFS,
    clear_gdal_http_cache,
)

TOKEN = "edl-token-7c1f0a9e55"  # the bearer token the endpoint wants (distinctive: searched for below)


@pytest.fixture
def seam_rows(demo_index, demo_collection):
    """The B02 rows of the two seam scenes, and their paths relative to the demo root."""
    root = Path(demo_collection[0])
    rows = sorted((r for r in demo_index if r.id in SCENES and r.asset == "B02"), key=lambda r: r.id)
    return rows, [Path(r.href).relative_to(root).as_posix() for r in rows]


def keys(server: SeaweedFS, *users: str) -> list[tuple[str, str]]:
    return [(server.users[u].access_key, server.users[u].secret_key) for u in users]


def temporary(server: SeaweedFS, endpoint: CredentialsServer, **kw) -> TemporaryS3Profile:
    return TemporaryS3Profile(
        "s3://bucket-a",
        f"{endpoint.url}/s3credentials",
        endpoint=server.endpoint_url,
        region=server.region,
        **{"token": Secret(TOKEN), **kw},
    )


def compute_until(ds, seconds: float, threads: int = 32) -> tuple[list[np.ndarray], float]:
    """Compute ``ds`` again and again (``threads`` dask threads) until ``seconds`` have passed."""
    out = []
    t0 = time.monotonic()
    while not out or time.monotonic() - t0 < seconds:
        with dask.config.set(scheduler="threads", num_workers=threads):
            out.append(ds.B02.values)
    return out, time.monotonic() - t0


# ------------------------------------------------------------------------------------- the cache


class SlowProvider:
    """Counts its fetches; each takes a while, so that threads arrive while one runs."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.lock = threading.Lock()

    def fetch(self) -> Credentials:
        with self.lock:
            self.calls += 1
        time.sleep(0.2)
        expires = parse_expiration(time.time() + self.lifetime)
        return Credentials({"GDAL_HTTP_HEADERS": "Authorization: Bearer x"}, expires=expires)


def test_64_threads_needing_credentials_at_once_cause_one_fetch():
    provider = SlowProvider()
    got: list[Credentials] = []
    barrier = threading.Barrier(64)

    def need() -> None:
        barrier.wait()
        got.append(current(("test", id(provider)), provider))

    threads = [threading.Thread(target=need) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert provider.calls == 1 and len(got) == 64 and all(c is got[0] for c in got)
    # 32 reads refused with those credentials: one fetch anew, shared by all
    for _ in range(32):
        refused(("test", id(provider)), got[0])
    again = {id(current(("test", id(provider)), provider)) for _ in range(32)}
    assert provider.calls == 2 and len(again) == 1
    refused(("test", id(provider)), got[0])  # credentials no longer current: nothing to refresh
    current(("test", id(provider)), provider)
    assert provider.calls == 2


def test_refresh_margin_and_short_lived_credentials():
    from mosaic.io.credentials import _Entry

    entry = _Entry()
    entry.credentials = Credentials(expires=parse_expiration(1000.0))
    entry.fetched_at = 0.0  # an hour-long life: refreshed 300 s before the end
    assert entry.fresh(300, 699.0) and not entry.fresh(300, 700.0)
    entry.fetched_at = 990.0  # a 10 s life: refreshed half-way, not at every read
    assert entry.fresh(300, 994.9) and not entry.fresh(300, 995.0)
    entry.stale = True
    assert not entry.fresh(300, 991.0)


def test_nasa_expiration_format_and_credentials_never_pickle_or_show():
    assert parse_expiration("2024-06-01 12:30:00+00:00").isoformat() == "2024-06-01T12:30:00+00:00"
    assert parse_expiration("2024-06-01T12:30:00Z").isoformat() == "2024-06-01T12:30:00+00:00"
    assert parse_expiration("") is None
    with pytest.raises(InvalidInputError, match="not an ISO date"):
        parse_expiration("tomorrow")
    creds = Credentials({"AWS_SECRET_ACCESS_KEY": "s3cr3t"}, query="sig=abc")
    assert "s3cr3t" not in repr(creds) and "abc" not in str(creds)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(creds)


def test_bad_inputs_are_refused_naming_them():
    with pytest.raises(InvalidInputError, match="not an s3://"):
        TemporaryS3Profile("https://x", "https://e/s3credentials")
    with pytest.raises(InvalidInputError, match="credentials_url"):
        TemporaryS3Profile("s3://b", "ftp://e/s3credentials")
    with pytest.raises(InvalidInputError, match="refresh_margin"):
        TemporaryS3Profile("s3://b", "https://e/s3credentials", refresh_margin=-1)
    with pytest.raises(InvalidInputError, match="callable"):
        mosaic.plan(SEAM12, "EPSG:4326", index=TileIndex.from_records([]), sign="not-callable", **GRID)
    with pytest.raises(InvalidInputError, match="'NOPE' is no DAAC"):
        earthdata("NOPE")
    with pytest.raises(InvalidInputError, match="give buckets="):
        earthdata("ASF")


# ------------------------------------------------------------------------- S3 keys from an endpoint


def test_temporary_s3_keys_span_several_expiries_with_one_fetch_per_expiry(seaweedfs, seam_rows):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    expected = local_mosaic(rows, chunks=32)
    answer = CredentialsServer.s3(keys(seaweedfs, "alice", "admin"), lifetime=3.0)
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = temporary(seaweedfs, endpoint, refresh_margin=0.5)
        index = moved(rows, [seaweedfs.url("bucket-a", p) for p in rel])  # anonymous cannot read it
        ds = mosaic.load(
            SEAM12, "EPSG:4326", index=index, chunks=32, auth=profile, max_concurrency=32, **GRID
        )
        limiter = get_limiter(32)
        limiter.reset_counters()
        results, elapsed = compute_until(ds, 7.0)
        reads = limiter.stats().reads
    assert all(np.array_equal(r, expected) for r in results)
    fetches = len(endpoint.calls)
    # keys live 2-3 s (the expiry has whole seconds) and are replaced 0.5 s before: a fetch every
    # 1.5 s at the most, and at least one per 2.5 s while reads go on
    assert 3 <= fetches <= elapsed / 1.5 + 1
    assert reads >= 10 * fetches  # not a fetch per read
    assert fetch_count(profile.credentials_key) == fetches and endpoint.refused == 0


def test_an_index_on_s3_is_read_with_the_temporary_keys_too(seaweedfs, demo_index, tmp_path):
    folder = demo_index.write(tmp_path / "demo", partition_by="utm_zone")
    admin = seaweedfs.client("admin")
    keys_written = []
    for f in folder.rglob("*.parquet"):
        keys_written.append(f"creds-index/{f.relative_to(folder).as_posix()}")
        admin.upload_file(str(f), "bucket-a", keys_written[-1])
    try:
        answer = CredentialsServer.s3(keys(seaweedfs, "alice"), lifetime=3600)
        with CredentialsServer(answer, token=TOKEN) as endpoint:
            profile = temporary(seaweedfs, endpoint)
            seam = dict(resolution=0.001, bands="B02", time="2024-06-01")
            expected = mosaic.load(SEAM12, "EPSG:4326", index=demo_index, **seam).B02.values
            got = mosaic.load(SEAM12, "EPSG:4326", index="s3://bucket-a/creds-index/", auth=profile, **seam)
            assert np.array_equal(got.B02.values, expected, equal_nan=True)
        assert len(endpoint.calls) == 1  # the keys the index was read with (the pixels are local files)
    finally:
        for key in keys_written:
            admin.delete_object(Bucket="bucket-a", Key=key)


def test_a_read_refused_with_stale_keys_fetches_once_and_retries(seaweedfs, seam_rows):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    revoked = ("REVOKEDKEY000000", "revoked-secret-0b1d")  # SeaweedFS refuses it: InvalidAccessKeyId
    answer = CredentialsServer.s3([revoked, *keys(seaweedfs, "alice")], lifetime=3600)
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = temporary(seaweedfs, endpoint)
        index = moved(rows, [seaweedfs.url("bucket-a", p) for p in rel])
        ds = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=32, auth=profile, **GRID)
        # one dask thread: GDAL keeps one record of a URL's failure for all threads, so with many,
        # a read with the fresh keys can be refused from a straggler's record and refresh once more
        # (the many-thread refusal is tested on signed URLs below, one URL per token)
        with dask.config.set(scheduler="threads", num_workers=1):
            got = ds.B02.values
    assert np.array_equal(got, local_mosaic(rows, chunks=32))
    assert len(endpoint.calls) == 2  # the stale keys, then one refresh for all the refused reads


def test_keys_that_stay_refused_raise_authentication_error_with_the_region_hint(seaweedfs, seam_rows):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    answer = CredentialsServer.s3(keys(seaweedfs, "bob"), lifetime=3600)  # bob cannot read bucket-a
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = temporary(seaweedfs, endpoint, hint="outside us-west-2 use earthdata('X', direct=False)")
        index = moved(rows[:1], [seaweedfs.url("bucket-a", rel[0])])
        with pytest.raises(AuthenticationError, match="direct=False") as info:
            mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile, **GRID).compute()
    assert len(endpoint.calls) == 2  # refused: one refresh, one retry, then the error
    assert seaweedfs.users["bob"].secret_key not in str(info.value)


def test_a_bad_token_is_an_authentication_error_naming_the_endpoint_not_the_token(seaweedfs, seam_rows):
    rows, rel = seam_rows
    answer = CredentialsServer.s3(keys(seaweedfs, "alice"), lifetime=3600)
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = temporary(seaweedfs, endpoint, token=Secret("wrong-token-93ab"))
        index = moved(rows[:1], [seaweedfs.url("bucket-a", rel[0])])
        with pytest.raises(AuthenticationError, match="refused the credentials") as info:
            mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile, **GRID).compute()
    message = str(info.value)
    assert f"{endpoint.url}/s3credentials" in message and "HTTP 401" in message
    assert "wrong-token-93ab" not in message and TOKEN not in message
    assert endpoint.refused >= 1 and endpoint.calls == []


def test_without_a_token_the_keys_come_through_an_earthdata_login_with_user_and_password(
    seaweedfs, seam_rows, tmp_path, monkeypatch
):
    # a DAAC's s3credentials endpoint sends a caller without a token to Earthdata Login (another host):
    # the user name and password go to the login host only, the session cookie back to the DAAC
    rows, rel = seam_rows
    password = "pw-ed1-5e1f0c"
    keys_json = CredentialsServer.s3(keys(seaweedfs, "alice"), lifetime=3600)(0, "/s3credentials")
    (tmp_path / "daac").mkdir()
    (tmp_path / "daac" / "s3credentials").write_text(json.dumps(keys_json))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no token `mosaic login` stored
    monkeypatch.delenv("EARTHDATA_TOKEN", raising=False)
    monkeypatch.setenv("EARTHDATA_USERNAME", "ada")
    index = moved(rows[:1], [seaweedfs.url("bucket-a", rel[0])])
    with RangeServer(tmp_path / "daac") as daac, RangeServer(tmp_path / "daac") as login:
        daac.login_gate("/", login.base_url.replace("127.0.0.1", "localhost"), code="c0de", session="s3ss")
        login.login_host(user="ada", password=password, code="c0de")

        def profile() -> TemporaryS3Profile:
            return TemporaryS3Profile(
                "s3://bucket-a",
                daac.url("s3credentials"),
                endpoint=seaweedfs.endpoint_url,
                region=seaweedfs.region,
                login_host="localhost",
            )

        monkeypatch.setenv("EARTHDATA_PASSWORD", "not-" + password)
        with pytest.raises(AuthenticationError, match="refused the credentials") as info:
            mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile(), **GRID).compute()
        assert daac.url("s3credentials") in str(info.value) and password not in str(info.value)
        monkeypatch.setenv("EARTHDATA_PASSWORD", password)
        login.reset_stats()
        daac.reset_stats()
        got = mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile(), **GRID).B02.values
        logins = [r for r in login.log if r.path == "/oauth/authorize"]
        daac_log = list(daac.log)
    assert np.array_equal(got, local_mosaic(rows[:1]))
    assert [(r.auth_scheme, r.status) for r in logins] == [(None, 401), ("Basic", 302)]  # asked, then sent
    assert [r.status for r in daac_log if r.path == "/s3credentials"] == [302, 200]  # to the login, back
    assert not any(r.authorization for r in daac_log)  # the DAAC never sees the password


def test_the_token_comes_from_the_environment_and_an_empty_session_token_is_none(seaweedfs, monkeypatch):
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    answer = CredentialsServer.s3(keys(seaweedfs, "alice"), lifetime=3600, session_token="")
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = TemporaryS3Profile("s3://bucket-a", f"{endpoint.url}/s3credentials", region="us-west-2")
        options = gdal_options_for("s3://bucket-a/x.tif", [profile])
    assert options["AWS_ACCESS_KEY_ID"] == seaweedfs.users["alice"].access_key
    assert "AWS_SESSION_TOKEN" not in options and options["AWS_REGION"] == "us-west-2"
    # a session token is passed on (SeaweedFS refuses session tokens it did not issue: options only)
    answer = CredentialsServer.s3(keys(seaweedfs, "alice"), lifetime=3600, session_token="sess-tok-44e1")
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = TemporaryS3Profile("s3://bucket-a", f"{endpoint.url}/s3credentials")
        assert gdal_options_for("s3://bucket-a/x.tif", [profile])["AWS_SESSION_TOKEN"] == "sess-tok-44e1"
        assert b"sess-tok-44e1" not in pickle.dumps(profile) and "sess-tok-44e1" not in repr(profile)


def test_the_pickled_profile_plan_and_graph_hold_no_temporary_keys(seaweedfs, seam_rows, monkeypatch):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    monkeypatch.setenv("MOSAIC_TEST_TOKEN", TOKEN)
    alice = seaweedfs.users["alice"]
    answer = CredentialsServer.s3(keys(seaweedfs, "alice"), lifetime=3600)
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = temporary(seaweedfs, endpoint, token=Secret.from_env("MOSAIC_TEST_TOKEN"))
        index = moved(rows, [seaweedfs.url("bucket-a", p) for p in rel])
        ds = mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile, **GRID)
        plan = mosaic.plan(SEAM12, "EPSG:4326", index=index, auth=profile, **GRID)
        assert np.array_equal(ds.B02.values, local_mosaic(rows))  # keys fetched and used
        assert profile.credentials().options["AWS_SECRET_ACCESS_KEY"] == alice.secret_key
        blobs = [pickle.dumps(profile), pickle.dumps(plan), pickle.dumps(dict(ds.B02.data.__dask_graph__()))]
        texts = [repr(profile), repr(plan), str(plan.summary()), repr(dict(ds.B02.data.__dask_graph__()))]
    for secret in (alice.secret_key, alice.access_key, TOKEN):
        assert not any(secret.encode() in blob for blob in blobs)
        assert not any(secret in text for text in texts)
    assert pickle.loads(blobs[0]) == profile  # how to get keys: the URL and the variable's name


def test_each_process_of_a_two_worker_cluster_fetches_its_own_keys_across_expiries(
    seaweedfs, seam_rows, monkeypatch
):
    from dask.distributed import Client, LocalCluster

    rows, rel = seam_rows
    clear_gdal_http_cache()
    monkeypatch.setenv("MOSAIC_TEST_TOKEN", TOKEN)  # the workers' environment: only the name travels
    answer = CredentialsServer.s3(keys(seaweedfs, "alice", "admin"), lifetime=3.0)
    with CredentialsServer(answer, token=TOKEN) as endpoint:
        profile = temporary(
            seaweedfs, endpoint, token=Secret.from_env("MOSAIC_TEST_TOKEN"), refresh_margin=0.5
        )
        index = moved(rows, [seaweedfs.url("bucket-a", p) for p in rel])
        ds = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=32, auth=profile, **GRID)
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=8, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            results = [ds.compute().B02.values]  # (the workers' first imports and opens)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 7.0:
                results.append(ds.compute().B02.values)
            elapsed = time.monotonic() - t0
            per_worker = client.run(lambda: fetch_count(profile.credentials_key))
    assert all(np.array_equal(r, local_mosaic(rows, chunks=32)) for r in results)
    assert len(per_worker) == 2 and all(n >= 1 for n in per_worker.values())  # each fetched for itself
    assert sum(per_worker.values()) == len(endpoint.calls)
    assert max(per_worker.values()) >= 3  # a worker that read throughout refreshed across expiries
    assert len(endpoint.calls) <= 2 * (elapsed / 1.5 + 2)
    assert fetch_count(profile.credentials_key) == 0  # the client process fetched nothing


class BearerTokens:
    """A provider handing out the next of ``tokens`` at each fetch (an hour's validity each)."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.calls = 0

    def fetch(self) -> Credentials:
        token = self.tokens[min(self.calls, len(self.tokens) - 1)]
        self.calls += 1
        expires = parse_expiration(time.time() + 3600)
        return Credentials({"GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}"}, expires=expires)


def test_an_http_401_after_a_token_is_revoked_refreshes_once_for_all_the_reads(http_server, seam_rows):
    from mosaic.io.runtime import reset

    rows, rel = seam_rows
    expected = local_mosaic(rows, chunks=32)
    http_server.require("/", bearer="token-one-5d")
    provider = BearerTokens("token-one-5d", "token-two-8a")
    profile = RefreshingProfile(http_server.base_url, provider)
    index = moved(rows, [http_server.url(p) for p in rel])
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=32, auth=profile, **GRID)
    with dask.config.set(scheduler="threads", num_workers=32):
        assert np.array_equal(ds.B02.values, expected)
    assert provider.calls == 1
    http_server.clear_rules()  # the server now takes only the second token: the first one is revoked
    http_server.require("/", bearer="token-two-8a")
    reset()  # (nothing read before may be answered from memory)
    clear_gdal_http_cache()
    http_server.reset_stats()
    with dask.config.set(scheduler="threads", num_workers=1):  # (one thread: see the S3 test above)
        assert np.array_equal(ds.B02.values, expected)
    assert provider.calls == 2  # the refused reads shared one refresh
    assert any(r.status == 401 for r in http_server.log)  # the server really refused it
    # indexing reads too: a refused header read refreshes once and retries
    clear_gdal_http_cache()
    stale = BearerTokens("token-one-5d", "token-two-8a")
    pattern = r"(?P<id>[^/]+)/(?P<asset>[^/.]+)\.tif$"
    auth = RefreshingProfile(http_server.base_url, stale)
    built = TileIndex.from_files(
        [r.href for r in index], pattern=pattern, auth=auth, progress=False, workers=1
    )
    assert sorted(r.id for r in built) == sorted(SCENES) and stale.calls == 2


# ------------------------------------------------------------------------------ Azure: SAS tokens

SAS_LIFE = 4.0


def sas_endpoint(azurite: Azurite, first_expired: bool = False) -> CredentialsServer:
    """Container SAS tokens valid for SAS_LIFE s (the first one already expired, if asked)."""

    def make(n: int, account: str, container: str, expires: float) -> str:
        assert account == AZURITE_ACCOUNT
        return azurite.container_sas(container, time.time() - 10 if first_expired and n == 0 else expires)

    return CredentialsServer(CredentialsServer.sas(make, SAS_LIFE))


def blob_urls(azurite: Azurite, rel: list[str]) -> list[str]:
    return [f"{azurite.endpoint}/data/{p}" for p in rel]


def test_sas_tokens_refresh_across_expiries_that_azurite_enforces(azurite, seam_rows):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    expected = local_mosaic(rows, chunks=32)
    index = moved(rows, blob_urls(azurite, rel))
    with pytest.raises(AuthenticationError):  # unsigned, Azurite refuses the private container
        mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID).compute()
    with sas_endpoint(azurite) as endpoint:
        profile = PlanetaryComputerProfile(
            azurite.endpoint, token_url=f"{endpoint.url}/token", refresh_margin=1
        )
        ds = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=32, auth=profile, **GRID)
        results, elapsed = compute_until(ds, 2.5 * SAS_LIFE)
    assert all(np.array_equal(r, expected) for r in results)
    assert all(path == f"/token/{AZURITE_ACCOUNT}/data" for path in endpoint.calls)
    assert 3 <= len(endpoint.calls) <= elapsed / 2 + 1  # a token per 2-3 s, not one per read


def test_an_expired_sas_token_is_refused_then_replaced_once(azurite, seam_rows):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    with sas_endpoint(azurite, first_expired=True) as endpoint:
        profile = PlanetaryComputerProfile(azurite.endpoint, token_url=f"{endpoint.url}/token")
        ds = mosaic.load(
            SEAM12, "EPSG:4326", index=moved(rows, blob_urls(azurite, rel)), chunks=32, auth=profile, **GRID
        )
        with dask.config.set(scheduler="threads", num_workers=32):
            got = ds.B02.values
    assert np.array_equal(got, local_mosaic(rows, chunks=32))
    assert len(endpoint.calls) == 2  # the expired token (HTTP 403 from Azurite), then one refresh


def sign_with_sas(href: str) -> str:
    """A user's signer (as ``planetary_computer.sign``): a module-level function, picklable by name."""
    return f"{href}?{_SAS['token']}" if href.startswith("http://127.0.0.1") else href


_SAS: dict[str, str] = {}


def test_sign_signs_at_read_time_only(azurite, seam_rows, demo_collection, tmp_path):
    rows, rel = seam_rows
    clear_gdal_http_cache()
    _SAS["token"] = azurite.container_sas("data", time.time() + 600)
    signature = _SAS["token"].split("sig=")[1].split("&")[0]
    urls = blob_urls(azurite, rel)
    items = [i.clone() for i in demo_collection[1] if i.id in SCENES]
    for item in items:  # the same Items, their assets in the Azurite container
        for asset in item.assets.values():
            asset.href = (
                f"{azurite.endpoint}/data/{Path(asset.href).relative_to(demo_collection[0]).as_posix()}"
            )
    index = TileIndex.from_stac(
        items, assets=["B02"], sign=sign_with_sas, tile_ranges=True
    )  # opens each file
    assert sorted(r.href for r in index) == sorted(urls) and all(r.tiles for r in index)
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, sign=sign_with_sas, **GRID)
    assert np.array_equal(ds.B02.values, local_mosaic(rows))
    plan = mosaic.plan(SEAM12, "EPSG:4326", index=index, sign=sign_with_sas, **GRID)
    graph = dict(ds.B02.data.__dask_graph__())
    index.write(tmp_path / "index.parquet")
    from mosaic.outputs.gti import export_gti

    export_gti(index, tmp_path / "mosaic.gti.gpkg", crs="EPSG:4326", resolution=0.00005)  # (opens no file)
    saved = [(tmp_path / "index.parquet").read_bytes(), (tmp_path / "mosaic.gti.gpkg").read_bytes()]
    shown = [repr(plan), str(plan.summary()), repr(list(graph)), repr(graph)]
    pickled = [pickle.dumps(plan), pickle.dumps(graph)]
    for blob in saved + pickled:
        assert signature.encode() not in blob
    assert not any(signature in text for text in shown)
    from mosaic.io.runtime import reset

    reset()  # (tiles fetched above stay in this process's memory, by plain href)
    clear_gdal_http_cache()
    with pytest.raises(AuthenticationError):  # the index alone: plain hrefs, refused
        mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID).compute()
    out = mosaic.regrid(tmp_path / "out.zarr", SEAM12, "EPSG:4326", index=index, sign=sign_with_sas, **GRID)
    assert out is not None
    import xarray as xr

    written = xr.open_zarr(tmp_path / "out.zarr", mask_and_scale=False).B02.values
    assert np.array_equal(written, local_mosaic(rows))
    for file in (tmp_path / "out.zarr").rglob("*"):  # the store's record of the sources: plain hrefs
        assert not file.is_file() or signature.encode() not in file.read_bytes()


def test_azure_profiles_read_az_hrefs_with_a_key_a_sas_or_a_connection_string(azurite, seam_rows):
    rows, rel = seam_rows
    expected = local_mosaic(rows[:1])
    sas = azurite.container_sas("data", time.time() + 600)
    index = moved(rows[:1], [f"az://data/{rel[0]}"])
    for profile in (
        AzureProfile(
            "az://data", account=AZURITE_ACCOUNT, key=Secret(AZURITE_KEY), endpoint=azurite.endpoint
        ),
        AzureProfile("az://data", account=AZURITE_ACCOUNT, sas=Secret(sas), endpoint=azurite.endpoint),
        AzureProfile("az://data", connection_string=Secret(azurite.connection_string)),
    ):
        clear_gdal_http_cache()
        got = mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile, **GRID).B02.values
        assert np.array_equal(got, expected)
        assert AZURITE_KEY not in repr(profile) and sas not in repr(profile)
    clear_gdal_http_cache()
    wrong = AzureProfile(
        "az://data", account=AZURITE_ACCOUNT, key=Secret("d3Jvbmc="), endpoint=azurite.endpoint
    )
    with pytest.raises(AuthenticationError):
        mosaic.load(SEAM12, "EPSG:4326", index=index, auth=wrong, **GRID).compute()


def test_azure_and_gcs_gdal_options():
    az = AzureProfile("abfs://data@acct.dfs.core.windows.net", account="acct", key="k3y")
    assert az.gdal_options() == {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_ACCESS_KEY": "k3y"}
    assert gdal_options_for("/vsiaz/data/x.tif", [az]) == az.gdal_options()
    sas = AzureProfile("az://data", account="acct", sas="?sv=1&sig=abc")
    assert sas.gdal_options() == {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_SAS_TOKEN": "sv=1&sig=abc"}
    public = AzureProfile("az://open", account="acct", anonymous=True)
    assert public.gdal_options()["AZURE_NO_SIGN_REQUEST"] == "YES"
    conn = AzureProfile("/vsiaz/data", connection_string="AccountName=a;AccountKey=b")
    assert conn.gdal_options() == {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=b"}
    assert "AccountKey=b" not in repr(conn)
    with pytest.raises(InvalidInputError, match="one of"):
        AzureProfile("az://data", account="a", key="k", sas="s")
    with pytest.raises(InvalidInputError, match="account="):
        AzureProfile("az://data", key="k")
    # GCS: no emulator installs from the registries here, so the options GDAL gets are what is tested
    sa = GCSProfile("gs://bucket", service_account="/keys/sa.json")
    assert sa.gdal_options() == {
        "GS_NO_SIGN_REQUEST": "NO",
        "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
    }
    hmac = GCSProfile("gs://bucket", hmac_key_id="GOOG1", hmac_secret="hs3cret", project="p")
    assert hmac.gdal_options() == {
        "GS_NO_SIGN_REQUEST": "NO",
        "GS_ACCESS_KEY_ID": "GOOG1",
        "GS_SECRET_ACCESS_KEY": "hs3cret",
        "GS_USER_PROJECT": "p",
    }
    assert "hs3cret" not in repr(hmac)
    assert GCSProfile("/vsigs/open", anonymous=True).gdal_options() == {"GS_NO_SIGN_REQUEST": "YES"}
    with pytest.raises(InvalidInputError, match="both"):
        GCSProfile("gs://b", hmac_key_id="x")
    with pytest.raises(InvalidInputError, match="not a gs://"):
        GCSProfile("s3://b")


def test_earthdata_builds_temporary_s3_profiles_or_the_https_fallback():
    direct = earthdata("LPDAAC", token=Secret.from_env("EDL"))
    assert [p.prefix for p in direct] == ["s3://lp-prod-protected", "s3://lp-prod-public"]
    assert {p.credentials_url for p in direct} == {
        "https://data.lpdaac.earthdatacloud.nasa.gov/s3credentials"
    }
    assert len({p.credentials_key for p in direct}) == 1  # one fetch serves both buckets
    assert all(p.region == "us-west-2" and "direct=False" in (p.hint or "") for p in direct)
    by_bucket = earthdata("s3://podaac-ops-cumulus-protected/SWOT/x.nc")
    assert [p.prefix for p in by_bucket] == ["s3://podaac-ops-cumulus-protected"]
    https = earthdata("LPDAAC", direct=False)
    assert [p.prefix for p in https] == ["https://data.lpdaac.earthdatacloud.nasa.gov"]
    assert earthdata("ASF", buckets=["asf-bucket"])[0].credentials_url.endswith("/s3credentials")


def test_a_refreshing_profile_takes_any_provider_and_signs_with_its_query():
    profile = RefreshingProfile("https://h/data", SlowProvider(lifetime=3600))
    access = access_for("https://h/data/x.tif", [profile])
    assert access.options == {"GDAL_HTTP_HEADERS": "Authorization: Bearer x"} and len(access.used) == 1
    s3 = S3Profile("s3://b", access_key_id="A", secret_access_key="s")
    assert access_for("s3://b/x.tif", [s3, profile]).used == ()  # static profiles refresh nothing
    assert dataclasses.replace(profile).provider is profile.provider


# ------------------------------------------------------------------------------------ the CLI


def test_login_stores_the_token_0600_and_auth_check_reads_with_it(
    seaweedfs, seam_rows, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from mosaic.cli import cli
    from mosaic.io.userconfig import config_path, load

    _rows, rel = seam_rows
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EARTHDATA_TOKEN", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["login", "--token-stdin"], input=TOKEN + "\n")
    assert result.exit_code == 0, result.output
    path = config_path()
    assert path == tmp_path / "config" / "mosaic" / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert TOKEN not in result.output and load()["earthdata"]["token"] == TOKEN
    alice = seaweedfs.users["alice"]
    answer = CredentialsServer.s3(keys(seaweedfs, "alice"), lifetime=3600)
    clear_gdal_http_cache()
    with CredentialsServer(answer, token=TOKEN) as endpoint:  # the stored token gets the keys
        args = ["auth", "check", seaweedfs.url("bucket-a", rel[0]), "--endpoint", seaweedfs.endpoint_url]
        result = runner.invoke(cli, [*args, "--s3credentials", f"{endpoint.url}/s3credentials"])
    assert result.exit_code == 0, result.output
    assert (
        "profile: TemporaryS3Profile for s3://bucket-a" in result.output
        and "read: ok (GTiff" in result.output
    )
    assert len(endpoint.calls) == 1
    for secret in (TOKEN, alice.secret_key, alice.access_key):
        assert secret not in result.output
    path.chmod(0o644)  # a file others can read is refused, not used
    with pytest.raises(InvalidInputError, match="chmod 600"):
        load()


def test_auth_check_reports_a_failed_read_and_the_profile_it_would_use(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mosaic.cli import cli

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(cli, ["auth", "check", str(tmp_path / "missing.tif")])
    assert result.exit_code == 1 and "profile: none" in result.output and "read: failed" in result.output
    monkeypatch.setenv("EARTHDATA_TOKEN", "never-shown-1f2e")
    endpoint = "https://data.lpdaac.earthdatacloud.nasa.gov/s3credentials"
    with CredentialsServer(lambda n, path: {}, token="other") as refusing:  # stands in for NASA, refusing
        monkeypatch.setitem(
            importlib.import_module("mosaic.io.providers").DAACS["LPDAAC"],
            "s3credentials",
            refusing.url,
        )
        result = runner.invoke(cli, ["auth", "check", "s3://lp-prod-protected/HLS/x.tif"])
    assert result.exit_code == 1, result.output
    assert "profile: TemporaryS3Profile for s3://lp-prod-protected" in result.output
    assert "refused the credentials (HTTP 401)" in result.output and "never-shown-1f2e" not in result.output
    assert endpoint not in result.output  # (the table entry was pointed at the local server)
