"""Time requests: dates and partial dates become half-open UTC intervals.

``"2024-06"`` means the whole of June 2024, ``"2024-06-01"`` the whole day, ``("2024-06-01", "2024-06-30")``
the first through the last day inclusive (as STAC API and odc-stac read it). Naive times are UTC.
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

_PARTIAL = [
    (re.compile(r"^\d{4}$"), "YS"),
    (re.compile(r"^\d{4}-\d{2}$"), "MS"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "D"),
]


def to_utc(value: Any) -> pd.Timestamp:
    """A timezone-aware UTC timestamp from a string, date, datetime or numpy datetime64."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"not a date or time: {value!r} ({exc})") from exc
    if ts is pd.NaT:
        raise InvalidInputError(f"not a date or time: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _period(value: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The [start, end) interval a single instant or partial date stands for."""
    if isinstance(value, str):
        text = value.strip()
        for pattern, freq in _PARTIAL:
            if pattern.match(text):
                start = to_utc(text)
                step = (
                    pd.DateOffset(years=1)
                    if freq == "YS"
                    else pd.DateOffset(months=1)
                    if freq == "MS"
                    else pd.DateOffset(days=1)
                )
                return start, start + step
        ts = to_utc(text)
        return ts, ts + pd.Timedelta(microseconds=1)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        start = to_utc(value)
        return start, start + pd.DateOffset(days=1)
    if isinstance(value, np.datetime64) or isinstance(value, dt.datetime):
        ts = to_utc(value)
        return ts, ts + pd.Timedelta(microseconds=1)
    raise InvalidInputError(f"not a date or time: {value!r}")


def parse_time(time: TimeLike) -> TimeRange:
    """Turn a user's time request into a half-open UTC interval ``(start, end)``.

    Accepts None (no limit), one instant or partial date, a ``"start/end"`` string (``..`` or an empty
    side for open ends, as in STAC API), or a ``(start, end)`` pair whose end is inclusive of its whole
    period.
    """
    if time is None:
        return (None, None)
    if isinstance(time, str) and "/" in time:
        parts = time.split("/")
        if len(parts) != 2:
            raise InvalidInputError(f"time range {time!r} must look like 'start/end'")
        time = tuple(None if p.strip() in ("", "..") else p for p in parts)
    if isinstance(time, (tuple, list)):
        if len(time) != 2:
            raise InvalidInputError(f"time range must be (start, end), got {time!r}")
        start = None if time[0] is None else _period(time[0])[0]
        end = None if time[1] is None else _period(time[1])[1]
        if start is not None and end is not None and end <= start:
            raise InvalidInputError(f"time range {time!r} ends before it starts")
        return (start, end)
    return _period(time)
