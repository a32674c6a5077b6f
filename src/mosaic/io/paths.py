"""Hrefs as GDAL paths: URLs to ``/vsi`` paths, local paths made absolute.

A tile index stores each file's href as the user gave it (a local path, a URL, a GDAL ``/vsi`` path).
GDAL opens URLs only through its virtual file systems, and resolves relative paths against whatever
directory it runs in, so any file handed to GDAL by name (a GTI, a VRT) gets :func:`gdal_path`.

Secrets: :func:`secrets_in` (and :func:`credentials_in`, in words) says what secrets an href carries
(a password in a URL, a token or signature parameter, in nested and encoded URLs too), so that they are
not written to a shareable file, and :func:`redact` blanks them wherever an href is shown.

Allowed prefixes: :func:`check_allowed` refuses hrefs outside the folders and URLs a caller (or
``$MOSAIC_ALLOWED_PREFIXES``) allows, before anything is opened: an index from someone else can point
anywhere.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from mosaic.errors import InvalidInputError

__all__ = [
    "ALLOWED_PREFIXES_ENV",
    "check_allowed",
    "credentials_in",
    "gdal_path",
    "is_network",
    "redact",
    "redact_exception",
    "secrets_in",
]

_PREFIXES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "ftp": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
    "abfs": "/vsiaz/",
    "abfss": "/vsiaz/",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# a GDAL driver connection string (NETCDF:"f.nc":var, GTI:x.gpkg, MEM:::...); one letter is a drive
_CONNECTION = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:(?!//)")


def gdal_path(href: str | os.PathLike[str]) -> str:
    """The path GDAL opens ``href`` by, independent of the working directory.

    ``http(s)://`` and ``ftp://`` URLs become ``/vsicurl/<url>``; ``s3://b/k`` becomes ``/vsis3/b/k``,
    ``gs://`` ``/vsigs/``, ``az://`` and ``abfs(s)://container[@account...]/path`` ``/vsiaz/``;
    ``/vsi...`` paths, ``vrt://`` strings and driver connection strings (``NETCDF:...``) pass through;
    ``file://`` URLs are decoded; other local paths are made absolute (``~`` expanded).

    Raises:
        InvalidInputError: an empty href, or a URL scheme GDAL cannot read.
    """
    text = os.fspath(href).strip()
    if not text:
        raise InvalidInputError("an empty href is not a file GDAL can open")
    if text.startswith("/vsi") or text.lower().startswith("vrt://"):
        return text
    match = _SCHEME.match(text)
    if match is None:
        if _CONNECTION.match(text):
            return text
        return os.path.abspath(os.path.expanduser(text))
    scheme = match.group(1).lower()
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(
                f"{text}: file:// URLs on another host ({parts.netloc}) are not supported"
            )
        from urllib.request import url2pathname  # here: urllib.request imports http and email

        return os.path.abspath(url2pathname(unquote(parts.path)))
    prefix = _PREFIXES.get(scheme)
    if prefix is None:
        raise InvalidInputError(
            f"{text}: GDAL cannot read {scheme}:// URLs; use http(s)://, s3://, gs://, az://, a /vsi path "
            "or a local path"
        )
    if prefix == "/vsicurl/":
        return prefix + text
    rest = text[match.end() :]
    if scheme.startswith("abfs"):  # abfs://container@account.dfs.core.windows.net/path
        netloc, _, path = rest.partition("/")
        rest = f"{netloc.split('@', 1)[0]}/{path}"
    return prefix + rest


_NETWORK_FS = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs")


def is_network(href: str | os.PathLike[str]) -> bool:
    """Whether GDAL reads ``href`` over the network (each request then costs a round trip)."""
    return gdal_path(href).startswith(_NETWORK_FS)


# ------------------------------------------------------------------------------------------ secrets
#
# One recogniser, used to refuse hrefs with secrets in shareable files (credentials_in) and to blank
# them wherever an href is shown (redact). It looks at every URL in a text, nested ones included:
# user info (``user:password@``), query parameters (and GDAL's ``/vsicurl?`` options) whose names say
# they hold a secret, and, recursively, the values of the other parameters (a percent-encoded URL in
# ``/vsicurl?url=``, a ``vrt://`` path...).

_REDACTED = "***"
_DEPTH = 6  # nesting levels looked into (a URL in an encoded URL in ...)
# user info before a host; the greedy class stops at the netloc's last "@" (a password may hold one)
_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<info>[^\s/?#'\"<>]*)@")
# Azure's abfs[s]://container@account and wasb[s]:// put the container, not a user, before the "@"
_CONTAINER_AT = frozenset({"abfs", "abfss", "wasb", "wasbs"})
# key=value after "?", "&" or "#": a query parameter, a /vsicurl? option, an OAuth fragment
_PARAM = re.compile(r"(?<=[?&#])(?P<key>[^=&#?/\s'\"<>]+)=(?P<value>[^&#\s'\"<>)]*)")
# parameter names holding secrets, lower case with non-alphanumerics removed: these anywhere in it...
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",  # secret, client_secret, AWS secret keys
    "token",  # token, access_token, auth_token, X-Amz-Security-Token, sas_token
    "signature",  # X-Amz-Signature, X-Goog-Signature, CloudFront Signature
    "credential",  # X-Amz-Credential, X-Goog-Credential
    "apikey",  # api_key, x-api-key, apikey
    "accesskey",  # access_key, AWSAccessKeyId
    "privatekey",
    "accountkey",
    "cookie",  # /vsicurl?cookie=
    "authorization",  # /vsicurl?header.Authorization=
    "userpwd",  # /vsicurl?proxyuserpwd=
    "sessionid",
)
# ...or the whole name: Azure SAS "sig", Google's "key", and short names for passwords and tokens
_SECRET_NAMES = frozenset({"sig", "key", "pwd", "pass", "auth", "jwt", "sas", "session"})
_SAFE = "/:@*"  # kept as is when a redacted nested value is percent-encoded again


def _secret_name(key: str) -> bool:
    name = re.sub(r"[^a-z0-9]", "", unquote(key).lower())
    return name in _SECRET_NAMES or any(part in name for part in _SECRET_PARTS)


def _unquote_all(text: str) -> str:
    """``text`` percent-decoded until it no longer changes (values may be encoded more than once)."""
    for _ in range(_DEPTH):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _cut_name(key: str) -> str:
    return key if len(key) <= 40 else key[:39] + "\u2026"


def _scan(text: str, depth: int = 0) -> tuple[str, list[str]]:
    """``text`` with its secrets replaced by ``***``, and what kinds of secret they were (no values)."""
    kinds: list[str] = []

    def userinfo(match: re.Match[str]) -> str:
        scheme, info = match.group("scheme"), match.group("info")
        if scheme.lower() in _CONTAINER_AT or not info:
            return match.group(0)
        user, colon, _ = info.partition(":")
        if colon:
            kinds.append("a password in the URL (user:password@)")
            return f"{scheme}://{user}:{_REDACTED}@"
        kinds.append("a user name in the URL (user@), which may be a token")
        return f"{scheme}://{_REDACTED}@"

    def param(match: re.Match[str]) -> str:
        key, raw = match.group("key"), match.group("value")
        if _secret_name(key):
            kinds.append(f"the {_cut_name(key)!r} parameter")
            return f"{key}={_REDACTED}"
        if depth >= _DEPTH or not raw:
            return match.group(0)
        decoded = _unquote_all(raw)
        inner, found = _scan(decoded, depth + 1)
        if not found:
            return match.group(0)
        kinds.extend(f"{kind} inside the {_cut_name(key)!r} value" for kind in found)
        return f"{key}={inner if decoded == raw else quote(inner, safe=_SAFE)}"

    text = _USERINFO.sub(userinfo, text)
    text = _PARAM.sub(param, text)
    return text, list(dict.fromkeys(kinds))


def secrets_in(href: str | os.PathLike[str]) -> tuple[str, ...]:
    """The kinds of secret ``href`` carries (never their values); empty when it carries none.

    Recognised: user info in a URL (``user:password@``, or ``token@``); query parameters and GDAL
    ``/vsicurl?`` options whose names say they hold a secret (``password``, ``token``,
    ``access_token``, ``auth_token``, ``x-api-key``, ``api_key``, ``key``, ``secret``,
    ``access_key``, ``cookie``, ``header.Authorization``, ``proxyuserpwd``, AWS ``X-Amz-Signature``,
    ``X-Amz-Credential`` and ``X-Amz-Security-Token``, Azure SAS ``sig``, ``X-Goog-Signature``...);
    and all of these inside nested URLs: a ``vrt://`` or ``/vsizip/`` path, a percent-encoded
    ``/vsicurl?url=`` value (decoded, recursively).
    """
    return tuple(_scan(os.fspath(href))[1])


def credentials_in(href: str | os.PathLike[str]) -> str | None:
    """What secrets ``href`` carries, in words (``"the 'sig' parameter"``), or None: see :func:`secrets_in`.

    A GTI or an exported index is a file people share; hrefs with secrets in them must not be written.
    """
    kinds = secrets_in(href)
    return "; ".join(kinds) if kinds else None


def redact(text: str | os.PathLike[str]) -> str:
    """``text`` (an href, or a message quoting hrefs) with every secret :func:`secrets_in` finds as ``***``.

    ``https://me:pw@host/x.tif?X-Amz-Signature=abc&X-Amz-Date=20240601T000000Z`` becomes
    ``https://me:***@host/x.tif?X-Amz-Signature=***&X-Amz-Date=20240601T000000Z``: the user name,
    host, path and other parameters stay, so the href can still be recognised. Idempotent.
    """
    return _scan(os.fspath(text))[0]


def redact_exception(exc: BaseException) -> BaseException:
    """``exc`` and the exceptions it chains, their messages redacted in place; returns ``exc``.

    For GDAL's errors (``'/vsicurl/https://...?sig=...' not recognized...``) that mosaic raises its own
    error ``from``: a traceback prints the cause too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        with contextlib.suppress(AttributeError, TypeError):  # (rasterio's CPLE_* derive their args)
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        names = ["filename", "filename2", "strerror"] if isinstance(current, OSError) else []
        for name in [*names, *getattr(current, "__dict__", {})]:  # rasterio's CPLE_*: errmsg
            value = getattr(current, name, None)
            if isinstance(value, str):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(current, name, redact(value))
        current = current.__cause__ or current.__context__
    return exc


# ----------------------------------------------------------------------------------- allowed prefixes
#
# An index or GTI from someone else can point at any local file or URL. With a policy (the
# ``allowed_prefixes=`` of the functions that read an index, and/or ``$MOSAIC_ALLOWED_PREFIXES``),
# an href is opened only if it lies under one of the prefixes: local paths compared after realpath
# (so ``..`` and symlinks cannot leave a folder), URLs by scheme, host, port and whole path segments.
# An href whose target cannot be told (a driver connection string, an inline VRT, ``/vsimem/``...) is
# refused under a policy.

ALLOWED_PREFIXES_ENV = "MOSAIC_ALLOWED_PREFIXES"
"""Environment variable: comma-separated prefixes (folders, URLs) outside which no href is opened."""

PrefixesLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
"""``allowed_prefixes=``: one prefix, several, or None (the environment's policy only)."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
_VSI_OBJECT_STORES = {
    "/vsis3/": "s3",
    "/vsis3_streaming/": "s3",
    "/vsigs/": "gs",
    "/vsigs_streaming/": "gs",
    "/vsiaz/": "az",
    "/vsiaz_streaming/": "az",
    "/vsiadls/": "az",
    "/vsioss/": "oss",
    "/vsioss_streaming/": "oss",
    "/vsiswift/": "swift",
    "/vsiswift_streaming/": "swift",
}
_VSI_URLS = ("/vsicurl/", "/vsicurl_streaming/", "/vsiwebhdfs/")
_VSI_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")
# /vsicurl? options that make GDAL read a local file
_READS_FILES = frozenset({"header_file"})


@dataclass(frozen=True, slots=True)
class _Location:
    """Where an href leads: a local path (realpath) or a URL (scheme, host[:port], normalised path)."""

    scheme: str  # "" for a local path
    host: str
    path: str

    def under(self, prefix: _Location) -> bool:
        if (self.scheme, self.host) != (prefix.scheme, prefix.host):
            return False
        base = prefix.path.rstrip("/")
        return self.path == prefix.path or self.path.startswith(base + "/")


class _Unknown(Exception):
    """An href whose target a policy cannot tell (the message says why)."""


def _url_location(url: str) -> _Location:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise _Unknown("its URL has an invalid port") from exc
    host = (parts.hostname or "").lower()
    if not host:
        raise _Unknown("its URL has no host")
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    # servers (and curl) resolve dot segments, some decode %2e%2e first: compare decoded, normalised
    path = posixpath.normpath("/" + re.sub("/+", "/", unquote(parts.path)).lstrip("/"))
    return _Location(scheme, host, path)


def _location(href: str, depth: int = 0) -> _Location:
    """Where GDAL goes to open ``href``, for comparing with allowed prefixes.

    Raises:
        _Unknown: the target cannot be told, or the href makes GDAL read a local file beside it.
    """
    if depth > _DEPTH:
        raise _Unknown("it nests too deeply")
    text = os.fspath(href).strip()
    if text.lower().startswith("vrt://"):  # vrt://{path}?{options}: GDAL cuts at the first "?"
        return _location(text[len("vrt://") :].split("?", 1)[0], depth + 1)
    if text.startswith("/vsicurl?"):
        options = dict(parse_qsl(text[len("/vsicurl?") :], keep_blank_values=True))
        reads = sorted(_READS_FILES & {k.lower() for k in options})
        if reads:
            raise _Unknown(f"its /vsicurl? option {reads[0]!r} makes GDAL read a local file")
        if "url" not in options:
            raise _Unknown("its /vsicurl? options give no url")
        return _location("/vsicurl/" + options["url"], depth + 1)
    for prefix in _VSI_URLS:
        if text.startswith(prefix):
            url = text[len(prefix) :]
            if _SCHEME.match(url) is None:
                raise _Unknown(f"{prefix} is not followed by a URL")
            return _url_location(url)
    for prefix, scheme in _VSI_OBJECT_STORES.items():
        if text.startswith(prefix):
            bucket, _, key = text[len(prefix) :].partition("/")
            if not bucket:
                raise _Unknown("it names no bucket")
            return _Location(scheme, bucket, posixpath.normpath("/" + key))
    for prefix in _VSI_ARCHIVES:
        if text.startswith(prefix):  # the archive's path (braced, or followed by the member's)
            rest = text[len(prefix) :]
            if rest.startswith("{"):
                rest = rest[1:].split("}", 1)[0]
            return _location(rest, depth + 1)
    if text.startswith("/vsi"):
        raise _Unknown(f"{text.split('/')[1]!r} paths are not files a policy can place")
    if text.startswith("<") or (_SCHEME.match(text) is None and _CONNECTION.match(text)):
        raise _Unknown("it is an inline dataset or a driver connection string, not a path or URL")
    path = gdal_path(text)
    if path.startswith("/vsi"):
        return _location(path, depth + 1)
    return _Location("", "", os.path.realpath(path))


def _prefix_location(prefix: str | os.PathLike[str], where: str) -> _Location:
    try:
        return _location(os.fspath(prefix))
    except (_Unknown, InvalidInputError) as exc:
        message = f"allowed prefix {redact(prefix)!r} ({where}) is not a folder or URL: {exc}"
        raise InvalidInputError(message) from exc


@dataclass(frozen=True, slots=True)
class _Policy:
    prefixes: tuple[_Location, ...]
    text: str  # the prefixes as given, and where

    def refusal(self, href: str) -> str | None:
        """Why ``href`` is refused, or None when it lies under a prefix."""
        try:
            place = _location(href)
        except _Unknown as exc:
            return f"{exc}, so it cannot be checked against the allowed prefixes"
        if any(place.under(p) for p in self.prefixes):
            return None
        return "not under the allowed prefixes"


@lru_cache(maxsize=16)
def _env_policy(value: str) -> _Policy | None:
    given = [p.strip() for p in value.split(",") if p.strip()]
    if not given:
        return None
    where = f"${ALLOWED_PREFIXES_ENV}"
    return _Policy(tuple(_prefix_location(p, where) for p in given), f"{where}={redact(','.join(given))}")


def _policies(allowed: PrefixesLike) -> list[_Policy]:
    """The environment's policy (read now) and ``allowed``'s: an href must pass both."""
    found = []
    env = _env_policy(os.environ.get(ALLOWED_PREFIXES_ENV, ""))
    if env is not None:
        found.append(env)
    if allowed is not None:
        given = [allowed] if isinstance(allowed, (str, os.PathLike)) else list(allowed)
        if not given:
            raise InvalidInputError("allowed_prefixes is empty: give at least one folder or URL, or None")
        locations = tuple(_prefix_location(p, "allowed_prefixes=") for p in given)
        shown = ", ".join(redact(p) for p in given)
        found.append(_Policy(locations, f"allowed_prefixes=[{shown}]"))
    return found


def check_allowed(hrefs: Iterable[str | os.PathLike[str] | None], allowed: PrefixesLike = None) -> None:
    """Refuse, before anything is opened, an href outside the allowed prefixes.

    The policy is ``allowed`` (one prefix or several) and ``$MOSAIC_ALLOWED_PREFIXES`` (comma-separated,
    read now): with both, an href must be under one prefix of each. Without either, nothing is checked.
    Local prefixes and hrefs are compared after ``os.path.realpath`` (``..`` and symlinks cannot leave a
    folder); URLs by scheme, host (and port) and whole path segments (``https://h/data`` allows
    ``https://h/data/x.tif``, not ``https://h/database``); ``s3://bucket/path`` as ``/vsis3/bucket/path``.
    An href whose target cannot be told (an inline VRT, a driver connection string, ``/vsimem/``, a
    ``/vsicurl?`` that reads a ``header_file``) is refused. None hrefs (footprint-only rows) pass.

    Raises:
        HrefNotAllowedError: naming the first href refused (redacted) and the policy.
        InvalidInputError: a prefix that is neither a folder nor a URL.
    """
    from mosaic.errors import HrefNotAllowedError

    policies = _policies(allowed)
    if not policies:
        return
    for href in hrefs:
        if href is None:
            continue
        text = os.fspath(href)
        for policy in policies:
            why = policy.refusal(text)
            if why is not None:
                raise HrefNotAllowedError(text, policy.text, why)
