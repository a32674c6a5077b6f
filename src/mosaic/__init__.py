"""mosaic: multi-CRS virtual mosaics.

Index scenes where they are (:class:`TileIndex`), plan only the reads a request needs, and load a
lazy, seamless xarray mosaic in any CRS.
"""

from mosaic.errors import (
    AuthenticationError,
    GDALVersionError,
    IndexFormatError,
    InvalidInputError,
    MissingIndexError,
    MosaicError,
    MosaicWarning,
    NoDataError,
    ReadError,
    SkippedSourcesWarning,
    SourceError,
)
from mosaic.api import load, plan, read_stats
from mosaic.index import TileIndex
from mosaic.planner import Plan
from mosaic.records import SceneAsset, Skipped

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "GDALVersionError",
    "IndexFormatError",
    "InvalidInputError",
    "MissingIndexError",
    "MosaicError",
    "MosaicWarning",
    "NoDataError",
    "Plan",
    "ReadError",
    "SceneAsset",
    "SkippedSourcesWarning",
    "Skipped",
    "SourceError",
    "TileIndex",
    "load",
    "plan",
    "read_stats",
    "__version__",
]
