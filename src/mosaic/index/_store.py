"""Tile indexes on disk: one GeoParquet file, or a partitioned folder or glob of them, local or remote.

Reading picks what a query needs in two steps, both without reading any rows:

1. **files**, by their hive partition keys (``year=2024/utm_zone=32/part-0.parquet``): the years of the
   query's time and the UTM zones near its box (:func:`wanted_keys`). Files without those keys are
   all opened.
2. **row groups**, from the footer statistics of the ``bbox`` covering and ``datetime`` columns, chosen
   with NumPy; then ``ParquetFile.read_row_groups`` reads only those, and the same test row by row
   keeps the candidates.

The geometry column is read as a dictionary, so a footprint repeated over many dates is decoded from
WKB once per row group. Memory is that of the candidate rows, not of the index.

The partition keys :meth:`mosaic.index.tile_index.TileIndex.write` writes, and which a reader trusts to prune:

- ``year``: the UTC year of every row's time (``start_datetime``/``end_datetime``, else
  ``datetime``); a row without a time, or whose interval spans two years, goes to the null partition
  (``year=__HIVE_DEFAULT_PARTITION__``), which every query reads.
- ``utm_zone``: the 6-degree zone (1 to 60) of the footprint's centre, when the footprint's bounding
  box lies within :data:`ZONE_MARGIN` degrees of longitude of that zone; others (wide footprints at
  high latitude, footprints split at the antimeridian) go to the null partition, which every query
  reads.

Remote folders and files (``s3://``, ``gs://``...) are read with pyarrow's file systems: S3 with the
credentials of a matching :class:`mosaic.auth.S3Profile`, else pyarrow's defaults (the ``AWS_*``
environment variables, ``~/.aws``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import shapely

from mosaic.errors import IndexFormatError, InvalidInputError
from mosaic.io.paths import redact

if TYPE_CHECKING:
    import pandas as pd

    from mosaic.auth import Profile
    from mosaic.index.filters import Filter

__all__ = [
    "NULL_KEY",
    "PARTITION_KEYS",
    "ZONE_MARGIN",
    "IndexFiles",
    "ReadReport",
    "find_index_files",
    "is_index_collection",
    "partition_keys",
    "read_tables",
    "row_keys",
    "wanted_keys",
]

log = logging.getLogger("mosaic.index")

PARTITION_KEYS = ("year", "utm_zone")
"""Partition keys :meth:`TileIndex.write` can write (``partition_by=``), and the ones a reader prunes by."""
NULL_KEY = "__HIVE_DEFAULT_PARTITION__"
"""Hive's name for a null key: rows no key value describes (read by every query)."""
ZONE_MARGIN = 1.0
"""Degrees of longitude a footprint in ``utm_zone=Z`` may reach beyond zone Z (MGRS tiles overlap their
neighbours' zones); a query reads the zones within this margin of its box."""
_SUFFIXES = (".parquet", ".geoparquet")
_GLOB = re.compile(r"[*?\[]")
_US = np.iinfo(np.int64)


# ============================================================================================ keys


def row_keys(name: str, bounds: np.ndarray, start_us: np.ndarray, end_us: np.ndarray) -> np.ndarray:
    """Each row's value of partition key ``name`` (strings; :data:`NULL_KEY` where none describes it).

    Args:
        name: ``"year"`` or ``"utm_zone"``.
        bounds: the footprints' (xmin, ymin, xmax, ymax) in lon/lat, one row each.
        start_us: each row's first instant, UTC microseconds (int64 min: unknown).
        end_us: each row's last instant, UTC microseconds (int64 max: unknown).
    """
    n = len(bounds)
    out = np.full(n, NULL_KEY, dtype="<U32")
    if name == "year":
        known = (start_us != _US.min) & (end_us != _US.max)
        y0 = start_us[known].astype("datetime64[us]").astype("datetime64[Y]").astype(np.int64) + 1970
        y1 = end_us[known].astype("datetime64[us]").astype("datetime64[Y]").astype(np.int64) + 1970
        values = np.where(y0 == y1, y0.astype(str), NULL_KEY)
        out[known] = values
        return out
    if name == "utm_zone":
        if n == 0:
            return out
        cx = (bounds[:, 0] + bounds[:, 2]) / 2
        zone = np.clip(np.floor((cx + 180.0) / 6.0).astype(np.int64), 0, 59) + 1
        west = -180.0 + (zone - 1) * 6.0
        inside = (bounds[:, 0] >= west - ZONE_MARGIN) & (bounds[:, 2] <= west + 6.0 + ZONE_MARGIN)
        out[inside] = zone[inside].astype(str)
        return out
    raise InvalidInputError(f"partition_by takes keys {list(PARTITION_KEYS)}, got {name!r}")


def wanted_keys(
    parts: Sequence[tuple[float, float, float, float]] | None,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> dict[str, Any]:
    """What each partition key must be for a query to need a file (absent: any value).

    ``year``: an inclusive (first, last) range of years; ``utm_zone``: a set of zones. The null key
    always passes.
    """
    wanted: dict[str, Any] = {}
    if start is not None or end is not None:
        first = -(10**9) if start is None else start.year
        last = 10**9 if end is None else (end - np.timedelta64(1, "us")).year
        wanted["year"] = (first, last)
    if parts is not None:
        zones: set[str] = set()
        for xmin, _, xmax, _ in parts:
            lo = int(np.floor((xmin - ZONE_MARGIN + 180.0) / 6.0)) + 1
            hi = int(np.floor((xmax + ZONE_MARGIN + 180.0) / 6.0)) + 1
            zones |= {str(z) for z in range(max(lo, 1), min(hi, 60) + 1)}
        wanted["utm_zone"] = zones
    return wanted


def _needed(keys: dict[str, str], wanted: dict[str, Any]) -> bool:
    """Whether a file with hive ``keys`` can hold rows the query wants."""
    year = keys.get("year")
    if year is not None and year != NULL_KEY and "year" in wanted:
        first, last = wanted["year"]
        try:
            if not first <= int(year) <= last:
                return False
        except ValueError:
            pass  # not a year written by TileIndex.write: read it
    zone = keys.get("utm_zone")
    return zone is None or zone == NULL_KEY or "utm_zone" not in wanted or zone in wanted["utm_zone"]


def partition_keys(relative: str) -> dict[str, str]:
    """The hive keys of a file's path relative to its index's root: ``{"year": "2024", ...}``."""
    keys = {}
    for segment in relative.split("/")[:-1]:
        name, eq, value = segment.partition("=")
        if eq and name:
            keys[name] = value
    return keys


# =========================================================================================== files


@dataclass(frozen=True, slots=True)
class IndexFiles:
    """The files of an index: where they are, and the name to give in messages."""

    filesystem: pafs.FileSystem
    root: str
    """The folder relative paths (and so partition keys) are taken from (the file's own for one file)."""
    files: tuple[str, ...]
    """Paths in ``filesystem``, sorted."""
    stamps: tuple[tuple[int | None, int | None], ...]
    """Each file's size and modification time (ns) as listed: the key of its cached footer."""
    label: str
    """The path or URL as given (credentials redacted)."""
    collection: bool
    """A folder or a glob (else one file)."""


def is_index_collection(path: str) -> bool:
    """Whether ``path`` names a folder or a glob of index files rather than one file (no I/O for URLs)."""
    if _is_url(path):
        return bool(_GLOB.search(path)) or path.endswith("/") or not path.lower().endswith(_SUFFIXES)
    if os.path.exists(path):  # a file named with [ or * is that file
        return os.path.isdir(path)
    return bool(_GLOB.search(path))


def _is_url(path: str) -> bool:
    scheme = urlsplit(path).scheme
    return len(scheme) > 1 and scheme != "file"


def _filesystem(path: str, profiles: Sequence[Profile]) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system of ``path``, and the path within it."""
    parts = urlsplit(path)
    if parts.scheme == "file":
        from mosaic.io.paths import gdal_path

        return pafs.LocalFileSystem(), gdal_path(path)  # decoded, absolute
    if not _is_url(path):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if parts.scheme == "s3":
        from mosaic.auth import S3Profile, TemporaryS3Profile, find_profile

        profile = find_profile(path, profiles)
        if isinstance(profile, (S3Profile, TemporaryS3Profile)):  # (temporary keys: fetched now)
            return _s3(profile), parts.netloc + parts.path
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
        return fs, str(inner)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise IndexFormatError(f"{redact(path)}: cannot open this location ({exc})") from exc


def _s3(profile: Any) -> pafs.S3FileSystem:
    """An S3 file system with the profile's credentials and endpoint."""
    kw: dict[str, Any] = {}
    if getattr(profile, "unsigned", False):
        kw["anonymous"] = True
    else:
        opts = profile.gdal_options()  # reveals the secrets, here where they are used
        if "AWS_ACCESS_KEY_ID" in opts:
            kw["access_key"] = opts["AWS_ACCESS_KEY_ID"]
            kw["secret_key"] = opts["AWS_SECRET_ACCESS_KEY"]
        if "AWS_SESSION_TOKEN" in opts:
            kw["session_token"] = opts["AWS_SESSION_TOKEN"]
    if profile.region:
        kw["region"] = profile.region
    if profile.endpoint:
        parts = urlsplit(profile.endpoint if "://" in profile.endpoint else f"https://{profile.endpoint}")
        kw["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kw["scheme"] = parts.scheme or "https"
        kw["force_virtual_addressing"] = False
    return pafs.S3FileSystem(**kw)


def _hidden(relative: str) -> bool:
    """Files a dataset reader skips: any part of the path starting with ``.`` or ``_`` (temporaries)."""
    path = "/" + relative
    if "/." not in path and "/_" not in path:
        return False
    return any(p.startswith((".", "_")) and "=" not in p for p in relative.split("/"))


def find_index_files(
    path: str, profiles: Sequence[Profile] = (), wanted: dict[str, Any] | None = None
) -> IndexFiles:
    """The index files ``path`` names: a file, a folder (its ``*.parquet`` at any depth) or a glob.

    With ``wanted`` (:func:`wanted_keys`), a local folder's partition folders that a query cannot need
    are not listed (on an object store, one recursive listing costs fewer requests than a walk).

    Raises:
        IndexFormatError: naming ``path``: it does not exist, or a folder or glob holds no index file.
    """
    label = redact(path)
    fs, where = _filesystem(path, profiles)
    glob = _GLOB.search(where)
    if glob and isinstance(fs, pafs.LocalFileSystem) and os.path.exists(where):
        glob = None  # a file or folder whose name has [ or *
    try:
        if glob:
            root = where[: glob.start()].rpartition("/")[0]
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            pattern = where.rstrip("/")
            found = [
                i
                for i in infos
                if i.type == pafs.FileType.File
                and fnmatch.fnmatchcase(i.path, pattern)
                and not _hidden(i.path[len(root) :].lstrip("/"))
            ]
            kind = "glob"
        else:
            info = fs.get_file_info(where.rstrip("/") or "/")
            if info.type == pafs.FileType.NotFound:
                raise IndexFormatError(f"{label}: index file does not exist")
            if info.type == pafs.FileType.File:
                root = where.rpartition("/")[0]
                stamp = (info.size, info.mtime_ns)
                return IndexFiles(fs, root, (info.path,), (stamp,), label, collection=False)
            root = info.path
            kind = "folder"
            if wanted and isinstance(fs, pafs.LocalFileSystem):
                found, pruned = _walk(fs, root, wanted)
                if not found and pruned:  # partitions, none of them needed
                    return IndexFiles(fs, root, (), (), label, collection=True)
            else:
                infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
                found = [
                    i
                    for i in infos
                    if i.type == pafs.FileType.File
                    and i.path.lower().endswith(_SUFFIXES)
                    and not _hidden(i.path[len(root) :].lstrip("/"))
                ]
    except OSError as exc:
        raise IndexFormatError(f"{label}: cannot be listed ({exc})") from exc
    if not found:
        raise IndexFormatError(
            f"{label}: the {kind} holds no index file (*.parquet); make one with 'mosaic index build' or "
            "TileIndex.write"
        )
    found.sort(key=lambda i: i.path)
    files = tuple(i.path for i in found)
    return IndexFiles(fs, root, files, tuple((i.size, i.mtime_ns) for i in found), label, collection=True)


def _walk(fs: pafs.FileSystem, root: str, wanted: dict[str, Any]) -> tuple[list[pafs.FileInfo], int]:
    """The index files under ``root`` in partition folders a query needs; and how many were skipped."""
    found: list[pafs.FileInfo] = []
    pruned = 0
    stack: list[tuple[str, dict[str, str]]] = [(root, {})]
    while stack:
        folder, keys = stack.pop()
        for info in fs.get_file_info(pafs.FileSelector(folder)):
            name = info.base_name
            key, eq, value = name.partition("=")
            if name.startswith((".", "_")) and not eq:
                continue
            if info.type == pafs.FileType.Directory:
                inner = {**keys, key: value} if eq and key else keys
                if _needed(inner, wanted):
                    stack.append((info.path, inner))
                else:
                    pruned += 1
            elif info.type == pafs.FileType.File and name.lower().endswith(_SUFFIXES):
                found.append(info)
    return found, pruned


# ========================================================================================= reading


@dataclass(frozen=True, slots=True)
class ReadReport:
    """What a read opened and read: for logs, benchmarks and tests (``mosaic.index`` DEBUG records)."""

    files: int
    """Index files listed: all the location holds, but in a local folder only those in partition folders
    the query can need (the others are not listed)."""
    files_opened: int
    """Files whose footer was read (the others were pruned by their partition keys)."""
    row_groups: int
    """Row groups in the opened files."""
    row_groups_probed: int
    """Row groups whose statistics matched, of which the bbox and time columns were read."""
    row_groups_read: int
    """Row groups read whole: those with a candidate row."""
    rows_read: int
    """Rows in the row groups read whole (before the row-by-row test)."""
    opened: tuple[str, ...]
    """The files opened."""
    row_groups_filtered: int = 0
    """Row groups left out by the ``filter`` alone: their statistics show no row can match it."""
    columns: tuple[pa.Field, ...] = ()
    """The columns of the files opened (all of them, whatever was read), each once; not those whose
    type differs between files."""


class _Footer:
    """A file's parsed footer and the statistics arrays taken from it (cached per file version)."""

    __slots__ = ("checked", "fragment", "metadata", "stats")

    def __init__(self, metadata: pq.FileMetaData):
        self.metadata = metadata
        self.fragment: Any = None
        """The file as a pyarrow dataset fragment with its statistics, once a filter needed them."""
        self.stats: dict[tuple[str, str], np.ndarray | None] = {}
        self.checked: tuple[dict[str, Any], tuple[str, ...]] | None = None
        """The file's mosaic metadata and absent columns, once its schema passed the checks."""

    def get(self, name: str, what: str) -> np.ndarray | None:
        key = (name, what)
        if key not in self.stats:
            self.stats[key] = _stats(self.metadata, name, what)
        return self.stats[key]


_FOOTERS: OrderedDict[tuple[str, str, int, int], _Footer] = OrderedDict()
_FOOTERS_MAX = 1024
"""Footers of the files read lately, by file system, path, size and modification time: a warm query
parses no footer again (a rewritten file has another time, so another key)."""
_FOOTERS_LOCK = threading.Lock()


def _cached_footer(fs: pafs.FileSystem, path: str, stamp: tuple[int | None, int | None]) -> _Footer | None:
    size, mtime = stamp
    if size is None or mtime is None:
        return None
    with _FOOTERS_LOCK:
        footer = _FOOTERS.get((fs.type_name, path, size, mtime))
        if footer is not None:
            _FOOTERS.move_to_end((fs.type_name, path, size, mtime))
        return footer


_Stamp = tuple[int | None, int | None]


def _keep_footer(fs: pafs.FileSystem, path: str, stamp: _Stamp, footer: _Footer) -> None:
    size, mtime = stamp
    if size is None or mtime is None:
        return
    with _FOOTERS_LOCK:
        _FOOTERS[(fs.type_name, path, size, mtime)] = footer
        while len(_FOOTERS) > _FOOTERS_MAX:
            _FOOTERS.popitem(last=False)


def _stats(md: pq.FileMetaData, name: str, what: str) -> np.ndarray | None:
    """Per row group, the ``min``/``max``/``null_count``/``num_values`` of column ``name`` (None: absent).

    Values are float for ``bbox.*``, int64 microseconds for timestamps; a row group without statistics
    gives NaN (min/max) or -1 (counts), which the callers treat as "may match".
    """
    leaf = None
    for j in range(md.num_columns):
        if md.schema.column(j).path == name:
            leaf = j
            break
    if leaf is None:
        return None
    out: list[Any] = []
    for g in range(md.num_row_groups):
        s = md.row_group(g).column(leaf).statistics
        if s is None or (what in ("min", "max") and not s.has_min_max):
            out.append(None)
            continue
        out.append(getattr(s, what))
    if what in ("null_count", "num_values"):
        return np.array([-1 if v is None else v for v in out], dtype=np.int64)
    if name == "datetime":
        return np.array([_US.min if v is None else _micros(v) for v in out], dtype=np.int64)
    return np.array([np.nan if v is None else v for v in out], dtype=np.float64)


def _micros(value: Any) -> int:
    import pandas as pd

    return int(pd.Timestamp(value).value // 1000)


def _groups(
    footer: _Footer,
    parts: Sequence[tuple[float, float, float, float]] | None,
    start_us: int | None,
    end_us: int | None,
) -> list[int]:
    """The row groups whose statistics can match the query (all where statistics are missing)."""
    n = footer.metadata.num_row_groups
    keep = np.ones(n, dtype=bool)
    if parts:
        box = [footer.get(f"bbox.{k}", "min" if k in ("xmin", "ymin") else "max") for k in _BOX]
        if all(b is not None for b in box):
            fills = (-1e9, -1e9, 1e9, 1e9)  # no statistics: may match
            x0, y0, x1, y1 = (np.nan_to_num(b, nan=v) for b, v in zip(box, fills, strict=True))  # type: ignore[arg-type]
            spatial = np.zeros(n, dtype=bool)
            for px0, py0, px1, py1 in parts:
                spatial |= (x0 <= px1) & (x1 >= px0) & (y0 <= py1) & (y1 >= py0)
            keep &= spatial
    if start_us is not None or end_us is not None:
        tmin, tmax = footer.get("datetime", "min"), footer.get("datetime", "max")
        nulls = footer.get("datetime", "null_count")
        if tmin is not None and tmax is not None and nulls is not None:
            unknown = (tmin == _US.min) | (nulls != 0)  # no statistics, or rows without a time
            for other in ("start_datetime", "end_datetime"):
                values = footer.get(other, "num_values")
                if values is not None:  # rows with an interval: their datetime says too little
                    unknown |= values != 0
            ok = np.ones(n, dtype=bool)
            if start_us is not None:
                ok &= tmax >= start_us
            if end_us is not None:
                ok &= tmin < end_us
            keep &= ok | unknown
    return np.flatnonzero(keep).tolist()


_BOX = ("xmin", "ymin", "xmax", "ymax")
_PROBE = ("bbox", "datetime", "start_datetime", "end_datetime")
"""The columns of the row-by-row test."""
_THREADED_GROUPS = 8
"""Row groups of one file above which pyarrow decodes columns in threads."""


def _row_mask(
    table: pa.Table,
    parts: Sequence[tuple[float, float, float, float]] | None,
    start_us: int | None,
    end_us: int | None,
) -> np.ndarray | None:
    """Rows whose bbox and time can match (the same superset test as the row groups'), or None: all."""
    rows = np.ones(len(table), dtype=bool)
    if parts and "bbox" in table.column_names:
        b = table.column("bbox")
        x0, y0, x1, y1 = (pc.struct_field(b, k).to_numpy() for k in _BOX)
        spatial = np.zeros(len(table), dtype=bool)
        for px0, py0, px1, py1 in parts:
            spatial |= (x0 <= px1) & (x1 >= px0) & (y0 <= py1) & (y1 >= py0)
        rows &= spatial
    if start_us is not None or end_us is not None:
        when = table.column("datetime")
        us = pc.cast(pc.fill_null(pc.cast(when, pa.int64()), 0), pa.int64()).to_numpy()
        ok = np.ones(len(table), dtype=bool)
        if start_us is not None:
            ok &= us >= start_us
        if end_us is not None:
            ok &= us < end_us
        loose = when.is_null().to_numpy(zero_copy_only=False)
        for other in ("start_datetime", "end_datetime"):
            if other in table.column_names:
                loose |= table.column(other).is_valid().to_numpy(zero_copy_only=False)
        rows &= ok | loose
    return None if rows.all() else rows


@dataclass(frozen=True, slots=True)
class FilePart:
    """The candidate rows of one file: columns as stored, footprints decoded, the file's metadata."""

    table: pa.Table
    geometry: np.ndarray
    meta: dict[str, Any]
    absent: tuple[str, ...]
    name: str


def _decode(column: pa.ChunkedArray) -> np.ndarray:
    """Footprints from a WKB column; a dictionary-read column has each distinct WKB decoded once."""
    out = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            decoded = shapely.from_wkb(chunk.dictionary.to_numpy(zero_copy_only=False))
            out.append(decoded[chunk.indices.to_numpy(zero_copy_only=False)])
        else:
            out.append(shapely.from_wkb(chunk.to_numpy(zero_copy_only=False)))
    return np.concatenate(out) if out else np.empty(0, dtype=object)


def _open_file(
    fs: pafs.FileSystem,
    path: str,
    stamp: tuple[int | None, int | None],
    name: str,
    schema_names: Sequence[str],
    version_max: int,
) -> tuple[pq.ParquetFile, _Footer, dict[str, Any], tuple[str, ...]]:
    """A file's reader after the checks that it is a tile index mosaic reads (errors name the file)."""
    from mosaic.index.tile_index import _ADDED_IN, _META_KEY

    footer = _cached_footer(fs, path, stamp)
    try:
        source = fs.open_input_file(path)
        known = None if footer is None else footer.metadata
        try:
            pf = pq.ParquetFile(source, metadata=known, read_dictionary=["geometry"])
        except KeyError:  # no geometry column: not an index, said below
            pf = pq.ParquetFile(source, metadata=known)
        if footer is not None and footer.checked is not None:
            return pf, footer, *footer.checked
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise IndexFormatError(f"{name}: not a Parquet file ({exc})") from exc
    try:
        meta = json.loads((schema.metadata or {}).get(_META_KEY, b"{}"))
    except ValueError as exc:
        raise IndexFormatError(f"{name}: not a mosaic tile index (unreadable metadata: {exc})") from exc
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > version_max:
        raise IndexFormatError(
            f"{name}: written by a newer mosaic (index format {version}; this one reads formats up to "
            f"{version_max}): upgrade mosaic to read it"
        )
    absent = tuple(n for n in schema_names if n not in schema.names)
    required = [n for n in [*absent, "geometry"] if _ADDED_IN.get(n, 1) <= version]
    missing = [n for n in required if n not in schema.names]
    if missing or b"geo" not in (schema.metadata or {}):
        what = missing or "GeoParquet metadata"
        raise IndexFormatError(f"{name}: not a mosaic tile index (missing {what})")
    if footer is None:
        footer = _Footer(pf.metadata)
        _keep_footer(fs, path, stamp, footer)
    footer.checked = (meta, absent)
    return pf, footer, meta, absent


def _filtered_groups(
    fs: pafs.FileSystem, path: str, footer: _Footer, expression: pc.Expression, groups: list[int]
) -> list[int]:
    """Of ``groups``, those whose footer statistics do not rule ``expression`` out (pyarrow decides)."""
    import pyarrow.dataset as pads

    if footer.fragment is None:
        fragment = pads.ParquetFileFormat().make_fragment(path, filesystem=fs)
        fragment.ensure_complete_metadata()
        footer.fragment = fragment
    kept = {group.id for group in footer.fragment.subset(filter=expression).row_groups}
    return [g for g in groups if g in kept]


def read_tables(
    where: IndexFiles,
    *,
    parts: Sequence[tuple[float, float, float, float]] | None,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
    schema_names: Sequence[str],
    version_max: int,
    predicate: Filter | None = None,
) -> tuple[list[FilePart], ReadReport]:
    """The candidate rows of each file the query needs (all rows without a query), and what was read.

    Args:
        where: the index files.
        parts: the query's lon/lat boxes (one, or two split at the antimeridian), or None.
        start: the query's start (None: open).
        end: the query's end, excluded (None: open).
        schema_names: the index columns (``SCHEMA.names``); a file's other columns (Item properties)
            are read too.
        version_max: the newest index format this mosaic reads.
        predicate: a filter (:mod:`mosaic.index.filters`): in a file that has its properties as columns,
            the row groups whose statistics rule it out are not read, nor the rows it leaves out.
    """
    wanted = wanted_keys(parts, start, end) if where.collection else {}
    start_us = None if start is None else int(start.value // 1000)
    end_us = None if end is None else int(end.value // 1000)
    out: list[FilePart] = []
    opened: list[str] = []
    columns_seen: dict[str, pa.Field] = {}
    conflicting: set[str] = set()
    groups_total = groups_read = rows_read = probed = filtered = 0
    for path, stamp in zip(where.files, where.stamps, strict=True):
        relative = path[len(where.root) :].lstrip("/")
        keys = partition_keys(relative) if where.collection else {}
        if not _needed(keys, wanted):
            continue
        name = path if where.collection else where.label
        if isinstance(where.filesystem, pafs.S3FileSystem):
            name = f"s3://{path}"
        pf, footer, meta, absent = _open_file(where.filesystem, path, stamp, name, schema_names, version_max)
        opened.append(name)
        names = pf.schema_arrow.names
        for found in pf.schema_arrow:
            if columns_seen.setdefault(found.name, found).type != found.type:
                conflicting.add(found.name)  # read as derived from the JSON (TileIndex.read)
        groups = _groups(footer, parts, start_us, end_us)
        groups_total += footer.metadata.num_row_groups
        pushed = None if predicate is None else predicate.pushable(pf.schema_arrow)
        if pushed is not None and groups:
            try:
                kept = _filtered_groups(where.filesystem, path, footer, pushed, groups)
            except (pa.ArrowException, OSError) as exc:
                raise IndexFormatError(f"{name}: cannot be read (truncated or damaged: {exc})") from exc
            filtered += len(groups) - len(kept)
            groups = kept
        if not groups:
            continue
        present = [n for n in schema_names if n not in absent]
        extra = [n for n in names if n not in schema_names and n not in ("geometry", "bbox")]
        columns = [*present, *extra, "geometry"]
        mask = None
        try:
            if parts or start is not None or end is not None or pushed is not None:
                # the few columns the row test needs first: row groups without a candidate are not
                # read further (their statistics matched, e.g. a group's bbox spans the query, but no row)
                probe = [c for c in _PROBE if c in names and (c != "bbox" or parts)]
                if pushed is not None and predicate is not None:
                    probe += [f for f in dict.fromkeys(predicate.fields) if f not in probe]
                table = pf.read_row_groups(groups, columns=probe, use_threads=len(groups) > _THREADED_GROUPS)
                probed += len(groups)
                mask = _row_mask(table, parts, start_us, end_us)
                if pushed is not None and predicate is not None:
                    keep = predicate.mask(table)
                    mask = keep if mask is None else mask & keep
                    mask = None if mask.all() else mask
                if mask is not None:
                    sizes = [footer.metadata.row_group(g).num_rows for g in groups]
                    pieces = np.split(mask, np.cumsum(sizes)[:-1])
                    groups = [g for g, piece in zip(groups, pieces, strict=True) if piece.any()]
                    mask = np.concatenate([p for p in pieces if p.any()] or [np.zeros(0, dtype=bool)])
                if not groups:
                    continue
            # threads help whole reads; for a few row groups they cost more than they give
            table = pf.read_row_groups(groups, columns=columns, use_threads=len(groups) > _THREADED_GROUPS)
        except (pa.ArrowException, OSError) as exc:
            raise IndexFormatError(f"{name}: cannot be read (truncated or damaged: {exc})") from exc
        groups_read += len(groups)
        rows_read += len(table)
        if mask is not None:
            table = table.filter(pa.array(mask))
        geometry = _decode(table.column("geometry"))
        table = table.drop_columns([c for c in ("geometry", "bbox") if c in table.column_names])
        out.append(FilePart(table, geometry, meta, absent, name))
    report = ReadReport(
        files=len(where.files),
        files_opened=len(opened),
        row_groups=groups_total,
        row_groups_probed=probed,
        row_groups_read=groups_read,
        rows_read=rows_read,
        opened=tuple(opened),
        row_groups_filtered=filtered,
        columns=tuple(f for f in columns_seen.values() if f.name not in conflicting),
    )
    log.debug(
        "%s: opened %d of %d file(s); of their %d row group(s), %d left out by the filter, %d matched by "
        "statistics, %d read (%d rows)",
        where.label,
        report.files_opened,
        report.files,
        report.row_groups,
        report.row_groups_filtered,
        report.row_groups_probed,
        report.row_groups_read,
        report.rows_read,
        extra={"index_read": report},
    )
    return out, report


def local_root(path: str | os.PathLike[str]) -> Path:
    """A partitioned index's folder as a local path (writes go to local folders only).

    Raises:
        InvalidInputError: a URL.
    """
    text = os.fspath(path)
    if _is_url(text):
        raise InvalidInputError(
            f"{redact(text)}: a partitioned index is written to a local folder; copy the folder to the "
            "object store afterwards (each file is complete once written)"
        )
    return Path(text)


# ========================================================================================= writing


def write_partitioned(
    index: Any,
    path: str | os.PathLike[str],
    partition_by: str | Sequence[str],
    *,
    row_group_size: int,
    keep_other: bool,
) -> Path:
    """Write ``index`` as a folder of hive partitions (see :meth:`mosaic.index.tile_index.TileIndex.write`).

    Each partition's file is written as a single index file is (rows in canonical order, row groups
    of ``row_group_size``, temporary name, flush, rename); then the folders are flushed and, unless
    ``keep_other``, the index files of partitions not written now are removed.

    Raises:
        InvalidInputError: an unknown or repeated key, a URL, or ``path`` is a file.
    """
    from mosaic.io import _durable

    keys = [partition_by] if isinstance(partition_by, str) else list(partition_by)
    unknown = [k for k in keys if k not in PARTITION_KEYS]
    if not keys or unknown or len(set(keys)) != len(keys):
        raise InvalidInputError(
            f"partition_by takes one or more of {list(PARTITION_KEYS)}, each once; got {partition_by!r}"
        )
    root = local_root(path)
    if root.exists() and not root.is_dir():
        raise InvalidInputError(
            f"{root}: is a file; a partitioned index is written to a folder (give a folder path, or write "
            "without partition_by)"
        )
    root.mkdir(parents=True, exist_ok=True)
    n = len(index)
    written: list[Path] = []
    if n == 0:
        written.append(index._write_file(root / "part-0.parquet", row_group_size))
    else:
        bounds = shapely.bounds(index.footprints)
        start_us, end_us = index._times()
        codes = []
        names = []
        for key in keys:
            values, code = np.unique(row_keys(key, bounds, start_us, end_us), return_inverse=True)
            names.append(values)
            codes.append(code.ravel())
        combined = np.ravel_multi_index(codes, [len(v) for v in names]) if len(keys) > 1 else codes[0]
        order = np.argsort(combined, kind="stable")
        cuts = np.flatnonzero(np.diff(combined[order])) + 1
        for rows in np.split(order, cuts):
            first = rows[0]
            hive = (f"{k}={v[c[first]]}" for k, v, c in zip(keys, names, codes, strict=True))
            folder = root.joinpath(*hive)
            folder.mkdir(parents=True, exist_ok=True)
            part = index.take(rows)._sorted()
            written.append(part._write_file(folder / "part-0.parquet", row_group_size))
    folders = {p.parent for p in written}
    if not keep_other:
        keep = {p.resolve() for p in written}
        for found in sorted(root.rglob("*")):
            relative = found.relative_to(root).as_posix()
            if (
                found.is_file()
                and found.suffix.lower() in _SUFFIXES
                and not _hidden(relative)
                and found.resolve() not in keep
            ):
                found.unlink()
                folders.add(found.parent)
        for folder in sorted((f for f in root.rglob("*") if f.is_dir()), key=lambda f: -len(f.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
                folders.add(folder.parent)
    flush = {root}
    for folder in folders:  # new names in each folder, and the new folders in theirs
        while folder != root and folder.is_relative_to(root):
            flush.add(folder)
            folder = folder.parent
    for folder in sorted(flush, key=lambda f: -len(f.parts)):
        if folder.exists():
            _durable.fsync_dir(folder)
    return root
