"""Sources: turn raster files and STAC Items into tile index rows (``SceneAsset`` records).

This is the first step of the flow. Files are opened with rasterio (metadata and, for files with
nodata, a coarse read of the validity mask to trace the data footprint); STAC Items are read without
opening any file unless an Item lacks the projection information the index needs.
"""

from __future__ import annotations

import ctypes
import glob
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias, TypeVar, cast

import numpy as np
import pandas as pd
import pystac
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import RasterioIOError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from mosaic.auth import Profile
from mosaic.errors import AuthenticationError, InvalidInputError, SourceError
from mosaic.index.geom import grid_outline, normalize_lonlat, to_lonlat
from mosaic.io.gdalenv import gdal_env, with_access
from mosaic.io.identity import merged, observe, stac_identity
from mosaic.io.limits import is_auth_failure
from mosaic.io.paths import check_allowed, gdal_path, redact_exception
from mosaic.io.runtime import WARNINGS_LOCK
from mosaic.planning.records import SceneAsset, crs_to_string
from mosaic.times import to_utc

__all__ = [
    "COMMON_NAMES",
    "HEADER_ATTEMPTS",
    "RASTER_SUFFIXES",
    "AssetHeader",
    "HeaderKey",
    "HeaderRequest",
    "NodataOverride",
    "asset_from_file",
    "assets_from_item",
    "check_nodata_override",
    "expand_sources",
    "header_requests",
    "iter_items",
    "map_sources",
    "nodata_for",
    "prefetch_item",
    "read_asset_header",
    "read_file",
    "stac_hrefs",
    "tile_layout",
    "to_row",
    "with_tile_layout",
]

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc")
FOOTPRINT_MAX_PIXELS = 1024
"""Largest side, in pixels, of the validity mask traced for a file's data footprint."""

COMMON_NAMES = frozenset(
    {
        "pan", "coastal", "blue", "green", "green05", "yellow", "red", "rededge", "rededge071",
        "rededge075", "rededge078", "nir", "nir08", "nir09", "cirrus", "swir16", "swir22", "lwir",
        "lwir11", "lwir12",
    }
)  # fmt: skip
"""The band common names of the STAC electro-optical extension (v2.0; v1 has all but the numbered
ones). A file's band whose description is one of them (in any case) gets it as its common name."""
HEADER_ATTEMPTS = 2
"""Files :meth:`~mosaic.TileIndex.from_stac` tries, per asset the catalogue says too little about, to
read its dtype, nodata and band count from (a second one only when the first cannot be opened)."""

NodataOverride: TypeAlias = "float | Mapping[str, float] | None"
"""A source nodata given at index build: one value for every asset, or a value per asset name."""
HeaderKey: TypeAlias = "tuple[str | None, str]"
"""(collection, asset): the files whose header one read stands for."""

_T = TypeVar("_T")
_REMOTE = re.compile(r"^(https?|s3|gs|az|abfs)://|^/vsi", re.IGNORECASE)
_TIFF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})$")
_DROP_ROLES = {"thumbnail", "overview", "metadata", "tiles"}


def is_remote(href: str) -> bool:
    """Whether ``href`` is a URL or GDAL virtual path rather than a local file."""
    return bool(_REMOTE.match(href))


# --------------------------------------------------------------------------------------------- files


def expand_sources(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand paths, directories (searched recursively for rasters) and globs into a list of hrefs.

    URLs and GDAL ``/vsi`` paths pass through unchanged. A glob or directory that matches nothing is an
    error: nothing is silently dropped.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    elif not isinstance(sources, Iterable):
        raise InvalidInputError(
            f"sources must be a path, URL, glob or a list of them, not {type(sources).__name__} {sources!r}"
        )
    out: list[str] = []
    for src in sources:
        if not isinstance(src, (str, os.PathLike)):
            raise InvalidInputError(
                f"each source must be a path, URL or glob, not {type(src).__name__} {src!r}"
            )
        text = os.fspath(src)
        if is_remote(text):
            out.append(text)
        elif any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise SourceError(text, "no file matches this pattern")
            out.extend(os.path.abspath(m) for m in matches)
        elif os.path.isdir(text):
            found = sorted(
                str(p.resolve()) for p in Path(text).rglob("*") if p.suffix.lower() in RASTER_SUFFIXES
            )
            if not found:
                raise SourceError(text, f"directory holds no raster files ({', '.join(RASTER_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(os.path.abspath(text))
    return out


def _tiff_datetime(tags: Mapping[str, str]) -> pd.Timestamp | None:
    for key in ("ACQUISITIONDATETIME", "DATETIME", "TIFFTAG_DATETIME"):
        value = tags.get(key)
        if not value:
            continue
        match = _TIFF_DATETIME.match(value.strip())
        text = "{}-{}-{}T{}:{}:{}".format(*match.groups()) if match else value
        try:
            return to_utc(text)
        except InvalidInputError:
            continue
    return None


def check_nodata_override(nodata: Any) -> NodataOverride:
    """``nodata`` as given at index build, checked: None, a number, or a mapping of asset name to number.

    Raises:
        InvalidInputError: anything else (a string, a bool, a mapping with a non-number value).
    """

    def number(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidInputError(
                f"nodata{where} must be a number (or NaN), got {value!r}; "
                "e.g. nodata=0 or nodata={'B01': 0}"
            )
        return float(value)

    if nodata is None:
        return None
    if isinstance(nodata, Mapping):
        for key in nodata:
            if not isinstance(key, str):
                raise InvalidInputError(f"nodata= maps asset names to values; {key!r} is not an asset name")
        return {key: number(value, f"[{key!r}]") for key, value in nodata.items()}
    return number(nodata, "")


def nodata_for(nodata: NodataOverride, asset: str) -> float | None:
    """The override for ``asset``: the single value, its entry of the mapping, or None."""
    if nodata is None or not isinstance(nodata, Mapping):
        return nodata
    return nodata.get(asset)


def _fits(value: float, dtype: str) -> bool:
    """Whether a pixel of ``dtype`` can hold ``value`` (so it can mean "no data" there)."""
    kind = np.dtype(dtype)
    if math.isnan(value):
        return kind.kind in "fc"
    if kind.kind in "iu":
        info = np.iinfo(kind)
        return value.is_integer() and info.min <= value <= info.max
    return kind.kind in "fc"


def data_footprint(src: rasterio.io.DatasetReader, nodata: float | None = None) -> BaseGeometry:
    """The area of valid pixels of an open dataset, in its native CRS.

    With ``nodata`` (a source nodata given at index build, standing in for the file's own), a pixel is
    valid where any band holds neither it nor NaN (and the file's mask or alpha, if it has one, says
    valid): what the reader will take as data. Without it, files without nodata, mask or alpha are
    valid everywhere and their footprint is the pixel grid's outline; the others trace GDAL's validity
    mask. Either is read at a coarse overview (at most ``FOOTPRINT_MAX_PIXELS`` a side) and traced, so
    the footprint is accurate to one pixel of that read (one native pixel for scenes up to that size).
    """
    outline = grid_outline(src.transform, (src.height, src.width))
    flags = {f for band in src.mask_flag_enums for f in band}
    masked = bool(flags & {rasterio.enums.MaskFlags.per_dataset, rasterio.enums.MaskFlags.alpha})
    if nodata is None and not (masked or rasterio.enums.MaskFlags.nodata in flags):
        return outline
    factor = max(1, math.ceil(max(src.width, src.height) / FOOTPRINT_MAX_PIXELS))
    out_h, out_w = math.ceil(src.height / factor), math.ceil(src.width / factor)
    if nodata is None:
        valid = src.dataset_mask(out_shape=(out_h, out_w)) > 0
    else:
        data = src.read(out_shape=(src.count, out_h, out_w))
        empty = np.isnan(data) if data.dtype.kind == "f" else np.zeros(data.shape, dtype=bool)
        if not math.isnan(nodata):
            empty |= data == nodata
        valid = np.any(~empty, axis=0)  # as the reader: NaN, or the nodata, is no data
        if masked:
            valid &= src.dataset_mask(out_shape=(out_h, out_w)) > 0
    if valid.all():
        return outline
    if not valid.any():
        what = "nodata" if nodata is None else f"{nodata:g}, the nodata given"
        raise SourceError(src.name, f"has no valid pixels (everything is {what})")
    transform = src.transform @ Affine.scale(src.width / out_w, src.height / out_h)
    with WARNINGS_LOCK:  # shapes() uses warnings.catch_warnings: not thread-safe
        shapes = list(rasterio.features.shapes(valid.astype(np.uint8), mask=valid, transform=transform))
    polygons = [shape(geom) for geom, _ in shapes]
    merged = shapely.union_all(polygons)
    pixel = max(abs(transform.a), abs(transform.e))
    return merged.simplify(pixel * 0.5, preserve_topology=True)


def read_file(
    href: str,
    *,
    pattern: re.Pattern[str] | None = None,
    datetime: Callable[[str], Any] | Any = None,
    nodata: NodataOverride = None,
    footprint: bool = True,
    gdal_options: Mapping[str, Any] | None = None,
    auth: Sequence[Profile] = (),
    tile_ranges: bool = False,
) -> FileFacts:
    """Read one raster file's metadata and native data footprint (I/O only; safe in worker threads).

    The file is opened with the cloud defaults (:data:`mosaic.io.gdalenv.CLOUD_DEFAULTS`: no directory
    listing or sidecar probing of a URL), ``gdal_options`` over them, and the credentials of the
    ``auth`` profile matching ``href``.

    Args:
        href: local path, URL or GDAL ``/vsi`` path.
        pattern: a regex searched in ``href`` whose named groups ``id``, ``asset`` and ``datetime`` name
            the scene, the asset and the time (defaults: the file stem, ``"data"``, the TIFF tags).
        datetime: a fixed acquisition time, or a callable from href to one, overriding the above.
        nodata: the source nodata to record instead of the file's own (one value, or one per asset
            name); the footprint is then traced where the pixels differ from it.
        footprint: trace the data footprint (False: the grid's outline, and only the header is read).
        gdal_options: GDAL settings over the cloud defaults.
        auth: credential profiles; the one matching ``href`` (longest prefix) is used.
        tile_ranges: also record the file's tile layout (:func:`tile_layout`), so that loads fetch
            its tiles with no header request.

    Raises:
        AuthenticationError: the server refused the credentials (or their absence).
        SourceError: naming ``href``: missing, not a raster, no CRS, no geotransform, no valid pixels,
            or a ``nodata`` its pixels cannot hold.
    """
    check_allowed((href,))  # $MOSAIC_ALLOWED_PREFIXES, before even looking whether it exists
    if tile_ranges:
        from mosaic.io.cog import require_extra

        require_extra()
    if not is_remote(href) and not os.path.exists(href):
        raise SourceError(href, "file does not exist")
    try:
        # (rasterio may warn NotGeoreferencedWarning first; _describe turns it into a SourceError. The
        # warning is not filtered here: warnings.catch_warnings is not thread-safe in worker threads.)

        def describe(opened: str) -> FileFacts:
            with rasterio.open(opened) as src:
                facts = _describe(
                    src, href, pattern=pattern, datetime=datetime, nodata=nodata, footprint=footprint
                )
                # the file's size and time now (a URL's as GDAL learnt them at the open: no request)
                tiles = tile_layout(src, opened) if tile_ranges else None
                return replace(facts, row=replace(facts.row, identity=_identity_of(opened), tiles=tiles))

        with gdal_env(gdal_options or ()):
            return with_access(href, auth, describe)
    except SourceError:
        raise
    except RasterioIOError as exc:
        message = str(exc)
        redact_exception(exc)  # GDAL's message may quote the href: tracebacks print it
        if is_auth_failure(exc):
            raise AuthenticationError(
                href, f"authentication failed (wrong or missing credentials; give them with auth=): {message}"
            ) from exc
        if "not recognized as being in a supported file format" in message or "not recognised" in message:
            raise SourceError(href, "not a raster GDAL can read") from exc
        raise SourceError(href, f"cannot be opened: {message}") from exc


def tile_layout(src: rasterio.io.DatasetReader, href: str) -> bytes | None:
    """The encoded tile layout (:mod:`mosaic.io.cog`) of the open file ``src``, or None.

    Parsed from the file's own TIFF header (for a URL, read through GDAL's cache of what the open
    fetched, plus any tile offsets stored beyond it) and checked against what GDAL says of the file:
    shape, data type, bands, tile size, overviews, nodata. None for anything else (not a tiled GeoTIFF,
    masks, alpha bands, a layout GDAL would read differently): GDAL then opens the file at load.
    """
    from mosaic.io.cog import NotTiled, encode, parse_tiff

    if src.driver != "GTiff":
        return None
    try:
        with _ByteReader(gdal_path(href)) as file:
            layout = parse_tiff(file, tuple(src.transform)[:6])
    except (NotTiled, OSError, ValueError, IndexError):
        return None
    base = layout.levels[0]
    plain = all(
        flags == [rasterio.enums.MaskFlags.nodata] or flags == [rasterio.enums.MaskFlags.all_valid]
        for flags in src.mask_flag_enums
    )
    same_nodata = (layout.nodata is None and src.nodata is None) or (
        layout.nodata is not None
        and src.nodata is not None
        and (layout.nodata == src.nodata or (math.isnan(layout.nodata) and math.isnan(src.nodata)))
    )
    if (
        not plain
        or not same_nodata
        or (base.height, base.width) != (src.height, src.width)
        or layout.samples != src.count
        or set(src.dtypes) != {layout.dtype}
        or set(src.block_shapes) != {layout.tile}
        or any(src.overviews(b) != layout.overview_factors for b in src.indexes)
    ):
        return None
    return encode(layout)


class _ByteReader:
    """A binary file over a file GDAL opened (for tifffile): a local file, or a URL through GDAL's cache."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: Any = None

    def __enter__(self) -> BinaryIO:
        if not self.path.startswith("/vsi"):
            self._file = open(self.path, "rb")
        else:
            self._file = _VSIFile(self.path)
        return cast(BinaryIO, self._file)

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


class _VSIFile(io.RawIOBase):
    """A read-only binary file over GDAL's virtual file system (what GDAL's open fetched is cached)."""

    def __init__(self, path: str) -> None:
        from mosaic.io.read import _libgdal

        lib = _libgdal()
        if lib is None:
            raise OSError("GDAL's library is not reachable")
        lib.VSIFOpenExL.restype = ctypes.c_void_p
        lib.VSIFOpenExL.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        lib.VSIFSeekL.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
        lib.VSIFTellL.restype = ctypes.c_uint64
        lib.VSIFTellL.argtypes = [ctypes.c_void_p]
        lib.VSIFReadL.restype = ctypes.c_size_t
        lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._handle = lib.VSIFOpenExL(os.fsencode(path), b"rb", 1)
        if not self._handle:
            raise OSError("cannot open the file to read its tile offsets")
        lib.VSIFSeekL(self._handle, 0, os.SEEK_END)
        self._size = int(lib.VSIFTellL(self._handle))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), max(0, self._size - self._pos))
        if not size:
            return 0
        self._lib.VSIFSeekL(self._handle, self._pos, os.SEEK_SET)
        target = (ctypes.c_char * size).from_buffer(memoryview(buffer).cast("B"))
        got = int(self._lib.VSIFReadL(target, 1, size, self._handle))
        self._pos += got
        return got

    def close(self) -> None:
        if self._handle:
            self._lib.VSIFCloseL(self._handle)
            self._handle = None
        super().close()


def with_tile_layout(
    row: SceneAsset, *, gdal_options: Mapping[str, Any] | None = None, auth: Sequence[Profile] = ()
) -> SceneAsset:
    """``row`` with its file's tile layout (:func:`tile_layout`) and the identity seen opening it.

    For rows made without opening their files (STAC Items): the header is read once, at index time,
    so that loads need not. The catalogue's identity (``file:size``, checksum) is kept, with the size
    and time the open saw over it.

    Raises:
        AuthenticationError: the server refused the credentials (or their absence).
        SourceError: naming the href, when the file cannot be opened.
    """
    href = row.href
    if href is None:
        return row
    check_allowed((href,))
    try:

        def record(opened: str) -> SceneAsset:
            with rasterio.open(opened) as src:
                tiles = tile_layout(src, opened)
                return replace(row, tiles=tiles, identity=merged(row.identity, _identity_of(opened)))

        with gdal_env(gdal_options or ()):
            return with_access(href, auth, record)
    except RasterioIOError as exc:
        message = str(exc)
        redact_exception(exc)
        if is_auth_failure(exc):
            raise AuthenticationError(
                href, f"authentication failed (wrong or missing credentials; give them with auth=): {message}"
            ) from exc
        raise SourceError(href, f"cannot be opened to record its tile layout: {message}") from exc


def _identity_of(href: str) -> str | None:
    """The identity of a file just opened (:func:`mosaic.io.identity.observe`), None if it has none."""
    try:
        return observe(href)
    except OSError:
        return None


def _describe(
    src: rasterio.io.DatasetReader,
    href: str,
    *,
    pattern: re.Pattern[str] | None,
    datetime: Any,
    nodata: NodataOverride = None,
    footprint: bool = True,
) -> FileFacts:
    no_transform = src.transform.is_identity
    if src.crs is None or no_transform:
        if no_transform and (src.gcps[0] or src.rpcs):
            raise SourceError(
                href, "is georeferenced by GCPs or RPCs only, with no geotransform; warp it first"
            )
        missing = [what for what, gone in (("geotransform", no_transform), ("CRS", src.crs is None)) if gone]
        hint = " (the pixel grid is not georeferenced)" if no_transform else ""
        fix = (
            "; assign one (e.g. `gdal_edit.py -a_srs EPSG:XXXX`) before indexing" if not no_transform else ""
        )
        raise SourceError(href, f"has no {' and no '.join(missing)}{hint}{fix}")
    groups: dict[str, str] = {}
    if pattern is not None:
        match = pattern.search(href)
        if match is None:
            raise SourceError(href, f"does not match the pattern {pattern.pattern!r}")
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
    when = None
    if callable(datetime):
        when = to_utc(datetime(href))
    elif datetime is not None:
        when = to_utc(datetime)
    elif "datetime" in groups:
        when = to_utc(groups["datetime"])
    else:
        when = _tiff_datetime(src.tags())
    asset = groups.get("asset", "data")
    override = nodata_for(nodata, asset)
    if override is not None and not _fits(override, src.dtypes[0]):
        raise SourceError(href, f"its {src.dtypes[0]} pixels cannot hold the nodata given, {override:g}")
    crs = crs_to_string(src.crs)
    outline = grid_outline(src.transform, (src.height, src.width))
    native = data_footprint(src, override) if footprint else outline
    names = tuple(d or f"b{i + 1}" for i, d in enumerate(src.descriptions))
    common = tuple(
        d.strip().lower() if d and d.strip().lower() in COMMON_NAMES else "" for d in src.descriptions
    )
    scales = {s for s in src.scales if s is not None}
    offsets = {o for o in src.offsets if o is not None}
    if override is None:  # the file's own, where its bands share one (else each band's, at read time)
        shared = {("nan" if v is not None and math.isnan(v) else v) for v in src.nodatavals}
        override = None if len(shared) != 1 or src.nodata is None else float(src.nodata)
    row = SceneAsset(
        id=groups.get("id", Path(href).stem),
        asset=asset,
        href=href,
        crs=crs,
        transform=tuple(float(v) for v in tuple(src.transform)[:6]),  # type: ignore[arg-type]
        shape=(int(src.height), int(src.width)),
        footprint=shapely.Polygon(),  # set in lon/lat by to_row(), in the calling thread
        datetime=when,
        band_count=int(src.count),
        dtype=str(src.dtypes[0]),
        nodata=override,
        overviews=tuple(int(f) for f in src.overviews(1)),
        band_names=names if any(src.descriptions) else (),
        common_names=common if any(common) else (),
        scale=float(scales.pop()) if len(scales) == 1 and 1.0 not in scales else None,
        offset=float(offsets.pop()) if len(offsets) == 1 and 0.0 not in offsets else None,
    )
    return FileFacts(row, native, src.crs.to_wkt())


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What :func:`read_file` learnt: the row (footprint still unset) and the native data footprint."""

    row: SceneAsset
    native_footprint: BaseGeometry
    crs_wkt: str


def to_row(facts: FileFacts) -> SceneAsset:
    """The index row, its footprint reprojected to lon/lat.

    Footprint geometry runs in the calling thread, never in a worker: shapely and the antimeridian
    splitter use ``warnings.catch_warnings``, which is not thread-safe before Python 3.14 and can leave
    every warning of the process silenced when threads interleave.
    """
    try:
        footprint = to_lonlat(facts.native_footprint, facts.crs_wkt)
    except InvalidInputError as exc:
        raise SourceError(facts.row.href or "?", str(exc)) from exc
    return replace(facts.row, footprint=footprint)


def asset_from_file(
    href: str,
    *,
    pattern: re.Pattern[str] | None = None,
    datetime: Callable[[str], Any] | Any = None,
) -> SceneAsset:
    """Read one raster file's metadata into a :class:`SceneAsset` (see :func:`read_file`)."""
    return to_row(read_file(href, pattern=pattern, datetime=datetime))


def map_sources(
    func: Callable[[Any], Any],
    inputs: Sequence[Any],
    *,
    labels: Sequence[str],
    workers: int | None,
    progress: bool,
    on_error: str,
    desc: str,
    finish: Callable[[Any], list[_T]],
) -> tuple[list[_T], list[tuple[str, str]]]:
    """Apply ``func`` (I/O) to every input in a thread pool, then ``finish`` in the calling thread.

    ``finish`` does the geometry (see :func:`to_row` for why it must not run in workers). Under
    ``on_error="raise"`` the first failure (in input order) is raised; under ``"skip"`` failures are
    returned as ``(label, reason)`` pairs beside the rows that succeeded.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    from mosaic._progress import tqdm_class

    tqdm = tqdm_class()

    workers = workers or min(16, (os.cpu_count() or 2) * 4)
    rows: list[_T] = []
    skipped: list[tuple[str, str]] = []

    def guarded(item: Any) -> Any:
        try:
            return func(item)
        except SourceError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results: Iterator[Any] = pool.map(guarded, inputs)
        for label, result in tqdm(
            zip(labels, results, strict=True), total=len(inputs), disable=not progress, desc=desc, unit="file"
        ):
            try:
                if isinstance(result, SourceError):
                    raise result
                rows.extend(finish(result))
            except SourceError as exc:
                if on_error == "raise":
                    pool.shutdown(cancel_futures=True)
                    raise
                skipped.append((label, exc.reason))
    return rows, skipped


# ---------------------------------------------------------------------------------------------- STAC


def iter_items(items: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Normalise the many forms STAC Items come in to a list of Item dicts.

    Accepts a ``pystac.Item``, a dict, an ItemCollection or FeatureCollection, a pystac-client
    ``ItemSearch``, an iterable of any of these, or a path to a JSON, NDJSON or stac-geoparquet file.
    Returns the dicts and, for files, the directory that relative hrefs are resolved against.
    """
    base: str | None = None
    if isinstance(items, (str, os.PathLike)):
        path = Path(items)
        if not path.exists():
            raise SourceError(str(path), "file does not exist")
        base = str(path.resolve().parent)
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            return _items_from_geoparquet(path), base
        text = path.read_text()
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError:
            try:
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise SourceError(str(path), f"is neither JSON nor NDJSON STAC ({exc})") from exc
        items = data
    if isinstance(items, pystac.ItemCollection):
        items = list(items)
    elif hasattr(items, "items") and callable(items.items) and not isinstance(items, Mapping):
        items = items.items()  # pystac-client ItemSearch
    if isinstance(items, Mapping):
        if items.get("type") == "FeatureCollection":
            items = items.get("features", [])
        else:
            items = [items]
    if hasattr(items, "to_dict") and not isinstance(items, Mapping):
        items = [items]
    out = []
    for item in items:
        d = item.to_dict(transform_hrefs=False) if hasattr(item, "to_dict") else item
        if not isinstance(d, Mapping) or d.get("type") != "Feature":
            raise SourceError(repr(item)[:80], "is not a STAC Item (expected a Feature)")
        if hasattr(item, "get_self_href") and item.get_self_href():
            d = dict(d)
            d["_base"] = str(Path(item.get_self_href()).parent)
        out.append(d)
    return out, base


def _items_from_geoparquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import stac_table_to_items

    try:
        table = pq.read_table(path)
        return list(stac_table_to_items(table))
    except Exception as exc:
        raise SourceError(str(path), f"is not a stac-geoparquet file ({type(exc).__name__}: {exc})") from exc


def _is_raster_asset(asset: Mapping[str, Any]) -> bool:
    roles = set(asset.get("roles") or ())
    if roles & _DROP_ROLES and "data" not in roles:
        return False
    media = (asset.get("type") or "").lower()
    if media:
        return "tiff" in media or "jp2" in media or "x-vrt" in media
    return str(asset.get("href", "")).lower().endswith(RASTER_SUFFIXES)


def _proj(asset: Mapping[str, Any], props: Mapping[str, Any], key: str) -> Any:
    return asset.get(key, props.get(key))


def _crs_from(asset: Mapping[str, Any], props: Mapping[str, Any]) -> str | None:
    for key in ("proj:code", "proj:epsg", "proj:wkt2", "proj:projjson"):
        value = _proj(asset, props, key)
        if value is None:
            continue
        if key == "proj:epsg":
            return f"EPSG:{int(value)}"
        return crs_to_string(value)
    return None


def _band_info(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    for key in ("raster:bands", "bands"):
        value = asset.get(key)
        if value:
            return list(value)
    return []


def _resolve_href(href: str, base: str | None) -> str:
    if is_remote(href) or os.path.isabs(href) or base is None:
        return href
    return os.path.normpath(os.path.join(base, href))


def _chosen_assets(item: Mapping[str, Any], assets: Sequence[str] | None) -> dict[str, Mapping[str, Any]]:
    """The Item's assets to index: those named, else every raster asset."""
    item_id = str(item.get("id", "?"))
    all_assets = item.get("assets") or {}
    if assets is not None:
        missing = [a for a in assets if a not in all_assets]
        if missing:
            raise SourceError(
                item_id, f"has no asset(s) {missing}; it has {sorted(all_assets)}", scene_id=item_id
            )
        return {a: all_assets[a] for a in assets}
    chosen = {k: v for k, v in all_assets.items() if _is_raster_asset(v)}
    if not chosen:
        raise SourceError(item_id, f"has no raster assets (assets: {sorted(all_assets)})", scene_id=item_id)
    return chosen


def _missing_projection(asset: Mapping[str, Any], props: Mapping[str, Any]) -> list[str]:
    grid = (
        ("proj:code", _crs_from(asset, props)),
        ("proj:transform", _proj(asset, props, "proj:transform")),
        ("proj:shape", _proj(asset, props, "proj:shape")),
    )
    return [key for key, value in grid if value is None]


def _spectral_bands(asset: Mapping[str, Any], props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The asset's band objects that can carry a common name: STAC 1.0 ``eo:bands``, else 1.1 ``bands``.

    STAC 0.9 assets list indices into the Item's ``eo:bands`` instead; those are looked up.
    """
    listed = asset.get("eo:bands") or asset.get("bands") or []
    table = props.get("eo:bands") or []
    out: list[Mapping[str, Any]] = []
    for band in listed:
        if isinstance(band, int) and not isinstance(band, bool) and 0 <= band < len(table):
            band = table[band]
        out.append(band if isinstance(band, Mapping) else {})
    return out


def _common_names(spectral: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """One common name per band (``common_name``, or STAC 1.1 ``eo:common_name``), "" for none; () if none."""
    names = tuple(str(b.get("common_name") or b.get("eo:common_name") or "") for b in spectral)
    return names if any(names) else ()


def _silent(asset: Mapping[str, Any], props: Mapping[str, Any], nodata: float | None) -> tuple[str, ...]:
    """What the catalogue does not say about an asset's pixels: "data type", "nodata", "band count"."""
    bands = _band_info(asset)
    first = bands[0] if bands else {}
    silent = []
    if first.get("data_type", asset.get("data_type")) is None:
        silent.append("data type")
    if nodata is None and first.get("nodata", asset.get("nodata")) is None:
        silent.append("nodata")
    if not bands and not _spectral_bands(asset, props):
        silent.append("band count")
    return tuple(silent)


@dataclass(frozen=True, slots=True)
class HeaderRequest:
    """The files one header read may come from for an asset, and what the catalogue does not say of it."""

    key: HeaderKey
    hrefs: tuple[str, ...]
    silent: tuple[str, ...]


def header_requests(
    items: Sequence[Mapping[str, Any]],
    *,
    assets: Sequence[str] | None = None,
    base: str | None = None,
    nodata: NodataOverride = None,
) -> list[HeaderRequest]:
    """The files to read what STAC entries leave out from: per (collection, asset), no I/O.

    For each asset whose entries lack a data type, nodata or band count: the first
    :data:`HEADER_ATTEMPTS` files of it, in the Items' order.

    Assets lacking projection info are left out: each of their files is opened anyway
    (:func:`prefetch_item`), and its own header fills its row. An Item whose assets cannot be chosen is
    left out here too; indexing it reports why.
    """
    hrefs: dict[HeaderKey, list[str]] = {}
    silent: dict[HeaderKey, set[str]] = {}
    for item in items:
        props = item.get("properties") or {}
        try:
            chosen = _chosen_assets(item, assets)
        except SourceError:
            continue
        for name, asset in chosen.items():
            gaps = _silent(asset, props, nodata_for(nodata, name))
            if not gaps or _missing_projection(asset, props):
                continue
            key = (item.get("collection"), name)
            href = _resolve_href(str(asset.get("href", "")), item.get("_base", base))
            found = hrefs.setdefault(key, [])
            if len(found) < HEADER_ATTEMPTS and href not in found:
                found.append(href)
            silent.setdefault(key, set()).update(gaps)
    order = ("data type", "nodata", "band count")
    return [
        HeaderRequest(key, tuple(found), tuple(g for g in order if g in silent[key]))
        for key, found in hrefs.items()
    ]


def stac_hrefs(
    items: Sequence[Mapping[str, Any]], *, assets: Sequence[str] | None = None, base: str | None = None
) -> list[str]:
    """The files an index of ``items`` would point at: the chosen assets' hrefs, resolved (no I/O)."""
    found: list[str] = []
    for item in items:
        try:
            chosen = _chosen_assets(item, assets)
        except SourceError:
            continue  # indexing it reports why
        found.extend(_resolve_href(str(a.get("href", "")), item.get("_base", base)) for a in chosen.values())
    return found


@dataclass(frozen=True, slots=True)
class AssetHeader:
    """What one file header said of an asset (``row``, None when no file opened) and what failed."""

    request: HeaderRequest
    row: SceneAsset | None
    failures: tuple[tuple[str, str], ...] = ()

    def assumed(self) -> str:
        """The warning for an asset no file of which opened: what is unknown, what is assumed."""
        collection, asset = self.request.key
        where = f"asset {asset!r}" + (f" of collection {collection!r}" if collection else "")
        tried = (
            f"{len(self.failures)} tried, the first {self.failures[0][0]}: {self.failures[0][1]}"
            if self.failures
            else "none to try"
        )
        outcome = {
            "data type": "dtype unknown (a load makes it float32 with NaN nodata unless given dtype=)",
            "nodata": "nodata unknown (each file's own applies when read; give one with nodata=)",
            "band count": "1 band",
        }
        return (
            f"{where}: the STAC Items give no {_and(self.request.silent)} and no file of it opened to read "
            f"them ({tried}); assumed: {'; '.join(outcome[g] for g in self.request.silent)}"
        )


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def read_asset_header(
    request: HeaderRequest, *, gdal_options: Mapping[str, Any] | None = None, auth: Sequence[Profile] = ()
) -> AssetHeader:
    """Open the request's files in turn until one opens, and read its header (I/O only; for worker threads).

    Only the header: no footprint is traced. Failures do not raise; they are listed in the result.
    """
    failures = []
    for href in request.hrefs:
        try:
            facts = read_file(href, footprint=False, gdal_options=gdal_options, auth=auth)
        except SourceError as exc:
            failures.append((href, exc.reason))
            continue
        return AssetHeader(request, facts.row, tuple(failures))
    return AssetHeader(request, None, tuple(failures))


def prefetch_item(
    item: Mapping[str, Any],
    *,
    assets: Sequence[str] | None = None,
    base: str | None = None,
    nodata: NodataOverride = None,
    gdal_options: Mapping[str, Any] | None = None,
    auth: Sequence[Profile] = (),
) -> tuple[Mapping[str, Any], dict[str, FileFacts | SourceError]]:
    """Open the files of the Item's assets that lack projection info (I/O only; for worker threads).

    ``nodata``, ``gdal_options`` and ``auth`` as in :func:`read_file`.
    """
    props = item.get("properties") or {}
    base = item.get("_base", base)
    opened: dict[str, FileFacts | SourceError] = {}
    for name, asset in _chosen_assets(item, assets).items():
        if _missing_projection(asset, props):
            try:
                href = _resolve_href(str(asset.get("href", "")), base)
                opened[name] = read_file(
                    href, nodata=nodata_for(nodata, name), gdal_options=gdal_options, auth=auth
                )
            except SourceError as exc:
                opened[name] = exc
    return item, opened


def assets_from_item(
    item: Mapping[str, Any],
    *,
    assets: Sequence[str] | None = None,
    base: str | None = None,
    opened: Mapping[str, FileFacts | SourceError] | None = None,
    headers: Mapping[HeaderKey, SceneAsset] | None = None,
    nodata: NodataOverride = None,
    gdal_options: Mapping[str, Any] | None = None,
    auth: Sequence[Profile] = (),
) -> list[SceneAsset]:
    """The index rows of one STAC Item (a dict), one per selected raster asset.

    Projection information comes from the projection extension (v1 ``proj:epsg`` or v2 ``proj:code``,
    ``proj:wkt2``, ``proj:projjson``; ``proj:transform`` and ``proj:shape`` per asset or per Item). An
    asset without it is opened to find out (``opened`` holds files already read by
    :func:`prefetch_item`); if that fails too, the Item is rejected with a clear error.

    Pixel facts come from ``raster:bands`` (or STAC 1.1 ``bands``): data type, nodata, scale, offset;
    band count and common names from ``eo:bands`` or ``bands``. What they leave out comes from the
    asset's own file where it was opened, else from ``headers``: one file's header per (collection,
    asset), read by :func:`read_asset_header`. ``nodata`` (one value, or one per asset) replaces the
    nodata of both; the Item's geometry stays the footprint.
    """
    item_id = str(item.get("id", "?"))
    props = item.get("properties") or {}
    chosen = _chosen_assets(item, assets)
    base = item.get("_base", base)
    when = props.get("datetime")
    start, end = props.get("start_datetime"), props.get("end_datetime")
    geometry = item.get("geometry")
    footprint = normalize_lonlat(shape(geometry)) if geometry else None
    public_props = json.dumps(props, sort_keys=True, default=str)
    rows = []
    for name, asset in chosen.items():
        href = _resolve_href(str(asset.get("href", "")), base)
        crs = _crs_from(asset, props)
        transform = _proj(asset, props, "proj:transform")
        shape_ = _proj(asset, props, "proj:shape")
        bands = _band_info(asset)
        spectral = _spectral_bands(asset, props)
        file_row: SceneAsset | None = None
        missing = _missing_projection(asset, props)
        if missing:
            facts = (opened or {}).get(name)
            try:
                if facts is None:
                    facts = read_file(
                        href, nodata=nodata_for(nodata, name), gdal_options=gdal_options, auth=auth
                    )
                if isinstance(facts, SourceError):
                    raise facts
                file_row = to_row(facts)
            except SourceError as exc:
                raise SourceError(
                    href,
                    f"asset {name!r} has no {', '.join(missing)} and opening the file failed: {exc.reason}",
                    scene_id=item_id,
                ) from exc
        identity = stac_identity(asset, props)
        if file_row is not None:
            crs, transform, shape_ = file_row.crs, file_row.transform, file_row.shape
            identity = merged(identity, file_row.identity)  # the file's stat over the catalogue's
        aff = tuple(float(v) for v in transform[:6])
        shp = (int(shape_[0]), int(shape_[1]))
        if footprint is not None:
            fp = footprint
        elif file_row is not None:
            fp = file_row.footprint
        else:
            fp = to_lonlat(grid_outline(aff, shp), cast(str, crs))
        # what the catalogue leaves out: from this asset's file, else from one file of the asset
        header = file_row if file_row is not None else (headers or {}).get((item.get("collection"), name))
        first = bands[0] if bands else {}
        override = nodata_for(nodata, name)
        given = first.get("nodata", asset.get("nodata"))
        if override is not None:
            row_nodata: float | None = override
        elif given is not None:
            row_nodata = _nodata(given)
        else:
            row_nodata = header.nodata if header else None
        dtype = first.get("data_type", asset.get("data_type"))
        names = tuple(str(b.get("name")) for b in (spectral or bands) if b.get("name"))
        rows.append(
            SceneAsset(
                id=item_id,
                asset=name,
                href=href,
                crs=cast(str, crs),
                transform=aff,  # type: ignore[arg-type]
                shape=shp,
                footprint=fp,
                datetime=None if when is None else to_utc(when),
                start_datetime=None if start is None else to_utc(start),
                end_datetime=None if end is None else to_utc(end),
                band_count=len(bands) or len(spectral) or (header.band_count if header else 1),
                dtype=str(dtype) if dtype is not None else (header.dtype if header else None),
                nodata=row_nodata,
                # overviews may differ between files: known only for a file that was opened
                overviews=header.overviews if header is not None and header.href == href else None,
                band_names=names or (header.band_names if header and not spectral else ()),
                common_names=_common_names(spectral) or (header.common_names if header else ()),
                scale=first.get("scale") if bands or not header else header.scale,
                offset=first.get("offset") if bands or not header else header.offset,
                collection=item.get("collection"),
                properties=public_props,
                identity=identity,
            )
        )
    return rows


def _nodata(value: Any) -> float:
    if isinstance(value, str):
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(value.lower(), float(value))
    return float(value)
