"""Byte ranges of a file fetched straight from where it is: no open, no ``HEAD``, no header request.

With a file's tile layout recorded in the index (:mod:`mosaic.io.cog`), a read knows which bytes it needs
before touching the file. :func:`fetch` gets them with obstore: one ranged ``GET`` per merged range,
from a local file, an ``http(s)`` URL or an ``s3://`` object (obstore signs S3 requests itself). Its
stores are made from GDAL's settings of the read (those of the ``auth`` profile matching the href,
else GDAL's configuration in the thread) and kept for the process, so connections are reused: bearer
tokens and basic auth for HTTP; key id, secret, session token, region, endpoint, unsigned requests and
requester-pays for S3. obstore's own retries are off: the reader's retry policy
(:func:`mosaic.io.limits.retry_call`) retries, inside its limiter slot, failures worded as GDAL words them
(``HTTP response code: 503``). Whatever cannot be done exactly as GDAL would (``.netrc`` files,
cookies, proxies, query strings, other stores, credentials GDAL would find on its own in ``~/.aws`` or
an instance profile) makes :func:`transport` say no, and the reader opens the file with GDAL as before.

Every answer is checked against the identity the file had when its layout was recorded: the object's
size and ``Last-Modified`` time as obstore reports them (a local file's ``stat``). A file that changed
raises :class:`StaleLayout`, and its tiles are not decoded with offsets that may no longer hold.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import os
import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mosaic.io.identity import change, format_identity, observe, parse_identity
from mosaic.io.runtime import process_registry

__all__ = ["NotDirect", "StaleLayout", "TileBytes", "Transport", "checkable", "fetch", "transport"]

Range = tuple[int, int]
"""``[start, stop)`` byte offsets."""

_HTTP_OK = ("GDAL_HTTP_HEADERS", "GDAL_HTTP_AUTH", "GDAL_HTTP_USERPWD", "GDAL_HTTP_TIMEOUT")
_HTTP_NOT_OURS = (
    "GDAL_HTTP_NETRC_FILE",
    "GDAL_HTTP_COOKIE",
    "GDAL_HTTP_COOKIEFILE",
    "GDAL_HTTP_COOKIEJAR",
    "GDAL_HTTP_PROXY",
    "GDAL_HTTPS_PROXY",
    "GDAL_HTTP_PROXYUSERPWD",
    "GDAL_HTTP_UNSAFESSL",
    "GDAL_HTTP_HEADER_FILE",
    "GDAL_HTTP_BEARER",
    "GDAL_HTTP_SSLCERT",
    "GDAL_HTTP_SSLKEY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
)
"""GDAL settings a plain ranged GET cannot honour as GDAL would: with any of them set, GDAL reads."""
_S3_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_S3_ENDPOINT",
    "AWS_HTTPS",
    "AWS_VIRTUAL_HOSTING",
    "AWS_NO_SIGN_REQUEST",
    "AWS_REQUEST_PAYER",
)


class NotDirect(Exception):
    """The file cannot be read here as GDAL would read it (a redirect...): GDAL reads it."""


class StaleLayout(NotDirect):
    """The file is not the one whose tile layout the index recorded (its size or time differ)."""


@dataclass(frozen=True, slots=True)
class Transport:
    """How to fetch byte ranges of one file: ``kind`` ``file``, ``http`` or ``s3``, and its store."""

    kind: str
    target: str
    """The local path, or the object's path in ``store``."""
    store: Any = field(default=None, repr=False, compare=False)
    """The obstore store (shared by every file of the same server and settings)."""


Config = Callable[[str], str | None]
"""GDAL's setting of a name in the reading thread (``rasterio.env.get_gdal_config``)."""


def transport(path: str, config: Config) -> Transport | None:
    """How to fetch ranges of the GDAL ``path`` without GDAL, or None where only GDAL can do it right."""
    if _obstore() is None:
        return None
    if not path.startswith("/vsi"):
        return Transport("file", path, _store("file", ())) if os.path.isabs(path) else None
    if any(config(key) for key in _HTTP_NOT_OURS):
        return None
    options: dict[str, Any] = {"timeout": dt.timedelta(seconds=_float(config("GDAL_HTTP_TIMEOUT"), 60.0))}
    ca = config("GDAL_CURL_CA_BUNDLE") or config("CURL_CA_BUNDLE") or config("SSL_CERT_FILE")
    if ca:
        try:
            options["root_certificate"] = _pem(ca)
        except OSError:
            return None
    if path.startswith("/vsicurl/"):
        url = path[len("/vsicurl/") :]
        parts = urllib.parse.urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or parts.username
            or parts.password
            or parts.query
            or parts.fragment
        ):
            return None
        if _in_netrc(parts.hostname or "", config):
            return None
        headers = _http_auth(config)
        if headers is None:
            return None
        if headers:
            options["default_headers"] = dict(headers)
        base = f"{parts.scheme}://{parts.netloc}"
        settings = (("url", base), *_frozen(options))
        return Transport("http", urllib.parse.unquote(parts.path.lstrip("/")), _store("http", settings))
    if path.startswith("/vsis3/"):
        return _s3_transport(path[len("/vsis3/") :], config, options)
    return None


@lru_cache(maxsize=8)
def _pem(path: str) -> str:
    """The certificates of a CA bundle file (read once per process: the read of every tile asks)."""
    return Path(path).read_text()


def _frozen(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (key, tuple(sorted(value.items())) if isinstance(value, dict) else value)
        for key, value in sorted(options.items())
    )


def _obstore() -> Any:
    """obstore, or None when it is not installed (GDAL then reads)."""
    try:
        import obstore
        import obstore.store
    except ImportError:
        return None
    return obstore


_NO_RETRIES: Any = {
    # the reader retries (mosaic.io.limits.retry_call), inside its limiter slot: obstore must not
    "max_retries": 0,
    "retry_timeout": dt.timedelta(seconds=1),
    "backoff": {
        "init_backoff": dt.timedelta(milliseconds=100),
        "max_backoff": dt.timedelta(seconds=1),
        "base": 2,
    },
}


def _store(kind: str, settings: tuple[tuple[str, Any], ...]) -> Any:
    """The process's obstore store for ``kind`` and ``settings`` (made once: its connections are reused)."""

    def make() -> Any:
        from obstore.store import HTTPStore, LocalStore, S3Store

        values = dict(settings)
        if kind == "file":
            return LocalStore()
        client: Any = {
            key: dict(value) if key == "default_headers" else value
            for key, value in values.items()
            if key in ("timeout", "root_certificate", "default_headers")
        }
        client["allow_http"] = True
        client["user_agent"] = "mosaic"
        if kind == "http":
            return HTTPStore.from_url(values["url"], client_options=client, retry_config=_NO_RETRIES)
        config: Any = {key: value for key, value in values.items() if key not in client and key != "bucket"}
        return S3Store(values["bucket"], config=config, client_options=client, retry_config=_NO_RETRIES)

    return process_registry(("obstore", kind, settings), make)


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _in_netrc(host: str, config: Config) -> bool:
    """Whether curl would send this host a ``.netrc`` login (GDAL_HTTP_NETRC is on by default)."""
    if (config("GDAL_HTTP_NETRC") or "YES").upper() in ("NO", "FALSE", "OFF", "0"):
        return False
    netrc = os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.exists(netrc):
        return False
    import netrc as netrc_module

    try:
        return netrc_module.netrc(netrc).authenticators(host) is not None
    except (OSError, netrc_module.NetrcParseError):
        return True  # unreadable: leave it to curl


def _http_auth(config: Config) -> tuple[tuple[str, str], ...] | None:
    """The HTTP headers GDAL would send (a bearer token or basic auth), or None for what only GDAL does."""
    headers: list[tuple[str, str]] = []
    text = config("GDAL_HTTP_HEADERS")
    if text:
        # GDAL's format: lines separated by CRLF, else comma-separated with double-quote escaping
        lines = text.split("\r\n") if "\r\n" in text else next(csv.reader([text], skipinitialspace=True))
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                return None
            headers.append((name.strip(), value.strip()))
    userpwd = config("GDAL_HTTP_USERPWD")
    if userpwd:
        if (config("GDAL_HTTP_AUTH") or "BASIC").upper() != "BASIC":
            return None
        headers.append(("Authorization", "Basic " + base64.b64encode(userpwd.encode()).decode()))
    return tuple(headers)


def _s3_transport(key_path: str, config: Config, options: dict[str, Any]) -> Transport | None:
    bucket, _, key = key_path.partition("/")
    if not bucket or not key:
        return None
    values = {name: config(name) or os.environ.get(name) for name in _S3_KEYS}
    unsigned = (values["AWS_NO_SIGN_REQUEST"] or "NO").upper() in ("YES", "TRUE", "ON", "1")
    key_id, secret = values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]
    if not unsigned and not (key_id and secret):
        return None  # GDAL finds credentials on its own (~/.aws, instance profiles): let it
    https = (values["AWS_HTTPS"] or "YES").upper() not in ("NO", "FALSE", "OFF", "0")
    virtual = (values["AWS_VIRTUAL_HOSTING"] or "TRUE").upper() not in ("NO", "FALSE", "OFF", "0")
    s3: dict[str, Any] = {
        "bucket": bucket,
        "region": values["AWS_REGION"] or values["AWS_DEFAULT_REGION"] or "us-east-1",
        "virtual_hosted_style_request": virtual and "." not in bucket,
    }
    endpoint = values["AWS_S3_ENDPOINT"]
    if endpoint:  # path-style, as GDAL addresses a custom endpoint
        host = endpoint.split("://", 1)[-1].rstrip("/")
        s3["endpoint"] = f"{'https' if https else 'http'}://{host}"
        s3["virtual_hosted_style_request"] = False
    if unsigned:
        s3["skip_signature"] = True
    else:
        s3["access_key_id"], s3["secret_access_key"] = key_id, secret
        if values["AWS_SESSION_TOKEN"]:
            s3["session_token"] = values["AWS_SESSION_TOKEN"]
    if (values["AWS_REQUEST_PAYER"] or "").lower() == "requester":
        s3["request_payer"] = True
    return Transport("s3", key, _store("s3", _frozen({**options, **s3})))


def _check(identity: str, size: int | None, modified: dt.datetime | None) -> None:
    """Raise :class:`StaleLayout` when what the server says differs from ``identity``."""
    parts: dict[str, object] = {"size": size}
    if modified is not None:
        parts["mtime"] = modified.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    what = change(identity, format_identity(parts))
    if what is not None:
        raise StaleLayout(what)


def checkable(identity: str | None) -> bool:
    """Whether ``identity`` says the file's size: without it a changed file could not be noticed."""
    return "size" in parse_identity(identity)


def fetch(how: Transport, ranges: Sequence[Range], identity: str) -> list[memoryview]:
    """The bytes of each range (``[start, stop)``), one request per range, one after the other.

    Raises:
        StaleLayout: the file is not the one ``identity`` describes.
        OSError: the request failed (worded as GDAL words it: ``HTTP response code: 503`` ...), so the
            reader's retries and error classes apply.
    """
    import obstore

    if how.kind == "file":
        what = change(identity, observe(how.target))
        if what is not None:
            raise StaleLayout(what)
        try:
            found = obstore.get_ranges(
                how.store,
                how.target.lstrip("/"),
                starts=[a for a, _ in ranges],
                ends=[b for _, b in ranges],
                coalesce=0,
            )
        except Exception as exc:  # obstore's errors: worded as GDAL's
            raise _os_error(exc) from exc
        return [memoryview(data) for data in found]
    out = []
    for start, stop in ranges:
        try:
            result = obstore.get(how.store, how.target, options={"range": (start, stop)})
            meta = result.meta
            _check(identity, int(meta["size"]), meta.get("last_modified"))
            data = memoryview(result.bytes())
        except StaleLayout:
            raise
        except Exception as exc:  # obstore's errors: worded as GDAL's
            raise _os_error(exc) from exc
        if len(data) != stop - start:
            raise OSError(f"Read failed: fetching bytes {start}-{stop - 1}: {len(data)} bytes came")
        out.append(data)
    return out


_STATUS = re.compile(r"status(?: code)?:? (\d{3})")


def _os_error(exc: BaseException) -> OSError:
    """An obstore error as GDAL words a failed read, so that retries and error classes apply to it.

    An HTTP status becomes ``HTTP response code: 503``; anything else ``Read failed: <obstore's first
    line, redacted>`` (a timeout or a reset then reads as one to :func:`mosaic.io.limits.is_transient`).
    """
    from mosaic.io.paths import redact

    text = str(exc).split("\n", 1)[0]
    status = _STATUS.search(text)
    if status is not None:
        return OSError(f"HTTP response code: {status.group(1)}")
    if isinstance(exc, OSError):
        return exc
    return OSError(f"Read failed: {redact(text)}")


class TileBytes:
    """Tiles fetched by this process, by (href, identity, offset): an LRU of ``capacity`` bytes.

    Two chunks reading the same scene, or a scene read ahead, fetch its shared tiles once: a tile
    another thread is fetching is waited for (:meth:`claim`), not fetched again.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._tiles: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._pending: dict[tuple[str, str, int], threading.Event] = {}
        self._bytes = 0

    def claim(
        self, key: tuple[str, str], starts: Sequence[int]
    ) -> tuple[dict[int, bytes], list[int], list[threading.Event]]:
        """Split ``starts`` into tiles cached, tiles to fetch (now claimed) and events of tiles in flight.

        The caller must :meth:`put` what it claimed (fetched or not), which wakes the waiters.
        """
        found: dict[int, bytes] = {}
        mine: list[int] = []
        waits: list[threading.Event] = []
        with self._lock:
            for start in starts:
                full = (*key, start)
                data = self._tiles.get(full)
                if data is not None:
                    self._tiles.move_to_end(full)
                    found[start] = data
                elif full in self._pending:
                    waits.append(self._pending[full])
                else:
                    self._pending[full] = threading.Event()
                    mine.append(start)
        return found, mine, waits

    def get(self, key: tuple[str, str], starts: Sequence[int]) -> dict[int, bytes]:
        """The cached tiles of ``key`` among ``starts``."""
        found = {}
        with self._lock:
            for start in starts:
                data = self._tiles.get((*key, start))
                if data is not None:
                    found[start] = data
        return found

    def put(self, key: tuple[str, str], tiles: Mapping[int, bytes], claimed: Sequence[int] = ()) -> None:
        """Remember ``tiles`` (start -> bytes) of ``key`` (oldest out past capacity); release ``claimed``.

        Claimed tiles are released fetched or not: their waiters fetch what is still missing.
        """
        with self._lock:
            for start, data in tiles.items():
                if (*key, start) in self._tiles:
                    continue
                self._tiles[(*key, start)] = data
                self._bytes += len(data)
            while self._bytes > self.capacity and self._tiles:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= len(old)
            for start in claimed:
                event = self._pending.pop((*key, start), None)
                if event is not None:
                    event.set()
