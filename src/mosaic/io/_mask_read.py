"""The reader's side of quality masks: read a scene's mask bands and drop what the mask drops.

:class:`SceneMasker` is what :func:`mosaic.io.read.warp_read` calls with a read's pixels on the read's
own grid (its window of the file or overview, before any paste or warp): it reads the read's mask
bands (:attr:`mosaic.planning.planner.Read.masks`, full resolution), evaluates the spec on each band's grid
with :func:`mosaic.masks.masked`, takes for each pixel the mask pixel holding its centre (nearest),
and sets the dropped pixels to no data. :func:`fraction_array` is the optional ``mask_fraction``
output variable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine

from mosaic.auth import Profile
from mosaic.io.limits import ReadLimiter
from mosaic.io.read import read_window
from mosaic.masks import MaskSpec, masked

if TYPE_CHECKING:
    import dask.array as da

    from mosaic.planning.planner import Plan, Read

__all__ = ["FRACTION", "SceneMasker", "fraction_array", "nearest_flags", "scene_mask"]

FRACTION = "mask_fraction"
"""The name of the output variable :func:`fraction_array` makes."""


def nearest_flags(flags: np.ndarray, src: Affine, shape: tuple[int, int], dst: Affine) -> np.ndarray:
    """``flags`` (on the grid of transform ``src``) taken to a grid of ``shape`` and transform ``dst``.

    Each destination pixel takes the source pixel holding its centre (nearest, in one CRS); centres
    beyond the source array are True (unknown counts as dropped).
    """
    m = ~src * dst  # destination pixel -> source pixel coordinates
    rows, cols = shape
    eps = 1e-6  # a centre on a source pixel edge goes to the pixel after it, whatever the rounding
    if m.b == 0 and m.d == 0:  # both grids north-up: one index per row and per column
        ci = np.floor(m.a * (np.arange(cols) + 0.5) + m.c + eps).astype(np.int64)
        ri = np.floor(m.e * (np.arange(rows) + 0.5) + m.f + eps).astype(np.int64)
        col_ok = (ci >= 0) & (ci < flags.shape[1])
        row_ok = (ri >= 0) & (ri < flags.shape[0])
        out = np.ones(shape, dtype=bool)
        if col_ok.any() and row_ok.any():
            inner = flags[np.ix_(ri[row_ok], ci[col_ok])]
            out[np.ix_(row_ok, col_ok)] = inner
        return out
    jj, ii = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    ci = np.floor(m.a * jj + m.b * ii + m.c + eps).astype(np.int64)
    ri = np.floor(m.d * jj + m.e * ii + m.f + eps).astype(np.int64)
    ok = (ci >= 0) & (ci < flags.shape[1]) & (ri >= 0) & (ri < flags.shape[0])
    out = np.ones(shape, dtype=bool)
    out[ok] = flags[ri[ok], ci[ok]]
    return out


def scene_mask(
    spec: MaskSpec,
    read: Read,
    shape: tuple[int, int],
    transform: Affine,
    limiter: ReadLimiter,
    auth: Sequence[Profile] = (),
) -> np.ndarray:
    """Where ``spec`` drops the pixels of ``read``'s window (``shape`` at ``transform``): True = dropped."""
    values: dict[str, np.ndarray] = {}
    grids: dict[str, Affine] = {}
    for name, mask_read in zip(spec.bands, read.masks, strict=True):
        fetched = read_window(mask_read, limiter, auth=auth) if mask_read.pixels else None
        if fetched is None:  # the mask band does not reach the window: nothing says it is clear
            values[name], grids[name] = np.full((1, 1), np.nan, np.float32), Affine.translation(math.inf, 0)
            continue
        values[name], grids[name] = fetched

    def to_target(name: str, flags: np.ndarray) -> np.ndarray:
        if not math.isfinite(grids[name].c):
            return np.ones(shape, dtype=bool)
        return nearest_flags(flags, grids[name], shape, transform)

    return masked(spec, values, to_target=to_target)


@dataclass(frozen=True)
class SceneMasker:
    """Sets the pixels a read's quality mask drops to no data (see :data:`mosaic.io.read.Masker`).

    With ``fraction``, the pixels with data become 1.0 where the mask drops them and 0.0 where it
    keeps them, so that the ``mean`` of the layers is the fraction of scenes dropped.
    """

    spec: MaskSpec
    limiter: ReadLimiter
    auth: tuple[Profile, ...] = ()
    fraction: bool = False

    def __call__(self, read: Read, data: np.ndarray, transform: Affine, fill: float) -> None:
        if data.size == 0:
            return
        drop = scene_mask(self.spec, read, data.shape, transform, self.limiter, self.auth)
        if self.fraction:
            valid = ~np.isnan(data)
            data[valid] = drop[valid]
            return
        data[drop] = fill


def fraction_array(plan: Plan, failures: str = "", *, plan_token: str | None = None) -> da.Array:
    """The ``mask_fraction`` (time, y, x) float32 array of ``plan``.

    Per pixel, the share of the scenes with data there (in the plan's first band) that the mask drops;
    NaN where no scene has data.
    """
    from mosaic.graph import band_array
    from mosaic.planning.bands import BandSpec

    first = plan.bands[0]
    spec = BandSpec(
        name=FRACTION,
        asset=first.asset,
        band=first.band,
        dtype="float32",
        nodata=math.nan,
        work_dtype="float32",
        resampling="nearest",
    )
    tasks = tuple(
        dataclasses.replace(
            task,
            band=FRACTION,
            reads=tuple(dataclasses.replace(r, to_physical=None) for r in task.reads),
            aux=(),
        )
        for task in plan.tasks
        if task.band == first.name
    )
    counted = dataclasses.replace(plan, bands=(spec,), tasks=tasks, method="mean", mask_fraction=False)
    from dask.base import tokenize

    token = plan_token or tokenize(plan)
    return band_array(counted, spec, failures, plan_token=f"{token}-fraction", mask_as="fraction")
