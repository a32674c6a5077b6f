"""The real data the tests use, committed in ``tests/data/real/`` (origins and licences in its README).

Everything here works from a fresh clone: no test reads anything outside the repository.
"""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

REAL = Path(__file__).resolve().parent / "data" / "real"
L7 = REAL / "L7_ETMs.tif"
"""Real Landsat 7 ETM+ subset near Olinda, Brazil: 349 x 352, 6 bands uint8, 28.5 m, EPSG:31985, no nodata
tag, no 0 pixel."""
DEM = REAL / "olinda_dem_utm25s.tif"
"""A real DEM of the same area: 111 x 111 float32, 90 m, a custom UTM 25S CRS without an EPSG code."""
SENTINEL2_ITEMS = REAL / "sentinel-2-l2a-pc.json"
LANDSAT_ITEMS = REAL / "landsat-c2-l2-pc.json"
MGRS_ARCHIVE = REAL / "sentinel2_mgrs_grid.tar.xz"
"""The Sentinel-2 MGRS tile grid shapefile, byte for byte, in an xz-compressed tar (8.3 MB -> 0.36 MB)."""


def mgrs_shapefile(folder: Path) -> Path:
    """Unpack the MGRS grid shapefile into ``folder`` (once) and return the ``.shp`` path."""
    shp = Path(folder) / "sentinel2_grid.shp"
    if not shp.exists():
        with tarfile.open(MGRS_ARCHIVE) as archive:
            archive.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return shp


def fill_zero_scenes(folder: Path, *, tilt_degrees: float = 12.0) -> list[Path]:
    """Two overlapping scenes as Landsat Level-1 files come: a tilted swath of data, 0 around, no nodata tag.

    Cut from the real Landsat 7 subset (which holds no 0): scene ``a`` is band 1 of rows 0-300, cols
    0-260; scene ``b`` band 4 of rows 40-352, cols 90-349, so the two disagree where they overlap. Each
    keeps the data inside a rectangle rotated by ``tilt_degrees`` and sets 0 outside it, as the fill of a
    real scene, without declaring 0 as nodata. Same CRS and pixel grid as the source (28.5 m, EPSG:31985),
    TIFF ``DATETIME`` tags 2001-07-01 (a) and 2001-07-17 (b).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cuts = (
        ("a", 1, (0, 300), (0, 260), "2001:07:01 12:30:00"),
        ("b", 4, (40, 352), (90, 349), "2001:07:17 12:30:00"),
    )
    paths = []
    with rasterio.open(L7) as src:
        for name, band, (r0, r1), (c0, c1), when in cuts:
            data = src.read(band, window=((r0, r1), (c0, c1)))
            data[~_tilted_swath(data.shape, tilt_degrees)] = 0
            path = folder / f"L7_{name}.tif"
            profile = {
                "driver": "GTiff",
                "width": c1 - c0,
                "height": r1 - r0,
                "count": 1,
                "dtype": "uint8",
                "crs": src.crs,
                "transform": src.transform * Affine.translation(c0, r0),
                "tiled": True,
                "blockxsize": 64,
                "blockysize": 64,
                "compress": "deflate",
            }
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data, 1)
                dst.update_tags(TIFFTAG_DATETIME=when)
            paths.append(path)
    return paths


def _tilted_swath(shape: tuple[int, int], degrees: float) -> np.ndarray:
    """True inside a rectangle of ~80% x 90% of the grid, rotated by ``degrees`` about its centre."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    yy -= (h - 1) / 2
    xx -= (w - 1) / 2
    t = math.radians(degrees)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    return (np.abs(u) < 0.40 * w) & (np.abs(v) < 0.45 * h)


def sentinel2_b01_items(folder: Path) -> list[dict]:
    """The real Sentinel-2 Items with their B01 asset pointing at files written here on exactly the
    Items' grids (1830 x 1830 at 60 m, two UTM zones; tiled 256, nodata 0, rows 0-99 nodata), in place
    of the archive the tests cannot reach."""
    import json

    items = json.loads(SENTINEL2_ITEMS.read_text())
    rng = np.random.default_rng(1)
    for item in items:
        asset = item["assets"]["B01"]
        data = rng.integers(1, 10_000, asset["proj:shape"], dtype="uint16")
        data[:100] = 0  # nodata rows
        path = folder / f"{item['properties']['s2:mgrs_tile']}_B01.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            dtype="uint16",
            count=1,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            height=data.shape[0],
            width=data.shape[1],
            crs=f"EPSG:{item['properties']['proj:epsg']}",
            transform=Affine(*asset["proj:transform"][:6]),
            nodata=0,
        ) as dst:
            dst.write(data, 1)
        asset["href"] = str(path)
    return items
