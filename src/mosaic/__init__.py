"""mosaic: multi-CRS virtual mosaics.

Index scenes where they are (:class:`TileIndex`), plan only the reads a request needs, and load a
lazy, seamless xarray mosaic in any CRS (:func:`load`), or write it to Zarr or a COG (:func:`regrid`);
the time series at points across CRSs (:func:`sample`).

``import mosaic`` is cheap: the errors and warnings are imported with the package, every other public
name (and the engine behind it: xarray, pandas, dask, pyarrow, GDAL) on first use (PEP 562, as
scientific-python's ``lazy_loader``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mosaic._lazy import attach
from mosaic.errors import (
    AuthenticationError,
    ChangedSourcesError,
    ChangedSourceWarning,
    CRSAreaWarning,
    DuplicateRowsWarning,
    FilterError,
    GDALVersionError,
    GridSizeError,
    HrefNotAllowedError,
    IncompleteMetadataWarning,
    IndexFormatError,
    InvalidInputError,
    InvalidMaskError,
    MissingIndexError,
    MosaicError,
    MosaicWarning,
    NoDataError,
    OutputError,
    OutputLockedError,
    ReadError,
    ReadFailedWarning,
    RegridRecoveryWarning,
    SecretHrefWarning,
    SkippedSourcesWarning,
    SourceError,
    VirtualStoreError,
)

if TYPE_CHECKING:
    from mosaic.api import load, plan, read_stats
    from mosaic.index.tile_index import TileIndex
    from mosaic.outputs.batch import RegridReport, regrid, write_cog, write_zarr
    from mosaic.outputs.gti import export_gti
    from mosaic.outputs.sampling import sample
    from mosaic.outputs.tree import open_tree
    from mosaic.outputs.virtual import export_virtual
    from mosaic.planning.planner import Plan
    from mosaic.planning.records import SceneAsset, Skipped

__version__ = "0.1.0"

_LAZY = {
    "load": "mosaic.api",
    "plan": "mosaic.api",
    "read_stats": "mosaic.api",
    "RegridReport": "mosaic.outputs.batch",
    "regrid": "mosaic.outputs.batch",
    "write_cog": "mosaic.outputs.batch",
    "write_zarr": "mosaic.outputs.batch",
    "export_gti": "mosaic.outputs.gti",
    "TileIndex": "mosaic.index.tile_index",
    "Plan": "mosaic.planning.planner",
    "SceneAsset": "mosaic.planning.records",
    "Skipped": "mosaic.planning.records",
    "export_virtual": "mosaic.outputs.virtual",
    "sample": "mosaic.outputs.sampling",
    "open_tree": "mosaic.outputs.tree",
}
"""Public names imported on first use, and the module each comes from."""

__all__ = [
    "AuthenticationError",
    "CRSAreaWarning",
    "ChangedSourceWarning",
    "ChangedSourcesError",
    "DuplicateRowsWarning",
    "FilterError",
    "GDALVersionError",
    "GridSizeError",
    "HrefNotAllowedError",
    "IncompleteMetadataWarning",
    "IndexFormatError",
    "InvalidInputError",
    "InvalidMaskError",
    "MissingIndexError",
    "MosaicError",
    "MosaicWarning",
    "NoDataError",
    "OutputError",
    "OutputLockedError",
    "Plan",
    "ReadError",
    "ReadFailedWarning",
    "RegridRecoveryWarning",
    "RegridReport",
    "SceneAsset",
    "SecretHrefWarning",
    "Skipped",
    "SkippedSourcesWarning",
    "SourceError",
    "TileIndex",
    "VirtualStoreError",
    "__version__",
    "export_gti",
    "export_virtual",
    "load",
    "open_tree",
    "plan",
    "read_stats",
    "regrid",
    "sample",
    "write_cog",
    "write_zarr",
]


__getattr__, __dir__ = attach(__name__, _LAZY)
