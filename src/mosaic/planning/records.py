"""Immutable records that flow between mosaic's steps.

:class:`SceneAsset` is one row of the tile index: one band file of one scene, with everything the
planner needs to decide whether and how to read it, without opening the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from affine import Affine
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from mosaic.index.geom import grid_outline

__all__ = ["SceneAsset", "Skipped", "crs_to_string"]


def crs_to_string(crs: object) -> str:
    """The CRS as ``"AUTHORITY:CODE"`` when it is exactly one, else as WKT2 (2019).

    Only an exact match (confidence 100) counts, so a custom CRS that merely resembles an EPSG one
    keeps its own definition.
    """
    parsed = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    authority = parsed.to_authority(min_confidence=100)
    if authority is not None:
        return f"{authority[0]}:{authority[1]}"
    return parsed.to_wkt("WKT2_2019")


@dataclass(frozen=True, slots=True)
class SceneAsset:
    """One band file (asset) of one scene: a tile index row.

    Attributes:
        id: the scene id (STAC Item id, or derived from the file name).
        asset: the asset (band file) name within the scene.
        href: where the pixels are (path, URL or GDAL ``/vsi`` path); None for a planning-only footprint.
        crs: ``"EPSG:32633"`` where an authority code exists, else WKT2.
        transform: the native affine transform as its six coefficients (a, b, c, d, e, f).
        shape: (height, width) in pixels.
        footprint: where the data are, in lon/lat, split at the antimeridian.
        datetime: acquisition time (UTC), or None.
        start_datetime: start of the acquisition interval where one is given.
        end_datetime: end of the acquisition interval where one is given.
        band_count: number of bands in the file.
        dtype: numpy dtype name of the pixels; None where neither the catalogue nor a file header could
            tell (see :meth:`~mosaic.TileIndex.from_stac`).
        nodata: the source nodata value (may be NaN): the file's, the catalogue's, or the override given
            when the index was built (``nodata=``); None where there is none.
        overviews: overview decimation factors (e.g. (2, 4, 8)); empty where the file has none, None
            where unknown (STAC Items do not say; GDAL then picks the overview at read time).
        band_names: names of the bands, where known.
        common_names: the bands' spectral common names (STAC ``eo:bands`` ``common_name``, or
            ``eo:common_name`` of STAC 1.1 ``bands``: ``"red"``, ``"nir"``, ...), one per band with ``""``
            for a band without one; empty when no band has one.
        scale: multiplier from stored to physical values, where given.
        offset: offset from stored to physical values, where given.
        collection: the STAC collection id, where known.
        properties: the Item's properties as JSON text (for grouping by a property), where known.
        identity: what the file was when indexed (:mod:`mosaic.io.identity`), e.g.
            ``"size=4564;mtime=2026-12-05T06:30:07.123456Z"``: its size and modification time (a local
            file's stat, or what GDAL learnt opening a URL), or the STAC ``file:size``,
            ``file:checksum`` or ``updated``; None where unknown (indexes of format 2 and older,
            footprints without files). The reader warns when a file's size or time differ from it.
        tiles: the file's tile layout (:mod:`mosaic.io.cog`, recorded with ``tile_ranges=True``): where
            each tile of each level is and how to decode it, so that a read fetches its tiles with no
            header request; None where not recorded (GDAL then opens the file).
    """

    id: str
    asset: str
    href: str | None
    crs: str
    transform: tuple[float, float, float, float, float, float] | None
    shape: tuple[int, int] | None
    footprint: BaseGeometry = field(compare=False)
    datetime: pd.Timestamp | None = None
    start_datetime: pd.Timestamp | None = None
    end_datetime: pd.Timestamp | None = None
    band_count: int = 1
    dtype: str | None = None
    nodata: float | None = None
    overviews: tuple[int, ...] | None = ()
    band_names: tuple[str, ...] = ()
    common_names: tuple[str, ...] = ()
    scale: float | None = None
    offset: float | None = None
    collection: str | None = None
    properties: str | None = field(default=None, repr=False)
    identity: str | None = field(default=None, repr=False)
    tiles: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the href redacted: dask and distributed print task arguments
        from mosaic._repr import record_repr

        return record_repr(self)

    @property
    def affine(self) -> Affine | None:
        """The native transform as an :class:`affine.Affine`."""
        return None if self.transform is None else Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """Native bounds (minx, miny, maxx, maxy) of the pixel grid."""
        if self.transform is None or self.shape is None:
            return None
        return tuple(grid_outline(self.transform, self.shape).bounds)

    @property
    def resolution(self) -> tuple[float, float] | None:
        """Pixel size (x, y) in native CRS units, both positive."""
        if self.transform is None:
            return None
        a, b, _, d, e, _ = self.transform
        return (float((a * a + d * d) ** 0.5), float((b * b + e * e) ** 0.5))


@dataclass(frozen=True, slots=True)
class Skipped:
    """An input left out under ``on_error="skip"``, and why."""

    href: str
    reason: str

    def __str__(self) -> str:
        from mosaic.io.paths import redact

        return redact(f"{self.href}: {self.reason}")

    def __repr__(self) -> str:
        from mosaic._repr import record_repr

        return record_repr(self)
