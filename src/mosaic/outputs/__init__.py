"""The output stage: what a plan becomes besides a lazy Dataset.

``batch`` regrids to Zarr or COG region by region (``_batch_exec`` runs the regions, ``_lease`` keeps
a store honest against a second writer, ``mosaic.io._durable`` across crashes); ``gti`` exports GDAL
GTI files (``_gti_xml`` writes their warped VRTs); ``virtual`` writes virtual Zarr stores pointing at
the COGs' own tiles; ``tiles`` renders web map tiles for :mod:`mosaic.serve`; ``sampling`` reads time
series at points; ``tree`` opens every native grid as its own cube.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mosaic._lazy import attach

if TYPE_CHECKING:
    from mosaic.outputs.batch import RegridReport, regrid, write_cog, write_zarr
    from mosaic.outputs.gti import export_gti
    from mosaic.outputs.sampling import sample
    from mosaic.outputs.tree import open_tree
    from mosaic.outputs.virtual import export_virtual

_LAZY = {
    "RegridReport": "mosaic.outputs.batch",
    "regrid": "mosaic.outputs.batch",
    "write_cog": "mosaic.outputs.batch",
    "write_zarr": "mosaic.outputs.batch",
    "export_gti": "mosaic.outputs.gti",
    "export_virtual": "mosaic.outputs.virtual",
    "sample": "mosaic.outputs.sampling",
    "open_tree": "mosaic.outputs.tree",
}

__all__ = [
    "RegridReport",
    "export_gti",
    "export_virtual",
    "open_tree",
    "regrid",
    "sample",
    "write_cog",
    "write_zarr",
]

__getattr__, __dir__ = attach(__name__, _LAZY)
