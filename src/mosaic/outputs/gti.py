"""GDAL GTI (Raster Tile Index) export and import: the same mosaic, opened by GDAL and QGIS.

**Export.** :func:`export_gti` writes one GeoPackage ``*.gti.gpkg`` per asset that GDAL (>= 3.9) opens
as a raster with no options. Its layer is in the mosaic CRS (each feature the tile's outline there,
continuous across the antimeridian) and its metadata (``RESX``..``MAXY``, ``SRS``, ``BAND_COUNT``,
``DATA_TYPE``, ``NODATA``, ``SORT_FIELD``...) give GDAL the grid of :func:`mosaic.load` for the same
arguments, so GDAL never opens a tile to infer it. A ``priority`` field makes GDAL draw the tiles in
the order that reproduces ``method="first"`` (or ``"last"``), with ``sortby``: GDAL draws the highest
value last, on top.

GDAL's GTI warps a tile of another CRS with its default approximate transformer (0.125 px error, not
configurable), which flips ~4% of nearest-neighbour picks against :func:`mosaic.load` (0.01 px, see
:data:`mosaic.io.read.WARP_TOLERANCE`) and misplaces tiles across the antimeridian. So by default
(``warp="exact"``) such a tile's ``location`` is an inline warped VRT of it on the mosaic grid
(:mod:`mosaic.outputs._gti_xml`); tiles already on the grid (same CRS, whole-pixel offset) keep a plain path.
``warp="gdal"`` lets GDAL warp every tile itself. Every tile also has ``href`` (its absolute GDAL
path), ``id``, ``asset``, ``datetime`` (for a GTI ``FILTER``), ``src_crs`` and ``src_nodata`` (the
index row's nodata).

GDAL finds missing exactly the pixels :func:`mosaic.load` finds missing: the index row's nodata (the
file's tag where the row has none), the file's mask, NaN in float files; never the 0s of a source
without nodata, which load paints over earlier scenes. The mosaic's ``NODATA`` is load's output nodata
(pixels no scene covers), not the tiles'. So each warped VRT warps with the tile's source nodata and
marks what is missing with a nodata no drawn pixel takes (NaN in float mosaics, else the source
nodata) or, for a source without nodata, with an alpha band; a tile GDAL opens itself is wrapped in a
plain VRT declaring the row's nodata where its file's tags say otherwise. The export reads the headers
of the files this depends on.

**Import.** :func:`gti_tiles` lists the tiles of a GTI (ours, a ``.gti`` XML, or any vector tile index
such as ``gdaltindex`` writes) for :meth:`mosaic.TileIndex.from_gti`, which reads each tile's grid
(:func:`tile_facts`). See ``docs/gdal.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import rasterio
import shapely
from odc.geo.geobox import GeoBox
from pyproj import CRS
from shapely.geometry import box

from mosaic.errors import GDALVersionError, InvalidInputError, NoDataError, OutputError, SourceError
from mosaic.index._gti_read import GtiTile, gti_tiles, tile_facts
from mosaic.index.filters import Filter, SortBy, check_sortby, ordered, parse_filter, parse_sortby
from mosaic.index.geom import areal, bbox_to_lonlat, grid_outline, lonlat_to_crs, to_lonlat
from mosaic.index.tile_index import TileIndex
from mosaic.io.paths import check_allowed, credentials_in, gdal_path
from mosaic.outputs._gti_xml import (
    Band,
    Declared,
    declared,
    drawn_as_load_draws,
    gti_metadata,
    gti_xml,
    plain_vrt,
    source_nodata,
    warped_vrt,
)
from mosaic.planning.grid import (
    DEFAULT_MAX_PIXELS,
    check_bbox,
    check_grid,
    check_max_pixels,
    parse_crs,
    target_crs,
    warn_area_of_use,
)
from mosaic.planning.records import SceneAsset, crs_to_string
from mosaic.planning.windows import footprint_in_target
from mosaic.types import BBox, PathType, TimeLike

__all__ = ["GTI_MIN_GDAL", "GtiTile", "export_gti", "gti_tiles", "require_gti_driver", "tile_facts"]

GTI_MIN_GDAL = "3.9"
"""The first GDAL release with the GTI driver."""

_EPOCH = pd.Timestamp(0, tz="UTC")
_FIELDS = ("location", "href", "id", "asset", "datetime", "priority", "src_crs", "src_nodata")
_PEEKERS = 16  # threads reading files' headers (I/O bound: remote files cost a round trip each)


# ------------------------------------------------------------------------------------------ GDAL


def _gdal_version() -> str:
    return str(rasterio.__gdal_version__)


def _gdal_has_gti() -> bool:
    with rasterio.Env() as env:
        return "GTI" in env.drivers()


def require_gti_driver() -> None:
    """Raise :class:`GDALVersionError` unless rasterio's GDAL has the GTI driver (GDAL >= 3.9)."""
    if not _gdal_has_gti():
        raise GDALVersionError(
            f"the GDAL that rasterio uses (GDAL {_gdal_version()}, rasterio {rasterio.__version__}) has no "
            f"GTI driver; GTI files need GDAL {GTI_MIN_GDAL} or newer: install a rasterio built on GDAL >= "
            f"{GTI_MIN_GDAL} (`pip install -U rasterio`; check `rasterio.__gdal_version__`)"
        )


# ---------------------------------------------------------------------------------------- export


def _as_index(index: TileIndex | PathType | Any, flt: Filter | None = None) -> TileIndex:
    """The index to export: a TileIndex, a saved index or STAC Items, or any GDAL tile index file."""
    from mosaic.planning.planner import resolve_index

    return resolve_index(index, other_files="gti", filter=flt)


def _grid(
    idx: TileIndex,
    bbox: Any,
    bbox_crs: Any,
    crs: Any,
    resolution: Any,
    time: TimeLike,
    anchor: Any,
    bands: Sequence[str] | str | None,
    flt: Filter | None = None,
) -> GeoBox:
    """The grid of ``mosaic.load`` for the same arguments; without a bbox, the footprints' extent."""
    from mosaic.planning.planner import anchor_of, request_grid

    phase = anchor_of(anchor)
    if bbox is None:
        target = target_crs(crs, None, bbox_crs)
        rows = [r for r in idx.query(time=time, filter=flt).records() if r.href is not None]
        if not rows:
            matching = "" if flt is None else f" and filter {flt.text!r}"
            raise NoDataError(f"no scene in the index matches time {time!r}{matching}")
        union = shapely.union_all([r.footprint for r in rows])
        geo = target.is_geographic and target.equals("EPSG:4326", ignore_axis_order=True)
        bbox = union.bounds if geo else lonlat_to_crs(union, target.to_wkt()).bounds
        bbox_crs = target
    return request_grid(
        idx,
        bbox,
        crs,
        time=time,
        bands=bands,
        resolution=resolution,
        bbox_crs=bbox_crs,
        phase=phase,
        filter=flt,
    )


def _pasteable(rec: SceneAsset, gbox: GeoBox, target: CRS) -> bool:
    """Whether the tile's grid is the mosaic grid shifted by whole pixels (GDAL then copies, no warp)."""
    aff = gbox.affine
    a, b, c, d, e, f = rec.transform  # type: ignore[misc]
    if (a, b, d, e) != (aff.a, aff.b, aff.d, aff.e) or not CRS.from_user_input(rec.crs).equals(target):
        return False
    col, row = ~aff * (c, f)
    return bool(abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6)


def _tile_extent(rec: SceneAsset, gbox: GeoBox, area_ll: Any, *, clip: bool) -> Any:
    """The outline of the tile's pixel grid in the mosaic CRS (``clip``: only its part on the grid).

    This, not the data footprint, is each feature's geometry: GDAL selects tiles by it and warns when a
    feature does not contain the tile it opens (so only tiles that are VRTs on the grid are clipped).
    """
    outline = to_lonlat(grid_outline(rec.transform, rec.shape), rec.crs)  # type: ignore[arg-type]
    where = footprint_in_target(
        dataclasses.replace(rec, footprint=outline), area_ll if clip else outline, gbox
    )
    return areal(where.intersection(box(*gbox.boundingbox)) if clip else where)


def _outputs(path: PathType, assets: Sequence[str]) -> list[Path]:
    """``<stem>.gti.gpkg`` for one asset, ``<stem>.<asset>.gti.gpkg`` for several."""
    target = Path(path)
    name = target.name
    for suffix in (".gti.gpkg", ".gpkg", ".gti"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if len(assets) == 1:
        return [target.with_name(f"{name}.gti.gpkg")]
    return [target.with_name(f"{name}.{asset}.gti.gpkg") for asset in assets]


def select_assets(
    rows: Sequence[SceneAsset], bands: Sequence[str] | str | None, holder: str = "a GTI"
) -> list[str]:
    """The assets ``bands`` names among ``rows`` (all of them for None): outputs that hold whole assets.

    Raises:
        InvalidInputError: a name no selected scene has (with a hint when it is a band of an asset).
    """
    available = sorted({r.asset for r in rows})
    if bands is None:
        return available
    wanted = [bands] if isinstance(bands, str) else list(bands)
    for name in wanted:
        if name not in available:
            base = name.rpartition(".")[0]
            hint = f"; {holder} holds whole assets: ask for {base!r}" if base in available else ""
            raise InvalidInputError(
                f"band {name!r} is in none of the selected scenes{hint}; assets: {available}"
            )
    return list(dict.fromkeys(wanted))


def export_gti(
    index: TileIndex | PathType,
    path: PathType,
    *,
    crs: Any,
    resolution: float | tuple[float, float] | None = None,
    bbox: BBox | Sequence[float] | None = None,
    bbox_crs: Any = "EPSG:4326",
    time: TimeLike = None,
    bands: Sequence[str] | str | None = None,
    anchor: Any = None,
    method: Literal["first", "last"] = "first",
    warp: Literal["exact", "gdal"] = "exact",
    xml: bool = False,
    max_pixels: float | None = DEFAULT_MAX_PIXELS,
    filter: Any = None,
    sortby: Any = None,
) -> list[Path]:
    """Write GDAL GTI files that show what ``mosaic.load(..., groupby=None, method=method)`` shows.

    Args:
        index: a TileIndex or the path of a saved index (GeoParquet, STAC, GTI).
        path: output path; ``.gti.gpkg`` is added or kept (``x.gti.gpkg`` for one asset, else
            ``x.<asset>.gti.gpkg`` per asset).
        crs: the mosaic CRS (as :func:`mosaic.load`, ``"utm"`` included).
        resolution: pixel size in ``crs`` units (default: the finest of the selected scenes).
        bbox: area in ``bbox_crs`` (default: the extent of the selected footprints).
        bbox_crs: CRS of ``bbox``.
        time: the scenes to include (a date, partial date, or range), as :func:`mosaic.load`.
        bands: assets to export (default: all); multi-band assets are exported whole.
        anchor: where pixel edges fall, as :func:`mosaic.load` (``"edge"`` by default, as
            ``gdalwarp -tap``; ``"native"``: the scenes' own grid, so their tiles are copied, not warped).
        method: ``"first"`` (first valid pixel in datetime-then-id order) or ``"last"``.
        warp: ``"exact"`` wraps tiles that need warping in inline VRTs with mosaic's warp tolerance;
            ``"gdal"`` writes plain paths and lets GDAL warp (0.125 px; not across the antimeridian).
            Either way a file whose own nodata tags are not those load applies (the index row's) is
            wrapped in a VRT that declares them.
        xml: also write a ``.gti`` XML wrapper beside each GeoPackage.
        max_pixels: the largest grid (height x width) to export, as :func:`mosaic.load`; None: no
            check of the grid's size or resolution.
        filter: only the scenes for which this CQL2 filter is true, as :func:`mosaic.load`.
        sortby: the order ``method`` takes scenes in, as :func:`mosaic.load` (``"eo:cloud_cover"``:
            least cloudy first); it sets each tile's ``priority``.

    Returns:
        The files written, in asset order (each GeoPackage followed by its ``.gti`` when ``xml``).

    Raises:
        GDALVersionError: rasterio's GDAL has no GTI driver.
        GridSizeError: the grid has more than ``max_pixels`` pixels, or pixels over 100 times finer
            than the scenes'.
        IndexFormatError: the index file is missing, or not an index.
        InvalidInputError: a method other than first/last, an unknown band, or an href with credentials.
        NoDataError: no scene intersects the grid.
        OutputError: the files cannot be written at ``path``.
        SourceError: a tile to warp whose index row has no nodata cannot be opened to read the file's.
    """
    if method not in ("first", "last"):
        raise InvalidInputError(
            f"method {method!r} cannot be expressed in a GTI: GDAL draws one tile over another, so only "
            "'first' and 'last' are possible; use mosaic.load for other methods"
        )
    if warp not in ("exact", "gdal"):
        raise InvalidInputError(f"warp must be 'exact' or 'gdal', got {warp!r}")
    from mosaic.planning.planner import check_bands

    bands = check_bands(bands)
    check_max_pixels(max_pixels)
    parse_crs(bbox_crs, "bbox_crs")
    if bbox is not None:
        bbox = check_bbox(bbox)
    flt, order = parse_filter(filter), parse_sortby(sortby)
    require_gti_driver()
    idx = _as_index(index, flt)
    gbox = _grid(idx, bbox, bbox_crs, crs, resolution, time, anchor, bands, flt)
    area = bbox_to_lonlat(bbox, bbox_crs) if bbox is not None else None
    warn_area_of_use(gbox.crs, area or to_lonlat(box(*gbox.boundingbox), gbox.crs.to_wkt()))  # type: ignore[union-attr]
    target = CRS.from_user_input(gbox.crs.to_wkt())  # type: ignore[union-attr]
    srs, wkt = crs_to_string(target), target.to_wkt()
    if (
        warp == "gdal"
        and target.is_geographic
        and not -180 <= gbox.boundingbox.left < gbox.boundingbox.right <= 180
    ):
        raise InvalidInputError(
            "warp='gdal' cannot cross the antimeridian: GDAL warps each tile to its own longitudes "
            "(-180..180) and leaves the other side empty; use warp='exact'"
        )
    area_ll = to_lonlat(box(*gbox.boundingbox), wkt)
    rows = [
        r
        for r in idx.query_geometry(area_ll, time, filter=flt).records()
        if r.href and r.transform and r.shape
    ]
    if not rows:
        raise NoDataError(
            f"no scene with a file intersects the grid {tuple(gbox.boundingbox)} ({srs}), time {time!r}"
        )
    assets = select_assets(rows, bands)
    rows = [r for r in rows if r.asset in assets]
    check_sortby(order, rows)
    check_grid(gbox, rows, max_pixels=max_pixels)
    for r in rows:
        secret = credentials_in(r.href)  # type: ignore[arg-type]
        if secret:
            raise InvalidInputError(
                f"scene {r.id!r} asset {r.asset!r}: its href carries {secret}; a GTI is a file people share, "
                "so mosaic does not write it: index the file by a plain href and give credentials through "
                "GDAL configuration options"
            )
    check_allowed(r.href for r in rows)  # $MOSAIC_ALLOWED_PREFIXES, before a header is read
    outputs = _outputs(path, assets)
    written: list[Path] = []
    for asset, out in zip(assets, outputs, strict=True):
        band = Band.of(asset, [r for r in rows if r.asset == asset])
        meta = gti_metadata(band, gbox, srs)
        frame = _layer(rows, band, gbox, area_ll, target, srs, method, warp, order)
        if frame.empty:
            raise NoDataError(f"asset {asset!r}: no footprint intersects the grid {tuple(gbox.boundingbox)}")
        written.append(_write_layer(frame.set_crs(wkt), out, asset, meta))
        if xml:
            wrapper = out.with_name(out.name[: -len(".gpkg")])
            try:
                wrapper.write_text(gti_xml(out, asset, meta, band))
            except OSError as exc:
                raise OutputError.at(wrapper, "the GTI XML", exc) from exc
            written.append(wrapper)
    return written


def _needs_file(rec: SceneAsset, warped: bool) -> bool:
    """Whether drawing the tile as load does depends on what its file declares, beyond the index row.

    A warped tile needs the source nodata load applies, which is the file's tag where the row has none.
    A tile GDAL opens itself keeps its plain path only if the file's tags say what load uses: integer
    files the row gives no nodata always do (GDAL applies the file's own tag and mask, as load does),
    floating-point files the row gives a number never do (their NaN pixels are missing too); the others
    depend on the file's tags.
    """
    if warped:
        return rec.nodata is None
    if rec.dtype is None:
        return True
    if np.dtype(rec.dtype).kind in "fc":
        return rec.nodata is None or math.isnan(rec.nodata)
    return rec.nodata is not None


def _declared_files(hrefs: Iterable[str]) -> dict[str, Declared | None]:
    """What each file declares (header reads, in parallel threads; None for a file that cannot be read)."""
    unique = sorted(set(hrefs))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(_PEEKERS, len(unique))) as pool:
        return dict(zip(unique, pool.map(declared, unique), strict=True))


def _nodata_text(value: float | None) -> str | None:
    if value is None:
        return None
    return "nan" if math.isnan(value) else repr(float(value))


def _layer(
    rows: Sequence[SceneAsset],
    band: Band,
    gbox: GeoBox,
    area_ll: Any,
    target: CRS,
    srs: str,
    method: str,
    warp: str,
    sortby: SortBy = (),
) -> Any:
    """The tiles of one asset as a GeoDataFrame, highest ``priority`` for the tile ``method`` picks first.

    Each tile's ``location`` makes GDAL find missing what :func:`mosaic.load` finds missing
    (:mod:`mosaic.outputs._gti_xml`):
    a warped VRT, the bare file, or the file in a VRT that says what the file
    does not. Files are opened (headers only) where that depends on what they declare.
    """
    import geopandas as gpd

    mine = ordered((r for r in rows if r.asset == band.asset), sortby, _EPOCH)  # as the planner orders
    if method == "last":
        mine.reverse()
    on_grid = [_pasteable(rec, gbox, target) for rec in mine]
    warped = [warp == "exact" and not g for g in on_grid]
    files = _declared_files(str(rec.href) for rec, w in zip(mine, warped, strict=True) if _needs_file(rec, w))
    records: list[dict[str, Any]] = []
    geoms = []
    for rank, (rec, warps, pasted) in enumerate(zip(mine, warped, on_grid, strict=True)):
        href = gdal_path(rec.href)  # type: ignore[arg-type]
        file = files.get(str(rec.href))
        location: str | None = href
        if warps:
            if rec.nodata is None and file is None:
                raise SourceError(
                    href,
                    "cannot be opened to read its nodata, which the index does not record and GDAL must "
                    "be told to warp the tile as mosaic.load does; make the file readable, or give the "
                    "nodata in the index",
                    scene_id=rec.id,
                )
            geom = _tile_extent(rec, gbox, area_ll, clip=True)
            nodata = source_nodata(rec, file)
            location = None if geom.is_empty else warped_vrt(rec, band, gbox, geom, srs, nodata)
        else:  # GDAL opens the file itself: the feature must contain all of it (and GDAL's warp of it)
            if not drawn_as_load_draws(rec, band, file):
                location = plain_vrt(rec, band, file)
            geom = _tile_extent(rec, gbox, area_ll, clip=False)
            if not pasted:
                geom = geom.buffer(2 * max(abs(gbox.affine.a), abs(gbox.affine.e)), join_style="mitre")
        if location is None or geom.is_empty:
            continue
        when = rec.datetime or rec.start_datetime
        values = (
            location,
            href,
            rec.id,
            rec.asset,
            when,
            len(mine) - rank,
            rec.crs,
            _nodata_text(rec.nodata),
        )
        records.append(dict(zip(_FIELDS, values, strict=True)))
        geoms.append(geom)
    frame = pd.DataFrame(records, columns=list(_FIELDS))
    frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True)
    frame["priority"] = frame["priority"].astype("int64")
    frame["src_nodata"] = frame["src_nodata"].astype("string")
    return gpd.GeoDataFrame(frame, geometry=geoms)


def _write_layer(frame: Any, out: Path, layer: str, meta: dict[str, str]) -> Path:
    """Write the GeoPackage under a temporary name, then rename it over ``out``.

    Raises:
        OutputError: the folder cannot be made or written (read-only, a file in the way...).
    """
    import pyogrio

    tmp = out.with_name(f".{out.name[: -len('.gpkg')]}.tmp.gpkg")  # GDAL wants a .gpkg suffix
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        pyogrio.write_dataframe(
            frame, tmp, layer=layer, driver="GPKG", promote_to_multi=True, layer_metadata=meta
        )
        os.replace(tmp, out)
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError.at(out, "the GTI", exc) from exc
    return out
