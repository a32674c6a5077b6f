"""Time requests: dates, partial dates and instants become half-open UTC intervals.

A *period* stands for all of its span: ``"2024-06"`` (or ``numpy.datetime64("2024-06")``, or
``pandas.Period("2024-06")``) is the whole of June 2024, ``"2024-06-01"``, ``datetime.date(2024, 6, 1)``
or ``numpy.datetime64("2024-06-01")`` the whole day. An *instant* (``datetime.datetime``,
``pandas.Timestamp``, a ``datetime64`` finer than a day, a full ISO time string) stands for itself.
A range ``(start, end)``, ``slice(start, end)`` or ``"start/end"`` runs from the start of ``start`` to
the end of ``end``, inclusive (as STAC API, odc-stac and xarray's ``sel`` read it); ``None``, ``".."`` or
an empty side leaves it open. Naive times are UTC; timezone-aware ones are converted to UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pandas as pd

from mosaic.errors import InvalidInputError
from mosaic.types import TimeLike, TimeRange

__all__ = ["parse_time", "to_utc"]

_DAY = pd.Timedelta(days=1).as_unit("s")  # in seconds: keeps the unit of what it is added to
"""A day in UTC (always 24 hours): adding it is ~50x faster than ``DateOffset(days=1)``, same instant."""
_PARTIAL = [
    (re.compile(r"^\d{4}$"), pd.DateOffset(years=1)),
    (re.compile(r"^\d{4}-\d{2}$"), pd.DateOffset(months=1)),
    (re.compile(r"^\d{4}-?\d{2}-?\d{2}$"), _DAY),
]
_ISO_START = re.compile(r"^\d{4}(-|\d{4}|$)")
"""Strings must be ISO 8601 dates or times (pandas alone would read 'June' as June of this year)."""
_DATETIME64_SPANS = {
    "Y": pd.DateOffset(years=1),
    "M": pd.DateOffset(months=1),
    "W": 7 * _DAY,
    "D": _DAY,
}
"""The span a ``datetime64`` of each calendar unit stands for (finer units are instants)."""
_INSTANT = pd.Timedelta(microseconds=1)
"""An instant as an interval: the index stores times in microseconds."""


def to_utc(value: Any) -> pd.Timestamp:
    """A timezone-aware UTC timestamp from a string, date, datetime or numpy datetime64.

    Naive values are taken as UTC; aware ones are converted.
    """
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(f"not a date or time: {value!r} ({exc})") from exc
    if ts is pd.NaT:
        raise InvalidInputError(f"not a date or time: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _period(value: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The [start, end) interval a single instant or period stands for."""
    if isinstance(value, str):
        text = value.strip()
        if not _ISO_START.match(text):
            raise InvalidInputError(
                f"not a date or time: {value!r} (write an ISO 8601 date or time such as 2024-06, "
                "2024-06-01 or 2024-06-01T10:30Z)"
            )
        for pattern, span in _PARTIAL:
            if pattern.match(text):
                start = to_utc(text)
                return start, start + span
        ts = to_utc(text)
        return ts, ts + _INSTANT
    if isinstance(value, pd.Period):
        return to_utc(value.start_time), to_utc(value.end_time) + pd.Timedelta(nanoseconds=1)
    if isinstance(value, np.datetime64):
        unit = np.datetime_data(value.dtype)[0]
        start = to_utc(value)
        return start, start + _DATETIME64_SPANS.get(unit, _INSTANT)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        start = to_utc(value)
        return start, start + _DAY
    if isinstance(value, dt.datetime):  # pandas.Timestamp included
        ts = to_utc(value)
        return ts, ts + _INSTANT
    raise InvalidInputError(
        f"not a date or time: {value!r} (give a string such as '2024-06', a date, datetime, "
        "pandas Timestamp or Period, or a numpy datetime64)"
    )


def _is_open(side: Any) -> bool:
    return side is None or (isinstance(side, str) and side.strip() in ("", ".."))


def parse_time(time: TimeLike) -> TimeRange:
    """Turn a user's time request into a half-open UTC interval ``(start, end)``.

    Accepts None (no limit); one instant or period; a ``"start/end"`` string; a ``(start, end)`` pair
    (tuple, list or two-element array) or ``slice(start, end)``, whose end is inclusive of its whole
    period. See the module docstring for what each form means.

    Raises:
        InvalidInputError: naming the value, when it is not a time, a range has not two ends, a slice
            has a step, or a range ends before it starts.
    """
    if time is None:
        return (None, None)
    if isinstance(time, str) and "/" in time:
        parts = time.split("/")
        if len(parts) != 2:
            raise InvalidInputError(f"time range {time!r} must look like 'start/end'")
        time = (parts[0], parts[1])
    if isinstance(time, slice):
        if time.step is not None:
            raise InvalidInputError(f"time slice {time!r} cannot have a step")
        time = (time.start, time.stop)
    if isinstance(time, np.ndarray) and time.ndim == 0:
        time = time[()]
    if isinstance(time, (tuple, list, np.ndarray)):
        if len(time) != 2:
            raise InvalidInputError(f"time range must be (start, end), got {time!r}")
        first, last = time[0], time[1]
        start = None if _is_open(first) else _period(first)[0]
        end = None if _is_open(last) else _period(last)[1]
        if start is not None and end is not None and end <= start:
            raise InvalidInputError(f"time range {time!r} ends before it starts")
        return _microseconds(start, end)
    return _microseconds(*_period(time))


def _microseconds(start: pd.Timestamp | None, end: pd.Timestamp | None) -> TimeRange:
    """The interval widened to whole microseconds, the index's time resolution."""
    return (
        start if start is None or start.nanosecond == 0 else start.floor("us"),
        end if end is None or end.nanosecond == 0 else end.ceil("us"),
    )
