"""Reading GDAL GTI files (and ``gdaltindex`` outputs) as lists of tiles, for :meth:`TileIndex.from_gti`.

A GTI lists tiles in a vector layer: a location field (``location`` unless the layer metadata or the
``.gti`` XML name another), a footprint, and optionally more fields. :func:`gti_tiles` turns each
feature into a :class:`GtiTile` (href, and id, asset, time, CRS and source nodata where the GTI has them:
ours writes ``id``, ``asset``, ``datetime``, ``src_crs`` and ``src_nodata``; ``gdaltindex
-src_srs_name`` writes a CRS field);
:func:`tile_facts` reads the tile's grid with :func:`mosaic.index.sources.read_file`. Public through
:mod:`mosaic.outputs.gti`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pyproj import CRS

from mosaic.errors import IndexFormatError, SourceError
from mosaic.index.sources import FileFacts, NodataOverride, is_remote, read_file
from mosaic.io.paths import PrefixesLike, check_allowed
from mosaic.planning.records import crs_to_string
from mosaic.times import to_utc
from mosaic.types import PathType

__all__ = ["GtiTile", "gti_tiles", "tile_facts"]


@dataclasses.dataclass(frozen=True, slots=True)
class GtiTile:
    """One tile as a GTI lists it: its href and, where the index has them, id, asset, time, CRS, nodata.

    ``nodata`` is the source nodata the exporting index gave the tile (``src_nodata``), which may differ
    from the file's own tag; None where the GTI does not say.
    """

    href: str
    id: str | None = None
    asset: str | None = None
    datetime: pd.Timestamp | None = None
    crs: str | None = None
    nodata: float | None = None

    def __repr__(self) -> str:  # the href redacted: dask and distributed print task arguments
        from mosaic._repr import record_repr

        return record_repr(self)


def _xml_root(path: Path) -> ET.Element | None:
    """The GTI XML document of ``path``, or None when it is not one (a vector file)."""
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if b"<GDALTileIndexDataset" not in head:
        return None
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise IndexFormatError(f"{path}: not a well-formed GTI XML file ({exc})") from exc


def _source_of(location: str, base: Path, where: Path) -> str:
    """A tile location as an href: an inline VRT gives its source; relative paths resolve as GDAL does."""
    text = location.strip()
    if text.startswith("<VRTDataset"):
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise IndexFormatError(f"{where}: a tile location is a malformed inline VRT ({exc})") from exc
        node = root.find(".//SourceDataset")
        node = node if node is not None else root.find(".//SourceFilename")
        if node is None or not (node.text or "").strip():
            raise IndexFormatError(f"{where}: an inline VRT tile location names no source dataset")
        return _source_of(str(node.text), base, where)
    if is_remote(text) or os.path.isabs(text) or "://" in text or text[:1] == "<":
        return text
    candidate = base / text  # GDAL: relative to the tile index's folder when the file is there
    return str(candidate.resolve()) if candidate.exists() else os.path.abspath(text)


def _open_layer(
    path: Path, layer: str | None, allowed_prefixes: PrefixesLike = None
) -> tuple[Path, str, dict[str, Any], str | None, str | None]:
    """The vector file, layer and its info behind ``path``, with the XML's location field and filter.

    A GTI XML's ``IndexDataset`` must lie under the allowed prefixes (checked before it is opened).
    """
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    vector, location_field, where = path, None, None
    root = _xml_root(path)
    if root is not None:
        if root.tag != "GDALTileIndexDataset" or not (root.findtext("IndexDataset") or "").strip():
            raise IndexFormatError(f"{path}: GTI XML without a GDALTileIndexDataset/IndexDataset element")
        named = Path(str(root.findtext("IndexDataset")).strip())
        vector = path.parent / named if not named.is_absolute() and (path.parent / named).exists() else named
        check_allowed((str(vector),), allowed_prefixes)
        layer = layer or root.findtext("IndexLayer")
        location_field, where = root.findtext("LocationField"), root.findtext("Filter")
    try:
        if layer is None:
            layers = [str(name) for name, _ in pyogrio.list_layers(vector)]
            named_layer = (pyogrio.read_info(vector).get("dataset_metadata") or {}).get("TILE_INDEX_LAYER")
            layer = named_layer or (layers[0] if len(layers) == 1 else None)
            if layer is None:
                raise IndexFormatError(
                    f"{path}: has {len(layers)} layers {layers}; say which is the tile index"
                )
        info = pyogrio.read_info(vector, layer=layer)
    except (DataSourceError, DataLayerError) as exc:
        raise IndexFormatError(f"{path}: not a GTI or vector tile index GDAL can read ({exc})") from exc
    return vector, layer, info, location_field, where


def gti_tiles(
    path: PathType,
    *,
    layer: str | None = None,
    crs_field: str | None = None,
    allowed_prefixes: PrefixesLike = None,
) -> list[GtiTile]:
    """The tiles a GTI lists: a ``.gti.gpkg``, a ``.gti`` XML, or any vector file with a location field.

    Args:
        path: the GTI (GeoPackage, FlatGeobuf, Shapefile, ... or a GTI XML file).
        layer: the tile index layer, where the file has several.
        crs_field: field holding each tile's CRS (default: ``src_crs`` or ``src_srs`` when present, as
            written by :func:`export_gti` or ``gdaltindex -src_srs_name src_srs``).
        allowed_prefixes: where a ``.gti`` XML's vector file may be (:func:`mosaic.io.paths.check_allowed`).

    Ids and assets come from ``id``/``asset`` fields when present; else a tile's id is its file stem or,
    when stems repeat (``<scene>/<band>.tif``), its folder name, with the stem as asset.

    Raises:
        IndexFormatError: naming ``path``: missing, unreadable, no location field, or no tiles.
    """
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError

    path = Path(path)
    if not path.is_file():
        raise IndexFormatError(f"{path}: GTI file does not exist")
    vector, layer, info, location_field, where = _open_layer(path, layer, allowed_prefixes)
    fields = {str(f).lower(): str(f) for f in info["fields"]}
    name = location_field or (info.get("layer_metadata") or {}).get("LOCATION_FIELD") or "location"
    if name.lower() not in fields:
        raise IndexFormatError(
            f"{path}: layer {layer!r} has no {name!r} field of tile locations "
            f"(fields: {list(fields.values())}); it is not a GTI or gdaltindex tile index"
        )
    crs_name = crs_field or next((f for f in ("src_crs", "src_srs") if f in fields), None)
    if crs_name is not None and crs_name.lower() not in fields:
        raise IndexFormatError(f"{path}: layer {layer!r} has no CRS field {crs_name!r}")
    wanted = {"href": name, "id": "id", "asset": "asset", "datetime": "datetime", "crs": crs_name or ""}
    wanted["nodata"] = "src_nodata"
    columns = {key: fields[f.lower()] for key, f in wanted.items() if f and f.lower() in fields}
    try:
        frame = pyogrio.read_dataframe(
            vector,
            layer=layer,
            columns=list(dict.fromkeys(columns.values())),
            read_geometry=False,
            where=where,
        )
    except (DataSourceError, DataLayerError, FieldError) as exc:
        raise IndexFormatError(f"{path}: cannot read layer {layer!r} ({exc})") from exc
    base = Path(vector).resolve().parent
    tiles = []
    for row in frame.itertuples(index=False):
        values = dict(zip(frame.columns, row, strict=True))
        location = values[columns["href"]]
        if location is None or (isinstance(location, float) and math.isnan(location)) or not str(location):
            continue  # GDAL skips features without a location too
        got = {k: values[c] for k, c in columns.items() if k != "href" and not pd.isna(values[c])}
        when = to_utc(got["datetime"]) if "datetime" in got else None
        tiles.append(
            GtiTile(
                _source_of(str(location), base, path),
                None if "id" not in got else str(got["id"]),
                None if "asset" not in got else str(got["asset"]),
                when,
                None if "crs" not in got else str(got["crs"]),
                None if "nodata" not in got else _nodata(got["nodata"], path),
            )
        )
    if not tiles:
        raise IndexFormatError(
            f"{path}: the tile index lists no tiles" + (f" matching {where!r}" if where else "")
        )
    stems = [Path(t.href).stem for t in tiles]
    if "id" not in columns and len(set(stems)) < len(stems):  # <scene>/<band>.tif: the folder is the scene
        tiles = [
            dataclasses.replace(t, id=t.id or Path(t.href).parent.name, asset=t.asset or stem)
            for t, stem in zip(tiles, stems, strict=True)
        ]
    return tiles


def _nodata(value: Any, where: Path) -> float:
    """A ``src_nodata`` value (text, as :func:`mosaic.outputs.gti.export_gti` writes it, or a number)."""
    try:
        return float(value)  # "nan", "-9999.0", 0
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{where}: src_nodata {value!r} is not a number") from exc


def tile_facts(tile: GtiTile, *, pattern: Any = None, nodata: NodataOverride = None) -> FileFacts:
    """Read one tile (I/O only; for worker threads), the GTI's id, asset, CRS and nodata taking precedence.

    A ``pattern`` (as :meth:`TileIndex.from_files`) names scenes and assets instead of the GTI's fields.
    ``nodata`` (one value, or one per asset) is the source nodata over the GTI's ``src_nodata`` and the
    file's own; the footprint is traced from the pixels that differ from it.
    """
    given = nodata
    if isinstance(nodata, Mapping) and pattern is None and tile.asset is not None:
        given = nodata.get(tile.asset)  # the GTI's asset names the row
    facts = read_file(
        tile.href, pattern=pattern, datetime=tile.datetime, nodata=tile.nodata if given is None else given
    )
    changes: dict[str, Any] = {}
    if pattern is None:
        changes.update({k: v for k, v in (("id", tile.id), ("asset", tile.asset)) if v is not None})
    crs_wkt = facts.crs_wkt
    if tile.crs is not None:
        try:
            parsed = CRS.from_user_input(tile.crs)
        except Exception as exc:  # pyproj raises CRSError, or TypeError for odd values
            raise SourceError(
                tile.href, f"the tile index gives it the CRS {tile.crs!r}, which is not a CRS"
            ) from exc
        changes["crs"], crs_wkt = crs_to_string(parsed), parsed.to_wkt()
    return FileFacts(dataclasses.replace(facts.row, **changes), facts.native_footprint, crs_wkt)
