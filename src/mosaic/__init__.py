"""mosaic: multi-CRS virtual mosaics.

Index scenes where they are (:class:`TileIndex`), plan only the reads a request needs, and load a
lazy, seamless xarray mosaic in any CRS (:func:`load`), or write it to Zarr or a COG (:func:`regrid`).

``import mosaic`` is cheap: the errors and warnings are imported with the package, every other public
name (and the engine behind it: xarray, pandas, dask, pyarrow, GDAL) on first use (PEP 562, as
scientific-python's ``lazy_loader``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from mosaic.api import load, plan, read_stats
    from mosaic.batch import RegridReport, regrid, write_cog, write_zarr
    from mosaic.gti import export_gti
    from mosaic.index import TileIndex
    from mosaic.planner import Plan
    from mosaic.records import SceneAsset, Skipped

__version__ = "0.1.0"

_LAZY = {
    "load": "mosaic.api",
    "plan": "mosaic.api",
    "read_stats": "mosaic.api",
    "RegridReport": "mosaic.batch",
    "regrid": "mosaic.batch",
    "write_cog": "mosaic.batch",
    "write_zarr": "mosaic.batch",
    "export_gti": "mosaic.gti",
    "TileIndex": "mosaic.index",
    "Plan": "mosaic.planner",
    "SceneAsset": "mosaic.records",
    "Skipped": "mosaic.records",
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


def __getattr__(name: str) -> Any:
    """A lazily exported name (imported and cached here on first use), or a submodule (``mosaic.api``)."""
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if not name.startswith("__"):  # `import mosaic; mosaic.synthetic...` as before the package went lazy
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
