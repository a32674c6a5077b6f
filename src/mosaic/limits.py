"""A bounded, thread-safe limit on simultaneous reads, with counters, and retries for transient faults.

Every pixel read passes :meth:`ReadLimiter.slot`. The limiter counts reads, the peak number in flight,
retries and failures, so a user can see what a load did (:func:`mosaic.read_stats`). Limiters are
process-wide, one per concurrency bound, so all dask threads of a worker share one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from mosaic.runtime import default_concurrency, limiter_registry

__all__ = ["LimiterStats", "ReadLimiter", "get_limiter", "is_transient", "retry_call"]

T = TypeVar("T")
_TRANSIENT = re.compile(
    r"HTTP response code: (429|5\d\d)|timed? ?out|Connection (reset|refused|closed)|SlowDown|"
    r"Temporary failure|Operation too slow|couldn't connect",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """A snapshot of what a limiter has seen."""

    max_concurrency: int
    reads: int
    in_flight: int
    peak_in_flight: int
    retries: int
    failures: int


class ReadLimiter:
    """At most ``max_concurrency`` reads at once in this process; counts what passes through."""

    def __init__(self, max_concurrency: int):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self._reads = self._in_flight = self._peak = self._retries = self._failures = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the read slots for the duration of the block."""
        with self._sem:
            with self._lock:
                self._in_flight += 1
                self._reads += 1
                self._peak = max(self._peak, self._in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self._in_flight -= 1

    def record_retry(self) -> None:
        """Count one retried read."""
        with self._lock:
            self._retries += 1

    def record_failure(self) -> None:
        """Count one read that failed for good."""
        with self._lock:
            self._failures += 1

    def stats(self) -> LimiterStats:
        """Counters so far."""
        with self._lock:
            return LimiterStats(
                self.max_concurrency, self._reads, self._in_flight, self._peak, self._retries, self._failures
            )

    def reset_counters(self) -> None:
        """Zero the counters (the bound stays)."""
        with self._lock:
            self._reads = self._peak = self._retries = self._failures = 0


def get_limiter(max_concurrency: int | None = None) -> ReadLimiter:
    """The process-wide limiter for this bound (default: :func:`mosaic.runtime.default_concurrency`)."""
    n = int(max_concurrency or default_concurrency())
    return limiter_registry(("limiter", n), lambda: ReadLimiter(n))  # type: ignore[no-any-return]


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying: throttling, 5xx, timeouts, dropped connections."""
    return bool(_TRANSIENT.search(str(exc)))


def retry_call(
    func: Callable[[], T],
    *,
    limiter: ReadLimiter,
    attempts: int = 5,
    max_delay: float = 10.0,
) -> T:
    """Call ``func``, retrying transient failures with exponential backoff and full jitter."""
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.1, max=max_delay),
        retry=retry_if_exception(is_transient),
        before_sleep=lambda _state: limiter.record_retry(),
        reraise=True,
    )
    return retrying(func)
