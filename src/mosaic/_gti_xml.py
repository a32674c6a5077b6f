"""The GDAL-facing text of a GTI export: layer metadata, per-tile warped VRTs, the ``.gti`` XML wrapper.

Private to :mod:`mosaic.gti`. A tile GDAL would have to warp is written as an inline
``VRTWarpedDataset`` on a window of the mosaic grid, with mosaic's warp tolerance
(:data:`mosaic.read.WARP_TOLERANCE`) and, where :func:`mosaic.load` would read an overview, that
overview (``OVERVIEW_LEVEL`` open option): GDAL then warps as mosaic's reader does.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from mosaic.bands import to_physical
from mosaic.errors import InvalidInputError, SourceError
from mosaic.paths import gdal_path
from mosaic.read import GDAL_TYPES, WARP_TOLERANCE
from mosaic.records import SceneAsset

__all__ = ["Band", "gti_metadata", "gti_xml", "warped_vrt"]


def _num(value: float) -> str:
    """A number as GDAL parses it back exactly: ``nan``, an integer, or Python's shortest repr."""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


@dataclasses.dataclass(frozen=True, slots=True)
class Band:
    """What GDAL must know about one exported asset, as :func:`mosaic.load` would make it."""

    asset: str
    dtype: str
    count: int
    nodata: float | None
    scale: float | None
    offset: float | None
    names: tuple[str, ...]

    @classmethod
    def of(cls, asset: str, rows: Sequence[SceneAsset]) -> Band:
        types = {r.dtype for r in rows if r.dtype}
        dtype = np.result_type(*types) if types else np.dtype("float32")
        nodatas = {"nan" if r.nodata is not None and math.isnan(r.nodata) else r.nodata for r in rows}
        if dtype.kind == "f":
            nodata: float | None = math.nan
        elif len(nodatas) == 1 and None not in nodatas and "nan" not in nodatas:
            nodata = float(next(iter(nodatas)))  # type: ignore[arg-type]
        else:
            nodata = 0.0  # as mosaic.load for integer bands whose sources disagree
        pairs = sorted({to_physical(r) for r in rows})
        if len(pairs) > 1:
            raise InvalidInputError(
                f"asset {asset!r}: its scenes store values with different scale/offset {pairs}; a GTI has "
                "one per band, so GDAL would mix stored values of different meaning. Export the scenes of "
                "each scale/offset separately, or use mosaic.load, which converts each scene to physical "
                "values"
            )
        scale, offset = rows[0].scale, rows[0].offset
        names = next((r.band_names for r in rows if r.band_names), ())
        return cls(asset, dtype.name, max(r.band_count for r in rows), nodata, scale, offset, names)

    @property
    def gdal_type(self) -> str:
        if self.dtype not in GDAL_TYPES:
            raise InvalidInputError(f"asset {self.asset!r}: GDAL has no data type for numpy {self.dtype}")
        return GDAL_TYPES[self.dtype]


def _floats(values: Sequence[float]) -> str:
    return ",".join(repr(float(v)) for v in values)


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def _overview(rec: SceneAsset, gbox: GeoBox, extent: Any) -> tuple[int, tuple[float, ...]]:
    """The overview level mosaic.load reads the tile at on this grid, and that level's transform.

    As the planner: the coarsest overview not coarser than the target pixel (local scale at the
    tile's centre); when the index does not know the overviews, the largest power of two, resolved
    against the file's overviews as the reader does. Only then, or to get an overview's exact grid, is
    the file opened.
    """
    aff = gbox.affine
    x, y = extent.centroid.x, extent.centroid.y
    with np.errstate(all="ignore"):
        sx, sy = _transformer(gbox.crs.to_wkt(), rec.crs).transform(  # type: ignore[union-attr]
            [x, x + aff.a, x], [y, y, y + aff.e], errcheck=False
        )
    scale = math.sqrt(math.hypot(sx[1] - sx[0], sy[1] - sy[0]) * math.hypot(sx[2] - sx[0], sy[2] - sy[0]))
    ratio = scale / min(rec.resolution or (1.0,))
    known = rec.overviews is not None
    cap = ratio * (1 + 1e-6) if known else 2.0 ** math.floor(math.log2(max(ratio, 1.0)) + 1e-9)
    if not math.isfinite(ratio) or cap < 2 or (known and not any(f <= cap for f in rec.overviews or ())):
        return -1, tuple(rec.transform or ())
    href = gdal_path(rec.href)  # type: ignore[arg-type]
    try:
        with rasterio.open(href) as src:
            level = max((i for i, f in enumerate(src.overviews(1)) if f <= cap), default=-1)
        if level < 0:
            return -1, tuple(rec.transform or ())
        with rasterio.open(href, overview_level=level) as ovr:
            return level, tuple(ovr.transform)[:6]
    except rasterio.errors.RasterioIOError as exc:
        raise SourceError(href, f"cannot be opened to find its overviews ({exc})", scene_id=rec.id) from exc


def warped_vrt(rec: SceneAsset, band: Band, gbox: GeoBox, extent: Any, srs: str) -> str | None:
    """The tile as an inline warped VRT on the window of the mosaic grid its ``extent`` covers."""
    aff, (ny, nx) = gbox.affine, gbox.shape
    x0, y0, x1, y1 = extent.bounds
    c0, c1 = max(0, math.floor((x0 - aff.c) / aff.a)), min(nx, math.ceil((x1 - aff.c) / aff.a))
    r0, r1 = max(0, math.floor((y1 - aff.f) / aff.e)), min(ny, math.ceil((y0 - aff.f) / aff.e))
    if c1 <= c0 or r1 <= r0:
        return None
    dst = (aff.c + c0 * aff.a, aff.a, 0.0, aff.f + r0 * aff.e, 0.0, aff.e)
    level, (sa, sb, sc, sd, se, sf) = _overview(rec, gbox, extent)
    root = ET.Element("VRTDataset", rasterXSize=str(c1 - c0), rasterYSize=str(r1 - r0))
    root.set("subClass", "VRTWarpedDataset")
    ET.SubElement(root, "SRS").text = srs
    ET.SubElement(root, "GeoTransform").text = _floats(dst)
    bands = range(1, min(rec.band_count, band.count) + 1)
    for i in bands:
        vrt_band = ET.SubElement(root, "VRTRasterBand", dataType=band.gdal_type, band=str(i))
        vrt_band.set("subClass", "VRTWarpedRasterBand")
        if band.nodata is not None:
            ET.SubElement(vrt_band, "NoDataValue").text = _num(band.nodata)
    warp = ET.SubElement(root, "GDALWarpOptions")
    ET.SubElement(warp, "ResampleAlg").text = "NearestNeighbour"
    ET.SubElement(warp, "WorkingDataType").text = band.gdal_type
    for key, value in (("INIT_DEST", "NO_DATA"), ("UNIFIED_SRC_NODATA", "YES")):
        ET.SubElement(warp, "Option", name=key).text = value
    ET.SubElement(warp, "SourceDataset", relativeToVRT="0").text = gdal_path(rec.href)  # type: ignore[arg-type]
    if level >= 0:  # read this overview 1:1, as mosaic's reader does
        opened = ET.SubElement(warp, "OpenOptions")
        ET.SubElement(opened, "OOI", key="OVERVIEW_LEVEL").text = f"{level} only"
    approx = ET.SubElement(ET.SubElement(warp, "Transformer"), "ApproxTransformer")
    ET.SubElement(approx, "MaxError").text = repr(WARP_TOLERANCE)
    gen = ET.SubElement(ET.SubElement(approx, "BaseTransformer"), "GenImgProjTransformer")
    ET.SubElement(gen, "SrcGeoTransform").text = _floats((sc, sa, sb, sf, sd, se))
    ET.SubElement(gen, "DstGeoTransform").text = _floats(dst)
    proj = ET.SubElement(ET.SubElement(gen, "ReprojectTransformer"), "ReprojectionTransformer")
    ET.SubElement(proj, "SourceSRS").text = rec.crs
    ET.SubElement(proj, "TargetSRS").text = srs
    mapping = ET.SubElement(warp, "BandList")
    for i in bands:
        one = ET.SubElement(mapping, "BandMapping", src=str(i), dst=str(i))
        if rec.nodata is not None:
            ET.SubElement(one, "SrcNoDataReal").text = _num(rec.nodata)
        if band.nodata is not None:
            ET.SubElement(one, "DstNoDataReal").text = _num(band.nodata)
    return ET.tostring(root, encoding="unicode")


def gti_metadata(band: Band, gbox: GeoBox, srs: str) -> dict[str, str]:
    """The GTI layer metadata: the grid exactly, so GDAL needs no tile to size the mosaic."""
    aff, (ny, nx) = gbox.affine, gbox.shape
    minx, maxy = aff.c, aff.f
    maxx, miny = minx + nx * aff.a, maxy + ny * aff.e
    # GDAL sizes the raster as ceil((MAXX - MINX) / RESX): keep rounding from adding a column or row
    while (maxx - minx) / aff.a > nx:
        maxx = math.nextafter(maxx, -math.inf)
    while (maxy - miny) / -aff.e > ny:
        miny = math.nextafter(miny, math.inf)
    meta = {
        "RESX": repr(float(aff.a)),
        "RESY": repr(float(-aff.e)),
        **{k: repr(float(v)) for k, v in (("MINX", minx), ("MINY", miny), ("MAXX", maxx), ("MAXY", maxy))},
        "SRS": srs,
        "BAND_COUNT": str(band.count),
        "DATA_TYPE": band.gdal_type,
        "LOCATION_FIELD": "location",
        "SORT_FIELD": "priority",
        "SORT_FIELD_ASC": "YES",
        "RESAMPLING": "nearest",
    }
    if band.nodata is not None:
        meta["NODATA"] = _num(band.nodata)
    for i in range(1, band.count + 1):
        if band.scale is not None:
            meta[f"BAND_{i}_SCALE"] = _num(band.scale)
        if band.offset is not None:
            meta[f"BAND_{i}_OFFSET"] = _num(band.offset)
    return meta


def gti_xml(gpkg: Path, layer: str, meta: dict[str, str], band: Band) -> str:
    """A ``.gti`` XML pointing at ``gpkg`` (absolute: GDAL opens IndexDataset from the working dir)."""
    root = ET.Element("GDALTileIndexDataset")
    tags = {"IndexDataset": str(gpkg.resolve()), "IndexLayer": layer, "LocationField": "location"}
    tags |= {"SortField": "priority", "SortFieldAsc": "true", "SRS": meta["SRS"], "Resampling": "nearest"}
    tags |= {tag: meta[tag.upper()] for tag in ("ResX", "ResY", "MinX", "MinY", "MaxX", "MaxY")}
    for tag, text in tags.items():
        ET.SubElement(root, tag).text = text
    for i in range(1, band.count + 1):
        node = ET.SubElement(root, "Band", band=str(i), dataType=band.gdal_type)
        if i <= len(band.names):
            ET.SubElement(node, "Description").text = band.names[i - 1]
        for tag, value in (("NoDataValue", band.nodata), ("Scale", band.scale), ("Offset", band.offset)):
            if value is not None:
                ET.SubElement(node, tag).text = _num(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
