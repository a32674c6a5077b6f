"""The I/O stage: executing one read, and everything a read needs around it.

``read`` executes a :class:`~mosaic.planning.records.Read` (GDAL window, paste or warp);
``limits`` bounds and retries reads, ``fetch`` and ``ranged`` fetch byte ranges ahead or without
headers (``cog`` holds a COG's tile layout), ``paths``/``gdalenv`` turn hrefs and credentials into
GDAL paths and settings, ``identity`` says whether a file changed, and ``runtime`` holds the only
process-wide state. Modules here import nothing from the planner but its records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mosaic._lazy import attach

if TYPE_CHECKING:
    from mosaic.io.limits import LimiterStats
    from mosaic.io.paths import gdal_path, redact, secrets_in

_LAZY = {
    "LimiterStats": "mosaic.io.limits",
    "gdal_path": "mosaic.io.paths",
    "redact": "mosaic.io.paths",
    "secrets_in": "mosaic.io.paths",
}

__all__ = ["LimiterStats", "gdal_path", "redact", "secrets_in"]

__getattr__, __dir__ = attach(__name__, _LAZY)
