"""The planner's side of quality masks: the reads of a scene's quality bands for one of its reads.

For each scene read, one read per band the mask spec uses (:attr:`MaskSpec.bands`), of the same
scene, at full resolution (quality bands hold classes and bit flags, which averaged overviews do not
keep), covering the read's window plus the spec's dilation and one pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from affine import Affine

from mosaic.errors import InvalidMaskError
from mosaic.masks import MaskSpec, band_ref
from mosaic.planning.records import SceneAsset

if TYPE_CHECKING:
    from mosaic.planning.planner import Read

__all__ = ["check_mask_rows", "mask_assets", "mask_reads"]

PixelBox = tuple[int, int, int, int]
MakeRead = Callable[[SceneAsset, int, int, int, PixelBox], "Read"]
"""``(asset row, band, overview level, factor, window) -> Read``: the planner's own read maker."""


def mask_assets(spec: MaskSpec | None) -> set[str]:
    """The assets a mask spec reads."""
    return set() if spec is None else {band_ref(b)[0] for b in spec.bands}


def check_mask_rows(
    spec: MaskSpec, scenes: Iterable[str], rows: Mapping[tuple[str, str], SceneAsset]
) -> None:
    """Refuse a mask whose bands some scene to be read lacks (the message names one such scene).

    Args:
        spec: the mask spec.
        scenes: the ids of the scenes to be read.
        rows: the index rows of the mask assets, by (scene id, asset).
    """
    for scene in sorted(set(scenes)):
        for name in spec.bands:
            asset, number = band_ref(name)
            row = rows.get((scene, asset))
            if row is None:
                raise InvalidMaskError(
                    f"mask band {name!r}: scene {scene} has no asset {asset!r}; every scene read needs its "
                    "mask band (choose scenes that have it, or another band)"
                )
            if number > row.band_count:
                raise InvalidMaskError(
                    f"mask band {name!r}: asset {asset!r} of scene {scene} has {row.band_count} band(s)"
                )
            if row.transform is None or row.shape is None or row.href is None:
                raise InvalidMaskError(
                    f"mask band {name!r}: asset {asset!r} of scene {scene} has no file or grid in the index"
                )


@lru_cache(maxsize=256)
def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    from pyproj import CRS

    return bool(CRS.from_user_input(a).equals(CRS.from_user_input(b)))


def mask_reads(
    spec: MaskSpec,
    rec: SceneAsset,
    level: int,
    factor: int,
    window: PixelBox,
    rows: Mapping[tuple[str, str], SceneAsset],
    make: MakeRead,
) -> tuple[Read, ...]:
    """The quality-band reads for one read of ``rec`` (window ``window`` at ``level``/``factor``)."""
    out = []
    a, b, c, d, e, f = rec.transform  # type: ignore[misc]
    data = Affine(a, b, c, d, e, f) * Affine.scale(factor)
    row, col, height, width = window
    corners = [
        data * (x, y) for x in (col - 1, col + width + 1) for y in (row - 1, row + height + 1)
    ]  # one level pixel more each side: overview sizes are rounded
    for name in spec.bands:
        asset, number = band_ref(name)
        mask_row = rows[(rec.id, asset)]
        if not _same_crs(mask_row.crs, rec.crs):
            raise InvalidMaskError(
                f"mask band {name!r}: asset {asset!r} of scene {rec.id} is in another CRS than its asset "
                f"{rec.asset!r}; a mask band must share its scene's CRS"
            )
        inverse = ~Affine(*mask_row.transform)  # type: ignore[misc]
        pixels = [inverse * xy for xy in corners]
        pad = spec.dilation(name) + 1
        mh, mw = mask_row.shape  # type: ignore[misc]
        c0 = max(0, math.floor(min(p[0] for p in pixels)) - pad)
        c1 = min(mw, math.ceil(max(p[0] for p in pixels)) + pad)
        r0 = max(0, math.floor(min(p[1] for p in pixels)) - pad)
        r1 = min(mh, math.ceil(max(p[1] for p in pixels)) + pad)
        box: PixelBox = (r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else (0, 0, 0, 0)
        out.append(make(mask_row, number, -1, 1, box))
    return tuple(out)
