"""A bounded, thread-safe limit on simultaneous reads, with counters, and retries for transient faults.

Every pixel read passes :meth:`ReadLimiter.slot`. The limiter counts reads, the peak number in flight,
retries and failures, so a user can see what a load did (:func:`mosaic.read_stats`). Limiters are
process-wide, one per concurrency bound, so all dask threads of a worker share one.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from mosaic.io.runtime import default_concurrency, process_registry

__all__ = [
    "MAX_RETRY_AFTER",
    "LimiterStats",
    "ReadLimiter",
    "get_limiter",
    "is_auth_failure",
    "is_transient",
    "parse_retry_after",
    "retry_call",
]

T = TypeVar("T")
_TRANSIENT = re.compile(
    r"HTTP response code: (429|5\d\d)|timed? ?out|Connection (reset|refused|closed)|SlowDown|"
    r"Temporary failure|Operation too slow|couldn't connect",
    re.IGNORECASE,
)
_REMOTE_TRANSIENT = re.compile(
    # GDAL reports a failed header fetch of a remote file as an unknown format, and a failed block
    # fetch as a read error, without the HTTP status: worth a few retries, for remote files only
    r"not recognized as being in a supported file format|IReadBlock failed|Read error|"
    r"TIFFRead\w*\(\) failed|Read failed",
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
    tile_range_reads: int = 0
    """Reads that fetched their tiles straight from the byte ranges the index recorded (no header
    request; :mod:`mosaic.io.cog`); the others opened the file with GDAL."""


class ReadLimiter:
    """At most ``max_concurrency`` reads at once in this process; counts what passes through.

    With ``cluster`` (a ``distributed.Semaphore``), each read also holds one of its leases, so the bound
    holds across every worker process of a dask cluster.
    """

    def __init__(self, max_concurrency: int, cluster: Any = None):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.cluster = cluster
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self._reads = self._in_flight = self._peak = self._retries = self._failures = 0
        self._tile_range_reads = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the read slots (and a cluster lease, if any) for the duration of the block."""
        with self._sem, self.cluster if self.cluster is not None else nullcontext():
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

    def record_tile_range_read(self) -> None:
        """Count one read served from recorded tile ranges (no header request)."""
        with self._lock:
            self._tile_range_reads += 1

    def stats(self) -> LimiterStats:
        """Counters so far."""
        with self._lock:
            return LimiterStats(
                self.max_concurrency,
                self._reads,
                self._in_flight,
                self._peak,
                self._retries,
                self._failures,
                self._tile_range_reads,
            )

    def reset_counters(self) -> None:
        """Zero the counters (the bound stays)."""
        with self._lock:
            self._reads = self._peak = self._retries = self._failures = self._tile_range_reads = 0


def get_limiter(max_concurrency: int | None = None) -> ReadLimiter:
    """The process-wide limiter for this bound (default: :func:`mosaic.io.runtime.default_concurrency`).

    Inside a ``dask.distributed`` worker, an explicit ``max_concurrency`` is a bound for the whole
    cluster: the limiter then also takes a lease of the cluster's semaphore ``mosaic-reads-<n>``.
    """
    n = int(max_concurrency or default_concurrency())
    worker = _distributed_worker() if max_concurrency is not None else None
    if worker is None:
        return process_registry(("limiter", n), lambda: ReadLimiter(n))  # type: ignore[no-any-return]

    def cluster_limiter() -> ReadLimiter:
        from distributed import Semaphore

        return ReadLimiter(n, cluster=Semaphore(max_leases=n, name=f"mosaic-reads-{n}"))  # type: ignore[no-untyped-call]

    return process_registry(("cluster-limiter", n, worker), cluster_limiter)  # type: ignore[no-any-return]


def _distributed_worker() -> str | None:
    """The address of the dask.distributed worker running this code, or None."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return str(get_worker().address)
    except ValueError:
        return None


_AUTH = re.compile(
    # HTTP status codes (GDAL's /vsicurl/ says them), S3/GCS/Azure error codes and their messages (S3
    # servers word them differently: AWS "The AWS Access Key Id you provided does not exist in our
    # records", SeaweedFS and MinIO "The access key ID you provided does not exist..."), and GDAL's own
    # "...configuration options not defined, and <credentials file> not filled" for missing keys
    r"HTTP response code: 40[13]|Access ?Denied|InvalidAccessKeyId|access key id you provided does not exist|"
    r"SignatureDoesNotMatch|request signature we calculated does not match|InvalidToken|ExpiredToken|"
    r"security token included in the request is (invalid|expired)|InvalidSecurity|"
    r"Unauthori[sz]ed|Forbidden|Permission denied|AuthenticationFailed|AuthorizationFailure|"
    r"failed to authenticate|configuration options? not (defined|set)|not filled|credentials",
    re.IGNORECASE,
)
_AUTH_ERRORS = frozenset(
    # rasterio's classes of GDAL's error numbers 14-16 (CPLE_AWSAccessDenied, ...InvalidCredentials,
    # ...SignatureDoesNotMatch): GDAL's own classification, whatever the server's wording
    {"CPLE_AWSAccessDeniedError", "CPLE_AWSInvalidCredentialsError", "CPLE_AWSSignatureDoesNotMatchError"}
)


def is_auth_failure(exc: BaseException) -> bool:
    """Whether a failure is the server refusing the credentials, or their absence.

    By GDAL's error class where it has one (access denied, invalid or missing credentials, signature
    mismatch), else by the message (HTTP 401/403, the S3, GCS and Azure error codes and wordings);
    causes chained to the exception count too (rasterio chains GDAL's error to its summary).
    """
    for seen in _chain(exc):
        if any(kind.__name__ in _AUTH_ERRORS for kind in type(seen).__mro__):
            return True
        if _AUTH.search(str(seen)):
            return True
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions chained to it (causes, then contexts), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(exc: BaseException, *, remote: bool = False) -> bool:
    """Whether a failure is worth retrying: throttling, 5xx, timeouts, dropped connections.

    With ``remote`` (the file is behind HTTP or an object store), also GDAL's status-less read errors.
    Causes chained to the exception count too (rasterio chains GDAL's own error to its summary).
    """
    if is_auth_failure(exc):
        return False
    for seen in _chain(exc):
        text = str(seen)
        if _TRANSIENT.search(text) or (remote and _REMOTE_TRANSIENT.search(text)):
            return True
    return False


def retry_call(
    func: Callable[[], T],
    *,
    limiter: ReadLimiter,
    attempts: int = 5,
    max_delay: float = 10.0,
    retry_after: Callable[[BaseException], float | None] | None = None,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call ``func``, retrying transient failures with exponential backoff and full jitter.

    ``retry_after(exc)`` may name the delay the server asked for (``Retry-After``); the wait is then at
    least that long (capped at :data:`MAX_RETRY_AFTER` seconds).
    """
    backoff = wait_random_exponential(multiplier=0.1, max=max_delay)

    def wait(state: RetryCallState) -> float:
        delay = float(backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = retry_after(exc) if retry_after is not None and exc is not None else None
        return max(delay, min(asked, MAX_RETRY_AFTER)) if asked is not None else delay

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait,
        retry=retry_if_exception(transient),
        before_sleep=lambda _state: limiter.record_retry(),
        reraise=True,
    )
    return retrying(func)


MAX_RETRY_AFTER = 120.0
"""Longest ``Retry-After`` wait honoured, in seconds."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
