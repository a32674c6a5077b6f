"""Hrefs as GDAL paths: URLs to ``/vsi`` paths, local paths made absolute.

A tile index stores each file's href as the user gave it (a local path, a URL, a GDAL ``/vsi`` path).
GDAL opens URLs only through its virtual file systems, and resolves relative paths against whatever
directory it runs in, so any file handed to GDAL by name (a GTI, a VRT) gets :func:`gdal_path`.
:func:`credentials_in` says whether an href carries a secret that must not be written to a shareable file.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote, urlsplit
from urllib.request import url2pathname

from mosaic.errors import InvalidInputError

__all__ = ["credentials_in", "gdal_path", "is_network"]

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
# query parameters of signed URLs: AWS (X-Amz-*), Google (X-Goog-*), Azure SAS (sig), tokens
_SECRET_KEYS = re.compile(r"^(x-amz-|x-goog-)|^(sig|signature|token|access_token|api_key|apikey|key)$", re.I)


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


def credentials_in(href: str) -> str | None:
    """What secret ``href`` carries, if any: a URL's user:password, or a signed query; else None.

    A GTI or an exported index is a file people share; hrefs with secrets in them must not be written.
    """
    text = os.fspath(href)
    if text.startswith("/vsicurl/"):
        text = text[len("/vsicurl/") :]
    if not _SCHEME.match(text):
        return None
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        return "a user name or password in the URL"
    keys = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_KEYS.search(k)})
    if keys:
        return f"signed-URL query parameters ({', '.join(keys)})"
    return None
