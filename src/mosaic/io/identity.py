"""Source identities: what each scene file was when it was indexed, to notice when it has changed.

An identity is a compact, stable string of ``key=value`` parts joined by ``;``, in this order:

- ``size=<bytes>``: a local file's size (``os.stat``), a remote object's (what GDAL learnt when it opened
  it: ``Content-Length`` or ``Content-Range``), or the STAC asset's ``file:size``;
- ``mtime=<UTC time>``: a local file's modification time (to the microsecond), or a remote object's
  ``Last-Modified`` as GDAL saw it (to the second);
- ``checksum=<multihash, hex>``: the STAC asset's ``file:checksum``;
- ``updated=<time>``: the STAC Item's (or asset's) ``updated``, when it gives no ``file:`` facts.

Only ``size`` and ``mtime`` can be observed without reading a file's bytes, so only they are checked
(:func:`change`); a checksum or an ``updated`` time is recorded but never checked. ETags and object
version ids are not used: GDAL keeps neither where it can be asked without a request of its own.

:func:`observe` gives the identity a file has now: ``os.stat`` for a local path, GDAL's own stat for a
``/vsi`` path (after GDAL opened the file, it answers from what it learnt at the open, with no request;
``fresh=True`` asks the server again). Two checks are built on it: the reader's
(:func:`mosaic.io.read.read_window` warns, once per file and process, when a file differs from its
index row) and the resume check of :func:`mosaic.regrid` (:func:`source_record` keeps the identities
in the store's state when it is created, :func:`check_sources` refuses to resume when a file differs).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mosaic.errors import ChangedSourcesError, InvalidInputError
from mosaic.io.paths import gdal_path, is_network, redact

if TYPE_CHECKING:
    from mosaic.planning.planner import Plan

__all__ = [
    "CHECKED",
    "KEYS",
    "change",
    "check_sources",
    "checkable",
    "complete",
    "format_identity",
    "observe",
    "parse_identity",
    "source_record",
    "stac_identity",
]

KEYS = ("size", "mtime", "checksum", "updated")
"""The parts of an identity, in the order they are written."""
CHECKED = ("size", "mtime")
"""The parts a file's stat can tell, so the only ones compared."""
_RECORD_VERSION = 1
_SHOWN = 3
"""Changed scenes named in the resume error before "+N more"."""


# ------------------------------------------------------------------------------------------ format


def format_identity(parts: Mapping[str, Any]) -> str | None:
    """The identity string of ``parts`` (keys of :data:`KEYS`; None values left out); None if empty."""
    text = ";".join(f"{key}={parts[key]}" for key in KEYS if parts.get(key) not in (None, ""))
    return text or None


def parse_identity(text: str | None) -> dict[str, str]:
    """The parts of an identity string (unknown keys kept; an empty or None identity has none)."""
    parts: dict[str, str] = {}
    for item in (text or "").split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            parts[key.strip()] = value.strip()
    return parts


def change(recorded: str | None, now: str | None) -> str | None:
    """How ``now`` differs from ``recorded`` (``"size 4564 -> 4600, modified A -> B"``), or None.

    Only the parts both have and a stat can tell (:data:`CHECKED`) are compared: None when they agree,
    and when there is nothing to compare (an identity made of a STAC checksum alone).
    """
    old, new = parse_identity(recorded), parse_identity(now)
    words = {"size": "size", "mtime": "modified"}
    both = [k for k in CHECKED if k in old and k in new]
    differ = [f"{words[k]} {old[k]} -> {new[k]}" for k in both if old[k] != new[k]]
    return ", ".join(differ) or None


def _utc(seconds: int, micros: int | None = None) -> str:
    """A POSIX time as UTC ISO 8601 (``Z``), with microseconds when given."""
    when = datetime.fromtimestamp(seconds, UTC)
    if micros is None:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (when + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -------------------------------------------------------------------------------------------- STAC


def stac_identity(asset: Mapping[str, Any], properties: Mapping[str, Any]) -> str | None:
    """An asset's identity from its STAC metadata: ``file:size`` and ``file:checksum``, else ``updated``.

    Nothing is opened. Values of the wrong type (a size that is not a whole number) are left out.
    """
    size = asset.get("file:size")
    checksum = asset.get("file:checksum")
    parts: dict[str, Any] = {
        "size": size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        "checksum": checksum.strip().lower() if isinstance(checksum, str) and checksum.strip() else None,
    }
    if parts["size"] is None and parts["checksum"] is None:
        updated = asset.get("updated", properties.get("updated"))
        parts["updated"] = updated.strip() if isinstance(updated, str) and updated.strip() else None
    return format_identity(parts)


def merged(catalogue: str | None, observed: str | None) -> str | None:
    """The catalogue's identity with what a file's stat said over it (an asset whose file was opened)."""
    return format_identity({**parse_identity(catalogue), **parse_identity(observed)})


# ----------------------------------------------------------------------------------------- observe


def observe(href: str, *, fresh: bool = False) -> str | None:
    """The identity the file at ``href`` has now (size and modification time), or None if unknowable.

    A local path is stat'ed. A ``/vsi`` path (URL) is stat'ed by GDAL, in the caller's GDAL settings:
    for a file GDAL has opened in this process, from what it learnt at the open (no request);
    ``fresh=True`` first drops that, so the server is asked (one request). Connection strings
    (``NETCDF:...``) and ``vrt://`` have no identity.

    Raises:
        OSError: the file does not exist, or cannot be stat'ed.
    """
    try:
        path = gdal_path(href)
    except InvalidInputError:  # a URL scheme of rasterio's own (zip+https://...): not checked
        return None
    if path.startswith("/vsi"):
        return _gdal_stat(path, fresh=fresh)
    if path.lower().startswith("vrt://") or not os.path.isabs(path):
        return None
    st = os.stat(path)
    seconds, nanos = divmod(st.st_mtime_ns, 10**9)
    return format_identity({"size": st.st_size, "mtime": _utc(seconds, nanos // 1000)})


_STAT_LAYOUTS = {"linux": (48, 88), "darwin": (96, 48)}
"""Byte offsets of ``st_size`` and ``st_mtime`` in GDAL's ``VSIStatBufL`` (the C library's 64-bit
``struct stat``), by platform; checked against ``os.stat`` before use (:func:`_stat_layout`)."""
_STAT_BYTES = 256


def _vsi_stat(lib: ctypes.CDLL, path: str) -> bytes | None:
    """The raw ``VSIStatBufL`` GDAL fills for ``path``, or None when GDAL cannot stat it."""
    buffer = ctypes.create_string_buffer(_STAT_BYTES)
    if lib.VSIStatL(os.fsencode(path), buffer) != 0:
        return None
    return buffer.raw


@lru_cache(maxsize=1)
def _stat_layout() -> tuple[ctypes.CDLL, int, int] | None:
    """GDAL's library and the (size, mtime) offsets of its stat buffer, checked on a local file; or None."""
    from mosaic.io.read import _libgdal

    lib = _libgdal()
    layout = next((v for k, v in _STAT_LAYOUTS.items() if sys.platform.startswith(k)), None)
    if lib is None or layout is None:
        return None
    lib.VSIStatL.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.VSIStatL.restype = ctypes.c_int
    lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
    probe = os.path.abspath(__file__)
    try:
        st = os.stat(probe)
    except OSError:  # not a plain file (a zipped install)
        return None
    raw = _vsi_stat(lib, probe)
    if raw is None:
        return None
    size, mtime = (int.from_bytes(raw[o : o + 8], sys.byteorder, signed=True) for o in layout)
    if size != st.st_size or mtime != int(st.st_mtime):
        return None
    return lib, layout[0], layout[1]


def _gdal_stat(path: str, *, fresh: bool) -> str | None:
    found = _stat_layout()
    if found is None:
        return None  # GDAL's stat buffer cannot be read on this platform: nothing is checked
    lib, at_size, at_mtime = found
    if fresh and is_network(path):
        lib.VSICurlPartialClearCache(os.fsencode(path))
    raw = _vsi_stat(lib, path)
    if raw is None:
        raise FileNotFoundError(f"GDAL cannot stat {redact(path)}")
    size = int.from_bytes(raw[at_size : at_size + 8], sys.byteorder, signed=True)
    mtime = int.from_bytes(raw[at_mtime : at_mtime + 8], sys.byteorder, signed=True)
    # a server without Last-Modified gives no time
    return format_identity({"size": size, "mtime": _utc(mtime) if mtime > 0 else None})


# --------------------------------------------------------------------------------------- messages


# ----------------------------------------------------------------------------------------- resume


def checkable(identity: str | None) -> bool:
    """Whether a stat can check ``identity`` (it has a size or a modification time)."""
    return any(k in CHECKED for k in parse_identity(identity))


def complete(identity: str | None) -> bool:
    """Whether ``identity`` holds all a stat tells (size and modification time)."""
    return all(k in parse_identity(identity) for k in CHECKED)


def _sources(plan: Plan) -> dict[str, tuple[str, str | None]]:
    """Every href the plan reads, with its scene id and its identity in the index (in the plan's order)."""
    found: dict[str, tuple[str, str | None]] = {}
    for task in plan.tasks:
        for read in (*task.reads, *task.aux):
            found.setdefault(read.href, (read.scene, read.identity))
    return found


def _key(href: str) -> str:
    """What names an href in a store's state: its SHA-256, so no secret in it is written."""
    return hashlib.sha256(href.encode()).hexdigest()


def _observe_all(plan: Plan, hrefs: Iterable[str]) -> dict[str, str | OSError | None]:
    """The identity of each file now, asked afresh, in parallel (in the plan's GDAL settings)."""
    from mosaic.io.gdalenv import gdal_env, href_env

    def one(href: str) -> str | OSError | None:
        try:
            with gdal_env(plan.gdal_options), href_env(href, plan.auth) as opened:
                return observe(opened, fresh=True)
        except OSError as exc:
            return exc

    todo = list(hrefs)
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(todo))) as pool:
        return dict(zip(todo, pool.map(one, todo), strict=True))


def source_record(plan: Plan) -> bytes:
    """The identities of the files ``plan`` reads: the JSON a regrid's state keeps from its creation.

    A file's identity is the index's where it holds all a stat tells (size and time: files indexed by
    :meth:`~mosaic.TileIndex.from_files` or ``from_gti``), at no cost; other files (STAC assets, an index
    of format 2) are stat'ed now, remote ones in parallel (one request each). Hrefs are recorded as
    their SHA-256, beside the scene id and the href fit to print, so no secret in a URL is written.
    """
    scenes = _sources(plan)
    now = _observe_all(plan, (h for h, (_, known) in scenes.items() if not complete(known)))
    files = {}
    for href, (scene, known) in scenes.items():
        found = known if complete(known) else now[href]
        identity = found if isinstance(found, str) else None
        files[_key(href)] = {"scene": scene, "href": redact(href), "identity": identity}
    return json.dumps({"version": _RECORD_VERSION, "files": files}, indent=1).encode()


def check_sources(plan: Plan, record: bytes, where: str) -> None:
    """Refuse to resume ``where`` when a file ``plan`` reads is not what :func:`source_record` recorded.

    Each recorded file is stat'ed once (remote ones in parallel, each asked afresh: one request). A
    file whose identity could not be recorded is not checked.

    Raises:
        ChangedSourcesError: one line naming the changed scenes (a few, then "+N more") and what to do.
    """
    try:
        files = json.loads(record).get("files", {})
    except (ValueError, AttributeError):
        files = {}
    scenes = _sources(plan)
    known = {href: files[_key(href)] for href in scenes if _key(href) in files}
    wanted = [h for h, entry in known.items() if checkable(entry.get("identity"))]
    now = _observe_all(plan, wanted)
    changed = []
    for href in wanted:
        entry, current = known[href], now[href]
        if isinstance(current, OSError):
            what = "missing or unreachable now"
        else:
            what = change(entry["identity"], current) or ""
        if what:
            changed.append(f"scene {entry.get('scene', scenes[href][0])} ({redact(href)}: {what})")
    if changed:
        more = f" +{len(changed) - _SHOWN} more" if len(changed) > _SHOWN else ""
        raise ChangedSourcesError(
            f"{where}: {len(changed)} source file(s) changed since they were indexed or this regrid "
            f"began, so the regions already written may not match the rest: {'; '.join(changed[:_SHOWN])}"
            f"{more}; rebuild the index if the files were reprocessed, then pass --overwrite "
            "(overwrite=True) to start again"
        )
