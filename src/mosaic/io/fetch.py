"""Coalesced byte-range fetches for remote tiled TIFFs: fewer requests than GDAL makes on its own.

GDAL fetches the tiles of a window as one request per run of *contiguous* tiles, and splits a fetch
around whatever it already holds, so tiles a few kilobytes apart, or a file whose window is shared by
two chunks, cost a request each. Before a remote read the reader hands the window's tiles to
:func:`prefetch`: their byte ranges (from the TIFF's tile offsets) are merged across gaps of up to
``gap`` bytes, ranges this process has fetched already or is fetching are left out (a thread needing
those waits for the one fetching them), and the rest is read through GDAL's own virtual file system,
one request per merged range, into the cache that GDAL's read of the window then finds it in.

Only a bounded number of bytes is fetched ahead for one read (GDAL's cache of remote files is an LRU
of fixed size shared by every thread; more would be evicted before its read and fetched twice); larger
windows are left to GDAL. Nothing here changes a pixel: a range that was not fetched, or was evicted, GDAL
fetches itself.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "GDAL_CACHE_BYTES",
    "RANGE_GAP",
    "FetchedRanges",
    "PrefetchError",
    "align",
    "coalesce",
    "prefetch",
    "tile_ranges",
]

Range = tuple[int, int]
"""A byte range ``[start, stop)`` of a file."""

RANGE_GAP = 65_536
"""Default largest gap (bytes) between two tiles fetched in one request: at tens of milliseconds a
request and tens of MB/s, 64 KB cost less than another round trip."""

GDAL_CACHE_BYTES = 16_384_000
"""GDAL's default ``CPL_VSIL_CURL_CACHE_SIZE``: the bytes of remote files it keeps, process-wide."""


class PrefetchError(OSError):
    """A request fetching tiles ahead failed; worded like GDAL's own read failure, and retried like it.

    GDAL reports neither the HTTP status nor a message for a failed range request, so neither can this.
    """


def tile_ranges(src: Any, band: int, window: Any) -> list[Range]:
    """The byte ranges of the tiles of ``band`` that ``window`` touches in the open TIFF ``src``.

    From GDAL's ``TIFF`` metadata (``BLOCK_OFFSET_x_y``/``BLOCK_SIZE_x_y``), with the 4-byte size leader
    and trailer a COG may put around each tile. Empty when the file is not a tiled TIFF (GDAL then
    fetches what it needs itself).
    """
    if src.driver != "GTiff":
        return []
    block_h, block_w = src.block_shapes[band - 1]
    row0, col0 = int(window.row_off), int(window.col_off)
    row1 = min(src.height, row0 + int(window.height))
    col1 = min(src.width, col0 + int(window.width))
    ranges = []
    for by in range(row0 // block_h, (row1 - 1) // block_h + 1):
        for bx in range(col0 // block_w, (col1 - 1) // block_w + 1):
            offset = src.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=band)
            size = src.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=band)
            if not offset or not size:
                if offset is None:
                    return []  # not a tiled TIFF GDAL describes this way
                continue  # a sparse tile: nothing to fetch
            start = max(0, int(offset) - 4)
            ranges.append((start, int(offset) + int(size) + 4))
    return ranges


def align(ranges: Sequence[Range], chunk: int) -> list[Range]:
    """``ranges`` widened to whole multiples of ``chunk`` (GDAL downloads and caches such blocks)."""
    return [(start // chunk * chunk, -(-stop // chunk) * chunk) for start, stop in ranges]


def coalesce(ranges: Sequence[Range], gap: int) -> list[Range]:
    """``ranges`` sorted and merged where they overlap, touch or lie at most ``gap`` bytes apart."""
    merged: list[Range] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


@dataclass(eq=False)
class _Span:
    """A fetched (or being fetched) byte range of one file."""

    start: int
    stop: int
    done: threading.Event = field(default_factory=threading.Event)


class FetchedRanges:
    """Which byte ranges of which remote files this process fetched, or is fetching, ahead of reads.

    Bounded like GDAL's cache (``capacity`` bytes, oldest first out), so a range remembered here is
    roughly one GDAL still holds; a range GDAL dropped is fetched again by GDAL's read: never wrong.
    """

    def __init__(self, capacity: int = GDAL_CACHE_BYTES):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._files: dict[str, list[_Span]] = {}
        self._order: deque[tuple[str, _Span]] = deque()
        self._bytes = 0

    def claim(self, path: str, wanted: Sequence[Range], budget: int) -> tuple[list[_Span], list[_Span]]:
        """Split ``wanted`` into new spans for the caller to fetch and spans others are fetching.

        The new spans are registered at once (others wait for them rather than fetch them again).
        Nothing is claimed when the new bytes exceed ``budget``: the caller's read fetches them.
        """
        with self._lock:
            known = self._files.get(path, [])
            pieces: list[Range] = []
            pending: list[_Span] = []
            for start, stop in wanted:
                cursor = start
                for span in sorted(known, key=lambda s: s.start):
                    if span.stop <= cursor or span.start >= stop:
                        continue
                    if not span.done.is_set():
                        pending.append(span)
                    if span.start > cursor:
                        pieces.append((cursor, span.start))
                    cursor = max(cursor, span.stop)
                if cursor < stop:
                    pieces.append((cursor, stop))
            if sum(b - a for a, b in pieces) > budget:
                return [], []
            mine = [_Span(a, b) for a, b in pieces]
            self._files.setdefault(path, []).extend(mine)
            for span in mine:
                self._order.append((path, span))
                self._bytes += span.stop - span.start
            while self._bytes > self.capacity and self._order:
                old_path, old = self._order.popleft()
                self._remove(old_path, old)
            return mine, pending

    def release(self, path: str, spans: Sequence[_Span], ok: bool) -> None:
        """Mark ``spans`` fetched (``ok``) or forget them (the fetch failed), waking any waiters."""
        with self._lock:
            for span in spans:
                if not ok:
                    self._remove(path, span)
                span.done.set()

    def forget(self, path: str) -> None:
        """Forget every range of ``path`` (GDAL's cache of it was cleared)."""
        with self._lock:
            for span in self._files.pop(path, []):
                self._bytes -= span.stop - span.start
                span.done.set()
            self._order = deque(item for item in self._order if item[0] != path)

    def _remove(self, path: str, span: _Span) -> None:
        spans = self._files.get(path)
        if spans is not None and span in spans:
            spans.remove(span)
            self._bytes -= span.stop - span.start
            if not spans:
                del self._files[path]


Fetch = Callable[[str, Sequence[Range]], None]
"""Reads the given byte ranges of a GDAL path, one request each, raising :class:`PrefetchError`."""


def prefetch(
    path: str,
    ranges: Sequence[Range],
    *,
    registry: FetchedRanges,
    fetch: Fetch,
    gap: int,
    budget: int,
    chunk: int,
    wait: float = 120.0,
) -> int:
    """Fetch the merged ``ranges`` of ``path`` not fetched yet; return the number of requests made.

    Ranges another thread is fetching are waited for (at most ``wait`` seconds each: after that, GDAL's
    read fetches what is still missing). A failed fetch is forgotten and re-raised.
    """
    if not ranges:
        return 0
    mine, pending = registry.claim(path, coalesce(align(ranges, chunk), gap), budget)
    if mine:
        try:
            fetch(path, [(s.start, s.stop) for s in mine])
        except BaseException:
            registry.release(path, mine, ok=False)
            raise
        registry.release(path, mine, ok=True)
    for span in pending:
        span.done.wait(wait)
    return len(mine)


def gdal_fetch(lib: ctypes.CDLL) -> Fetch:
    """A :data:`Fetch` reading through GDAL's virtual file systems (library ``lib``, rasterio's own).

    Runs in the calling thread, so that thread's GDAL settings (credentials, request options) apply,
    and fills the same process-wide cache GDAL's raster reads use.
    """
    lib.VSIFOpenExL.restype = ctypes.c_void_p
    lib.VSIFOpenExL.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.VSIFSeekL.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
    lib.VSIFReadL.restype = ctypes.c_size_t
    lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
    lib.VSIFTellL.restype = ctypes.c_uint64
    lib.VSIFTellL.argtypes = [ctypes.c_void_p]
    lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
    lib.CPLGetLastErrorMsg.restype = ctypes.c_char_p
    lib.CPLErrorReset.restype = None

    def fetch(path: str, ranges: Sequence[Range]) -> None:
        lib.CPLErrorReset()
        handle = lib.VSIFOpenExL(os.fsencode(path), b"rb", 1)
        if not handle:
            raise PrefetchError(f"Read failed: cannot open the file to fetch its tiles{_last_error(lib)}")
        try:
            lib.VSIFSeekL(handle, 0, 2)  # the file's size (known since the open: no request)
            end = lib.VSIFTellL(handle)
            buffer = np.empty(max(stop - start for start, stop in ranges), dtype=np.uint8)
            for start, stop in ranges:
                lib.VSIFSeekL(handle, start, 0)
                want = max(0, min(stop, end) - start)
                if want and lib.VSIFReadL(buffer.ctypes.data, 1, want, handle) != want:
                    raise PrefetchError(f"Read failed: fetching bytes {start}-{stop - 1}{_last_error(lib)}")
        finally:
            lib.VSIFCloseL(handle)

    return fetch


def _last_error(lib: ctypes.CDLL) -> str:
    message = lib.CPLGetLastErrorMsg()
    return f": {message.decode(errors='replace')}" if message else ""
