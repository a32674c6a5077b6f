"""Credentials that expire: fetched by a provider, cached per process, refreshed before they lapse.

A *provider* says how to get credentials (a call to a vending endpoint: NASA's ``s3credentials``, a SAS
token endpoint); it returns :class:`Credentials`, GDAL settings and/or a query string to sign URLs
with, and when they expire. The profiles of :mod:`mosaic.auth` that hold a provider keep nothing of
what it returns: the credentials live in this module's process-wide cache, keyed by what the provider
is (its URL and token, not the keys it hands out). So a profile pickled into a dask graph carries
how to get credentials, never the temporary keys, and every worker process fetches its own.

The cache (:func:`current`):

- fetches on first use, then again ``refresh_margin`` seconds before the expiry (but no earlier than
  half-way through the credentials' life, so keys that live a few seconds are not fetched per read);
- fetches at most once at a time per key in a process: threads that need credentials while a fetch
  runs wait for it and share its answer (no stampede from 64 reading threads);
- after a read is refused (an expired token, a revoked key), :func:`refused` marks the credentials the
  read used as stale, if they are still the current ones: the next :func:`current` fetches anew, once,
  however many reads were refused with them.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mosaic.errors import InvalidInputError

__all__ = [
    "DEFAULT_REFRESH_MARGIN",
    "Credentials",
    "Provider",
    "current",
    "fetch_count",
    "parse_expiration",
    "refused",
    "replaced",
]

DEFAULT_REFRESH_MARGIN = 300.0
"""Seconds before expiry at which credentials are fetched again (five minutes, as AWS SDKs do)."""


@dataclass(frozen=True, slots=True, eq=False)
class Credentials:
    """What a provider hands out: GDAL settings, a query to sign URLs with, and when they expire.

    Attributes:
        options: GDAL configuration options (``AWS_ACCESS_KEY_ID``...) that authenticate a read.
        query: a query string appended to URLs (a SAS token), without the leading ``?``.
        expires: when they stop working (aware datetime), or None if they do not expire.
    """

    options: Mapping[str, str] = field(default_factory=dict)
    query: str | None = None
    expires: dt.datetime | None = None

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.options))
        when = self.expires.isoformat() if self.expires else "never"
        return f"Credentials(options=[{names}], query={'***' if self.query else None}, expires={when})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("temporary credentials are not pickled: pickle the profile, which fetches them")


@runtime_checkable
class Provider(Protocol):
    """An object that fetches credentials (a plain callable returning :class:`Credentials` works too)."""

    def fetch(self) -> Credentials:
        """Fetch fresh credentials (a network call)."""
        ...


ProviderLike = Provider | Callable[[], Credentials]


def parse_expiration(text: str | float | dt.datetime | None) -> dt.datetime | None:
    """An expiry as an aware datetime; None stays None.

    From ISO text (NASA's ``2024-06-01 12:00:00+00:00``, or with a ``Z``), a datetime, or seconds
    since the epoch.

    Raises:
        InvalidInputError: text that is not a date.
    """
    if text is None or text == "":
        return None
    if isinstance(text, dt.datetime):
        when = text
    elif isinstance(text, (int, float)):
        when = dt.datetime.fromtimestamp(float(text), dt.UTC)
    else:
        try:
            when = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInputError(f"credentials expiry {text!r} is not an ISO date and time") from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class _Entry:
    """The credentials of one provider in this process, and the lock that serialises its fetches."""

    __slots__ = ("credentials", "fetched_at", "fetches", "lock", "stale")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.credentials: Credentials | None = None
        self.fetched_at = 0.0
        self.fetches = 0
        self.stale = False

    def fresh(self, margin: float, now: float) -> bool:
        creds = self.credentials
        if creds is None or self.stale:
            return False
        if creds.expires is None:
            return True
        expires = creds.expires.timestamp()
        # refresh `margin` s before expiry, but not before half the credentials' life has passed
        lead = min(margin, max(0.0, (expires - self.fetched_at) / 2))
        return now < expires - lead


_registry_lock = threading.Lock()
_entries: dict[tuple[int, Hashable], _Entry] = {}


def _entry(key: Hashable) -> _Entry:
    with _registry_lock:
        full = (os.getpid(), key)  # a forked child starts afresh (its parent's lock may be held)
        entry = _entries.get(full)
        if entry is None:
            entry = _entries[full] = _Entry()
        return entry


def current(
    key: Hashable, provider: ProviderLike, refresh_margin: float = DEFAULT_REFRESH_MARGIN
) -> Credentials:
    """The credentials of ``key`` in this process: cached, fetched by ``provider`` when due.

    One fetch at a time: threads arriving meanwhile wait and share it.

    Raises:
        whatever ``provider`` raises (an :class:`~mosaic.errors.AuthenticationError` naming the endpoint).
    """
    entry = _entry(key)
    creds = entry.credentials
    if creds is not None and entry.fresh(refresh_margin, time.time()):
        return creds
    with entry.lock:
        creds = entry.credentials
        if creds is not None and entry.fresh(refresh_margin, time.time()):
            return creds  # another thread fetched while this one waited
        got = provider.fetch() if isinstance(provider, Provider) else provider()
        if not isinstance(got, Credentials):
            raise InvalidInputError(
                f"a credentials provider must return mosaic.auth.Credentials, got {type(got).__name__}"
            )
        entry.credentials, entry.fetched_at, entry.stale = got, time.time(), False
        entry.fetches += 1
        return got


def refused(key: Hashable, used: Credentials) -> None:
    """A read with ``used`` was refused: fetch anew at the next :func:`current`, if they are still current."""
    entry = _entry(key)
    with entry.lock:
        if entry.credentials is used:
            entry.stale = True


def replaced(key: Hashable, used: Credentials) -> bool:
    """Whether ``used`` are no longer the current credentials of ``key`` (fetched anew or stale)."""
    entry = _entry(key)
    with entry.lock:
        return entry.credentials is not used or entry.stale


def fetch_count(key: Hashable) -> int:
    """How many times this process fetched the credentials of ``key``."""
    return _entry(key).fetches


def forget(key: Hashable) -> None:
    """Drop the cached credentials of ``key`` in this process (the next use fetches)."""
    entry = _entry(key)
    with entry.lock:
        entry.credentials = None
