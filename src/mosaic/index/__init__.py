"""The tile index stage: what every scene asset is, where, in which grid, and when.

``sources`` reads files and STAC Items (``_gti_read`` GTI files), ``geom`` turns their grids into
lon/lat footprints, ``tile_index`` holds them as a :class:`TileIndex` and ``_store`` reads and writes
its GeoParquet (one file or a partitioned folder). Nothing here plans or reads pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mosaic._lazy import attach

if TYPE_CHECKING:
    from mosaic.index.tile_index import TileIndex

_LAZY = {
    "TileIndex": "mosaic.index.tile_index",
}

__all__ = ["TileIndex"]

__getattr__, __dir__ = attach(__name__, _LAZY)
