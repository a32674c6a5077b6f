"""mosaic: multi-CRS virtual mosaics.

Index scenes where they are (:class:`TileIndex`), plan only the reads a request needs, and load a
lazy, seamless xarray mosaic in any CRS (:func:`load`), or write it to Zarr or a COG (:func:`regrid`).
"""

from mosaic.api import load, plan, read_stats
from mosaic.batch import RegridReport, regrid, write_cog, write_zarr
from mosaic.errors import (
    AuthenticationError,
    ChangedSourcesError,
    ChangedSourceWarning,
    CRSAreaWarning,
    DuplicateRowsWarning,
    GDALVersionError,
    GridSizeError,
    HrefNotAllowedError,
    IncompleteMetadataWarning,
    IndexFormatError,
    InvalidInputError,
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
)
from mosaic.gti import export_gti
from mosaic.index import TileIndex
from mosaic.planner import Plan
from mosaic.records import SceneAsset, Skipped

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "CRSAreaWarning",
    "ChangedSourceWarning",
    "ChangedSourcesError",
    "DuplicateRowsWarning",
    "GDALVersionError",
    "GridSizeError",
    "HrefNotAllowedError",
    "IncompleteMetadataWarning",
    "IndexFormatError",
    "InvalidInputError",
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
    "__version__",
    "export_gti",
    "load",
    "plan",
    "read_stats",
    "regrid",
    "write_cog",
    "write_zarr",
]
