"""The tile index: one row per scene asset, stored as GeoParquet 1.1, queried by footprint and time.

Rows live in a :mod:`pyarrow` table (so a nodata of NaN and "no nodata" stay distinct, and a round trip
through Parquet is exact) beside a NumPy array of shapely footprints in lon/lat. Queries go through a
shapely STRtree built on first use, then test the exact footprints. On disk, rows are sorted along a
Hilbert curve of their footprint centres and written in small row groups with a ``bbox`` covering
column, so a reader that asks for one area reads only the row groups near it.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from shapely.geometry.base import BaseGeometry

from mosaic.auth import Profile, as_profiles, with_signer
from mosaic.errors import (
    DuplicateRowsWarning,
    IncompleteMetadataWarning,
    IndexFormatError,
    InvalidInputError,
    SecretHrefWarning,
    SkippedSourcesWarning,
    SourceError,
)
from mosaic.index.filters import parse_filter, with_property_columns
from mosaic.index.geom import bbox_to_lonlat, normalize_lonlat
from mosaic.index.sources import (
    AssetHeader,
    HeaderKey,
    NodataOverride,
    assets_from_item,
    check_nodata_override,
    expand_sources,
    header_requests,
    iter_items,
    map_sources,
    prefetch_item,
    read_asset_header,
    read_file,
    stac_hrefs,
    to_row,
    with_tile_layout,
)
from mosaic.io.cog import require_extra as require_cog_extra
from mosaic.io.paths import PrefixesLike, check_allowed, redact, secrets_in
from mosaic.planning.records import SceneAsset, Skipped
from mosaic.times import parse_time, to_utc
from mosaic.types import BBox, OnError, PathType, TimeLike

__all__ = ["SCHEMA", "TileIndex"]

_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("href", pa.string()),
        pa.field("crs", pa.string(), nullable=False),
        pa.field("transform", pa.list_(pa.float64())),
        pa.field("shape", pa.list_(pa.int64())),
        pa.field("bounds", pa.list_(pa.float64())),
        pa.field("resolution", pa.list_(pa.float64())),
        pa.field("datetime", _TS),
        pa.field("start_datetime", _TS),
        pa.field("end_datetime", _TS),
        pa.field("band_count", pa.int32(), nullable=False),
        pa.field("dtype", pa.string()),
        pa.field("nodata", pa.float64()),
        pa.field("overviews", pa.list_(pa.int32())),
        pa.field("band_names", pa.list_(pa.string())),
        pa.field("common_names", pa.list_(pa.string())),
        pa.field("scale", pa.float64()),
        pa.field("offset", pa.float64()),
        pa.field("collection", pa.string()),
        pa.field("properties", pa.string()),
        pa.field("identity", pa.string()),
        pa.field("tiles", pa.binary()),
    ]
)
"""Columns of the index besides ``geometry`` (WKB footprint in lon/lat) and ``bbox`` (its covering)."""

ROW_GROUP_SIZE = 8192
_BBOX = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
_META_KEY = b"mosaic"
_FORMAT_VERSION = 5
"""Version of the on-disk layout, in the ``mosaic`` key of the Parquet metadata. 1: the first; 2: adds
``common_names``; 3: adds ``identity``; 4: adds ``tiles`` (:mod:`mosaic.io.cog` layouts); 5: adds a typed
column per scalar Item property, named as the property (:mod:`mosaic.index.filters`), after the columns of
:data:`SCHEMA`. A file of an older version reads with the added columns filled
(see ``_ADDED_IN``): empty common names, unknown identities (nothing to check), and property columns
derived from its ``properties`` JSON."""
_PROPERTY_COLUMNS_IN = 5
"""The format version from which files hold the property columns (older ones: derived on read)."""
_ADDED_IN = {"common_names": 2, "identity": 3, "tiles": 4}
"""Columns that files of older format versions lack, with the version that added them."""
_HILBERT_LEVEL = 16


def _ts(value: pd.Timestamp | None) -> pd.Timestamp | None:
    return None if value is None or pd.isna(value) else value


def _records_to_table(records: Sequence[SceneAsset]) -> pa.Table:
    columns: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    for r in records:
        columns["id"].append(r.id)
        columns["asset"].append(r.asset)
        columns["href"].append(r.href)
        columns["crs"].append(r.crs)
        columns["transform"].append(None if r.transform is None else list(r.transform))
        columns["shape"].append(None if r.shape is None else list(r.shape))
        bounds, res = r.bounds, r.resolution
        columns["bounds"].append(None if bounds is None else list(bounds))
        columns["resolution"].append(None if res is None else list(res))
        columns["datetime"].append(_ts(r.datetime))
        columns["start_datetime"].append(_ts(r.start_datetime))
        columns["end_datetime"].append(_ts(r.end_datetime))
        columns["band_count"].append(r.band_count)
        columns["dtype"].append(r.dtype)
        columns["nodata"].append(r.nodata)
        columns["overviews"].append(None if r.overviews is None else list(r.overviews))
        columns["band_names"].append(list(r.band_names))
        columns["common_names"].append(list(r.common_names))
        columns["scale"].append(r.scale)
        columns["offset"].append(r.offset)
        columns["collection"].append(r.collection)
        columns["properties"].append(r.properties)
        columns["identity"].append(r.identity)
        columns["tiles"].append(r.tiles)
    return pa.table(
        {name: pa.array(values, type=SCHEMA.field(name).type) for name, values in columns.items()},
        schema=SCHEMA,
    )


def _timestamp_us(column: pa.ChunkedArray, fill: int) -> np.ndarray:
    """Microseconds since the epoch, nulls replaced by ``fill``."""
    values = pc.fill_null(pc.cast(column, pa.int64()), fill)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)


class TileIndex:
    """A tile index: where every scene asset is, in which CRS and grid, when, and what it covers.

    Build one with :meth:`from_files`, :meth:`from_stac`, :meth:`from_gti` or :meth:`from_footprints`,
    save it with :meth:`write`, open it with :meth:`read`, and select rows with :meth:`query`. Indexes
    are immutable: selections return new indexes that share the underlying data.
    """

    __slots__ = ("_geometry", "_lock", "_source", "_table", "_time_bounds", "_tree", "skipped")

    def __init__(
        self,
        table: pa.Table,
        geometry: np.ndarray,
        *,
        skipped: Sequence[Skipped] = (),
        source: str | None = None,
    ):
        if len(table) != len(geometry):
            raise InvalidInputError(f"index has {len(table)} rows but {len(geometry)} footprints")
        self._table = table
        self._geometry = geometry
        self._tree: shapely.STRtree | None = None
        self._time_bounds: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()
        self._source = source
        self.skipped: tuple[Skipped, ...] = tuple(skipped)
        """Inputs left out under ``on_error="skip"``, each with the reason."""

    # ------------------------------------------------------------------------------------ building

    @classmethod
    def from_records(
        cls, records: Iterable[SceneAsset], *, skipped: Sequence[Skipped] = (), source: str | None = None
    ) -> TileIndex:
        """An index of the given rows, in canonical (spatial) order."""
        records = list(records)
        seen: set[tuple[str, str]] = set()
        for r in records:
            key = (r.id, r.asset)
            if key in seen:
                raise InvalidInputError(
                    f"duplicate index row: scene {r.id!r} asset {r.asset!r} appears twice"
                )
            seen.add(key)
        table = with_property_columns(_records_to_table(records), SCHEMA.names)
        geometry = (
            np.array([r.footprint for r in records], dtype=object) if records else np.empty(0, dtype=object)
        )
        return cls(table, geometry, skipped=skipped, source=source)._sorted()

    @classmethod
    def from_files(
        cls,
        sources: PathType | Iterable[PathType],
        *,
        pattern: str | re.Pattern[str] | None = None,
        datetime: Any = None,
        progress: bool = True,
        workers: int | None = None,
        on_error: OnError = "raise",
        nodata: NodataOverride = None,
        gdal_options: Mapping[str, Any] | None = None,
        auth: Profile | Sequence[Profile] | None = None,
        allowed_prefixes: PrefixesLike = None,
        tile_ranges: bool = False,
    ) -> TileIndex:
        """Index raster files: paths, directories, globs or URLs, their metadata read in parallel.

        Each row's ``identity`` is the file's size and modification time (a URL's as GDAL learnt them
        opening it: no extra request), which reads and resumed regrids check.

        Args:
            sources: one or more paths, directories (searched recursively), globs or URLs.
            pattern: regex searched in each path; named groups ``id``, ``asset``, ``datetime`` set the
                scene id (default: the file stem), the asset name (default ``"data"``) and the time
                (default: the TIFF ``DATETIME`` tag).
            datetime: a fixed time for every file, or a callable from path to time.
            progress: show a progress bar.
            workers: threads reading metadata (default: a few per core, as the work is I/O bound).
            on_error: ``"raise"`` stops at the first bad file; ``"skip"`` leaves bad files out, warns with
                the list, and keeps it in :attr:`skipped`.
            nodata: the source nodata of files that carry none, or carry a wrong one (real Landsat
                Level-1 files use 0 as fill without saying so): one value, or a mapping of asset name
                to value. It is recorded as the rows' ``nodata`` (the reader treats those pixels as no
                data), and the footprints are traced where the pixels differ from it.
            gdal_options: GDAL settings over the cloud defaults the files are opened with.
            auth: credential profiles (:mod:`mosaic.auth`) for remote files, matched by href prefix.
            allowed_prefixes: folders and URLs the files must lie under (with
                ``$MOSAIC_ALLOWED_PREFIXES``, under both): any other is refused before anything is
                opened (:func:`mosaic.io.paths.check_allowed`).
            tile_ranges: record each tiled GeoTIFF's tile layout (the byte range of every tile of
                every level and how to decode it, :mod:`mosaic.io.cog`; a few hundred bytes a row) in
                the ``tiles`` column: loads then fetch tiles straight from those ranges, with no
                ``HEAD`` and no header request (see the cloud reads page). Needs the ``cog`` extra.

        Raises:
            HrefNotAllowedError: a file outside the allowed prefixes (whatever ``on_error``).
            MissingExtraError: ``tile_ranges=True`` without the ``cog`` extra installed.
        """
        if tile_ranges:
            require_cog_extra()
        profiles = as_profiles(auth)
        nodata = check_nodata_override(nodata)
        hrefs = expand_sources(sources)
        if not hrefs:
            raise InvalidInputError("no sources given")
        check_allowed(hrefs, allowed_prefixes)
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        rows, skipped = map_sources(
            lambda h: read_file(
                h,
                pattern=regex,
                datetime=datetime,
                nodata=nodata,
                gdal_options=gdal_options,
                auth=profiles,
                tile_ranges=tile_ranges,
            ),
            hrefs,
            labels=hrefs,
            workers=workers,
            progress=progress,
            on_error=on_error,
            desc="indexing files",
            finish=lambda facts: [to_row(facts)],
        )
        _check_nodata_assets(nodata, rows)
        return cls._finish(rows, skipped, what="files")

    @classmethod
    def from_stac(
        cls,
        items: Any,
        *,
        assets: Sequence[str] | None = None,
        progress: bool = False,
        workers: int | None = None,
        on_error: OnError = "raise",
        nodata: NodataOverride = None,
        gdal_options: Mapping[str, Any] | None = None,
        auth: Profile | Sequence[Profile] | None = None,
        allowed_prefixes: PrefixesLike = None,
        tile_ranges: bool = False,
        sign: Callable[[str], str] | None = None,
    ) -> TileIndex:
        """Index STAC Items: one row per raster asset.

        Grids come from the projection extension; an asset without it has its file opened. Pixel facts
        come from ``raster:bands`` (data type, nodata, scale, offset) and ``eo:bands`` (band count,
        common names). Where the Items leave the data type, nodata or band count of an asset out (as
        Planetary Computer's Sentinel-2 Items do), ONE file of that asset per collection is opened
        (a second one if the first fails) and its header fills every row of the asset: each file
        of a collection's asset is assumed to share them. If none opens, the data type stays unknown
        and an :class:`~mosaic.errors.IncompleteMetadataWarning` per asset says what is assumed.
        An Item without a ``datetime`` (nor ``start_datetime``) is indexed with an unknown time, as a
        file without a time tag is. Each row's ``identity`` is the asset's ``file:size`` and
        ``file:checksum``, else the Item's ``updated`` (plus the file's size and time where it was
        opened); no file is opened for it.

        Args:
            items: ``pystac.Item``s or dicts, an ItemCollection, a pystac-client search, or the path of
                a JSON/NDJSON/stac-geoparquet file of Items.
            assets: asset names to index (default: every raster asset except thumbnails/overviews).
            progress: show a progress bar (useful when Items lack projection info and files are opened).
            workers: threads for Items whose files must be opened.
            on_error: as in :meth:`from_files`.
            nodata: the source nodata, over what the Items and files say: one value, or a mapping of
                asset name to value (as in :meth:`from_files`; the Item geometry stays the footprint).
            gdal_options: as in :meth:`from_files`, for the files that must be opened.
            auth: as in :meth:`from_files`.
            allowed_prefixes: as in :meth:`from_files`: every asset indexed must lie under them, opened
                or not (the index would point at it).
            tile_ranges: as in :meth:`from_files`: every asset's file is then opened once (its
                header read, at index time) to record its tile layout and its size and time.
            sign: a callable from href to signed href (as odc-stac's ``patch_url``), used for the
                files opened at index time; the index keeps the Items' plain hrefs.

        Raises:
            HrefNotAllowedError: an asset outside the allowed prefixes (whatever ``on_error``).
            MissingExtraError: ``tile_ranges=True`` without the ``cog`` extra installed.
        """
        if tile_ranges:
            require_cog_extra()
        profiles = as_profiles(with_signer(auth, sign))
        nodata = check_nodata_override(nodata)
        dicts, base = iter_items(items)
        if not dicts:
            raise InvalidInputError("no STAC Items given")
        check_allowed(stac_hrefs(dicts, assets=assets, base=base), allowed_prefixes)
        headers = _read_headers(
            dicts,
            assets=assets,
            base=base,
            nodata=nodata,
            workers=workers,
            progress=progress,
            gdal_options=gdal_options,
            auth=profiles,
        )
        labels = [str(d.get("id", "?")) for d in dicts]
        rows, skipped = map_sources(
            lambda d: prefetch_item(
                d, assets=assets, base=base, nodata=nodata, gdal_options=gdal_options, auth=profiles
            ),
            dicts,
            labels=labels,
            workers=workers,
            progress=progress,
            on_error=on_error,
            desc="indexing items",
            finish=lambda fetched: assets_from_item(
                fetched[0],
                assets=assets,
                base=base,
                opened=fetched[1],
                headers=headers,
                nodata=nodata,
                gdal_options=gdal_options,
                auth=profiles,
            ),
        )
        _check_nodata_assets(nodata, rows)
        if tile_ranges:
            rows, failed = map_sources(
                lambda row: with_tile_layout(row, gdal_options=gdal_options, auth=profiles),
                rows,
                labels=[str(r.href) for r in rows],
                workers=workers,
                progress=progress,
                on_error=on_error,
                desc="recording tile layouts",
                finish=lambda row: [row],
            )
            skipped += failed
        return cls._finish(rows, skipped, what="STAC Items")

    @classmethod
    def from_footprints(
        cls,
        footprints: Any,
        *,
        id_column: str = "id",
        crs: str | Any = None,
        datetime: Any = None,
        asset: str = "footprint",
    ) -> TileIndex:
        """A planning-only index of footprints without files (e.g. the Sentinel-2 MGRS grid).

        Args:
            footprints: a GeoDataFrame (any CRS; reprojected to lon/lat) with an id column.
            id_column: column holding each footprint's id.
            crs: each row's native CRS: a fixed value, a column name, or a callable from id to CRS.
            datetime: a fixed time, a column name, or None.
            asset: asset name given to every row.
        """
        gdf = footprints
        if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
            gdf = gdf.to_crs(4326)
        if id_column not in gdf.columns:
            raise InvalidInputError(f"footprints have no column {id_column!r}; columns: {list(gdf.columns)}")
        records = []
        for row in gdf.itertuples(index=False):
            rid = str(getattr(row, id_column))
            if callable(crs):
                row_crs = crs(rid)
            elif isinstance(crs, str) and crs in gdf.columns:
                row_crs = getattr(row, crs)
            else:
                row_crs = crs if crs is not None else "EPSG:4326"
            when = (
                getattr(row, datetime) if isinstance(datetime, str) and datetime in gdf.columns else datetime
            )
            records.append(
                SceneAsset(
                    id=rid,
                    asset=asset,
                    href=None,
                    crs=str(row_crs),
                    transform=None,
                    shape=None,
                    footprint=normalize_lonlat(row.geometry),
                    datetime=None if when is None else to_utc(when),
                )
            )
        return cls.from_records(records)

    @classmethod
    def from_gti(
        cls,
        path: PathType,
        *,
        layer: str | None = None,
        crs_field: str | None = None,
        pattern: str | re.Pattern[str] | None = None,
        nodata: NodataOverride = None,
        progress: bool = False,
        workers: int | None = None,
        on_error: OnError = "raise",
        allowed_prefixes: PrefixesLike = None,
    ) -> TileIndex:
        """Index the tiles of a GDAL GTI: ours (``.gti.gpkg``), a ``.gti`` XML, or a ``gdaltindex`` output.

        Each tile is opened for its grid (as :meth:`from_files`); its id, asset, time and CRS come from
        the GTI's ``id``, ``asset``, ``datetime`` and source-CRS fields where it has them.

        Args:
            path: the GTI file (any vector format GDAL reads, with a location field).
            layer: the tile index layer, where the file has several.
            crs_field: field with each tile's CRS (default: ``src_crs`` or ``src_srs`` when present).
            pattern: a regex naming scenes, assets and times from paths, as in :meth:`from_files`.
            nodata: the tiles' source nodata, as in :meth:`from_files`; over the GTI's own ``src_nodata``
                field (which :func:`mosaic.export_gti` writes) and the files' tags.
            progress: show a progress bar.
            workers: threads reading tile metadata.
            on_error: as in :meth:`from_files`.
            allowed_prefixes: as in :meth:`from_files`: every tile (and the vector file a ``.gti`` XML
                names) must lie under them.

        Raises:
            HrefNotAllowedError: a tile outside the allowed prefixes (whatever ``on_error``).
        """
        from mosaic.index._gti_read import gti_tiles, tile_facts

        nodata = check_nodata_override(nodata)
        tiles = gti_tiles(path, layer=layer, crs_field=crs_field, allowed_prefixes=allowed_prefixes)
        check_allowed([t.href for t in tiles], allowed_prefixes)
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        rows, skipped = map_sources(
            lambda tile: tile_facts(tile, pattern=regex, nodata=nodata),
            tiles,
            labels=[t.href for t in tiles],
            workers=workers,
            progress=progress,
            on_error=on_error,
            desc="indexing GTI tiles",
            finish=lambda facts: [to_row(facts)],
        )
        try:
            return cls._finish(rows, skipped, what=f"tiles of {path}")
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path}: {exc}; pass pattern= with an 'id' group") from exc

    @classmethod
    def _finish(cls, rows: list[SceneAsset], skipped: list[tuple[str, str]], *, what: str) -> TileIndex:
        skips = [Skipped(h, r) for h, r in skipped]
        if skips:
            listing = "\n".join(f"  - {s}" for s in skips)
            warnings.warn(
                f"skipped {len(skips)} of the {what} given (on_error='skip'):\n{listing}",
                SkippedSourcesWarning,
                stacklevel=3,
            )
        if not rows:
            raise SourceError("(all inputs)", f"none of the {what} could be indexed; {len(skips)} skipped")
        return cls.from_records(rows, skipped=skips)

    # ------------------------------------------------------------------------------------- storage

    def write(
        self,
        path: PathType,
        *,
        row_group_size: int = ROW_GROUP_SIZE,
        partition_by: str | Sequence[str] | None = None,
        keep_other_partitions: bool = False,
    ) -> Path:
        """Save as GeoParquet 1.1 with a ``bbox`` covering column, readable by geopandas and GDAL.

        Hrefs are written as they are (they are what a load reads); those that carry a secret (a signed
        URL, a password in a URL) make a :class:`~mosaic.errors.SecretHrefWarning`: the file then holds
        the secret for anyone it is shared with.

        The file is written under a temporary name no other writer uses, flushed to the disk, then
        renamed over ``path``: readers see the old index or the new one, never part of one, also after
        a crash or a power cut, and a failed write leaves the old index and no temporary file.

        With ``partition_by``, ``path`` is a folder of hive partitions, one file per partition
        (``year=2024/utm_zone=32/part-0.parquet``), each in the same row order and row groups as a
        single file and written as one is; :meth:`read` then opens only the partitions a query needs.
        Keys: ``"year"`` (of each row's time) and ``"utm_zone"`` (of its footprint's centre; footprints
        reaching more than 1 degree beyond their zone, and rows without a time or spanning two years, go
        to the ``__HIVE_DEFAULT_PARTITION__`` partition, which every query reads). Each file is replaced
        atomically; a reader during the write may see some partitions old and others new.

        Args:
            path: the file, or the folder with ``partition_by``.
            row_group_size: rows per row group (the unit a query reads).
            partition_by: ``"year"``, ``"utm_zone"`` or both (in folder order), for an index too large
                for one file (an archive of millions of scenes).
            keep_other_partitions: keep the files of partitions this index has no rows in (to add a
                year to an archive one year at a time); by default the folder ends up holding exactly
                this index.
        """
        hrefs = self._table.column("href")
        _warn_secrets(hrefs.filter(pc.match_substring_regex(hrefs, "[@=]")).to_pylist(), path)
        if partition_by is not None:
            from mosaic.index._store import write_partitioned

            return write_partitioned(
                self, path, partition_by, row_group_size=row_group_size, keep_other=keep_other_partitions
            )
        return self._write_file(Path(path), row_group_size)

    def _write_file(self, path: Path, row_group_size: int) -> Path:
        """Write one GeoParquet file durably (temporary name, flush, rename)."""
        from mosaic.io import _durable

        path.parent.mkdir(parents=True, exist_ok=True)
        wkb = shapely.to_wkb(self._geometry, output_dimension=2) if len(self) else np.empty(0, dtype=object)
        bounds = shapely.bounds(self._geometry) if len(self) else np.empty((0, 4))
        bbox = pa.StructArray.from_arrays(
            [pa.array(bounds[:, i], pa.float64()) for i in range(4)], fields=list(_BBOX)
        )
        table = self._table.append_column("geometry", pa.array(wkb, pa.binary())).append_column("bbox", bbox)
        one_of_each = np.unique(shapely.get_type_id(self._geometry), return_index=True)[1]
        types = sorted({self._geometry[i].geom_type for i in one_of_each})
        total = [float(v) for v in shapely.total_bounds(self._geometry)] if len(self) else []
        geo = {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {
                "geometry": {
                    "encoding": "WKB",
                    "geometry_types": types,
                    "crs": pyproj_crs84(),
                    "edges": "planar",
                    "bbox": total,
                    "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
                }
            },
        }
        meta = dict(table.schema.metadata or {})
        meta[b"geo"] = json.dumps(geo).encode()
        meta[_META_KEY] = json.dumps(
            {"format_version": _FORMAT_VERSION, "skipped": [[redact(s.href), s.reason] for s in self.skipped]}
        ).encode()
        table = table.replace_schema_metadata(meta)
        tmp = _durable.temporary_name(path)
        try:
            pq.write_table(
                table, tmp, row_group_size=row_group_size, compression="zstd", write_statistics=True
            )
            _durable.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(
        cls,
        path: PathType,
        *,
        bbox: BBox | Sequence[float] | None = None,
        time: TimeLike = None,
        bbox_crs: Any = "EPSG:4326",
        allowed_prefixes: PrefixesLike = None,
        auth: Profile | Sequence[Profile] | None = None,
        filter: Any = None,
    ) -> TileIndex:
        """Open a saved index (GeoParquet written by :meth:`write`), or a GTI (:meth:`from_gti`).

        ``path`` is one file, a folder of them (a partitioned index: every ``*.parquet`` at any depth,
        hidden and ``_`` files aside) or a glob (``"index/year=2024/**/*.parquet"``), local or on an
        object store (``s3://bucket/index/``, with the credentials of a matching profile in ``auth``,
        else pyarrow's defaults: the ``AWS_*`` environment variables).

        With ``bbox`` and/or ``time``, only what can match is read: the partitions whose ``year`` and
        ``utm_zone`` keys fit the query, then, in each file, the row groups whose footer statistics
        (bbox covering, datetime) can match. The result then holds those candidate rows; call
        :meth:`query` for the exact selection. Memory stays that of the candidates, not of the index.
        What was opened and read is logged (``mosaic.index.tile_index`` logger, DEBUG).

        With ``filter`` (CQL2, as :meth:`query`), the row groups whose statistics show that no row can
        match are not read (where the filter's properties are columns of the file: format 5), and
        the result holds only the rows the filter keeps.

        An index from someone else can point at any file or URL: with ``allowed_prefixes`` (folders
        and URLs) and/or ``$MOSAIC_ALLOWED_PREFIXES``, an index with an href outside them is refused
        (:class:`~mosaic.errors.HrefNotAllowedError`) before any file it names is opened.

        A row found more than once (same scene id and asset: an index concatenated from overlapping
        ones) is kept once, with a :class:`~mosaic.errors.DuplicateRowsWarning`, when its copies agree
        in every field; copies that disagree are an error, as no one can say which is right.

        Raises:
            IndexFormatError: naming the file: missing, an empty folder, not Parquet (or a GTI), not a
                mosaic tile index, written by a newer mosaic, or holding conflicting copies of a row.
        """
        from mosaic.index._store import find_index_files, is_index_collection, read_tables, wanted_keys

        if not isinstance(path, (str, os.PathLike)):
            raise InvalidInputError(
                f"TileIndex.read takes the path of an index file or folder, got {type(path).__name__}"
            )
        text = os.fspath(path)
        if "://" not in text and not is_index_collection(text):
            local = Path(text)
            if not local.exists():
                raise IndexFormatError(f"{local}: index file does not exist")
            if not _is_parquet(local):  # a GDAL GTI or gdaltindex output
                gti = cls.from_gti(local, allowed_prefixes=allowed_prefixes)
                if bbox is None and time is None and filter is None:
                    return gti
                return gti.query(bbox, time, bbox_crs=bbox_crs, filter=filter)
        flt = parse_filter(filter)
        parts = None
        if bbox is not None:
            area = bbox_to_lonlat(bbox, bbox_crs)
            parts = [tuple(p.bounds) for p in getattr(area, "geoms", [area])]
        start, end = parse_time(time)
        wanted = wanted_keys(parts, start, end)
        where = find_index_files(text, as_profiles(auth), wanted)
        files, report = read_tables(
            where,
            parts=parts,
            start=start,
            end=end,
            schema_names=SCHEMA.names,
            version_max=_FORMAT_VERSION,
            predicate=flt,
        )
        tables = [_with_columns(f.table, f.absent, f.meta.get("format_version", 1)) for f in files]
        table = _with_properties_of(_concat(tables), report.columns)
        geometry = np.concatenate([f.geometry for f in files]) if files else np.empty(0, dtype=object)
        if flt is not None and (len(table) or set(flt.fields) <= set(table.column_names)):
            keep = flt.mask(table)  # (an empty read of files of old formats cannot tell unknown names)
            table, geometry = table.filter(pa.array(keep)), geometry[keep]
        table, geometry = _without_duplicates(table, geometry, where.label)
        skipped = list(dict.fromkeys(Skipped(h, r) for f in files for h, r in f.meta.get("skipped", [])))
        check_allowed((h for c in table.column("href").chunks for h in c.to_pylist()), allowed_prefixes)
        return cls(
            table.combine_chunks(), np.asarray(geometry, dtype=object), skipped=skipped, source=where.label
        )

    # --------------------------------------------------------------------------------------- query

    def query(
        self,
        bbox: BBox | Sequence[float] | None = None,
        time: TimeLike = None,
        *,
        bbox_crs: Any = "EPSG:4326",
        filter: Any = None,
    ) -> TileIndex:
        """Rows whose footprint (not just its bounding box) intersects ``bbox``, in ``time``, ``filter`` true.

        Args:
            bbox: (minx, miny, maxx, maxy) in ``bbox_crs``; in lon/lat, minx > maxx crosses the
                antimeridian. None selects everywhere.
            time: a date, partial date (``"2024-06"``), ``"start/end"`` or ``(start, end)``.
            bbox_crs: CRS of ``bbox``; a box in a polar projection becomes a polar cap.
            filter: CQL2 text (``"eo:cloud_cover < 20 AND sat:orbit_state = 'descending'"``) or CQL2
                JSON (a dict) over the Item properties the index holds as columns and its own scalar
                columns (``id``, ``collection``, ``asset``, ``datetime``...): comparisons, ``LIKE``,
                ``BETWEEN``, ``IN``, ``IS NULL``, ``AND``/``OR``/``NOT``, ``TIMESTAMP('...')``
                (see :mod:`mosaic.index.filters`).

        Raises:
            FilterError: a malformed filter, or one naming a property the index does not hold (the
                message names those it holds).
        """
        area = None if bbox is None else bbox_to_lonlat(bbox, bbox_crs)
        return self.query_geometry(area, time, filter=filter)

    def query_geometry(
        self,
        area: BaseGeometry | None,
        time: TimeLike = None,
        *,
        filter: Any = None,
    ) -> TileIndex:
        """Rows whose footprint intersects ``area`` (lon/lat, split at 180), ``time`` and ``filter``."""
        return self.take(self.query_rows(area, time, filter=filter))

    def query_rows(
        self, area: BaseGeometry | None, time: TimeLike = None, *, filter: Any = None
    ) -> np.ndarray:
        """The positions of the rows :meth:`query_geometry` selects, ascending."""
        flt = parse_filter(filter)
        if area is None:
            rows = np.arange(len(self))
        else:
            # query each part: a footprint split at 180 has an envelope spanning the globe
            parts = np.asarray(getattr(area, "geoms", [area]), dtype=object)
            rows = np.unique(self._strtree().query(parts, predicate="intersects")[1])
        start, end = parse_time(time)
        if start is not None or end is not None:
            t0, t1 = self._times()
            keep = np.ones(len(rows), dtype=bool)
            if end is not None:
                keep &= t0[rows] < end.value // 1000
            if start is not None:
                keep &= t1[rows] >= start.value // 1000
            rows = rows[keep]
        if flt is not None:  # on the filter's columns only (all of them for the error of an unknown one)
            names = self._table.column_names
            wanted = list(flt.fields) if flt.fields and set(flt.fields) <= set(names) else names
            rows = rows[flt.mask(self._table.select(wanted).take(pa.array(rows)))]
        return rows

    def sql(self, query: str) -> TileIndex | pa.Table:
        """Run a DuckDB SQL query over the index, as table ``scenes`` (needs the ``sql`` extra: duckdb).

        ``scenes`` has the index's columns, one per Item property named as the property (quote it:
        ``"eo:cloud_cover"``), the footprint as WKB in ``geometry`` and its lon/lat box in ``bbox``
        (``bbox.xmin``...). Nothing is written and no DuckDB extension is loaded. Times are in UTC.

        Returns:
            A :class:`TileIndex` of the result's rows when it keeps the index's columns
            (``SELECT * FROM scenes WHERE ...``), else a ``pyarrow.Table`` (``.to_pandas()`` for a
            DataFrame), e.g. of ``SELECT platform, count(*) FROM scenes GROUP BY platform``.

        Raises:
            InvalidInputError: DuckDB cannot run the query (its message).
            MissingExtraError: DuckDB is not installed (the ``sql`` extra; an ImportError too).
        """
        from mosaic.index._sql import run_sql

        return run_sql(self, query)

    def take(self, rows: Sequence[int] | np.ndarray) -> TileIndex:
        """The rows at the given positions, as a new index."""
        idx = np.asarray(rows, dtype=np.int64)
        return TileIndex(
            self._table.take(pa.array(idx)), self._geometry[idx], skipped=self.skipped, source=self._source
        )

    def _strtree(self) -> shapely.STRtree:
        with self._lock:
            if self._tree is None:
                self._tree = shapely.STRtree(self._geometry)
            return self._tree

    def _times(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the [first, last] instant covered, as UTC microseconds (unknown times match all)."""
        with self._lock:
            if self._time_bounds is None:
                lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
                when = self._table.column("datetime")
                start = pc.coalesce(self._table.column("start_datetime"), when)
                end = pc.coalesce(self._table.column("end_datetime"), when)
                self._time_bounds = (_timestamp_us(start, lo), _timestamp_us(end, hi))
            return self._time_bounds

    def _sorted(self) -> TileIndex:
        """Canonical row order: Hilbert index of footprint centres, then time, scene and asset."""
        if len(self) == 0:
            return self
        bounds = shapely.bounds(self._geometry)
        cx = (bounds[:, 0] + bounds[:, 2]) / 2
        cy = (bounds[:, 1] + bounds[:, 3]) / 2
        h = _hilbert(cx, cy)
        when, _ = self._times()
        ids = self._table.column("id").to_numpy(zero_copy_only=False)
        assets = self._table.column("asset").to_numpy(zero_copy_only=False)
        order = np.lexsort((assets, ids, when, h))
        if np.array_equal(order, np.arange(len(order))):
            return self
        return self.take(order)

    # -------------------------------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[SceneAsset]:
        return iter(self.records())

    def __repr__(self) -> str:
        """One line: source, assets of how many scenes, CRSs with row counts, time range."""
        from mosaic._repr import index_repr

        return index_repr(self)

    def _repr_html_(self) -> str:
        """The index as an HTML table (what Jupyter shows)."""
        from mosaic._repr import index_html

        return index_html(self)

    @property
    def source(self) -> str | None:
        """The file this index was read from, if any."""
        return self._source

    @property
    def table(self) -> pa.Table:
        """The rows as an Arrow table (without geometry)."""
        return self._table

    @property
    def footprints(self) -> np.ndarray:
        """Footprints in lon/lat, one shapely geometry per row."""
        return self._geometry

    @property
    def time_range(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """Earliest and latest acquisition time in the index."""
        when = self._table.column("datetime")
        lo, hi = pc.min(when).as_py(), pc.max(when).as_py()
        return (None if lo is None else pd.Timestamp(lo), None if hi is None else pd.Timestamp(hi))

    def crs_counts(self) -> dict[str, int]:
        """How many rows each CRS has."""
        return dict(Counter(self._table.column("crs").to_pylist()).most_common())

    def records(self) -> list[SceneAsset]:
        """The rows as :class:`SceneAsset` records."""
        rows = self._table.to_pylist()
        out = []
        for row, geom in zip(rows, self._geometry, strict=True):
            out.append(
                SceneAsset(
                    id=row["id"],
                    asset=row["asset"],
                    href=row["href"],
                    crs=row["crs"],
                    transform=None if row["transform"] is None else tuple(row["transform"]),
                    shape=None if row["shape"] is None else tuple(row["shape"]),
                    footprint=geom,
                    datetime=_pd(row["datetime"]),
                    start_datetime=_pd(row["start_datetime"]),
                    end_datetime=_pd(row["end_datetime"]),
                    band_count=row["band_count"],
                    dtype=row["dtype"],
                    nodata=row["nodata"],
                    overviews=None if row["overviews"] is None else tuple(row["overviews"]),
                    band_names=tuple(row["band_names"] or ()),
                    common_names=tuple(row["common_names"] or ()),
                    scale=row["scale"],
                    offset=row["offset"],
                    collection=row["collection"],
                    properties=row["properties"],
                    identity=row["identity"],
                    tiles=row["tiles"],
                )
            )
        return out

    def to_geodataframe(self) -> Any:
        """The rows as a ``geopandas.GeoDataFrame`` in EPSG:4326 (Arrow-backed columns keep nulls)."""
        import geopandas as gpd

        frame = self._table.to_pandas(types_mapper=pd.ArrowDtype)
        return gpd.GeoDataFrame(frame, geometry=list(self._geometry), crs="EPSG:4326")

    def equals(self, other: TileIndex) -> bool:
        """Whether two indexes hold the same rows in the same order, footprints included."""
        if not isinstance(other, TileIndex) or len(self) != len(other):
            return False
        if self._table.schema != other._table.schema:
            return False
        for name in self._table.column_names:
            mine, theirs = self._table.column(name), other._table.column(name)
            if pa.types.is_floating(mine.type):  # NaN nodata must equal NaN
                same_nulls = mine.is_null().equals(theirs.is_null())
                values = (c.to_numpy(zero_copy_only=False) for c in (mine.fill_null(0), theirs.fill_null(0)))
                if not (same_nulls and np.array_equal(*values, equal_nan=True)):  # type: ignore[misc]  # mypy cannot count the 2-item generator
                    return False
            elif not mine.equals(theirs):
                return False
        return bool(np.all(shapely.equals_exact(self._geometry, other._geometry, tolerance=0.0)))


def _warn_secrets(hrefs: Iterable[str | None], path: PathType) -> None:
    """Warn when hrefs about to be written carry secrets: how many, and of what kinds (no values)."""
    kinds: Counter[str] = Counter()
    carrying: list[str] = []
    for href in hrefs:
        found = secrets_in(href) if href and ("@" in href or "=" in href) else ()
        kinds.update(found)
        carrying.extend([href] if found and href else [])
    if not carrying:
        return
    warnings.warn(
        f"{path}: {len(carrying)} href(s) carry secrets ({', '.join(kinds)}), e.g. {redact(carrying[0])}; "
        "the index file holds "
        "them for anyone who gets it: index the files by plain hrefs and give credentials with auth= "
        "profiles (mosaic.auth), or keep the file private",
        SecretHrefWarning,
        stacklevel=3,
    )


def _with_columns(table: pa.Table, absent: Sequence[str], version: int = _FORMAT_VERSION) -> pa.Table:
    """The table in :data:`SCHEMA` (columns an older format lacks filled), then its property columns.

    Columns an older format lacks are filled with empty lists, else nulls; the property columns of a
    file older than format 5 are derived from its ``properties`` JSON.
    """
    for name in absent:
        kind = SCHEMA.field(name).type
        fill: list[Any] | None = [] if pa.types.is_list(kind) else None
        table = table.append_column(name, pa.array([fill] * len(table), type=kind))
    extra = [n for n in table.column_names if n not in SCHEMA.names and n not in ("geometry", "bbox")]
    core = table.select(SCHEMA.names)
    if not core.schema.equals(SCHEMA):  # a cast would copy list columns for nothing
        core = core.cast(SCHEMA)
    if version < _PROPERTY_COLUMNS_IN:
        return with_property_columns(core, SCHEMA.names)
    for name in extra:
        core = core.append_column(table.schema.field(name), table.column(name))
    return core


def _with_properties_of(table: pa.Table, fields: Sequence[pa.Field]) -> pa.Table:
    """``table`` with a null column for each property column of the files read that no row read has.

    So an index read has the property columns of its files whichever row groups were read.
    """
    have = set(table.column_names)
    for found in fields:
        if (
            found.name not in have
            and found.name not in ("geometry", "bbox")
            and found.name not in SCHEMA.names
        ):
            table = table.append_column(found, pa.nulls(len(table), found.type))
            have.add(found.name)
    return table.select([*SCHEMA.names, *sorted(n for n in table.column_names if n not in SCHEMA.names)])


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    """The rows of several files; property columns a file lacks are null, types widened (int to float).

    Files whose property columns disagree beyond widening (a property of numbers in one file and of
    text in another) have the columns derived again from the ``properties`` JSON of all rows.
    """
    if not tables:
        return SCHEMA.empty_table()
    if len(tables) == 1:
        return tables[0]
    try:
        joined = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        joined = pa.concat_tables([t.select(SCHEMA.names) for t in tables])
        return with_property_columns(joined, SCHEMA.names)
    order = [*SCHEMA.names, *sorted(n for n in joined.column_names if n not in SCHEMA.names)]
    return joined.select(order)


def _read_headers(
    dicts: Sequence[Mapping[str, Any]],
    *,
    assets: Sequence[str] | None,
    base: str | None,
    nodata: NodataOverride,
    workers: int | None,
    progress: bool,
    gdal_options: Mapping[str, Any] | None,
    auth: Sequence[Profile],
) -> dict[HeaderKey, SceneAsset]:
    """One file header per (collection, asset) the Items say too little about, read in the thread pool.

    Warns (:class:`IncompleteMetadataWarning`, once per asset) where no file of the asset opened.
    """
    requests = header_requests(dicts, assets=assets, base=base, nodata=nodata)
    if not requests:
        return {}
    found: list[AssetHeader]
    found, _ = map_sources(
        lambda request: read_asset_header(request, gdal_options=gdal_options, auth=auth),
        requests,
        labels=[f"{c or ''}/{a}" for c, a in (r.key for r in requests)],
        workers=workers,
        progress=progress,
        on_error="raise",
        desc="reading asset headers",
        finish=lambda header: [header],
    )
    for header in found:
        if header.row is None:
            warnings.warn(header.assumed(), IncompleteMetadataWarning, stacklevel=3)
    return {h.request.key: h.row for h in found if h.row is not None}


def _check_nodata_assets(nodata: NodataOverride, rows: Sequence[SceneAsset]) -> None:
    """A per-asset ``nodata=`` must name assets the index has (a typo would silently do nothing)."""
    if not isinstance(nodata, Mapping) or not rows:
        return
    have = {r.asset for r in rows}
    unknown = sorted(set(nodata) - have)
    if unknown:
        raise InvalidInputError(
            f"nodata= names asset(s) {unknown} that no indexed row has; the assets are {sorted(have)}"
        )


def _without_duplicates(table: pa.Table, geometry: np.ndarray, path: PathType) -> tuple[pa.Table, np.ndarray]:
    """``table`` and its footprints with each row kept once; rows of one (id, asset) that differ are an error.

    Raises:
        IndexFormatError: naming the file and one scene whose rows disagree.
    """
    if len(table) < 2:
        return table, geometry
    keys = pc.binary_join_element_wise(table.column("id"), table.column("asset"), "\x00")
    if pc.count_distinct(keys).as_py() == len(table):
        return table, geometry
    ids = table.column("id").to_pylist()
    assets = table.column("asset").to_pylist()
    counts = Counter(zip(ids, assets, strict=True))
    repeated = {key for key, n in counts.items() if n > 1}
    first: dict[tuple[Any, Any], int] = {}
    drop: list[int] = []
    for i, key in enumerate(zip(ids, assets, strict=True)):
        if key not in repeated:
            continue
        if key not in first:
            first[key] = i
            continue
        a, b = table.slice(first[key], 1).to_pylist()[0], table.slice(i, 1).to_pylist()[0]
        fields = sorted(k for k in a if not _same(a[k], b[k]))
        if not shapely.equals_exact(geometry[first[key]], geometry[i], tolerance=0.0):
            fields.append("geometry")
        if fields:
            raise IndexFormatError(
                f"{path}: scene {key[0]!r} asset {key[1]!r} appears {counts[key]} times with different "
                f"{', '.join(fields)}; a tile index holds each scene asset once: rebuild the index, or "
                "keep one row of each (it may have been concatenated from overlapping indexes)"
            )
        drop.append(i)
    example = next(iter(sorted(repeated, key=str)))
    warnings.warn(
        f"{path}: {len(drop)} duplicate row(s) of {len(repeated)} scene asset(s) (e.g. scene "
        f"{example[0]!r} asset {example[1]!r}) dropped: each was an exact copy of another row",
        DuplicateRowsWarning,
        stacklevel=4,
    )
    keep = np.setdiff1d(np.arange(len(table)), np.asarray(drop, dtype=np.int64))
    return table.take(pa.array(keep)), geometry[keep]


def _same(a: Any, b: Any) -> bool:
    """Equal values of one field, NaN equal to NaN (a nodata of NaN is the same nodata)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _is_parquet(path: Path) -> bool:
    """Whether ``path`` is (meant to be) Parquet: by its suffix, or by Parquet's magic bytes."""
    if path.suffix.lower() in (".parquet", ".geoparquet") or path.is_dir():
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1"


def _pd(value: Any) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value)


def pyproj_crs84() -> dict[str, Any]:
    """PROJJSON of OGC:CRS84 (lon/lat on WGS 84), the CRS of every footprint."""
    from pyproj import CRS

    return cast("dict[str, Any]", json.loads(CRS.from_user_input("OGC:CRS84").to_json()))


def _hilbert(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hilbert curve index of lon/lat points on a 2^16 grid (vectorised; Skilling's algorithm)."""
    n = 1 << _HILBERT_LEVEL
    xi = np.clip(((x + 180.0) / 360.0 * (n - 1)).astype(np.int64), 0, n - 1)
    yi = np.clip(((y + 90.0) / 180.0 * (n - 1)).astype(np.int64), 0, n - 1)
    d = np.zeros_like(xi)
    s = n // 2
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        flip = ~ry
        swap_x = np.where(flip & rx, s - 1 - xi, xi)
        swap_y = np.where(flip & rx, s - 1 - yi, yi)
        xi, yi = np.where(flip, swap_y, swap_x), np.where(flip, swap_x, swap_y)
        s //= 2
    return d
