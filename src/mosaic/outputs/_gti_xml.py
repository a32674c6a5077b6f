"""The GDAL-facing text of a GTI export: layer metadata, per-tile VRTs, the ``.gti`` XML wrapper.

Private to :mod:`mosaic.outputs.gti`.
GDAL's GTI driver draws each tile over the ones below it: a tile whose bands
declare a nodata value is transparent where its pixels hold it; a tile with a mask band (per-dataset
mask or alpha band) is transparent where the mask is 0, and then its nodata is not looked at; any other
tile is opaque over its whole pixel grid. :func:`mosaic.load` instead counts a source pixel as missing
where it equals the index row's ``nodata`` (the file's own tag when the row has none) or the file's
mask says so, and, in floating-point files, where it is NaN. So every tile GDAL sees is made to carry
exactly that validity:

- A tile GDAL would have to warp is an inline ``VRTWarpedDataset`` on a window of the mosaic grid, with
  mosaic's warp tolerance (:data:`mosaic.io.read.WARP_TOLERANCE`) and, where :func:`mosaic.load` would
  read an overview, that overview (``OVERVIEW_LEVEL`` open option): GDAL then warps as mosaic's reader
  does (:func:`warped_vrt`). The source nodata load uses is the warp's source nodata; outside the
  source grid and on missing pixels the VRT holds a nodata of its own (NaN in floating-point mosaics,
  else the source nodata), or, for a source without nodata, a destination alpha band marks the pixels
  the source covers, so its zeros stay opaque.
- A tile GDAL opens as it is (on the mosaic grid, or ``warp="gdal"``) is wrapped in a plain VRT of the
  same grid (:func:`plain_vrt`) only where the file alone would be drawn otherwise
  (:func:`drawn_as_load_draws`): the index row gives another nodata than the file's tag, or a
  floating-point file's NaN would be opaque.
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

from mosaic.errors import InvalidInputError, SourceError
from mosaic.io.gdalenv import gdal_env
from mosaic.io.paths import gdal_path
from mosaic.io.read import GDAL_TYPES, WARP_TOLERANCE
from mosaic.planning.bands import to_physical
from mosaic.planning.records import SceneAsset

__all__ = [
    "Band",
    "Declared",
    "declared",
    "drawn_as_load_draws",
    "gti_metadata",
    "gti_xml",
    "plain_vrt",
    "warped_vrt",
]


def _num(value: float) -> str:
    """A number as GDAL parses it back exactly: ``nan``, an integer, or Python's shortest repr."""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


@dataclasses.dataclass(frozen=True, slots=True)
class Band:
    """What GDAL must know about one exported asset, as :func:`mosaic.load` would make it.

    ``nodata`` is the output nodata of :func:`mosaic.load` (the GTI's ``NODATA``): NaN for
    floating-point bands, the value every scene declares for integer bands, else 0 (pixels no scene
    covers). It is not any tile's nodata: each tile carries its own (see :func:`warped_vrt`).
    """

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
        return _gdal_type(self.dtype, self.asset)


def _floats(values: Sequence[float]) -> str:
    return ",".join(repr(float(v)) for v in values)


def _is_float(dtype: str) -> bool:
    return np.dtype(dtype).kind in "fc"


def same_nodata(a: float | None, b: float | None) -> bool:
    """Whether two nodata values are the same (None for none; NaN equals NaN)."""
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def _holdable(value: float | None, dtype: str) -> float | None:
    """``value`` where a pixel of ``dtype`` can hold it, else None (no pixel can equal it: no nodata)."""
    if value is None or _is_float(dtype):
        return value
    if math.isnan(value) or not float(value).is_integer():
        return None
    info = np.iinfo(np.dtype(dtype))
    return value if info.min <= value <= info.max else None


@dataclasses.dataclass(frozen=True, slots=True)
class Declared:
    """What a tile's file declares itself: what GDAL uses when it opens the file with nothing around it."""

    dtype: str
    nodata: tuple[float | None, ...]  # per band


def declared(href: str) -> Declared | None:
    """The file's dtype and per-band nodata tags, or None when it cannot be opened (header only)."""
    try:
        with gdal_env(), rasterio.open(gdal_path(href)) as src:  # mosaic's cloud settings, per thread
            nodata = tuple(None if v is None else float(v) for v in src.nodatavals)
            return Declared(str(src.dtypes[0]), nodata)
    except rasterio.errors.RasterioIOError:
        return None


def _tile_dtype(rec: SceneAsset, band: Band, file: Declared | None) -> str:
    return rec.dtype or (file.dtype if file is not None else band.dtype)


def drawn_as_load_draws(rec: SceneAsset, band: Band, file: Declared | None) -> bool:
    """Whether GDAL, opening the tile's file itself, finds the pixels :func:`mosaic.load` counts as missing.

    GDAL uses the file's own nodata tags (and mask); load uses the index row's nodata where it has one,
    the file's tag otherwise, and treats NaN as missing in floating-point files. ``file`` is what the
    file declares (None: not known, so not the same).
    """
    dtype = _tile_dtype(rec, band, file)
    if rec.nodata is None and not _is_float(dtype):
        return True  # GDAL applies the file's own tag and mask, as load does
    if file is None:
        return False
    if _is_float(dtype):  # NaN must be the nodata of every band, for GDAL to see through NaN
        used = rec.nodata if rec.nodata is not None else file.nodata[0]
        return (
            used is not None
            and math.isnan(used)
            and all(same_nodata(v, math.nan) for v in file.nodata[: rec.band_count])
        )
    return all(same_nodata(v, rec.nodata) for v in file.nodata[: rec.band_count])


def source_nodata(rec: SceneAsset, file: Declared | None) -> float | None:
    """The nodata :func:`mosaic.load` applies to the tile's pixels: the index row's, else the file's tag."""
    if rec.nodata is not None:
        return rec.nodata
    return None if file is None else file.nodata[0]


def _gdal_type(dtype: str, asset: str) -> str:
    if dtype not in GDAL_TYPES:
        raise InvalidInputError(f"asset {asset!r}: GDAL has no data type for numpy {dtype}")
    return GDAL_TYPES[dtype]


def plain_vrt(rec: SceneAsset, band: Band, file: Declared | None) -> str:
    """The tile's file, on its own grid, in a VRT whose bands declare what load counts as missing.

    Integer files: the index row's nodata (or none, if no pixel can hold it), raw pixels. Floating-point
    files: NaN, with the source nodata turned into NaN (by the row's value, the file's known tag, or, when
    the file could not be read, its own mask band, which follows its tag), so NaN pixels are missing too.
    Needs nothing but the index row (and ``file``, when known).
    """
    dtype = _tile_dtype(rec, band, file)
    gdal_type = _gdal_type(dtype, band.asset)
    height, width = rec.shape  # type: ignore[misc]
    a, b, c, d, e, f = rec.transform  # type: ignore[misc]
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = rec.crs
    ET.SubElement(root, "GeoTransform").text = _floats((c, a, b, f, d, e))
    floating = _is_float(dtype)
    used = source_nodata(rec, file)
    shown = math.nan if floating else _holdable(used, dtype)
    href = gdal_path(rec.href)  # type: ignore[arg-type]
    for i in range(1, min(rec.band_count, band.count) + 1):
        vrt_band = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(i))
        if shown is not None:
            ET.SubElement(vrt_band, "NoDataValue").text = _num(shown)
        by_mask = floating and rec.nodata is None and file is None
        by_value = floating and used is not None and not math.isnan(used)
        source = ET.SubElement(vrt_band, "ComplexSource" if by_mask or by_value else "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = href
        ET.SubElement(source, "SourceBand").text = str(i)
        if rec.dtype is not None or file is not None:  # GDAL then opens the file only to read it
            props = {"RasterXSize": str(width), "RasterYSize": str(height), "DataType": gdal_type}
            ET.SubElement(source, "SourceProperties", props)
        if by_mask:
            ET.SubElement(source, "UseMaskBand").text = "true"
        elif by_value:
            ET.SubElement(source, "NODATA").text = _num(used)  # type: ignore[arg-type]
    return ET.tostring(root, encoding="unicode")


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


def warped_vrt(
    rec: SceneAsset, band: Band, gbox: GeoBox, extent: Any, srs: str, nodata: float | None
) -> str | None:
    """The tile as an inline warped VRT on the window of the mosaic grid its ``extent`` covers.

    ``nodata`` is the source nodata :func:`mosaic.load` applies to the tile (:func:`source_nodata`);
    the file's mask, if it has one, the warp applies by itself. The VRT marks what is missing (outside
    the source grid, or missing in the source) with a nodata value no drawn pixel can take: NaN in a
    floating-point mosaic, else the source nodata. A source without nodata has none to give, so the
    VRT gets an alpha band instead (GDAL's GTI then draws the tile through it, as a mask): its zeros,
    data to load, stay opaque, and the pixels outside its grid hold the mosaic's nodata.
    """
    aff, (ny, nx) = gbox.affine, gbox.shape
    x0, y0, x1, y1 = extent.bounds
    c0, c1 = max(0, math.floor((x0 - aff.c) / aff.a)), min(nx, math.ceil((x1 - aff.c) / aff.a))
    r0, r1 = max(0, math.floor((y1 - aff.f) / aff.e)), min(ny, math.ceil((y0 - aff.f) / aff.e))
    if c1 <= c0 or r1 <= r0:
        return None
    dst = (aff.c + c0 * aff.a, aff.a, 0.0, aff.f + r0 * aff.e, 0.0, aff.e)
    level, (sa, sb, sc, sd, se, sf) = _overview(rec, gbox, extent)
    src_nodata = _holdable(nodata, rec.dtype or band.dtype)
    dst_nodata = math.nan if _is_float(band.dtype) else src_nodata
    root = ET.Element("VRTDataset", rasterXSize=str(c1 - c0), rasterYSize=str(r1 - r0))
    root.set("subClass", "VRTWarpedDataset")
    ET.SubElement(root, "SRS").text = srs
    ET.SubElement(root, "GeoTransform").text = _floats(dst)
    bands = range(1, min(rec.band_count, band.count) + 1)
    for i in bands:
        vrt_band = ET.SubElement(root, "VRTRasterBand", dataType=band.gdal_type, band=str(i))
        vrt_band.set("subClass", "VRTWarpedRasterBand")
        if dst_nodata is not None:
            ET.SubElement(vrt_band, "NoDataValue").text = _num(dst_nodata)
    alpha = len(bands) + 1 if dst_nodata is None else 0
    if alpha:
        alpha_band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band=str(alpha))
        alpha_band.set("subClass", "VRTWarpedRasterBand")
        ET.SubElement(alpha_band, "ColorInterp").text = "Alpha"
    warp = ET.SubElement(root, "GDALWarpOptions")
    ET.SubElement(warp, "ResampleAlg").text = "NearestNeighbour"
    ET.SubElement(warp, "WorkingDataType").text = band.gdal_type
    # where nothing is drawn: the VRT's nodata or, under an alpha band, the mosaic's (GDAL's GTI reads
    # such pixels as they are when this tile alone covers a request and the mosaic's nodata is 0)
    init = "NO_DATA" if dst_nodata is not None else _num(band.nodata if band.nodata is not None else 0)
    for key, value in (("INIT_DEST", init), ("UNIFIED_SRC_NODATA", "YES")):
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
        if src_nodata is not None:
            ET.SubElement(one, "SrcNoDataReal").text = _num(src_nodata)
        if dst_nodata is not None:
            ET.SubElement(one, "DstNoDataReal").text = _num(dst_nodata)
    if alpha:
        ET.SubElement(warp, "DstAlphaBand").text = str(alpha)
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
