"""Process-wide state: read limiters, the record of fetched byte ranges, per-thread dataset handle caches.

All are created lazily under a lock.

Everything mutable that outlives one task lives here, so tests (and long-running workers) can start
clean with :func:`reset`. Nothing reads environment variables at import time.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = [
    "WARNINGS_LOCK",
    "FailedReads",
    "default_concurrency",
    "failed_reads",
    "handle_cache",
    "process_registry",
    "reset",
]

_lock = threading.Lock()

WARNINGS_LOCK = threading.RLock()
"""Hold this around third-party calls that use ``warnings.catch_warnings`` in worker threads.

``catch_warnings`` saves and restores the process-wide filter list; before Python 3.14 it is not
thread-safe, and two threads interleaving their blocks leave a filter behind (e.g. "ignore every
warning", silencing the whole process). Serialising those blocks makes them nest. Calls known to need
it: ``rasterio.features.shapes``, ``pystac.Item.from_file``/``from_dict``. Shapely validity checks (used
by the antimeridian splitter) do too, which is why footprint geometry runs in the calling thread.
"""
_registry: dict[Any, Any] = {}
_caches: weakref.WeakSet[HandleCache] = weakref.WeakSet()
_local = threading.local()


def default_concurrency() -> int:
    """Default bound on simultaneous reads: ``$MOSAIC_MAX_CONCURRENCY``, else 4 per core (max 64)."""
    env = os.environ.get("MOSAIC_MAX_CONCURRENCY")
    if env:
        return max(1, int(env))
    return min(64, 4 * (os.cpu_count() or 2))


class HandleCache:
    """An LRU of open rasterio datasets, private to one thread (datasets are not thread-safe)."""

    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, opener: Any) -> Any:
        """The dataset for ``key``, opened with ``opener()`` on first use."""
        item = self._items.get(key)
        if item is not None and not item.closed:
            self._items.move_to_end(key)
            return item
        item = opener()
        self._items[key] = item
        while len(self._items) > self.size:
            _, old = self._items.popitem(last=False)
            old.close()
        return item

    def drop(self, key: Any) -> None:
        """Close and forget one dataset (after a failed read, so a retry reopens it)."""
        item = self._items.pop(key, None)
        if item is not None:
            item.close()

    def clear(self) -> None:
        """Close every dataset."""
        while self._items:
            _, item = self._items.popitem()
            item.close()

    def __len__(self) -> int:
        return len(self._items)


def handle_cache() -> HandleCache:
    """This thread's dataset cache."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = HandleCache()
        _local.cache = cache
        with _lock:
            _caches.add(cache)
    return cache


def process_registry(key: Any, factory: Any) -> Any:
    """The process-wide object for ``key`` (a limiter, the record of fetched ranges...).

    Made by ``factory()`` on first use; :func:`reset` forgets it.
    """
    with _lock:
        item = _registry.get(key)
        if item is None:
            item = factory()
            _registry[key] = item
        return item


class FailedReads(list[str]):
    """The reads of one load that failed and were skipped (``on_error="skip"``).

    Each is ``"<scene> (<href>): <reason>"``; filled while the load computes in this process.
    """


_failures: weakref.WeakValueDictionary[str, FailedReads] = weakref.WeakValueDictionary()


def failed_reads(key: str) -> FailedReads:
    """The live list of failed reads for the load ``key`` (kept while someone holds it)."""
    with _lock:
        log = _failures.get(key)
        if log is None:
            log = _failures[key] = FailedReads()
        return log


def reset() -> None:
    """Forget limiters and close cached datasets (all threads' caches; use when no load is running)."""
    with _lock:
        _registry.clear()
        caches = list(_caches)
    for cache in caches:
        cache.clear()
