"""Fusion: how the warped layers of overlapping scenes become one chunk.

Each method is a small strategy object with :meth:`Fuser.feed`, :attr:`Fuser.is_done` and
:meth:`Fuser.result`, made fresh per chunk inside the task. Layers arrive as float arrays with NaN
where a scene has no data, in the plan's order (datetime, then id; reversed for ``last``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from mosaic.errors import InvalidInputError

__all__ = ["FUSERS", "FirstNative", "Fuser", "Region", "as_chunk", "make_fuser"]


Region = tuple[slice, slice]
"""Where a layer's pixels go in the chunk (row slice, column slice)."""


def as_chunk(data: np.ndarray, region: Region | None, shape: tuple[int, int]) -> np.ndarray:
    """A layer as a whole chunk: ``data`` in ``region``, NaN elsewhere."""
    if region is None or data.shape == shape:
        return data
    out = np.full(shape, np.nan, dtype=np.result_type(data.dtype, np.float32))
    out[region] = data
    return out


def _box(missing: np.ndarray) -> Region | None:
    """The smallest (rows, cols) box holding every True of ``missing``; None when there is none."""
    rows = np.flatnonzero(missing.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(missing[rows[0] : rows[-1] + 1].any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


class Fuser:
    """Base fusion strategy: accumulate layers, report when more layers cannot change the result.

    A layer is ``data`` for a ``region`` of the chunk (None: the whole chunk); the chunk has no data
    from that scene outside the region.
    """

    needs_aux: ClassVar[bool] = False

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape

    def feed(self, data: np.ndarray, aux: np.ndarray | None = None, region: Region | None = None) -> None:
        """Add one scene's layer (and, for ranking methods, its ranking band on the whole chunk)."""
        raise NotImplementedError

    @property
    def is_done(self) -> bool:
        """Whether further layers can be skipped (only ``first``/``last`` ever stop early)."""
        return False

    def pending(self) -> Region | None:
        """The part of the chunk further layers can still change; None when nothing can change.

        The whole chunk unless a method knows better (``first``/``last``: the box around the holes).
        """
        return None if self.is_done else (slice(0, self.shape[0]), slice(0, self.shape[1]))

    def scratch(self) -> np.ndarray | None:
        """A chunk-shaped array the next layer may be written into directly, or None.

        ``feed`` then receives a view of it. Only ``first``/``last`` before their first layer offer
        one. If writing the layer fails half-way, call :meth:`discard_scratch`.
        """
        return None

    def discard_scratch(self) -> None:
        """Undo a partial write into :meth:`scratch` (a read that failed after writing some pixels)."""

    def result(self) -> np.ndarray:
        """The fused chunk, NaN where no layer had data."""
        raise NotImplementedError


class _FillHoles(Fuser):
    """Shared by ``first``/``last``: keep each pixel's first value, fill only what is still missing.

    Subclasses give the accumulator's ``fill`` (what "missing" looks like) and :meth:`_missing`.
    """

    def __init__(self, shape: tuple[int, int], fill: float, dtype: str | np.dtype):
        super().__init__(shape)
        self.fill = np.asarray(fill, dtype=dtype)
        self.acc = np.full(shape, self.fill, dtype=dtype)
        self._empty = True

    def _missing(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _put(self, view: np.ndarray, data: np.ndarray) -> None:
        """Copy ``data`` where ``view`` is still missing (all of it before the first layer)."""
        if self._empty:
            if not np.may_share_memory(view, data):  # else it was written in place (scratch)
                np.copyto(view, data, casting="same_kind")
        else:
            np.copyto(view, data, where=self._missing(view), casting="same_kind")
        self._empty = False

    @property
    def is_done(self) -> bool:
        """Whether no pixel is missing any more."""
        return not self._empty and not self._missing(self.acc).any()

    def scratch(self) -> np.ndarray | None:
        """The accumulator itself, before the first layer (it holds only missing values)."""
        return self.acc if self._empty else None

    def discard_scratch(self) -> None:
        """Back to missing everywhere, before the first layer."""
        if self._empty:
            self.acc.fill(self.fill)

    def pending(self) -> Region | None:
        """The box around the pixels still missing."""
        return super().pending() if self._empty else _box(self._missing(self.acc))

    def result(self) -> np.ndarray:
        return self.acc


class First(_FillHoles):
    """The first valid pixel in plan order (``last`` is the same with the order reversed)."""

    def __init__(self, shape: tuple[int, int]):
        super().__init__(shape, np.nan, "float32")

    def _missing(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(np.isnan(values))

    def feed(self, data: np.ndarray, aux: np.ndarray | None = None, region: Region | None = None) -> None:
        if data.dtype.itemsize > self.acc.dtype.itemsize:
            self.acc = self.acc.astype(data.dtype)  # a wide source (float64, 32-bit integers)
        self._put(self.acc if region is None else self.acc[region], data)


class FirstNative(_FillHoles):
    """``first``/``last`` in the band's own integer dtype: fill nodata holes, no float round trip."""

    def __init__(self, shape: tuple[int, int], dtype: str, nodata: float):
        super().__init__(shape, nodata, dtype)
        self.nodata = self.fill

    def _missing(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values == self.nodata)

    def feed(self, data: np.ndarray, aux: np.ndarray | None = None, region: Region | None = None) -> None:
        """Fill the pixels still at nodata from ``data``."""
        self._put(self.acc if region is None else self.acc[region], data)


class _Reduce(Fuser):
    func: ClassVar[np.ufunc]

    def __init__(self, shape: tuple[int, int]):
        super().__init__(shape)
        self.acc = np.full(shape, np.nan)

    def feed(self, data: np.ndarray, aux: np.ndarray | None = None, region: Region | None = None) -> None:
        view = self.acc if region is None else self.acc[region]
        type(self).func(view, data, out=view)  # fmin/fmax ignore NaN

    def result(self) -> np.ndarray:
        return self.acc


class Min(_Reduce):
    """The smallest valid value."""

    func = np.fmin


class Max(_Reduce):
    """The largest valid value."""

    func = np.fmax


class Mean(Fuser):
    """The mean of valid values."""

    def __init__(self, shape: tuple[int, int]):
        super().__init__(shape)
        self.total = np.zeros(shape)
        self.count = np.zeros(shape, dtype=np.int32)

    def feed(self, data: np.ndarray, aux: np.ndarray | None = None, region: Region | None = None) -> None:
        total = self.total if region is None else self.total[region]
        count = self.count if region is None else self.count[region]
        valid = ~np.isnan(data)
        total[valid] += data[valid]
        count += valid

    def result(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


class Count(Mean):
    """How many scenes have valid data at each pixel (0 where none)."""

    def result(self) -> np.ndarray:
        return self.count.astype(np.float64)


class _Stack(Fuser):
    def __init__(self, shape: tuple[int, int]):
        super().__init__(shape)
        self.layers: list[np.ndarray] = []

    def feed(self, data: np.ndarray, aux: np.ndarray | None = None, region: Region | None = None) -> None:
        self.layers.append(as_chunk(data, region, self.shape))

    def stack(self) -> np.ndarray:
        return np.stack(self.layers) if self.layers else np.full((1, *self.shape), np.nan)


class Median(_Stack):
    """The median of valid values."""

    def result(self) -> np.ndarray:
        stack = self.stack()
        seen = ~np.isnan(stack).all(axis=0)  # no all-NaN columns: nanmedian has nothing to warn about
        out = np.full(self.shape, np.nan, dtype=stack.dtype)
        out[seen] = np.nanmedian(stack[:, seen], axis=0)
        return out


class Callback(_Stack):
    """A user function from a (scenes, y, x) float stack with NaN to a (y, x) array."""

    def __init__(self, shape: tuple[int, int], func: Callable[[np.ndarray], np.ndarray]):
        super().__init__(shape)
        self.func = func

    def result(self) -> np.ndarray:
        out = np.asarray(self.func(self.stack()), dtype=np.float64)
        if out.shape != self.shape:
            raise InvalidInputError(f"method callable returned shape {out.shape}, expected {self.shape}")
        return out


class Highest(Fuser):
    """Per pixel, the value of the scene whose ranking band is highest (Earth Engine's qualityMosaic).

    A pixel with data but no ranking value (the ranking band ends before the data band at a scene's
    edge, or is nodata there) ranks below every ranked one: it is chosen only where no scene has both,
    so ranking never turns data into a hole. On a tie, the scene fed first wins.
    """

    needs_aux = True
    sign: ClassVar[float] = 1.0

    def __init__(self, shape: tuple[int, int]):
        super().__init__(shape)
        self.acc = np.full(shape, np.nan)
        self.best = np.full(shape, -np.inf)

    def feed(self, data: np.ndarray, aux: np.ndarray | None = None, region: Region | None = None) -> None:
        if aux is None:
            raise InvalidInputError("ranking method fed without its ranking band")
        data = as_chunk(data, region, self.shape)
        score = np.where(np.isnan(aux), -np.inf, self.sign * aux)  # unranked: below every ranked value
        better = ~np.isnan(data) & ((score > self.best) | np.isnan(self.acc))
        self.acc[better] = data[better]
        self.best[better] = score[better]

    def result(self) -> np.ndarray:
        return self.acc


class Lowest(Highest):
    """Per pixel, the value of the scene whose ranking band is lowest."""

    sign = -1.0


FUSERS: dict[str, type[Fuser]] = {
    "first": First,
    "last": First,
    "min": Min,
    "max": Max,
    "mean": Mean,
    "median": Median,
    "count": Count,
    "highest": Highest,
    "lowest": Lowest,
}


def make_fuser(method: str | Callable[[np.ndarray], np.ndarray], shape: tuple[int, int]) -> Fuser:
    """A fresh fusion strategy for one chunk."""
    if callable(method):
        return Callback(shape, method)
    name = method.split(":", 1)[0]
    try:
        return FUSERS[name](shape)
    except KeyError:
        raise InvalidInputError(f"unknown method {method!r}; choose from {', '.join(FUSERS)}") from None
