"""The reader: fetch one planned window and warp it into one output chunk with GDAL.

A :class:`~mosaic.planning.planner.Read` names the file, band, overview level and window; this
module opens the file (reusing a per-thread handle; the first open of a file in a process checks it
is still the one indexed, see :mod:`mosaic.io.identity`), reads the window through the limiter (with
retries), turns nodata and masked pixels into NaN, and puts the window onto the chunk grid: pasted
when the two grids differ by whole pixels only, else warped by GDAL (a ``WarpedVRT`` over a read-only
in-memory dataset).
Results are floating point with NaN where there is no data.
"""

from __future__ import annotations

import base64
import ctypes
import math
import os
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import rasterio
import rasterio.env
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from mosaic.auth import Access, Profile, access_for, refresh_refused, superseded
from mosaic.errors import AuthenticationError, ChangedSourceWarning, ReadError
from mosaic.io._neighbours import spans
from mosaic.io.fetch import (
    GDAL_CACHE_BYTES,
    RANGE_GAP,
    Fetch,
    FetchedRanges,
    gdal_fetch,
    prefetch,
    tile_ranges,
)
from mosaic.io.gdalenv import CLOUD_DEFAULTS, gdal_env, options_env
from mosaic.io.identity import change, observe
from mosaic.io.limits import ReadLimiter, is_auth_failure, is_transient, parse_retry_after, retry_call
from mosaic.io.paths import check_allowed, gdal_path, is_network, redact, redact_exception
from mosaic.io.runtime import handle_cache, process_registry
from mosaic.planning.planner import Read

__all__ = [
    "CLOUD_DEFAULTS",
    "GDAL_TYPES",
    "WARP_TOLERANCE",
    "Layer",
    "Masker",
    "WindowFit",
    "gdal_env",
    "read_window",
    "warp_read",
]


@lru_cache(maxsize=64)
def _crs(text: str) -> CRS:
    return CRS.from_user_input(text)


def _open(path: str, level: int) -> Any:
    """A handle on the GDAL ``path``'s full-resolution grid (level -1) or on one of its overviews."""
    return rasterio.open(path) if level < 0 else rasterio.open(path, overview_level=level)


def _level_window(read: Read, base: Any, level: int, level_shape: tuple[int, int]) -> Window:
    return _level_window_of(read, (base.height, base.width), level, level_shape)


def _level_window_of(read: Read, base: tuple[int, int], level: int, level_shape: tuple[int, int]) -> Window:
    """The window on overview ``level`` (of ``level_shape``) covering a decimated read's window.

    The plan's window is in a virtual grid decimated by ``read.factor`` (the file's overviews were
    unknown at planning). GDAL's overview sizes are not always the base size over the factor rounded
    up, so the overview's own size is used.
    """
    row, col, h, w = read.window
    f = read.factor
    height, width = base
    r0, c0 = row * f, col * f
    r1, c1 = min((row + h) * f, height), min((col + w) * f, width)
    if level < 0:
        return Window(c0, r0, c1 - c0, r1 - r0)
    sy, sx = level_shape[0] / height, level_shape[1] / width
    top, left = math.floor(r0 * sy), math.floor(c0 * sx)
    bottom, right = min(level_shape[0], math.ceil(r1 * sy)), min(level_shape[1], math.ceil(c1 * sx))
    return Window(left, top, right - left, bottom - top)


class Layer(NamedTuple):
    """One scene's pixels on a chunk's grid: ``data`` fills ``region`` of the chunk, no data elsewhere."""

    data: np.ndarray
    region: tuple[slice, slice]


Masker = Callable[[Read, np.ndarray, Affine, float], None]
"""Given a read, its pixels (changed in place), their transform and the no-data value: sets the
pixels the read's quality mask drops to that value (:class:`mosaic.io._mask_read.SceneMasker`)."""

WindowFit = Callable[[Affine, Window], "tuple[Window, np.ndarray | None] | None"]
"""Given a source window and its transform, the part of it to read and, optionally, the array to read
it into (None: nothing to read)."""


def read_window(
    read: Read,
    limiter: ReadLimiter,
    *,
    native_nodata: float | None = None,
    fit: WindowFit | None = None,
    auth: Sequence[Profile] = (),
) -> tuple[np.ndarray, Affine] | None:
    """Read ``read``'s window (narrowed by ``fit``, if given) and return it with its transform.

    The pixels come as float with NaN where there is no data or, with ``native_nodata``, in the file's
    own dtype with that value where there is no data (read straight into the array ``fit`` gives,
    when it has that dtype). All I/O happens inside one limiter slot, with the GDAL settings of the
    ``auth`` profile matching the href; transient failures are retried (each retry counted). None
    when ``fit`` leaves nothing to read.

    Raises:
        AuthenticationError: the server refused the credentials (or their absence).
        HrefNotAllowedError: the href is outside ``$MOSAIC_ALLOWED_PREFIXES`` (nothing is opened).
        ReadError: naming the scene and href, when the read fails for good.
    """
    check_allowed((read.href,))
    for second in (False, True):
        # credentials that expire are fetched (or refreshed) here; a read they fail is refused once
        access = access_for(read.href, auth) if auth else None
        try:
            fetched = _read_once(read, limiter, access, native_nodata, fit, after_refusal=second)
        except (RasterioIOError, OSError, IndexError) as exc:
            if not second and access is not None:
                if superseded(access) or (is_auth_failure(exc) and refresh_refused(access)):
                    continue  # refused as expired: fresh credentials (one fetch for all), one more try
            redact_exception(exc)  # GDAL's message may quote the href: tracebacks print it
            limiter.record_failure()
            if is_auth_failure(exc):
                hint = getattr(access.profile, "hint", None) if access is not None else None
                raise AuthenticationError(
                    read.href,
                    f"authentication failed (wrong or missing credentials for this href; give them with "
                    f"auth= or GDAL options): {exc}" + (f"; {hint}" if hint else ""),
                    scene_id=read.scene,
                ) from exc
            raise ReadError(
                read.href,
                f"reading band {read.band}, window {read.window} failed: {_causes(exc)}",
                scene_id=read.scene,
            ) from exc
        break
    if fetched is None:
        return None
    data, mask, file_nodata, transform = fetched
    nodata = read.nodata if read.nodata is not None else file_nodata
    if native_nodata is None:
        return _to_float(data, mask, nodata), transform
    if nodata is not None and nodata != native_nodata:
        data[data == nodata] = native_nodata
    if mask is not None:
        data[mask == 0] = native_nodata
    return data, transform


def _read_once(
    read: Read,
    limiter: ReadLimiter,
    access: Access | None,
    native_nodata: float | None,
    fit: WindowFit | None,
    *,
    after_refusal: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, float | None, Affine] | None:
    """One read of ``read``'s window with ``access``'s href and credentials, transient faults retried.

    ``after_refusal``: the read was refused with credentials since replaced. A refusal of its first
    attempt is then tried once more: GDAL records a failed open per URL for the whole process, so a
    read that another thread started with the old credentials can fail it from that record (each
    failure clears it again) before the fresh credentials reach the server.
    """
    cache = handle_cache()
    credentials = access.options if access is not None else {}
    path = gdal_path(access.href if access is not None else read.href)
    prefetching = is_network(path)
    # a handle keeps the credentials (and signed URL) it was opened with: others, another handle
    who = hash((frozenset(credentials.items()), path)) if access is not None else None

    def attempt() -> tuple[np.ndarray, np.ndarray | None, float | None, Affine] | None:
        key = (read.href, read.overview, who)
        with limiter.slot(), options_env(credentials) if credentials else nullcontext():
            try:
                if read.tiles is not None:
                    direct = _read_direct(read, read.tiles, path, fit, native_nodata)
                    if direct is not _USE_GDAL:
                        limiter.record_tile_range_read()
                        return cast("tuple[np.ndarray, None, float | None, Affine] | None", direct)
                src = cache.get(key, lambda: _open(path, read.overview))
                _check_identity(read, path)
                row, col, h, w = read.window
                window = Window(col, row, w, h)
                if read.overview < 0 and read.factor > 1:
                    # overviews unknown at planning: the coarsest not coarser than the plan's factor,
                    # read 1:1 through its own handle (no second resampling)
                    base = src
                    factors = base.overviews(read.band)
                    level = max((i for i, f in enumerate(factors) if f <= read.factor), default=-1)
                    if level >= 0:
                        key = (read.href, level, who)
                        src = cache.get(key, lambda: _open(path, level))
                    window = _level_window(read, base, level, src.shape)
                out = None
                if fit is not None:
                    fitted = fit(src.window_transform(window), window)
                    if fitted is None:
                        return None
                    window, out = fitted
                    if native_nodata is None or out is None or out.dtype != src.dtypes[read.band - 1]:
                        out = None
                if prefetching:
                    _prefetch(src, path, read.band, window, limiter)
                data = src.read(read.band, window=window, out=out)
                flags = src.mask_flag_enums[read.band - 1]
                masked = MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
                mask = src.read_masks(read.band, window=window) if masked else None
                return data, mask, src.nodatavals[read.band - 1], src.window_transform(window)
            except Exception:
                cache.drop(key)  # a retry reopens the file...
                _forget(path)  # ...and GDAL must not answer it from its record of the failure
                raise

    remote = path.startswith("/vsi")
    again = [after_refusal]  # one refusal of a read after a refusal is tried again

    def worth_retrying(exc: BaseException) -> bool:
        if is_transient(exc, remote=remote):
            return True
        if again[0] and is_auth_failure(exc):
            again[0] = False
            return True
        return False

    return retry_call(
        attempt,
        limiter=limiter,
        retry_after=_retry_after_probe(path, credentials, limiter),
        transient=worth_retrying,
    )


_USE_GDAL = object()
"""What :func:`_read_direct` answers when the read is GDAL's to do."""


def _read_direct(
    read: Read, blob: bytes, path: str, fit: WindowFit | None, native_nodata: float | None
) -> tuple[np.ndarray, None, float | None, Affine] | object | None:
    """Read ``read``'s window from its tiles' byte ranges (the index's tile layout): no header request.

    Runs inside the read's limiter slot and GDAL settings (the credentials of its profile), so the
    requests are bounded and authenticated as GDAL's would be; one request per merged range, tiles
    this process fetched before taken from memory. The pixels are bit for bit GDAL's (same level
    choice, window, transform and decoding). Answers :data:`_USE_GDAL` where GDAL must read: a layout
    this module does not decode, credentials or stores only GDAL handles, an identity without a size,
    a window beyond the image, and a file that changed since it was indexed (remembered, so that the
    file is opened by GDAL from then on, which warns as for any changed file).
    """
    from rasterio.windows import transform as window_transform

    from mosaic.io.cog import assemble, decodable, decode_layout, window_ranges
    from mosaic.io.ranged import NotDirect, checkable, transport

    layout = decode_layout(blob)
    stale = cast(_Checked, process_registry("stale-layouts", _Checked))
    if (
        layout is None
        or not decodable(layout)
        or not checkable(read.identity)
        or read.band > layout.samples
        or read.overview >= len(layout.levels) - 1
        or stale.seen((read.href, read.identity or ""))
    ):
        return _USE_GDAL
    how = transport(path, lambda key: rasterio.env.get_gdal_config(key, normalize=False))
    if how is None:
        return _USE_GDAL
    level = read.overview
    row, col, h, w = read.window
    window = Window(col, row, w, h)
    if read.overview < 0 and read.factor > 1:
        factors = layout.overview_factors
        level = max((i for i, f in enumerate(factors) if f <= read.factor), default=-1)
        image = layout.level(level)
        base = layout.levels[0]
        window = _level_window_of(read, (base.height, base.width), level, (image.height, image.width))
    image = layout.level(level)
    transform = layout.level_transform(level)
    out = None
    if fit is not None:
        fitted = fit(window_transform(window, transform), window)
        if fitted is None:
            return None
        window, out = fitted
        if native_nodata is None or out is None or out.dtype != np.dtype(layout.dtype):
            out = None
    row, col = int(window.row_off), int(window.col_off)
    if row < 0 or col < 0 or row >= image.height or col >= image.width:
        return _USE_GDAL
    # a window reaching beyond the image is cut to it, as rasterio's read cuts it (the transform stays)
    box = (row, col, min(int(window.height), image.height - row), min(int(window.width), image.width - col))
    if out is not None and out.shape != box[2:]:
        out = None
    wanted = dict(window_ranges(layout, level, read.band, box))
    key = (read.href, read.identity or "")
    cache = _tile_bytes()
    tiles, mine, waits = cache.claim(key, list(wanted))
    gap = _config_int("MOSAIC_RANGE_GAP", RANGE_GAP)
    carried: list[int] = []  # neighbours' tiles this read's requests carry (claimed for them)
    try:
        own = [(a, wanted[a]) for a in mine]
        useful = _neighbour_ranges(read, layout, level, wanted, cache, key) if own and read.neighbours else []
        planned = spans(own, useful, gap)
        inside = [a for a, b in useful if any(s0 <= a and b <= s1 for s0, s1 in planned)]
        _, carried, _ = cache.claim(key, inside)
        claimed = set(carried)
        ranges = own + [r for r in useful if r[0] in claimed]
        tiles.update(_fetch_tiles(how, ranges, read.identity or "", planned))
    except NotDirect:
        stale.first(key)
        return _USE_GDAL
    finally:
        cache.put(key, tiles, mine + carried)
        for start in carried:
            tiles.pop(start, None)
    for event in waits:  # tiles another read is fetching
        event.wait(120.0)
    late = [a for a in wanted if a not in tiles]
    if late:
        tiles.update(cache.get(key, late))
        missing = [(a, wanted[a]) for a in late if a not in tiles]  # failed or evicted meanwhile
        try:
            tiles.update(_fetch_tiles(how, missing, read.identity or "", spans(missing, [], gap)))
        except NotDirect:
            stale.first(key)
            return _USE_GDAL
    data = assemble(layout, level, read.band, box, tiles, out)
    return data, None, layout.nodata, window_transform(window, transform)


def _neighbour_ranges(
    read: Read, layout: Any, level: int, wanted: Mapping[int, int], cache: Any, key: tuple[str, str]
) -> list[tuple[int, int]]:
    """The byte ranges of the tiles ``read.neighbours`` need that this read does not, none cached."""
    from mosaic.io.cog import window_ranges

    image = layout.level(level)
    base = layout.levels[0]
    found: dict[int, int] = {}
    for window in read.neighbours:
        if read.overview < 0 and read.factor > 1:
            w = _level_window_of(
                replace(read, window=window), (base.height, base.width), level, (image.height, image.width)
            )
        else:
            w = Window(window[1], window[0], window[3], window[2])
        row, col = max(0, int(w.row_off)), max(0, int(w.col_off))
        height = min(int(w.row_off + w.height), image.height) - row
        width = min(int(w.col_off + w.width), image.width) - col
        if height > 0 and width > 0:
            found.update(window_ranges(layout, level, read.band, (row, col, height, width)))
    cached = cache.get(key, [a for a in found if a not in wanted])
    return sorted((a, b) for a, b in found.items() if a not in wanted and a not in cached)


def _fetch_tiles(
    how: Any, ranges: Sequence[tuple[int, int]], identity: str, merged: Sequence[tuple[int, int]]
) -> dict[int, bytes]:
    """The bytes of each tile range, fetched as the ``merged`` ranges holding them (one request each)."""
    from mosaic.io.ranged import fetch

    if not ranges:
        return {}
    chunks = fetch(how, merged, identity)
    return {
        start: bytes(chunk[start - m0 : stop - m0])
        for (start, stop), (m0, _), chunk in _spans(ranges, merged, chunks)
    }


def _spans(
    ranges: Sequence[tuple[int, int]], merged: Sequence[tuple[int, int]], chunks: Sequence[memoryview]
) -> list[tuple[tuple[int, int], tuple[int, int], memoryview]]:
    """Each range with the merged range holding it and that range's bytes."""
    out = []
    for rng in ranges:
        for span, data in zip(merged, chunks, strict=True):
            if span[0] <= rng[0] and rng[1] <= span[1]:
                out.append((rng, span, data))
                break
    return out


def _tile_bytes() -> Any:
    """This process's tiles fetched by direct reads (sized like GDAL's cache of remote files)."""
    from mosaic.io.ranged import TileBytes

    return process_registry("tile-bytes", lambda: TileBytes(_gdal_cache_bytes()))


class _Checked:
    """The (href, identity) pairs this process has checked (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()

    def first(self, key: tuple[str, str]) -> bool:
        """Whether ``key`` is new (it is then recorded)."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    def seen(self, key: tuple[str, str]) -> bool:
        """Whether ``key`` was recorded."""
        with self._lock:
            return key in self._seen


def _check_identity(read: Read, path: str) -> None:
    """Warn when the file is not the one indexed (:class:`ChangedSourceWarning`), once per file and process.

    Runs once the file is open, so a URL's size and time are those GDAL learnt at the open: no request
    of its own. Identities a stat cannot check (a STAC checksum alone) pass silently, as does a file
    that is gone (its read fails with its own error). On a dask.distributed worker the warning is also
    logged as a cluster event, ``Client.get_events("mosaic-changed-sources")``.
    """
    if read.identity is None:
        return
    checked = cast(_Checked, process_registry("checked-identities", _Checked))
    if not checked.first((read.href, read.identity)):
        return
    try:
        what = change(read.identity, observe(path))
    except OSError:
        return
    if what is None:
        return
    message = (
        f"scene {read.scene} asset {read.asset} ({redact(read.href)}) changed since it was indexed: "
        f"{what}; the index's grid, nodata and footprint of it may no longer hold: rebuild the index"
    )
    _log_event("mosaic-changed-sources", message)
    warnings.warn(message, ChangedSourceWarning, stacklevel=2)


def _log_event(topic: str, message: str) -> None:
    """On a dask.distributed worker, log ``message`` as a cluster event (its warnings stay on the worker)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(topic, message)


def _causes(exc: BaseException) -> str:
    """What GDAL said, from the outermost message to the root cause.

    rasterio's outer message is only "Read failed. See previous exception for details."; the decoder's
    own ("ZIPDecode: Decoding error...") is further down the chain.
    """
    said: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(said) < 6:
        message = str(cause).strip()
        if message and "See previous exception" not in message and message not in said:
            said.append(message)
        cause = cause.__cause__ or cause.__context__
    return "; ".join(said) or type(exc).__name__


@lru_cache(maxsize=1)
def _libgdal() -> ctypes.CDLL | None:
    """The GDAL library of rasterio (for the few C calls rasterio does not expose), or None.

    Other packages may load a GDAL of their own in the same process (pyogrio's wheel does), so the
    library is looked for in rasterio's wheel folders, then among loaded libraries under rasterio's
    install, then any libgdal already loaded (a rasterio built on the system's GDAL).
    """
    here = Path(rasterio.__file__).parent
    candidates: list[Path] = []
    for folder in (here.parent / "rasterio.libs", here / ".dylibs"):
        candidates += sorted(folder.glob("libgdal*")) if folder.is_dir() else []
    maps = Path("/proc/self/maps")
    loaded = {Path(line.split()[-1]) for line in maps.read_text().splitlines()} if maps.exists() else set()
    loaded = {p for p in loaded if p.name.startswith("libgdal")}
    candidates += sorted(p for p in loaded if "rasterio" in str(p))
    candidates += sorted(p for p in loaded if "rasterio" not in str(p) and "pyogrio" not in str(p))
    for candidate in candidates:
        try:
            return ctypes.CDLL(str(candidate))
        except OSError:
            continue
    return None


def _forget(path: str) -> None:
    """Drop GDAL's process-wide cache of a remote file after a failure.

    GDAL remembers a failed open of a URL (and the file's size and blocks) for the whole process, so
    without this a retry, or a later load with corrected credentials, fails from memory.
    """
    lib = _libgdal() if path.startswith("/vsi") else None
    if lib is not None:
        lib.VSICurlPartialClearCache(path.encode())
        _fetched().forget(path)


def _fetched() -> FetchedRanges:
    """This process's record of byte ranges fetched ahead of reads (sized like GDAL's cache)."""
    return cast(FetchedRanges, process_registry("fetched-ranges", lambda: FetchedRanges(_gdal_cache_bytes())))


def _gdal_cache_bytes() -> int:
    """GDAL's remote-file cache size, as GDAL reads it (from the environment, once)."""
    value = os.environ.get("CPL_VSIL_CURL_CACHE_SIZE", "")
    return int(value) if value.isdigit() else GDAL_CACHE_BYTES


def _config_int(key: str, default: int) -> int:
    value = rasterio.env.get_gdal_config(key)
    return int(value) if value not in (None, "") else default


def _prefetch(src: Any, path: str, band: int, window: Window, limiter: ReadLimiter) -> None:
    """Fetch ``window``'s tiles as merged byte ranges (:mod:`mosaic.io.fetch`) before GDAL reads it."""
    registry = _fetched()
    budget = _config_int("MOSAIC_PREFETCH_BYTES", registry.capacity // (2 * limiter.max_concurrency))
    lib = _libgdal()
    if budget <= 0 or lib is None:
        return
    prefetch(
        path,
        tile_ranges(src, band, window),
        registry=registry,
        fetch=_gdal_fetch(lib),
        gap=_config_int("MOSAIC_RANGE_GAP", RANGE_GAP),
        budget=budget,
        chunk=_config_int("CPL_VSIL_CURL_CHUNK_SIZE", 16384),
    )


@lru_cache(maxsize=1)
def _gdal_fetch(lib: ctypes.CDLL) -> Fetch:
    return gdal_fetch(lib)


def _retry_after_probe(
    path: str, credentials: Mapping[str, str], limiter: ReadLimiter
) -> Callable[[BaseException], float | None]:
    """How long a throttling HTTP server asks us to wait, learnt with one HEAD request.

    GDAL neither passes response headers on nor always says which HTTP status failed a read, so after
    a transient failure of an ``http(s)`` href the reader asks the server itself (inside a limiter
    slot): a 429/503 answer with ``Retry-After`` sets the minimum wait.
    """

    def probe(exc: BaseException) -> float | None:
        if not path.startswith("/vsicurl/"):
            return None
        # (urllib would follow a redirect with the Authorization header, to any host: not followed)
        request = urllib.request.Request(path[len("/vsicurl/") :], method="HEAD")
        header = credentials.get("GDAL_HTTP_HEADERS", "")
        if header.lower().startswith("authorization:"):
            request.add_header("Authorization", header.split(":", 1)[1].strip())
        elif "GDAL_HTTP_USERPWD" in credentials:
            token = base64.b64encode(credentials["GDAL_HTTP_USERPWD"].encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with limiter.slot():
            try:
                urllib.request.build_opener(_NoRedirect).open(request, timeout=10).close()
            except urllib.error.HTTPError as answer:
                if answer.code in (429, 503):
                    return parse_retry_after(answer.headers.get("Retry-After"))
            except OSError:
                pass
        return None

    return probe


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect answers the probe (it is no 429/503): nothing is sent on, credentials least of all."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _to_float(data: np.ndarray, mask: np.ndarray | None, nodata: float | None) -> np.ndarray:
    """The pixels as float32 (float64 for wide types) with NaN wherever there is no data."""
    wide = (data.dtype.kind in "iu" and data.dtype.itemsize > 2) or data.dtype == np.float64
    out = data.astype(np.float64 if wide else np.float32)
    if nodata is not None and not math.isnan(nodata):
        out[data == nodata] = np.nan
    if mask is not None:
        out[mask == 0] = np.nan
    return out


WARP_TOLERANCE = 0.01
"""Largest error, in pixels, GDAL's approximate transformer may make while warping.

GDAL's default (0.125 px, as ``gdalwarp -et``) interpolates coordinates along each output scanline, so
a nearest-neighbour choice can flip with the extent of the output, that is with the chunking: 0.6-1.6%
of pixels in the benchmark cases. At 0.01 px that falls to 0.03% (0.001 px: 0.002-0.008%, but a
cross-CRS warp then costs twice as much as at 0.01). Same-CRS reads on the target grid are pasted,
not warped. Measured in ``docs/performance.md``.
"""


def _grid_offset(transform: Affine, dst_affine: Affine) -> tuple[int, int] | None:
    """(row, col) of ``transform``'s origin on the destination grid, if the grids differ by whole pixels."""
    if tuple(transform)[:2] != tuple(dst_affine)[:2] or tuple(transform)[3:5] != tuple(dst_affine)[3:5]:
        return None
    col, row = ~dst_affine @ (transform.c, transform.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col)


def _paste_fit(dst_affine: Affine, area: tuple[slice, slice], into: np.ndarray | None) -> WindowFit:
    """A :data:`WindowFit` keeping, of a window on the destination grid, only its part in ``area``.

    That part is read straight into ``into`` at its place, when given. Windows not on the grid (they
    will be warped) are left whole.
    """

    def fit(transform: Affine, window: Window) -> tuple[Window, np.ndarray | None] | None:
        offset = _grid_offset(transform, dst_affine)
        if offset is None:
            return window, None
        row, col = offset
        r0, r1 = max(area[0].start - row, 0), min(area[0].stop - row, int(window.height))
        c0, c1 = max(area[1].start - col, 0), min(area[1].stop - col, int(window.width))
        if r1 <= r0 or c1 <= c0:
            return None
        fitted = Window(int(window.col_off) + c0, int(window.row_off) + r0, c1 - c0, r1 - r0)
        return fitted, None if into is None else into[row + r0 : row + r1, col + c0 : col + c1]

    return fit


GDAL_TYPES: Mapping[str, str] = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}
"""GDAL's data type name for each NumPy dtype name mosaic reads and writes."""


def _mem_path(array: np.ndarray, transform: Affine) -> str:
    """A GDAL ``MEM:::`` path to a read-only dataset over ``array`` (which must outlive its use).

    Its CRS is given to the warper separately (``src_crs``): a WKT does not survive the path syntax.
    """
    gdal_type = GDAL_TYPES[array.dtype.name]
    gt = "/".join(
        repr(float(v)) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e)
    )
    return (
        f"MEM:::DATAPOINTER={array.ctypes.data},PIXELS={array.shape[1]},LINES={array.shape[0]},BANDS=1,"
        f"DATATYPE={gdal_type},GEOTRANSFORM={gt}"
    )


def warp_read(
    read: Read,
    *,
    dst_affine: Affine,
    dst_shape: tuple[int, int],
    dst_crs: str,
    resampling: str,
    limiter: ReadLimiter,
    native: tuple[str, float] | None = None,
    area: tuple[slice, slice] | None = None,
    into: np.ndarray | None = None,
    auth: Sequence[Profile] = (),
    masker: Masker | None = None,
) -> Layer:
    """Read ``read`` and put it on the destination grid: pasted when the grids align, else warped.

    Only ``area`` (default: the whole chunk) is wanted, so a pasted window is cut to it before reading,
    and a read whose box of the chunk (``read.target``) misses it is skipped; a warp covers that whole
    box, so its pixels do not depend on which part is still missing. ``into``, a chunk-shaped array
    whose ``area`` and box may be overwritten, receives the pixels directly where it can (same
    dtype), saving a buffer and a copy; the returned layer's data is then a view of it. The layer is
    float with NaN where there is no data or, with ``native=(dtype, nodata)``, the source dtype with
    that nodata value (for ``first``/``last`` with nearest, which never need a float). A ``masker``
    (a read with quality masks, :mod:`mosaic.masks`) sets the pixels its mask drops to no data on the
    read's own grid, before they are pasted or warped.
    """
    # the scene's pixels land only in its box of the chunk (the planner knows its grid)
    if read.target is None:
        box: tuple[slice, slice] = (slice(0, dst_shape[0]), slice(0, dst_shape[1]))
    else:
        row, col, height, width = read.target
        box = (slice(row, row + height), slice(col, col + width))
    if area is None:
        area = box
    area = (
        slice(max(area[0].start, box[0].start), min(area[0].stop, box[0].stop)),
        slice(max(area[1].start, box[1].start), min(area[1].stop, box[1].stop)),
    )
    empty = Layer(np.empty((0, 0), dtype=np.float32 if native is None else native[0]), (slice(0, 0),) * 2)
    if (
        0 in (read.window[2], read.window[3])
        or area[0].stop <= area[0].start
        or area[1].stop <= area[1].start
    ):
        return empty
    same = _same_crs(read.crs, dst_crs)
    fetched = read_window(
        read,
        limiter,
        native_nodata=None if native is None else native[1],
        fit=_paste_fit(dst_affine, area, into) if same else None,
        auth=auth,
    )
    if fetched is None:
        return empty
    src, transform = fetched
    if masker is not None and read.masks:
        masker(read, src, transform, np.nan if native is None else native[1])
    offset = _grid_offset(transform, dst_affine) if same else None
    if offset is not None:
        row, col = offset
        return Layer(src, (slice(row, row + src.shape[0]), slice(col, col + src.shape[1])))
    fill = np.nan if native is None else native[1]
    src = np.ascontiguousarray(src)
    # a warp covers the scene's whole box, not just the part still missing: GDAL's approximate
    # transformer follows the output extent, so the same box gives the same nearest picks whichever
    # part is missing (and whether the read was started ahead or in turn)
    rows, cols = area = box
    # nearest copies a no-data source pixel as no data either way: without a source nodata GDAL runs
    # its kernel without a validity mask (~14% less CPU), with the same pixels
    src_nodata = None if resampling == "nearest" else fill
    with rasterio.Env(GDAL_MEM_ENABLE_OPEN="YES"), rasterio.open(_mem_path(src, transform)) as mem:
        with WarpedVRT(
            mem,
            src_crs=_crs(read.crs),
            crs=_crs(dst_crs),
            transform=dst_affine * Affine.translation(cols.start, rows.start),
            width=cols.stop - cols.start,
            height=rows.stop - rows.start,
            resampling=Resampling[resampling],
            src_nodata=src_nodata,
            nodata=fill,
            dtype=src.dtype.name,
            tolerance=WARP_TOLERANCE,
        ) as vrt:
            out = into[area] if into is not None and into.dtype == src.dtype else None
            return Layer(cast(np.ndarray, vrt.read(1, out=out)), area)


@lru_cache(maxsize=256)
def _same_crs(a: str, b: str) -> bool:
    return a == b or _crs(a) == _crs(b)
