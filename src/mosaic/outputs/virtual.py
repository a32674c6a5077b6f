"""The virtual store: the scenes' native grids as a Zarr store whose chunks are the COGs' own tiles.

:func:`export_virtual` writes Kerchunk references (Zarr v2 metadata plus, for every chunk, the file,
byte offset and size of one COG tile): no pixel is copied, and a reader fetches and decodes the tiles
itself. One Zarr group per native grid (CRS + transform + shape), ``/<CRS>/<grid>``; in it one
``(time, y, x)`` array per band, chunked as the COGs are tiled, with the codecs the tiles need
(``zlib`` for DEFLATE, ``imagecodecs_zstd``, ``imagecodecs_lzw``, and the TIFF predictors as the filters
``imagecodecs_delta`` and ``imagecodecs_floatpred``, as :mod:`tifffile` writes them), pixel-centre
``x``/``y``, ``time``, and per time step ``scene_id``, ``footprint`` and ``<band>_href`` coordinates,
and the CRS in a ``spatial_ref`` variable (CF ``grid_mapping``, ``crs_wkt``, GDAL ``GeoTransform``)
that rioxarray and odc-geo read. A pixel-interleaved multi-band file gives one ``(time, y, x, band)``
array (each tile holds all its bands); band-interleaved ones one array per band, ``<asset>.<n>``.
Tiles a sparse COG does not store are missing chunks (the fill value: the file's nodata, else 0).

Beside the store, ``<path>.open.json`` holds the keyword arguments of ``xarray.open_datatree`` that open
it, so that a process without mosaic opens it with xarray, zarr, fsspec and (for ZSTD, LZW and the
predictors) ``imagecodecs``, registered with ``imagecodecs.numcodecs.register_codecs()``.

Zarr describes an array by one chunk shape and one codec chain: scenes of a grid whose tiles differ
(tile size, compression, predictor, type, byte order, fill) cannot share an array. ``mixed="split"``
puts them in sibling groups (``<grid>~2``...), ``mixed="error"`` raises :class:`VirtualStoreError`
naming them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mosaic.errors import InvalidInputError, MissingExtraError, NoDataError, OutputError, VirtualStoreError
from mosaic.io import cog
from mosaic.io.paths import check_allowed, credentials_in
from mosaic.outputs.gti import select_assets
from mosaic.planning.records import SceneAsset
from mosaic.types import BBox, PathType, TimeLike

__all__ = ["BandSource", "VirtualGroup", "export_virtual", "write_virtual"]

Format = Literal["json", "parquet"]
Mixed = Literal["split", "error"]

CODEC_PACKAGE = "imagecodecs"
"""The package whose numcodecs codecs decode ZSTD and LZW tiles and undo the TIFF predictors."""

PACKBITS, LZMA, LERC, WEBP, JXL = 32773, 34925, 34887, 50001, 50002
_COMPRESSORS: dict[int, dict[str, Any] | None] = {  # TIFF compression -> Zarr v2 compressor (tifffile's)
    cog.NONE: None,
    cog.DEFLATE: {"id": "zlib"},
    cog.ADOBE_DEFLATE: {"id": "zlib"},
    cog.ZSTD: {"id": "imagecodecs_zstd"},
    cog.LZW: {"id": "imagecodecs_lzw"},
    PACKBITS: {"id": "imagecodecs_packbits"},
    LZMA: {"id": "lzma"},
}
_COMPRESSION_NAMES = {
    cog.NONE: "none",
    cog.DEFLATE: "deflate",
    cog.ADOBE_DEFLATE: "deflate",
    cog.ZSTD: "zstd",
    cog.LZW: "lzw",
    cog.JPEG: "jpeg",
    PACKBITS: "packbits",
    LZMA: "lzma",
    LERC: "lerc",
    WEBP: "webp",
    JXL: "jpeg-xl",
}
_TIME_UNITS = "microseconds since 1970-01-01T00:00:00"
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class BandSource:
    """Where one band of one time step of a group is: a file, the band in it, and its tile layout.

    Attributes:
        scene_id: the scene (index row id) the file belongs to.
        href: the file, as the index has it.
        band: the band in the file, from 1; 0 for all the bands of a pixel-interleaved file at once.
        tiles: the file's encoded tile layout (the index's ``tiles`` column, :mod:`mosaic.io.cog`).
    """

    scene_id: str
    href: str
    band: int
    tiles: bytes


@dataclass(frozen=True, slots=True)
class VirtualGroup:
    """One native grid: the scenes on it, stacked along time; what the virtual store writes as a group.

    Attributes:
        path: the group's path, e.g. ``"/EPSG_32632/T32TQM"``.
        crs_wkt: the grid's CRS as WKT.
        transform: the grid's affine transform (a, b, c, d, e, f); b and d must be 0.
        shape: (height, width) in pixels.
        bands: the variables' names, e.g. ``("B02", "B03")`` or ``("visual",)``.
        band_counts: per variable, 1 for a ``(time, y, x)`` array, n for a ``(time, y, x, band)`` array
            of a pixel-interleaved n-band file.
        dtypes: per variable, the numpy dtype name of the pixels.
        nodata: per variable, the nodata value of the index rows (None: none).
        times: per time step, the acquisition time (UTC) or None.
        scene_ids: per time step, the scene id.
        footprints: per time step, the scene's data footprint (lon/lat WKT, the union of its rows').
        sources: per time step, per variable, where the pixels are (None: the scene lacks that band).
    """

    path: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    bands: tuple[str, ...]
    band_counts: tuple[int, ...]
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    times: tuple[Any, ...]
    scene_ids: tuple[str, ...]
    footprints: tuple[str, ...]
    sources: tuple[tuple[BandSource | None, ...], ...]


@dataclass(frozen=True, slots=True)
class _Encoding:
    """What one Zarr array needs all its chunks to share."""

    dtype: str  # with byte order, e.g. "<u2"
    compression: int
    predictor: int
    tile: tuple[int, int]
    samples: int  # samples in one chunk (1, or the band count of a pixel-interleaved file)
    fill: float | None  # what GDAL reads in a sparse tile (the file's nodata; None: 0)

    def describe(self) -> str:
        name = _COMPRESSION_NAMES.get(self.compression, f"compression {self.compression}")
        fill = "" if self.fill is None else f", fill {self.fill:g}"
        return (
            f"{name}, predictor {self.predictor}, {self.tile[0]}x{self.tile[1]} tiles, "
            f"{np.dtype(self.dtype).name}{fill}"
        )


# --------------------------------------------------------------------------------------- public


def export_virtual(
    index_or_tree: Any,
    path: PathType,
    *,
    bbox: BBox | Sequence[float] | None = None,
    bbox_crs: Any = "EPSG:4326",
    time: TimeLike = None,
    bands: Sequence[str] | str | None = None,
    format: Format = "json",
    mixed: Mixed = "split",
    filter: Any = None,
) -> list[Path]:
    """Write the scenes' native grids as a virtual Zarr store (Kerchunk references to the COG tiles).

    No pixel is copied: every chunk is the byte range of one tile of one file, with the codecs that
    decode it. ``<path>.open.json`` beside the store holds the keyword arguments of
    ``xarray.open_datatree`` that open it without mosaic (``imagecodecs`` registered with
    ``imagecodecs.numcodecs.register_codecs()`` for ZSTD, LZW and predictor tiles).

    Args:
        index_or_tree: a TileIndex or the path of a saved index, built with ``tile_ranges=True``; or a
            tree from :func:`mosaic.open_tree` of a saved index (its scenes are exported).
        path: the store: a JSON file (``format="json"``) or a folder of Parquet files
            (``format="parquet"``).
        bbox: area in ``bbox_crs`` (default: everywhere); scenes whose footprint touches it are written
            whole.
        bbox_crs: CRS of ``bbox``.
        time: the scenes to include (a date, partial date, or range), as :func:`mosaic.load`.
        bands: assets to include (default: all).
        format: ``"json"`` (one file, readable by any fsspec) or ``"parquet"`` (Kerchunk's lazily
            loaded Parquet references, for stores with many chunks).
        mixed: scenes of one grid whose tiles are encoded differently: ``"split"`` writes them to
            sibling groups (``<grid>~2``, ...), ``"error"`` raises :class:`VirtualStoreError`.
        filter: only the scenes for which this CQL2 filter is true, as :func:`mosaic.load`.

    Returns:
        The files written: the store and its ``.open.json``.

    Raises:
        IndexFormatError: the index file is missing or not an index.
        InvalidInputError: a bad argument, an unknown band, or an href carrying credentials.
        MissingExtraError: ``format="parquet"`` without fastparquet and kerchunk (the ``virtual`` extra).
        HrefNotAllowedError: an href outside ``$MOSAIC_ALLOWED_PREFIXES``.
        NoDataError: no scene with a file matches ``bbox``, ``time`` and ``bands``.
        VirtualStoreError: a scene without a recorded tile layout, with tiles Zarr cannot decode
            (JPEG, WebP, LERC...), on a rotated grid, or (``mixed="error"``) encoded unlike the
            others of its grid.
        OutputError: the store cannot be written at ``path``.
    """
    if format not in ("json", "parquet"):
        raise InvalidInputError(f"format must be 'json' or 'parquet', got {format!r}")
    if mixed not in ("split", "error"):
        raise InvalidInputError(f"mixed must be 'split' or 'error', got {mixed!r}")
    from mosaic.planning.grid import check_bbox, parse_crs
    from mosaic.planning.planner import check_bands, resolve_index

    bands = check_bands(bands)
    parse_crs(bbox_crs, "bbox_crs")
    if bbox is not None:
        bbox = check_bbox(bbox)
    if format == "parquet":
        _require_fastparquet()
    hrefs: set[str] | None = None
    if type(index_or_tree).__name__ == "DataTree":
        index_or_tree, hrefs = _tree_source(index_or_tree)
    idx = resolve_index(index_or_tree)
    rows = [
        r
        for r in idx.query(bbox, time, bbox_crs=bbox_crs, filter=filter).records()
        if r.href and r.transform is not None and r.shape is not None and (hrefs is None or r.href in hrefs)
    ]
    rows = [r for r in rows if r.asset in select_assets(rows, bands, holder="a virtual store")]
    if not rows:
        raise NoDataError(f"no scene with a file matches bbox {bbox!r} ({bbox_crs}), time {time!r}")
    _check_hrefs(rows)
    groups = _group_rows(rows)
    return write_virtual(groups, path, format=format, mixed=mixed)


def write_virtual(
    groups: Iterable[VirtualGroup],
    path: PathType,
    *,
    format: Format = "json",
    mixed: Mixed = "split",
) -> list[Path]:
    """Write ``groups`` as a virtual Zarr store at ``path`` and its ``<path>.open.json``.

    See :func:`export_virtual`, which selects the scenes and groups them by native grid.

    Raises:
        VirtualStoreError: see :func:`export_virtual`.
        OutputError: the store cannot be written at ``path``.
    """
    if format == "parquet":
        _require_fastparquet()
    refs: dict[str, Any] = {}
    summary: list[dict[str, Any]] = []
    needs: set[str] = set()
    for group in groups:
        for part in _partitions(group, mixed):
            encodings = _encodings(part)
            needs.update(_codec_ids(e) for e in encodings)
            _group_refs(part, encodings, refs)
            summary.append({"path": part.path, "scenes": len(part.scene_ids), "bands": list(part.bands)})
    if not summary:
        raise NoDataError("no group to write")
    needs.discard("")
    refs[".zgroup"] = _json({"zarr_format": 2})
    refs[".zattrs"] = _json(
        {
            "title": "mosaic virtual store: the scenes' own COG tiles, one group per native grid",
            "groups": summary,
            "codecs": sorted(needs),
            "codec_package": (
                f"{CODEC_PACKAGE} (import imagecodecs.numcodecs; imagecodecs.numcodecs.register_codecs())"
                if any(n.startswith("imagecodecs") for n in needs)
                else "none beyond numcodecs"
            ),
        }
    )
    _parents(refs, [s["path"] for s in summary])
    refs[".zmetadata"] = _json(
        {
            "zarr_consolidated_format": 1,
            "metadata": {
                k: json.loads(v)
                for k, v in refs.items()
                if k.rsplit("/", 1)[-1] in (".zgroup", ".zarray", ".zattrs")
            },
        }
    )
    out = Path(path).expanduser().absolute()
    hrefs = sorted({r[0] for r in refs.values() if isinstance(r, list)})
    _check_protocols(hrefs)
    return _write(refs, out, format, hrefs)


# -------------------------------------------------------------------------------------- grouping


def _tree_source(tree: Any) -> tuple[str, set[str]]:
    """The saved index a :func:`mosaic.open_tree` tree was opened from, and the hrefs it holds."""
    source = tree.attrs.get("index")
    if not source or source == "in-memory TileIndex" or "***" in str(source):
        raise InvalidInputError(
            "this tree was opened from an in-memory TileIndex (or an index path with a secret): pass "
            "that index to export_virtual, with the tree's bbox, time and bands"
        )
    hrefs = {
        str(href)
        for node in tree.subtree
        for name, coord in node.coords.items()
        if str(name).endswith("_href")
        for href in coord.values.ravel()
        if href
    }
    return str(source), hrefs


def _grid_nodes(rows: Sequence[SceneAsset]) -> list[tuple[str, list[SceneAsset]]]:
    """``(node path, rows)`` per native grid: the nodes of :func:`mosaic.open_tree`, with its names."""
    from mosaic.outputs.tree import grid_nodes

    return [(path, [rows[i] for i in positions]) for path, positions in grid_nodes(rows)]


def _group_rows(rows: Sequence[SceneAsset]) -> list[VirtualGroup]:
    """The rows as groups, one per native grid (:func:`_grid_nodes`), scenes in (time, id) order."""
    return sorted((_group(path, members) for path, members in _grid_nodes(rows)), key=lambda g: g.path)


def _group(path: str, members: Sequence[SceneAsset]) -> VirtualGroup:
    """The group of the rows of one grid: per scene a time step, per band (or interleaved file) a variable."""
    import shapely
    from pyproj import CRS

    first = members[0]
    layouts = {id(r): _layout(r) for r in members}
    variables: dict[str, tuple[int, str, float | None]] = {}  # name -> (band count, dtype, nodata)
    for r in sorted(members, key=lambda r: r.asset):
        layout = layouts[id(r)]
        if layout.planar == 1 and layout.samples > 1:
            variables.setdefault(r.asset, (layout.samples, layout.dtype, r.nodata))
        else:
            for k in range(1, layout.samples + 1):
                name = r.asset if layout.samples == 1 else f"{r.asset}.{k}"
                variables.setdefault(name, (1, layout.dtype, r.nodata))
    names = sorted(variables)
    scenes: dict[str, list[SceneAsset]] = {}
    for r in members:
        scenes.setdefault(r.id, []).append(r)
    order = sorted(scenes, key=lambda s: (_sort_time(scenes[s][0].datetime), s))
    sources = []
    for scene in order:
        step: dict[str, BandSource] = {}
        for r in scenes[scene]:
            layout = layouts[id(r)]
            if layout.planar == 1 and layout.samples > 1:
                step.setdefault(r.asset, BandSource(r.id, r.href or "", 0, r.tiles or b""))
            else:
                for k in range(1, layout.samples + 1):
                    name = r.asset if layout.samples == 1 else f"{r.asset}.{k}"
                    step.setdefault(name, BandSource(r.id, r.href or "", k, r.tiles or b""))
        sources.append(tuple(step.get(n) for n in names))
    return VirtualGroup(
        path=path,
        crs_wkt=CRS.from_user_input(first.crs).to_wkt(),
        transform=first.transform,  # type: ignore[arg-type]
        shape=first.shape,  # type: ignore[arg-type]
        bands=tuple(names),
        band_counts=tuple(variables[n][0] for n in names),
        dtypes=tuple(variables[n][1] for n in names),
        nodata=tuple(variables[n][2] for n in names),
        times=tuple(scenes[s][0].datetime for s in order),
        scene_ids=tuple(order),
        footprints=tuple(
            shapely.to_wkt(shapely.union_all([r.footprint for r in scenes[s]]), rounding_precision=6)
            for s in order
        ),
        sources=tuple(sources),
    )


def _sort_time(value: Any) -> float:
    return math.inf if value is None else float(value.value)


def _layout(r: SceneAsset) -> cog.TileLayout:
    if not r.tiles:
        raise VirtualStoreError(
            f"scene {r.id!r} asset {r.asset!r}: the index has no tile layout for it; rebuild the index "
            "with tile_ranges=True ('mosaic index build --tile-ranges'), from tiled GeoTIFFs"
        )
    layout = cog.decode_layout(r.tiles)
    if layout is None:
        raise VirtualStoreError(
            f"scene {r.id!r} asset {r.asset!r}: its tile layout is of another version; rebuild the index "
            "with tile_ranges=True"
        )
    return layout


def _check_hrefs(rows: Sequence[SceneAsset]) -> None:
    """Refuse hrefs with credentials (the store is a file people share) and hrefs outside the allowed."""
    for r in rows:
        secret = credentials_in(r.href or "")
        if secret:
            raise InvalidInputError(
                f"scene {r.id!r} asset {r.asset!r}: its href carries {secret}; a virtual store is a file "
                "people share, so mosaic does not write it: index the file by a plain href and give "
                "credentials to the reader (fsspec storage options or environment)"
            )
    check_allowed(r.href for r in rows)


# ---------------------------------------------------------------------------------- Zarr's limits


def _encoding_of(source: BandSource, count: int) -> _Encoding:
    layout = cog.decode_layout(source.tiles)
    if layout is None:
        raise VirtualStoreError(f"scene {source.scene_id!r}: its tile layout is of another version")
    fill = layout.nodata if layout.nodata is not None and cog._fits(layout.nodata, layout.dtype) else None
    return _Encoding(
        dtype=np.dtype(layout.dtype).newbyteorder(">" if layout.byteorder == ">" else "<").str,
        compression=layout.compression,
        predictor=layout.predictor,
        tile=layout.tile,
        samples=count,
        fill=fill,
    )


def _same(a: _Encoding | None, b: _Encoding | None) -> bool:
    if a is None or b is None:
        return True
    return a == b or (
        a.fill is not None
        and b.fill is not None
        and math.isnan(a.fill)
        and math.isnan(b.fill)
        and (a.dtype, a.compression, a.predictor, a.tile, a.samples)
        == (b.dtype, b.compression, b.predictor, b.tile, b.samples)
    )


def _partitions(group: VirtualGroup, mixed: Mixed) -> list[VirtualGroup]:
    """``group`` split into groups whose every variable has one encoding (time steps kept whole)."""
    steps = [
        tuple(None if s is None else _encoding_of(s, n) for s, n in zip(step, group.band_counts, strict=True))
        for step in group.sources
    ]
    parts: list[tuple[list[_Encoding | None], list[int]]] = []
    for t, step in enumerate(steps):
        for encodings, members in parts:
            if all(_same(a, b) for a, b in zip(encodings, step, strict=True)):
                members.append(t)
                for i, e in enumerate(step):
                    encodings[i] = encodings[i] or e
                break
        else:
            parts.append((list(step), [t]))
    if len(parts) > 1 and mixed == "error":
        first = parts[0][0]
        lines = []
        for encodings, members in parts[1:]:
            i = next(i for i, (a, b) in enumerate(zip(first, encodings, strict=True)) if not _same(a, b))
            ids = [group.scene_ids[t] for t in members]
            lines.append(
                f"scenes {ids} have {group.bands[i]} tiles {encodings[i].describe()}, "  # type: ignore[union-attr]
                f"scene {group.scene_ids[parts[0][1][0]]!r} {first[i].describe()}"  # type: ignore[union-attr]
            )
        raise VirtualStoreError(
            f"group {group.path}: Zarr needs one chunk shape and one codec chain per array, but "
            + "; ".join(lines)
            + "; pass mixed='split' to write them to groups of their own, or re-encode them alike"
        )
    return [
        replace(  # the same grid and variables, the time steps of this part
            group,
            path=group.path if k == 0 else f"{group.path}~{k + 1}",
            times=tuple(group.times[t] for t in members),
            scene_ids=tuple(group.scene_ids[t] for t in members),
            footprints=tuple(group.footprints[t] for t in members),
            sources=tuple(group.sources[t] for t in members),
        )
        for k, (_, members) in enumerate(parts)
    ]


def _encodings(group: VirtualGroup) -> list[_Encoding]:
    """Each variable's one encoding, checked to be one Zarr can decode."""
    out = []
    for i, name in enumerate(group.bands):
        source = next(s for step in group.sources if (s := step[i]) is not None)
        encoding = _encoding_of(source, group.band_counts[i])
        if encoding.compression not in _COMPRESSORS:
            what = _COMPRESSION_NAMES.get(encoding.compression, f"compression {encoding.compression}")
            raise VirtualStoreError(
                f"scene {source.scene_id!r} band {name!r}: {what} tiles have no Zarr codec a reader "
                "is sure to have; re-encode the file with DEFLATE, ZSTD or LZW, or use mosaic.load"
            )
        if encoding.predictor not in (1, 2, 3):
            raise VirtualStoreError(
                f"scene {source.scene_id!r} band {name!r}: TIFF predictor {encoding.predictor} has no "
                "Zarr codec; re-encode the file with predictor 1, 2 or 3"
            )
        out.append(encoding)
    _, b, _, d, _, _ = group.transform
    if b or d:
        raise VirtualStoreError(
            f"group {group.path} (scenes {list(group.scene_ids)}): a rotated grid has no x and y "
            "coordinates; use mosaic.load, which warps it"
        )
    return out


def _codec_ids(e: _Encoding) -> str:
    comp = _COMPRESSORS.get(e.compression)
    names = [comp["id"] if comp else ""]
    if e.predictor == 2:
        names.append("imagecodecs_delta")
    elif e.predictor == 3:
        names.append("imagecodecs_floatpred")
    return ",".join(n for n in names if n)


# ------------------------------------------------------------------------------------ references


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def _plain_array(
    refs: dict[str, Any], key: str, data: np.ndarray, dims: list[str], attrs: Mapping[str, Any]
) -> None:
    """A small array written inline (coordinates), one chunk, zlib-compressed (numcodecs' own codec)."""
    refs[f"{key}/.zarray"] = _json(
        {
            "zarr_format": 2,
            "shape": list(data.shape),
            "chunks": list(data.shape),
            "dtype": data.dtype.str,
            "compressor": {"id": "zlib", "level": 9},
            "filters": None,
            "fill_value": None,
            "order": "C",
            "dimension_separator": ".",
        }
    )
    refs[f"{key}/.zattrs"] = _json({"_ARRAY_DIMENSIONS": dims, **attrs})
    raw = zlib.compress(np.ascontiguousarray(data).tobytes(), 9)
    refs[f"{key}/" + (".".join("0" * data.ndim) or "0")] = "base64:" + base64.b64encode(raw).decode("ascii")


def _fill_json(value: float | None) -> Any:
    if value is None:
        return None
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return int(value) if float(value).is_integer() else float(value)


def _group_refs(group: VirtualGroup, encodings: Sequence[_Encoding], refs: dict[str, Any]) -> None:
    from pyproj import CRS

    root = group.path.strip("/")
    height, width = group.shape
    a, b, c, d, e, f = group.transform
    refs[f"{root}/.zgroup"] = _json({"zarr_format": 2})
    refs[f"{root}/.zattrs"] = _json(
        {
            "transform": list(group.transform),
            "shape": list(group.shape),
            "scenes": len(set(group.scene_ids)),
        }
    )
    _plain_array(refs, f"{root}/x", c + a * (np.arange(width) + 0.5), ["x"], _axis_attrs("x", group.crs_wkt))
    _plain_array(refs, f"{root}/y", f + e * (np.arange(height) + 0.5), ["y"], _axis_attrs("y", group.crs_wkt))
    times = np.array([_NAT if t is None else int(t.value // 1000) for t in group.times], dtype="<i8")
    time_attrs: dict[str, Any] = {
        "units": _TIME_UNITS,
        "calendar": "proleptic_gregorian",
        "standard_name": "time",
    }
    if (times == _NAT).any():
        time_attrs["_FillValue"] = int(_NAT)
    _plain_array(refs, f"{root}/time", times, ["time"], time_attrs)
    _plain_array(refs, f"{root}/scene_id", _texts(group.scene_ids), ["time"], {"long_name": "scene id"})
    _plain_array(
        refs,
        f"{root}/footprint",
        _texts(group.footprints),
        ["time"],
        {"long_name": "data footprint, lon/lat WKT"},
    )
    for i, name in enumerate(group.bands):
        hrefs = [s[i].href if s[i] is not None else "" for s in group.sources]  # type: ignore[union-attr]
        _plain_array(refs, f"{root}/{name}_href", _texts(hrefs), ["time"], {"long_name": f"file of {name}"})
    crs = CRS.from_wkt(group.crs_wkt)
    cf = crs.to_cf()
    cf.update(
        {
            "crs_wkt": group.crs_wkt,
            "spatial_ref": group.crs_wkt,
            "GeoTransform": " ".join(repr(float(v)) for v in (c, a, b, f, d, e)),
        }
    )
    _plain_array(refs, f"{root}/spatial_ref", np.array(0, dtype="<i8"), [], cf)
    for i, (name, encoding) in enumerate(zip(group.bands, encodings, strict=True)):
        _band_refs(group, i, name, encoding, refs, f"{root}/{name}")


def _axis_attrs(axis: str, crs_wkt: str) -> dict[str, Any]:
    from pyproj import CRS

    crs = CRS.from_wkt(crs_wkt)
    if crs.is_geographic:
        names = {"x": ("longitude", "degrees_east"), "y": ("latitude", "degrees_north")}
        return {"standard_name": names[axis][0], "units": names[axis][1], "axis": axis.upper()}
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "units": "m" if unit in ("metre", "meter") else unit,
        "axis": axis.upper(),
    }


def _texts(values: Sequence[str]) -> np.ndarray:
    """Per-time-step text as a fixed-width unicode array (Zarr format 2 has no variable-length text)."""
    return np.array(values, dtype=f"<U{max([1, *(len(v) for v in values)])}")


def _band_refs(
    group: VirtualGroup, i: int, name: str, enc: _Encoding, refs: dict[str, Any], key: str
) -> None:
    height, width = group.shape
    th, tw = enc.tile
    interleaved = group.band_counts[i] > 1
    shape = [len(group.scene_ids), height, width] + ([enc.samples] if interleaved else [])
    chunks = [1, th, tw] + ([enc.samples] if interleaved else [])
    filters = None
    if enc.predictor in (2, 3):
        filters = [
            {
                "id": "imagecodecs_delta" if enc.predictor == 2 else "imagecodecs_floatpred",
                "axis": -2 if interleaved else -1,
                "dist": 1,
                "shape": chunks,
                "dtype": enc.dtype,
            }
        ]
    refs[f"{key}/.zarray"] = _json(
        {
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": enc.dtype,
            "compressor": _COMPRESSORS[enc.compression],
            "filters": filters,
            "fill_value": _fill_json(enc.fill),
            "order": "C",
            "dimension_separator": ".",
        }
    )
    attrs: dict[str, Any] = {
        "_ARRAY_DIMENSIONS": ["time", "y", "x"] + ([_band_dim(group, name)] if interleaved else []),
        "grid_mapping": "spatial_ref",
        "coordinates": f"spatial_ref scene_id footprint {name}_href",
        "band_in_file": next(s[i].band for s in group.sources if s[i] is not None),  # type: ignore[union-attr]
        "tile_encoding": enc.describe(),
    }
    if group.nodata[i] is not None:  # the index's (it may override the file's, the fill value)
        attrs["nodata"] = _fill_json(group.nodata[i])
    refs[f"{key}/.zattrs"] = _json(attrs)
    across, down = math.ceil(width / tw), math.ceil(height / th)
    tail = ".0" if interleaved else ""
    for t, step in enumerate(group.sources):
        source = step[i]
        if source is None:
            continue
        layout = cog.decode_layout(source.tiles)
        level = layout.levels[0]  # type: ignore[union-attr]
        plane = (source.band - 1) * down * across if layout.planar == 2 else 0  # type: ignore[union-attr]
        url = _fsspec_url(source)
        offsets = level.offsets[plane : plane + down * across]
        sizes = level.sizes[plane : plane + down * across]
        for n in np.flatnonzero(sizes):  # sparse tiles (size 0) stay missing chunks: the fill value
            refs[f"{key}/{t}.{n // across}.{n % across}{tail}"] = [url, int(offsets[n]), int(sizes[n])]


def _band_dim(group: VirtualGroup, name: str) -> str:
    """``band`` for the bands of a pixel-interleaved file, unless the group needs it twice over."""
    counts = {n for n in group.band_counts if n > 1}
    return "band" if len(counts) == 1 and "band" not in group.bands else f"{name}_band"


def _fsspec_url(source: BandSource) -> str:
    """The href as fsspec opens it: ``s3://``, ``gs://``, ``https://``... as is, local paths absolute."""
    href = source.href
    for prefix, scheme in (("/vsis3/", "s3://"), ("/vsigs/", "gs://"), ("/vsiaz/", "az://")):
        if href.startswith(prefix):
            return scheme + href[len(prefix) :]
    if href.startswith("/vsicurl/"):
        href = href[len("/vsicurl/") :]
    if href.startswith("/vsi"):
        raise VirtualStoreError(
            f"scene {source.scene_id!r}: {href} is a GDAL virtual file fsspec cannot read byte ranges of"
        )
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", href) and not href.startswith("file://"):
        return href
    from mosaic.io.paths import gdal_path

    return gdal_path(href)


def _parents(refs: dict[str, Any], paths: Sequence[str]) -> None:
    for p in paths:
        parts = p.strip("/").split("/")
        for k in range(1, len(parts)):
            refs.setdefault("/".join(parts[:k]) + "/.zgroup", _json({"zarr_format": 2}))


# ------------------------------------------------------------------------------------------ write


def _protocol(url: str) -> str:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return match.group(1).lower() if match else "file"


def open_kwargs(path: Path, hrefs: Iterable[str]) -> dict[str, Any]:
    """The keyword arguments of ``xarray.open_datatree`` that open the store at ``path``.

    fsspec's ``ReferenceFileSystem`` reads the tiles with one file system per protocol: one
    ``remote_protocol`` when the hrefs share one, else an ``fs`` mapping of protocol to options
    (remote protocols only: fsspec does not wrap a local file system given that way). Remote file
    systems are made ``asynchronous``, as zarr-python 3 makes the reference file system (fsspec
    refuses a mix); their credentials come from the reader's environment, or are added to the options.
    """
    protocols = sorted({_protocol(h) for h in hrefs}) or ["file"]
    storage: dict[str, Any] = {"fo": str(path)}
    if protocols == ["file"]:
        storage.update(remote_protocol="file", remote_options={})
    elif len(protocols) == 1:
        storage.update(remote_protocol=protocols[0], remote_options={"asynchronous": True})
    else:
        storage["fs"] = {p: {"asynchronous": True} for p in protocols}
    return {
        "filename_or_obj": "reference://",
        "engine": "zarr",
        "zarr_format": 2,
        "consolidated": True,
        "chunks": {},
        "mask_and_scale": False,
        "storage_options": storage,
    }


def _check_protocols(hrefs: Sequence[str]) -> None:
    protocols = {_protocol(h) for h in hrefs}
    if "file" in protocols and len(protocols) > 1:
        remote = next(h for h in hrefs if _protocol(h) != "file")
        local = next(h for h in hrefs if _protocol(h) == "file")
        raise VirtualStoreError(
            f"the scenes mix local files ({local}) and remote ones ({remote}); fsspec's reference file "
            "system reads one store's local files only when all are local: export them separately "
            "(bbox=, time=, bands=)"
        )


def _write(refs: dict[str, Any], out: Path, format: Format, hrefs: list[str]) -> list[Path]:
    opener = out.with_name(out.name + ".open.json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if format == "json":
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(_templated(refs), separators=(",", ":")))
            os.replace(tmp, out)
        else:
            _write_parquet(refs, out)
        opener.write_text(json.dumps(open_kwargs(out, hrefs), indent=2) + "\n")
    except OSError as exc:
        raise OutputError.at(out, "the virtual store", exc) from exc
    return [out, opener]


def _templated(refs: Mapping[str, Any]) -> dict[str, Any]:
    """Version 1 references with each file's URL written once, as a template (``{{u0}}``...)."""
    names: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, value in refs.items():
        if isinstance(value, list):
            name = names.setdefault(value[0], f"u{len(names)}")
            value = ["{{" + name + "}}", *value[1:]]
        out[key] = value
    return {"version": 1, "templates": {name: url for url, name in names.items()}, "refs": out}


def _require_fastparquet() -> None:
    from importlib.util import find_spec

    missing = [name for name in ("fastparquet", "kerchunk") if find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"format='parquet' needs {' and '.join(missing)} (fsspec writes Parquet references through "
            "kerchunk.df, and reads and writes them with fastparquet): pip install "
            "'virtual-mosaic[virtual]', or use format='json'"
        )


def _write_parquet(refs: Mapping[str, Any], out: Path) -> None:
    """Kerchunk's Parquet references (fsspec's ``LazyReferenceMapper``), written with fastparquet.

    fsspec reads them with fastparquet, its default and only engine a ``ReferenceFileSystem`` passes
    on; files pyarrow writes read back wrong there (an all-null column comes back as NaN).
    """
    from fsspec.implementations.reference import LazyReferenceMapper

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a folder of Parquet references")
    mapper = LazyReferenceMapper.create(root=str(out), record_size=100_000)
    for key in sorted(refs):
        if key == ".zmetadata":
            continue  # the mapper writes its own, with its record size
        value = refs[key]
        if isinstance(value, str) and value.startswith("base64:"):
            value = base64.b64decode(value[len("base64:") :])
        mapper[key] = value
    mapper.flush()
