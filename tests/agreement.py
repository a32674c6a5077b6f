"""How close two mosaics of one grid are: GDAL's (a GTI, gdalwarp) against ours.

Nearest picks of two warpers differ where a pixel centre maps within rounding of a source pixel edge,
and footprints may differ by a pixel along scene edges; anything else is a defect. :func:`agreement`
measures those shares, :func:`assert_same_mosaic` holds them to the bounds the GTI tests use.
"""

from __future__ import annotations

import math

import numpy as np


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _valid(a: np.ndarray, nodata: float) -> np.ndarray:
    return ~np.isnan(a) if math.isnan(nodata) else (a != nodata) & ~np.isnan(a.astype(float))


def agreement(gdal: np.ndarray, ours: np.ndarray, nodata: float) -> dict[str, float]:
    """Identical share of pixels valid in both; mask differences, in all and off scene edges (2 px)."""
    vg, vo = _valid(gdal, nodata), _valid(ours, nodata)
    both = vg & vo
    same = (gdal[both] == ours[both]) | (
        np.isnan(gdal[both].astype(float)) & np.isnan(ours[both].astype(float))
    )
    edges = _grow(vo, 2) & _grow(~vo, 2)  # within 2 px of the edge of our valid area
    stats = {
        "identical": float(same.mean()) if both.any() else math.nan,
        "valid": float(vo.mean()),
        "mask_diff": int((vg != vo).sum()),
        "mask_diff_off_edges": int(((vg != vo) & ~edges).sum()),
    }
    print(stats)  # the figures, for the record (pytest -s)
    return stats


def assert_same_mosaic(gdal: np.ndarray, ours: np.ndarray, nodata: float) -> dict[str, float]:
    stats = agreement(gdal, ours, nodata)
    assert stats["valid"] > 0.2
    assert stats["identical"] >= 0.995
    assert stats["mask_diff_off_edges"] == 0  # no region nodata in one and data in the other
    assert stats["mask_diff"] <= 0.001 * gdal.size
    return stats
