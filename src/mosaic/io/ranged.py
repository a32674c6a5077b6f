"""Byte ranges of a file fetched straight from where it is: no open, no ``HEAD``, no header request.

With a file's tile layout recorded in the index (:mod:`mosaic.io.cog`), a read knows which bytes it needs
before touching the file. :func:`fetch` gets them: a local file with ``pread``; an ``http(s)`` URL with
one ``GET`` and a ``Range`` header per merged range (a kept-alive connection per thread and host); an
``s3://`` object the same way, signed with AWS Signature Version 4. Credentials are GDAL's settings of
the read (those of the ``auth`` profile matching the href, else GDAL's configuration in the thread):
bearer tokens and basic auth for HTTP; key id, secret, session token, region, endpoint, unsigned
requests and requester-pays for S3. Whatever this module cannot do exactly as GDAL would (``.netrc``
files, cookies, proxies, redirects, other stores, credentials GDAL would find on its own in
``~/.aws`` or an instance profile) makes :func:`transport` say no, and the reader opens the file with
GDAL as before.

Every answer is checked against the identity the file had when its layout was recorded: the total
size in ``Content-Range`` and ``Last-Modified`` (a local file's ``stat``). A file that changed raises
:class:`StaleLayout`, and its tiles are not decoded with offsets that may no longer hold.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import http.client
import os
import ssl
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime

from mosaic.io.identity import change, format_identity, observe, parse_identity

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
    """How to fetch byte ranges of one file: ``kind`` ``file``, ``http`` or ``s3``, and its settings."""

    kind: str
    target: str
    """The local path, or the URL to GET."""
    headers: tuple[tuple[str, str], ...] = ()
    s3: tuple[str, str, str | None, str] | None = None
    """(key id, secret, session token, region) signing S3 requests; None: unsigned."""
    timeout: float = 60.0
    ca_bundle: str | None = None
    """The certificate authorities an ``https`` server is checked against (GDAL's ``CURL_CA_BUNDLE``);
    None: the system's."""


Config = Callable[[str], str | None]
"""GDAL's setting of a name in the reading thread (``rasterio.env.get_gdal_config``)."""


def transport(path: str, config: Config) -> Transport | None:
    """How to fetch ranges of the GDAL ``path`` without GDAL, or None where only GDAL can do it right."""
    if not path.startswith("/vsi"):
        return Transport("file", path) if os.path.isabs(path) else None
    if any(config(key) for key in _HTTP_NOT_OURS):
        return None
    timeout = _float(config("GDAL_HTTP_TIMEOUT"), 60.0)
    ca = config("GDAL_CURL_CA_BUNDLE") or config("CURL_CA_BUNDLE") or config("SSL_CERT_FILE")
    if path.startswith("/vsicurl/"):
        url = path[len("/vsicurl/") :]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.username or parts.password:
            return None
        if _in_netrc(parts.hostname or "", config):
            return None
        headers = _http_auth(config)
        return None if headers is None else Transport("http", url, headers, timeout=timeout, ca_bundle=ca)
    if path.startswith("/vsis3/"):
        how = _s3_transport(path[len("/vsis3/") :], config, timeout)
        return None if how is None else replace(how, ca_bundle=ca)
    return None


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


def _s3_transport(key_path: str, config: Config, timeout: float) -> Transport | None:
    bucket, _, key = key_path.partition("/")
    if not bucket or not key:
        return None
    values = {name: config(name) or os.environ.get(name) for name in _S3_KEYS}
    unsigned = (values["AWS_NO_SIGN_REQUEST"] or "NO").upper() in ("YES", "TRUE", "ON", "1")
    key_id, secret = values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]
    if not unsigned and not (key_id and secret):
        return None  # GDAL finds credentials on its own (~/.aws, instance profiles): let it
    region = values["AWS_REGION"] or values["AWS_DEFAULT_REGION"] or "us-east-1"
    https = (values["AWS_HTTPS"] or "YES").upper() not in ("NO", "FALSE", "OFF", "0")
    endpoint = values["AWS_S3_ENDPOINT"]
    virtual = (values["AWS_VIRTUAL_HOSTING"] or "TRUE").upper() not in ("NO", "FALSE", "OFF", "0")
    quoted = urllib.parse.quote(key, safe="/~")
    scheme = "https" if https else "http"
    if endpoint:
        host = endpoint.split("://", 1)[-1].rstrip("/")
        url = f"{scheme}://{host}/{bucket}/{quoted}"
    elif virtual and "." not in bucket:
        url = f"{scheme}://{bucket}.s3.{region}.amazonaws.com/{quoted}"
    else:
        url = f"{scheme}://s3.{region}.amazonaws.com/{bucket}/{quoted}"
    headers: tuple[tuple[str, str], ...] = ()
    if (values["AWS_REQUEST_PAYER"] or "").lower() == "requester":
        headers = (("x-amz-request-payer", "requester"),)
    signing = None if unsigned else (key_id or "", secret or "", values["AWS_SESSION_TOKEN"], region)
    return Transport("s3", url, headers, signing, timeout)


def _sigv4(how: Transport, headers: dict[str, str]) -> None:
    """Sign a GET of ``how.target`` (AWS Signature Version 4), adding the headers it takes."""
    if how.s3 is None:
        return
    key_id, secret, token, region = how.s3
    parts = urllib.parse.urlsplit(how.target)
    now = dt.datetime.now(dt.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers.update({"x-amz-date": stamp, "x-amz-content-sha256": payload})
    if token:
        headers["x-amz-security-token"] = token
    signed = {"host": parts.netloc, **{k.lower(): v.strip() for k, v in headers.items()}}
    names = sorted(signed)
    canonical = "\n".join(
        [
            "GET",
            parts.path or "/",
            parts.query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    text = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )


# ------------------------------------------------------------------------------------------- fetch


class _Connections(threading.local):
    """Kept-alive connections of this thread, by (scheme, host, port)."""

    def __init__(self) -> None:
        self.by_host: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}


_CONNECTIONS = _Connections()


def _connection(how: Transport) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(how.target)
    key = (parts.scheme, parts.hostname or "", parts.port)
    conn = _CONNECTIONS.by_host.get(key)
    if conn is None:
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=how.ca_bundle)
            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=how.timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=how.timeout)
        _CONNECTIONS.by_host[key] = conn
    target = parts.path or "/"
    return conn, target + (f"?{parts.query}" if parts.query else "")


def _drop_connection(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    conn = _CONNECTIONS.by_host.pop((parts.scheme, parts.hostname or "", parts.port), None)
    if conn is not None:
        conn.close()


def _get(how: Transport, start: int, stop: int, identity: str) -> bytes:
    """One ranged GET; its answer checked against ``identity``."""
    headers = dict(how.headers)
    headers["Range"] = f"bytes={start}-{stop - 1}"
    headers["User-Agent"] = "mosaic"
    _sigv4(how, headers)
    for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: one fresh try
        conn, target = _connection(how)
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            _drop_connection(how.target)
            if attempt:
                raise OSError(f"Connection reset while fetching bytes {start}-{stop - 1}: {exc}") from exc
            continue
        except http.client.IncompleteRead as exc:
            _drop_connection(how.target)
            raise OSError(f"Read failed: fetching bytes {start}-{stop - 1}: truncated answer") from exc
        except TimeoutError as exc:
            _drop_connection(how.target)
            raise OSError(f"Operation timed out fetching bytes {start}-{stop - 1}") from exc
        except OSError:
            _drop_connection(how.target)
            raise
        if response.will_close:
            _drop_connection(how.target)
        break
    if response.status not in (200, 206):
        detail = body[:200].decode("utf-8", "replace").strip()
        if 300 <= response.status < 400:
            raise NotDirect(f"redirected ({response.status})")
        raise OSError(f"HTTP response code: {response.status}" + (f": {detail}" if detail else ""))
    size = _total_size(response)
    if size is None and response.status == 200:
        size = len(body)
    _check(identity, size, response.getheader("Last-Modified"))
    if response.status == 200:  # the server ignored the range: the whole file came
        body = body[start:stop]
    if len(body) != min(stop, size if size is not None else stop) - start:
        raise OSError(f"Read failed: fetching bytes {start}-{stop - 1}: {len(body)} bytes came")
    return body


def _total_size(response: http.client.HTTPResponse) -> int | None:
    text = response.getheader("Content-Range") or ""
    total = text.rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _check(identity: str, size: int | None, last_modified: str | None) -> None:
    """Raise :class:`StaleLayout` when what the server says differs from ``identity``."""
    parts: dict[str, object] = {"size": size}
    if last_modified:
        try:
            when = parsedate_to_datetime(last_modified).astimezone(dt.UTC)
            parts["mtime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        except (TypeError, ValueError):
            pass
    what = change(identity, format_identity(parts))
    if what is not None:
        raise StaleLayout(what)


def checkable(identity: str | None) -> bool:
    """Whether ``identity`` says the file's size: without it a changed file could not be noticed."""
    return "size" in parse_identity(identity)


def fetch(how: Transport, ranges: Sequence[Range], identity: str) -> list[bytes]:
    """The bytes of each range (``[start, stop)``), one request (or ``pread``) per range.

    Raises:
        StaleLayout: the file is not the one ``identity`` describes.
        OSError: the request failed (worded as GDAL words it: ``HTTP response code: 503`` ...), so the
            reader's retries and error classes apply.
    """
    if how.kind == "file":
        what = change(identity, observe(how.target))
        if what is not None:
            raise StaleLayout(what)
        fd = os.open(how.target, os.O_RDONLY)
        try:
            return [os.pread(fd, stop - start, start) for start, stop in ranges]
        finally:
            os.close(fd)
    return [_get(how, start, stop, identity) for start, stop in ranges]


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
