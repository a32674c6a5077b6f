"""What recording tile layouts (``tile_ranges=True``) adds to an index, per row and on 1.3 M rows.

Two measurements:

* **real files**: COGs written by GDAL's COG driver from real-looking data (the demo collection's
  1024 px files, and a Sentinel-2-sized 10980 x 10980 uint16 file with 1024 px tiles and its 4
  overviews, DEFLATE + predictor 2, values with noise so the tiles' compressed sizes vary as real ones
  do): the encoded layout's bytes;
* **the index**: the 1.3 M-row layout of ``index_scale.py`` (rows of the real MGRS grid over a year),
  a ``tiles`` column filled with Sentinel-2-sized layouts, each with its own tile sizes, written with
  :meth:`TileIndex.write` (zstd, its row groups) beside the same rows without it: extra bytes per row.
  ``--rows`` takes a sample instead of the whole year; the figure per row does not depend on it.

Run from the project root: ``.venv/bin/python benchmarks/tile_layout_size.py [--rows 200000]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
from rasterio.transform import from_origin

from mosaic.io.cog import Level, TileLayout, encode, parse_tiff

S2 = 10980
TILE = 1024


def s2_cog(path: Path) -> Path:
    """A Sentinel-2-sized band: smooth fields plus noise, as real reflectances compress."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(600, 2400, (S2 // 366 + 1, S2 // 366 + 1), dtype=np.uint16)
    data = np.repeat(np.repeat(coarse, 366, axis=0), 366, axis=1)[:S2, :S2]
    data += rng.integers(0, 80, (S2, S2), dtype=np.uint16)
    profile = dict(
        driver="COG", width=S2, height=S2, count=1, dtype="uint16", crs="EPSG:32632", nodata=0,
        transform=from_origin(600000, 5000040, 10, 10), BLOCKSIZE=TILE, COMPRESS="DEFLATE", PREDICTOR=2,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def layout_of(path: Path) -> TileLayout:
    raw = path.read_bytes()
    with rasterio.open(path) as src:
        return parse_tiff(lambda o, n: raw[o : o + n], tuple(src.transform)[:6])


def resampled(layout: TileLayout, rng: np.random.Generator) -> bytes:
    """``layout`` with tile sizes drawn around the real ones (each file's tiles differ), encoded."""
    levels = []
    offset = 16_384
    for lv in layout.levels:
        sizes = (lv.sizes.astype(np.float64) * rng.uniform(0.5, 1.5, lv.sizes.size)).astype(np.uint64)
        offsets = offset + np.concatenate([[0], np.cumsum(sizes[:-1] + 8)]).astype(np.uint64)
        offset = int(offsets[-1] + sizes[-1] + 8)
        levels.append(Level(lv.height, lv.width, offsets, sizes))
    return encode(replace(layout, levels=tuple(levels)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=0, help="rows of the year's index to use (0: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s2 = layout_of(s2_cog(Path(tmp) / "s2.tif"))
    tiles = sum(lv.offsets.size for lv in s2.levels)
    blob = encode(s2)
    print(f"Sentinel-2-sized COG: {len(s2.levels)} levels, {tiles} tiles, layout {len(blob)} bytes "
          f"({len(blob) / tiles:.2f} bytes a tile)")  # fmt: skip

    import index_scale

    from mosaic.index import TileIndex

    year = index_scale.replicate(index_scale.base_index(), index_scale.dates())
    if args.rows:
        year = year.take(np.arange(args.rows))
    rng = np.random.default_rng(1)
    pool = [resampled(s2, rng) for _ in range(2000)]
    column = pa.array([pool[i % len(pool)] for i in range(len(year))], type=pa.binary())
    table = year.table
    with_tiles = table.set_column(table.schema.get_field_index("tiles"), "tiles", column)
    with tempfile.TemporaryDirectory() as tmp:
        plain = year.write(Path(tmp) / "plain.parquet")
        ranged = TileIndex(with_tiles, year.footprints, source=None).write(Path(tmp) / "ranged.parquet")
        a, b = plain.stat().st_size, ranged.stat().st_size
    rows = len(table)
    print(f"{rows} rows: index {a / 1e6:.1f} MB, with tile layouts {b / 1e6:.1f} MB: "
          f"+{(b - a) / rows:.0f} bytes a row (+{100 * (b - a) / a:.0f}%), "
          f"{(b - a) / rows * 1_340_000 / 1e6:.0f} MB on 1.34 M rows")  # fmt: skip
    print(
        f"mean layout {np.mean([len(p) for p in pool]):.0f} bytes, {math.ceil(S2 / TILE) ** 2} full-res tiles"
    )


if __name__ == "__main__":
    main()
