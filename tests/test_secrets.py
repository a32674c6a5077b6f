"""Secrets kept, and indexes from someone else kept in their place.

- every form of secret an href can carry is recognised (nested and encoded URLs too): ``export_gti``
  refuses it naming the scene and the kind of secret, and every message, warning, repr, attribute and
  record that shows an href shows it redacted;
- the Earthdata password is never on disk (a real login redirect through two servers; real processes
  killed with SIGKILL and SIGTERM, their temp folders searched for the password);
- ``allowed_prefixes=`` / ``$MOSAIC_ALLOWED_PREFIXES`` refuse an index pointing at ``/etc/passwd`` or at
  another server before anything is opened (the server sees no request).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import traceback
import warnings
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import mosaic
from mosaic import TileIndex
from mosaic.auth import EarthdataProfile, HTTPProfile, Secret
from mosaic.cli import cli
from mosaic.cli.plan import plan_facts
from mosaic.errors import (
    AuthenticationError,
    HrefNotAllowedError,
    InvalidInputError,
    ReadFailedWarning,
    SecretHrefWarning,
    SkippedSourcesWarning,
    SourceError,
)
from mosaic.io.paths import ALLOWED_PREFIXES_ENV, check_allowed, credentials_in, redact, secrets_in
from mosaic.outputs.gti import export_gti
from servers import RangeServer

SEAM12 = (11.88, 45.40, 12.12, 45.58)
SCENES = ("S32-seam12-20240601", "S33-seam12-20240601")
GRID = dict(resolution=0.0008, bands="B02", groupby=None)
SECRET = "s3cr3tVALUE"  # every secret in these tests contains it: no output may
GTI_ARGS = dict(crs="EPSG:4326", resolution=0.001, bbox=SEAM12)


@pytest.fixture
def seam_rows(demo_index, demo_collection):
    """The B02 rows of the two seam scenes, and their paths relative to the demo root."""
    root = Path(demo_collection[0])
    rows = sorted((r for r in demo_index if r.id in SCENES and r.asset == "B02"), key=lambda r: r.id)
    return rows, [Path(r.href).relative_to(root).as_posix() for r in rows]


def moved(rows, hrefs, **kwargs) -> TileIndex:
    return TileIndex.from_records(
        [dataclasses.replace(r, href=h) for r, h in zip(rows, hrefs, strict=True)], **kwargs
    )


def shown(exc: BaseException) -> str:
    """Everything a traceback of ``exc`` prints: its message and its causes'."""
    return "".join(traceback.format_exception(exc))


# ------------------------------------------------------------------------------- the recogniser

ENCODED = quote(f"https://me:{SECRET}@example.com/B02.tif", safe="")
FORMS = [
    (f"https://me:{SECRET}@example.com/B02.tif", "password in the URL"),
    (f"https://{SECRET}@example.com/B02.tif", "user name in the URL"),
    (f"/vsicurl/https://me:{SECRET}@example.com/B02.tif", "password in the URL"),
    (f"/vsicurl?url={ENCODED}", "password in the URL (user:password@) inside the 'url' value"),
    (f"/vsicurl?use_head=no&url={quote(ENCODED, safe='')}", "inside the 'url' value"),  # encoded twice
    (f"/vsicurl?cookie=session%3D{SECRET}&url=https%3A%2F%2Fexample.com%2FB02.tif", "'cookie'"),
    (f"/vsicurl?header.Authorization=Bearer%20{SECRET}&url=https%3A%2F%2Fexample.com%2FB", "Authorization"),
    (f"/vsicurl?proxyuserpwd=me%3A{SECRET}&url=https%3A%2F%2Fexample.com%2FB02.tif", "'proxyuserpwd'"),
    (f"vrt:///vsicurl/http://me:{SECRET}@example.com/B02.tif?bands=1", "password in the URL"),
    (f"/vsizip//vsicurl/https://me:{SECRET}@example.com/a.zip/B02.tif", "password in the URL"),
    *(
        (f"https://example.com/B02.tif?x=1&{key}={SECRET}", f"'{key}'")
        for key in ("password", "auth_token", "token", "access_token", "x-api-key", "api_key", "key")
    ),
    *(
        (f"https://example.com/B02.tif?{key}={SECRET}&y=2", f"'{key}'")
        for key in ("secret", "client_secret", "access_key", "AWSAccessKeyId", "Signature")
    ),
    (
        f"https://b.s3.amazonaws.com/B02.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={SECRET}"
        f"%2F20240601%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240601T000000Z&X-Amz-Expires=3600"
        f"&X-Amz-Security-Token={SECRET}&X-Amz-SignedHeaders=host&X-Amz-Signature={SECRET}",
        "'X-Amz-Signature'",
    ),
    (f"https://b.s3.amazonaws.com/B02.tif?X-Amz-Security-Token={SECRET}", "'X-Amz-Security-Token'"),
    (f"https://a.blob.core.windows.net/c/B02.tif?sv=2022-11-02&se=2024&sr=b&sp=r&sig={SECRET}%3D", "'sig'"),
    (f"https://storage.googleapis.com/b/B02.tif?X-Goog-Credential=sa&X-Goog-Signature={SECRET}", "Goog"),
    (f"https://example.com/B02.tif#access_token={SECRET}", "'access_token'"),
    (
        "/vsicurl?url=" + quote(f"https://a.blob.core.windows.net/c/B02.tif?sv=1&sig={SECRET}", safe=""),
        "the 'sig' parameter inside the 'url' value",
    ),
]


@pytest.mark.parametrize(("href", "kind"), FORMS, ids=[f"{i}" for i in range(len(FORMS))])
def test_export_gti_refuses_every_form_of_secret_naming_scene_and_kind(demo_index, tmp_path, href, kind):
    row = next(r for r in demo_index.query(SEAM12) if r.asset == "B02")
    index = TileIndex.from_records([dataclasses.replace(row, href=href)])
    with pytest.raises(InvalidInputError) as info:
        export_gti(index, tmp_path / "s.gti.gpkg", **GTI_ARGS)
    message = str(info.value)
    assert row.id in message and kind in message and "\n" not in message
    assert SECRET not in message
    assert not list(tmp_path.iterdir())  # nothing written
    assert SECRET not in redact(href) and secrets_in(href) and credentials_in(href)


def test_hrefs_without_secrets_are_left_alone():
    for clean in (
        "https://example.com/b.tif?bands=1&X-Amz-Date=20240601T000000Z&X-Amz-Expires=60",
        "abfs://container@account.dfs.core.windows.net/b.tif",  # a container, not a user
        "s3://bucket/b.tif",
        "/vsis3/b/k.tif",
        "/data/scenes/b.tif",
        "vrt:///data/b.tif?bands=1,2",
        "/vsicurl?use_head=no&url=https%3A%2F%2Fexample.com%2Fb.tif",
        "GTI:/data/m.gti.gpkg",
    ):
        assert secrets_in(clean) == () and credentials_in(clean) is None and redact(clean) == clean


def test_redact_keeps_what_identifies_an_href_and_blanks_the_secret():
    cases = {
        f"https://me:{SECRET}@h.org/x.tif?X-Amz-Date=2024&X-Amz-Signature={SECRET}": (
            "https://me:***@h.org/x.tif?X-Amz-Date=2024&X-Amz-Signature=***"
        ),
        f"https://{SECRET}@h.org/x.tif": "https://***@h.org/x.tif",
        f"/vsicurl?cookie=a%3D{SECRET}&url=https%3A%2F%2Fh.org%2Fx.tif": (
            "/vsicurl?cookie=***&url=https%3A%2F%2Fh.org%2Fx.tif"
        ),
        # a nested encoded URL: decoded, redacted, encoded again
        f"/vsicurl?url={ENCODED}": "/vsicurl?url=https://me:***@example.com/B02.tif",
        # in a message: the URL ends at a quote or a space
        f"'/vsicurl/https://h.org/x.tif?sig={SECRET}' not recognized": (
            "'/vsicurl/https://h.org/x.tif?sig=***' not recognized"
        ),
    }
    for text, expected in cases.items():
        assert redact(text) == expected
        assert redact(expected) == expected  # idempotent


# ---------------------------------------------------------------- wherever an href is shown


@pytest.fixture
def gated(demo_collection):
    """A server of the demo root that wants basic ada/pw-456 (hrefs with other credentials fail)."""
    with RangeServer(demo_collection[0]) as server:
        server.require("/", basic=("ada", "pw-456"))
        yield server


def test_messages_warnings_attrs_and_reprs_never_show_a_secret(gated, seam_rows, tmp_path):
    rows, rel = seam_rows
    base = gated.base_url.replace("http://", f"http://ada:{SECRET}@")
    hrefs = [f"{base}/{p}?sig={SECRET}" for p in rel]
    index = moved(rows, hrefs)
    texts = {}
    plan = mosaic.plan(SEAM12, "EPSG:4326", index=index, **GRID)
    read = plan.tasks[0].reads[0]
    assert SECRET in read.href  # the real href is kept: it is what is read
    texts["reprs"] = [repr(read), repr(plan.tasks), repr(index.records()), repr(plan), plan.explain(0, 0)]
    with pytest.raises(AuthenticationError) as info:
        mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID).compute()
    texts["error"] = shown(info.value)
    assert rel[0] in texts["error"] or rel[1] in texts["error"]  # it still names the href
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = mosaic.load(SEAM12, "EPSG:4326", index=index, on_error="skip", **GRID).compute()
    texts["read warnings"] = [str(w.message) for w in caught if issubclass(w.category, ReadFailedWarning)]
    texts["failed_reads"] = list(ds.attrs["failed_reads"])
    assert len(texts["read warnings"]) == 1 and len(texts["failed_reads"]) == 2
    with pytest.raises(AuthenticationError) as info:
        TileIndex.from_files(hrefs[:1], progress=False)
    texts["indexing error"] = shown(info.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = TileIndex.from_files([*hrefs, rows[0].href], progress=False, on_error="skip")
    texts["skip warnings"] = [str(w.message) for w in caught if issubclass(w.category, SkippedSourcesWarning)]
    assert len(built.skipped) == 2 and texts["skip warnings"]
    texts["skipped"] = [str(s) for s in built.skipped] + [repr(s) for s in built.skipped]
    built.write(tmp_path / "i.parquet")
    texts["index file metadata"] = str(pq.read_schema(tmp_path / "i.parquet").metadata)
    result = CliRunner().invoke(cli, ["index", "info", "--index", str(tmp_path / "i.parquet"), "--json"])
    texts["index info"] = result.output
    assert result.exit_code == 0 and "skipped" in result.output
    result = CliRunner().invoke(cli, ["index", "build", hrefs[0], "-o", str(tmp_path / "j.parquet")])
    texts["cli error"] = result.output
    assert result.exit_code == 1 and "error:" in result.output
    dumped = json.dumps(texts)
    assert SECRET not in dumped
    assert "ada:***@" in dumped and "sig=***" in dumped  # redacted, not dropped


def test_a_gdal_message_quoting_the_href_is_redacted_in_the_cause_too(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"not a TIFF " * 500)
    with RangeServer(tmp_path) as server:
        href = server.base_url.replace("http://", f"http://me:{SECRET}@") + f"/x.tif?sig={SECRET}"
        with pytest.raises(SourceError, match="not a raster") as info:
            TileIndex.from_files([href], progress=False)
    assert "not recognized" in str(info.value.__cause__)  # GDAL's own message, which quotes the path
    assert SECRET not in shown(info.value)


def test_the_request_record_and_dataset_attrs_redact_the_index_source(seam_rows, tmp_path):
    rows, _ = seam_rows
    source = f"https://me:{SECRET}@example.com/index.parquet?sig={SECRET}"
    index = TileIndex.from_records(rows, source=source)
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID)
    plan = mosaic.plan(SEAM12, "EPSG:4326", index=index, **GRID)
    assert SECRET not in json.dumps(ds.attrs, default=str) + plan._repr_html_() + repr(index)
    assert "me:***@example.com" in ds.attrs["index"]
    assert "me:***@example.com" in json.dumps(plan_facts(plan))  # what `mosaic plan --json` prints
    mosaic.regrid(tmp_path / "out.zarr", SEAM12, "EPSG:4326", index=index, progress=False, **GRID)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "out.zarr").rglob("*") if p.is_file())
    assert b"me:***@example.com" in stored and SECRET.encode() not in stored


def test_the_retry_after_probe_sends_no_credentials_to_where_a_server_redirects(http_server_pair, seam_rows):
    origin, other = http_server_pair
    rows, rel = seam_rows
    origin.redirect("/", other.base_url.replace("127.0.0.1", "localhost"))  # another host name
    origin.faults.add(503, path_glob="*.tif", times=1, methods=["HEAD"])  # a retry, so a probe
    auth = HTTPProfile(origin.base_url, bearer=Secret(SECRET))
    got = mosaic.load(SEAM12, "EPSG:4326", index=moved(rows[:1], [origin.url(rel[0])]), auth=auth, **GRID)
    expected = mosaic.load(SEAM12, "EPSG:4326", index=TileIndex.from_records(rows[:1]), **GRID)
    assert np.array_equal(got.B02.values, expected.B02.values)
    assert sum(r.method == "HEAD" and r.status == 302 for r in origin.log) >= 2  # GDAL's, and the probe's
    assert other.log and not any(r.authorization for r in other.log)


def test_gdal_options_carrying_secrets_are_hidden_in_plans_and_graphs(seam_rows):
    rows, _ = seam_rows
    options = {
        "GDAL_HTTP_COOKIE": f"session={SECRET}",
        "AZURE_STORAGE_CONNECTION_STRING": f"DefaultEndpointsProtocol=https;AccountKey={SECRET}",
        "GDAL_HTTP_PROXY": f"http://me:{SECRET}@proxy.example.com:3128",
        "GDAL_HTTP_TIMEOUT": "30",
    }
    # every secret option the Azure and GCS profiles produce is hidden too
    from mosaic.auth import AzureProfile, GCSProfile

    for profile in (
        AzureProfile("az://c", account="a", key=SECRET),
        AzureProfile("az://c", account="a", sas=f"sv=1&sig={SECRET}"),
        AzureProfile("az://c", account="a", key=SECRET, endpoint="http://127.0.0.1:1/a"),
        GCSProfile("gs://b", hmac_key_id="GOOG1", hmac_secret=SECRET),
    ):
        produced = profile.gdal_options()
        assert SECRET in "".join(produced.values()) and SECRET not in repr(profile)
        options.update({k: v for k, v in produced.items() if SECRET in v})
    assert len(options) == 7  # AZURE_STORAGE_ACCESS_KEY, _SAS_TOKEN, GS_SECRET_ACCESS_KEY added
    index = TileIndex.from_records(rows)
    plan = mosaic.plan(SEAM12, "EPSG:4326", index=index, gdal_options=options, **GRID)
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, gdal_options=options, **GRID)
    graph = dict(ds.B02.data.__dask_graph__())
    assert SECRET not in repr(plan.gdal_options) + repr(graph) + repr(plan)
    assert ("GDAL_HTTP_TIMEOUT", "30") in plan.gdal_options  # the others stay visible
    assert ds.B02.values.any()  # and the options still reach GDAL


def test_writing_an_index_with_secret_hrefs_warns_without_the_secret(seam_rows, tmp_path):
    rows, rel = seam_rows
    index = moved(rows, [f"https://example.com/{p}?sv=1&sig={SECRET}" for p in rel])
    with pytest.warns(
        SecretHrefWarning, match=r"2 href\(s\) carry secrets \(the 'sig' parameter\)"
    ) as caught:
        index.write(tmp_path / "signed.parquet")
    assert SECRET not in str(caught[0].message)
    kept = TileIndex.read(tmp_path / "signed.parquet").records()[0].href
    assert kept.endswith(SECRET)  # the index keeps the real href: a load reads it
    with warnings.catch_warnings():
        warnings.simplefilter("error", SecretHrefWarning)
        TileIndex.from_records(rows).write(tmp_path / "plain.parquet")  # plain hrefs: no warning


# ----------------------------------------------------------------- Earthdata: no password on disk

PASSWORD = "pw-" + SECRET


def containing(folder: Path, text: str) -> list[Path]:
    """The files under ``folder`` whose bytes contain ``text``."""
    found = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and text.encode() in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


@pytest.fixture
def earthdata(demo_collection):
    """A data server behind an Earthdata Login style login server (another host name: ``localhost``)."""
    root = demo_collection[0]
    with RangeServer(root) as data, RangeServer(root) as login:
        data.login_gate("/", login.base_url.replace("127.0.0.1", "localhost"), code="c0de", session="s3ss")
        login.login_host(user="ada", password=PASSWORD, code="c0de")
        yield data, login


def test_earthdata_login_redirect_flow_with_the_password_in_memory(earthdata, seam_rows, monkeypatch):
    data, login = earthdata
    rows, rel = seam_rows
    monkeypatch.delenv("EARTHDATA_TOKEN", raising=False)
    monkeypatch.setenv("EARTHDATA_USERNAME", "ada")
    monkeypatch.setenv("EARTHDATA_PASSWORD", PASSWORD)
    profile = EarthdataProfile(data.base_url, login_host="localhost")
    index = moved(rows, [data.url(p) for p in rel])
    got = mosaic.load(SEAM12, "EPSG:4326", index=index, auth=profile, **GRID).B02.values
    expected = mosaic.load(SEAM12, "EPSG:4326", index=TileIndex.from_records(rows), **GRID).B02.values
    assert np.array_equal(got, expected)
    options = profile.gdal_options()
    if hasattr(os, "memfd_create"):
        assert options["GDAL_HTTP_NETRC_FILE"].startswith("/proc/self/fd/")  # in memory
    session = Path(options["GDAL_HTTP_COOKIEJAR"]).parent
    assert not containing(session, PASSWORD) and not containing(session.parent, PASSWORD)
    served = [r for r in data.log if r.status in (200, 206)]
    assert served and not any(r.authorization for r in data.log)  # the data host never sees credentials
    logins = [r for r in login.log if r.path == "/oauth/authorize"]
    assert logins and all(r.auth_scheme == "Basic" and r.status == 302 for r in logins)
    assert len(logins) < len(served)  # the session cookie is kept: not one login per request


CHILD = textwrap.dedent(
    """
    import os, sys, time
    if sys.argv[1] == "no-memfd":
        del os.memfd_create  # as on systems without anonymous memory files
    import mosaic
    from mosaic import TileIndex
    from mosaic.auth import EarthdataProfile, HTTPProfile, Secret
    profile = EarthdataProfile(sys.argv[2], login_host="localhost")
    if len(sys.argv) > 3:  # a real load through the login redirect
        index = TileIndex.read(sys.argv[3])
        ds = mosaic.load((11.88, 45.40, 12.12, 45.58), "EPSG:4326", index=index, auth=profile,
                         resolution=0.0008, bands="B02", groupby=None)
        assert int(ds.B02.max()) > 0
    else:
        profile.gdal_options()
    print("ready", flush=True)
    time.sleep(120)
    """
)


def run_child(mode: str, base_url: str, tmpdir: Path, index: Path | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "EARTHDATA_USERNAME": "ada",
        "EARTHDATA_PASSWORD": PASSWORD,
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("EARTHDATA_TOKEN", None)
    args = [sys.executable, "-c", CHILD, mode, base_url, *([str(index)] if index else [])]
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()  # type: ignore[union-attr]
    if line.strip() != "ready":
        child.kill()
        pytest.fail(f"the child did not start: {child.communicate()[1]}")
    return child


def killed(child: subprocess.Popen, sig: int) -> None:
    child.send_signal(sig)
    assert child.wait(timeout=60) == -sig


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_file_holds_the_earthdata_password_when_the_process_is_killed(earthdata, seam_rows, tmp_path, sig):
    if not hasattr(os, "memfd_create"):
        pytest.skip("no anonymous memory files here: the file fallback is tested below")
    data, _ = earthdata
    rows, rel = seam_rows
    moved(rows, [data.url(p) for p in rel]).write(tmp_path / "index.parquet")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    child = run_child("memfd", data.base_url, tmpdir, tmp_path / "index.parquet")
    session = list(tmpdir.glob("mosaic-auth-*"))
    assert session and list(session[0].glob("cookies.txt"))  # logged in: the cookie jar holds the session
    assert not containing(tmpdir, PASSWORD)  # while it runs
    killed(child, sig)
    assert not containing(tmpdir, PASSWORD)


def test_without_memory_files_the_password_file_goes_on_sigterm_and_after_sigkill(
    earthdata, seam_rows, tmp_path
):
    data, _ = earthdata
    rows, rel = seam_rows
    moved(rows, [data.url(p) for p in rel]).write(tmp_path / "index.parquet")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    child = run_child("no-memfd", data.base_url, tmpdir, tmp_path / "index.parquet")  # reads in threads
    assert len(containing(tmpdir, PASSWORD)) == 1  # the fallback file exists (the search finds it)
    killed(child, signal.SIGTERM)
    assert not containing(tmpdir, PASSWORD)  # removed by the SIGTERM handler
    child = run_child("no-memfd", data.base_url, tmpdir)
    killed(child, signal.SIGKILL)
    (left,) = containing(tmpdir, PASSWORD)  # nothing runs at SIGKILL...
    child = run_child("memfd" if hasattr(os, "memfd_create") else "no-memfd", data.base_url, tmpdir)
    assert not left.exists()  # ...so the next process's session removes the dead one's folder
    child.kill()
    child.wait(timeout=60)


# ------------------------------------------------------------------------------ allowed prefixes


def test_check_allowed_places_hrefs_by_realpath_and_by_url(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (allowed / "link.tif").symlink_to("/etc/passwd")
    (allowed / "dirlink").symlink_to(tmp_path / "outside")
    prefixes = [str(allowed), "https://data.example.com/scenes/", "s3://bucket-a/l2a"]
    ok = [
        allowed / "sub" / "a.tif",
        f"{allowed}/sub/../a.tif",
        f"file://{allowed}/a.tif",
        f"vrt://{allowed}/a.tif?bands=1",
        f"/vsizip/{allowed}/a.zip/b.tif",
        "https://data.example.com/scenes/a.tif",
        "https://data.example.com:443/scenes/x/a.tif?sig=1",
        "/vsicurl/https://data.example.com/scenes/a.tif",
        "/vsicurl?use_head=no&url=https%3A%2F%2Fdata.example.com%2Fscenes%2Fa.tif",
        "s3://bucket-a/l2a/a.tif",
        "/vsis3/bucket-a/l2a/a.tif",
        None,  # a footprint-only row
    ]
    check_allowed(ok, prefixes)
    refused = {
        "/etc/passwd": "not under",
        f"{allowed}/../outside/a.tif": "not under",  # .. cannot leave the folder
        str(allowed / "link.tif"): "not under",  # nor can a symlink
        str(allowed / "dirlink" / "a.tif"): "not under",
        "https://data.example.com/scenes-other/a.tif": "not under",  # whole path segments
        "https://data.example.com/scenes/../private/a.tif": "not under",
        "https://data.example.com/scenes/%2e%2e/private/a.tif": "not under",
        "http://data.example.com/scenes/a.tif": "not under",  # another scheme
        "https://data.example.com:8443/scenes/a.tif": "not under",  # another port
        "https://evil.example.com/scenes/a.tif": "not under",
        "s3://bucket-ab/l2a/a.tif": "not under",
        "vrt:///etc/passwd?bands=1": "not under",
        "/vsizip/{/etc/x.zip}/b.tif": "not under",
        "/vsicurl?header_file=/etc/passwd&url=https%3A%2F%2Fdata.example.com%2Fscenes%2Fa.tif": "header_file",
        "<VRTDataset><VRTRasterBand><SimpleSource><SourceFilename>/etc/passwd</SourceFilename>": "inline",
        'NETCDF:"/etc/x.nc":v': "connection string",
        "/vsimem/a.tif": "cannot be checked",
    }
    for href, why in refused.items():
        with pytest.raises(HrefNotAllowedError, match=why) as info:
            check_allowed([href], prefixes)
        assert "allowed_prefixes=" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv(ALLOWED_PREFIXES_ENV, f"{allowed}, https://data.example.com/scenes")
    check_allowed([allowed / "a.tif"])  # the environment's policy alone
    with pytest.raises(HrefNotAllowedError, match=ALLOWED_PREFIXES_ENV):  # both apply: no widening
        check_allowed(["s3://bucket-a/l2a/a.tif"], prefixes)
    with pytest.raises(InvalidInputError, match="not a folder or URL"):
        check_allowed(["/x"], ['NETCDF:"a.nc":v'])


@pytest.fixture
def foreign_index(http_server_pair, seam_rows, tmp_path):
    """An index from someone else: one row at /etc/passwd, one on another server; and that server."""
    _, other = http_server_pair
    rows, rel = seam_rows
    path = tmp_path / "foreign.parquet"
    moved(rows, ["/etc/passwd", other.url(rel[1])]).write(path)
    other.reset_stats()
    return path, other


def test_an_index_pointing_outside_is_refused_before_anything_is_opened(
    foreign_index, demo_collection, monkeypatch, tmp_path
):
    path, other = foreign_index
    root = str(demo_collection[0])
    with pytest.raises(HrefNotAllowedError, match="refused before opening it, not under") as info:
        TileIndex.read(path, allowed_prefixes=[root])
    assert info.value.href == "/etc/passwd" or info.value.href.startswith(other.base_url)
    index = TileIndex.read(path)  # (no policy yet: read into memory, as a caller's own code might)
    monkeypatch.setenv(ALLOWED_PREFIXES_ENV, root)  # a service's setting: every way in
    with pytest.raises(HrefNotAllowedError, match=ALLOWED_PREFIXES_ENV):
        mosaic.load(SEAM12, "EPSG:4326", index=str(path), **GRID)
    for call in (
        lambda: mosaic.plan(SEAM12, "EPSG:4326", index=index, **GRID),
        lambda: export_gti(index, tmp_path / "m.gti.gpkg", **GTI_ARGS),
        lambda: mosaic.regrid(tmp_path / "o.zarr", SEAM12, "EPSG:4326", index=index, progress=False, **GRID),
    ):
        with pytest.raises(HrefNotAllowedError):
            call()
    result = CliRunner().invoke(
        cli, ["plan", "--index", str(path), "--bbox", "11.88,45.4,12.12,45.58", "--crs", "EPSG:4326"]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "refused" in result.output
    assert other.stats().requests == 0  # no request reached the other server


def test_a_plan_made_elsewhere_is_refused_by_the_reader(http_server_pair, seam_rows, monkeypatch):
    origin, other = http_server_pair
    rows, rel = seam_rows
    index = moved(rows, [origin.url(rel[0]), other.url(rel[1])])
    ds = mosaic.load(SEAM12, "EPSG:4326", index=index, **GRID)  # planned without a policy
    monkeypatch.setenv(ALLOWED_PREFIXES_ENV, origin.base_url)  # the process that reads has one
    with pytest.raises(HrefNotAllowedError, match=f"{other.base_url}/.*refused before opening it"):
        ds.compute()
    assert other.stats().requests == 0


def test_a_gti_or_stac_items_from_someone_else_are_refused_before_their_tiles_are_opened(
    http_server_pair, seam_rows, demo_collection, tmp_path, monkeypatch
):
    origin, other = http_server_pair
    rows, rel = seam_rows
    (gti,) = export_gti(
        moved(rows, [other.url(p) for p in rel]), tmp_path / "m.gti.gpkg", warp="gdal", **GTI_ARGS
    )
    items = [json.loads(p.read_text()) for p in Path(demo_collection[0]).rglob(f"{SCENES[1]}.json")]
    for item in items:  # no projection info: indexing would open the file
        item["assets"] = {"B02": {"href": other.url(rel[1]), "type": "image/tiff; application=geotiff"}}
        item["properties"] = {k: v for k, v in item["properties"].items() if not k.startswith("proj:")}
    assert items
    other.reset_stats()
    with pytest.raises(HrefNotAllowedError):
        TileIndex.read(gti, allowed_prefixes=origin.base_url)
    with pytest.raises(HrefNotAllowedError):
        TileIndex.from_stac(items, allowed_prefixes=[origin.base_url])
    monkeypatch.setenv(ALLOWED_PREFIXES_ENV, f"{demo_collection[0]},{origin.base_url}")
    for read in (
        lambda: TileIndex.read(gti),
        lambda: TileIndex.from_stac(items),
        lambda: TileIndex.from_gti(gti),
    ):
        with pytest.raises(HrefNotAllowedError):
            read()
    assert other.stats().requests == 0
    monkeypatch.setenv(ALLOWED_PREFIXES_ENV, f"{demo_collection[0]},{other.base_url}")
    assert len(TileIndex.read(gti)) == 2  # inside the policy: read as before
