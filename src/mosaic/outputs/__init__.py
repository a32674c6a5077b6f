"""The output stage: what a plan becomes besides a lazy Dataset.

``batch`` regrids to Zarr or COG region by region (``_batch_exec`` runs the regions, ``_lease`` keeps a
store honest against a second writer, ``mosaic.io._durable`` across crashes); ``gti`` exports GDAL GTI files
(``_gti_xml`` writes their warped VRTs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mosaic._lazy import attach

if TYPE_CHECKING:
    from mosaic.outputs.batch import RegridReport, regrid, write_cog, write_zarr
    from mosaic.outputs.gti import export_gti

_LAZY = {
    "RegridReport": "mosaic.outputs.batch",
    "regrid": "mosaic.outputs.batch",
    "write_cog": "mosaic.outputs.batch",
    "write_zarr": "mosaic.outputs.batch",
    "export_gti": "mosaic.outputs.gti",
}

__all__ = ["RegridReport", "export_gti", "regrid", "write_cog", "write_zarr"]

__getattr__, __dir__ = attach(__name__, _LAZY)
