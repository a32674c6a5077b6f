"""Type aliases and literals shared across mosaic's public API."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:  # the aliases name NumPy and pandas types as strings: this module imports neither
    import numpy as np
    import pandas as pd

__all__ = ["RESAMPLING", "BBox", "OnError", "PathType", "TimeLike", "TimeRange"]

BBox: TypeAlias = tuple[float, float, float, float]
"""(minx, miny, maxx, maxy); in lon/lat, minx > maxx means the box crosses the antimeridian."""

PathType: TypeAlias = str | PathLike[str]

OnError: TypeAlias = Literal["raise", "skip"]
"""What to do when one input fails: raise at once, or skip it with a warning that lists it."""

_Instant: TypeAlias = "str | _dt.date | _dt.datetime | pd.Timestamp | pd.Period | np.datetime64"
TimeLike: TypeAlias = (
    "_Instant | tuple[_Instant | None, _Instant | None] | Sequence[_Instant | None]"
    " | slice | np.ndarray | None"
)
"""A date, period or instant ("2024-06", ``datetime64("2024-06")`` and ``pandas.Period("2024-06")`` are the
whole month; a datetime or Timestamp is an instant), a "start/end" string, a (start, end) pair or
``slice(start, end)`` (both ends inclusive). Naive times are UTC."""

TimeRange: TypeAlias = "tuple[pd.Timestamp | None, pd.Timestamp | None]"
"""Half-open UTC interval [start, end); None is unbounded."""

RESAMPLING = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "min",
    "max",
    "med",
    "q1",
    "q3",
    "sum",
    "rms",
)
"""GDAL's warp kernels, by rasterio's names (``rasterio.enums.Resampling``)."""
