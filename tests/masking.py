"""What the tests of quality masks share: the cloudy seam scenes, and files blanked where a mask drops.

A masked read must equal an unmasked read of copies of the files whose masked pixels were set to
nodata; :func:`blanked_index` makes those copies with NumPy and rasterio alone (the quality pixel
holding each data pixel's centre, dilated by a brute-force :func:`disc`), so the check does not go
through mosaic's own mask code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pystac
import rasterio

from mosaic import TileIndex
from mosaic import synthetic as syn

SIZE = 192  # B02 pixels a side: 80 m pixels, SCL at 160 m, scenes of 15.36 km
SEAM_BBOX = (11.88, 45.40, 12.12, 45.58)
CLOUDY = 4500.0  # above every truth value, below CLOUD_VALUE


def cloudy_specs() -> list[syn.SceneSpec]:
    """The demo's scenes across the 12E seam with clouds (2 CRSs x 3 dates, SCL and QA_PIXEL bands)."""
    return [s for s in syn.demo_specs(SIZE, clouds=True) if "seam12" in s.id]


def disc(flags: np.ndarray, radius: int) -> np.ndarray:
    """Brute-force dilation by the disc dy^2 + dx^2 <= radius^2."""
    out = flags.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            shifted = np.zeros_like(flags)
            ys = slice(max(dy, 0), flags.shape[0] + min(dy, 0))
            yd = slice(max(-dy, 0), flags.shape[0] + min(-dy, 0))
            xs = slice(max(dx, 0), flags.shape[1] + min(dx, 0))
            xd = slice(max(-dx, 0), flags.shape[1] + min(-dx, 0))
            shifted[ys, xs] = flags[yd, xd]
            out |= shifted
    return out


def blanked_index(
    items: list[pystac.Item],
    folder: Path,
    data: str,
    quality: str,
    drop: Callable[[np.ndarray], np.ndarray],
    radius: int = 0,
) -> TileIndex:
    """The index of copies of the ``data`` files whose pixels ``drop`` flags (on ``quality``) are nodata.

    ``drop(values) -> flags`` on the quality band's own grid; flags are dilated by ``radius`` there
    (a disc), no-data quality pixels added (not dilated), then each data pixel takes the quality pixel
    holding its centre.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dicts = []
    for item in items:
        with rasterio.open(item.assets[quality].href) as q:
            qa, q_nodata, q_res = q.read(1), q.nodata, q.res[0]
        nodata = qa == q_nodata
        flags = disc(drop(qa) & ~nodata, radius) | nodata  # (no data: not dilated)
        with rasterio.open(item.assets[data].href) as src:
            pixels, profile, d_res = src.read(1), src.profile, src.res[0]
        ratio = d_res / q_res
        rows = np.floor((np.arange(pixels.shape[0]) + 0.5) * ratio).astype(int)
        cols = np.floor((np.arange(pixels.shape[1]) + 0.5) * ratio).astype(int)
        pixels = np.where(flags[np.ix_(rows, cols)], profile["nodata"], pixels)
        path = folder / f"{item.id}-{data}.tif"
        profile.update(driver="GTiff")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(pixels, 1)
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["assets"][data]["href"] = str(path)
        dicts.append(d)
    return TileIndex.from_stac(dicts)
