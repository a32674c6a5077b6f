"""``mosaic index build`` and ``mosaic index info``: make a tile index and describe one."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mosaic.cli.options import (
    index_opt,
    json_opt,
    on_error_opt,
    parse_list,
    quiet_opt,
    require_index,
    src_nodata_opt,
    workers_opt,
)

if TYPE_CHECKING:
    from mosaic.index.tile_index import TileIndex

__all__ = ["build", "describe", "index", "info", "is_stac_source"]

_STAC_SUFFIXES = (".json", ".geojson", ".ndjson", ".jsonl", ".parquet", ".geoparquet")


def is_stac_source(source: str) -> bool:
    """Whether an input names STAC Items by its suffix: JSON, NDJSON or stac-geoparquet."""
    return source.lower().endswith(_STAC_SUFFIXES)


@click.group()
def index() -> None:
    """Build and inspect tile indexes (GeoParquet, one row per scene asset)."""


# -------------------------------------------------------------------------------------------- build


def _stac_files(sources: tuple[str, ...]) -> list[str]:
    """Local STAC files from paths and globs; directories and URLs are usage errors."""
    from mosaic.errors import SourceError
    from mosaic.index.sources import is_remote

    out: list[str] = []
    for src in sources:
        if is_remote(src):
            raise click.BadParameter(
                f"{src}: STAC Item files must be local (download it first); "
                "to search a STAC API, use --stac-url",
                param_hint="SOURCES",
            )
        if os.path.isdir(src):
            raise click.BadParameter(
                f"{src} is a directory; with --stac give Item files, e.g. {src}/items.json or "
                f"'{src}/**/*.json'",
                param_hint="SOURCES",
            )
        if any(ch in src for ch in "*?["):
            matches = sorted(glob.glob(src, recursive=True))
            if not matches:
                raise SourceError(src, "no file matches this pattern")
            out.extend(matches)
        else:
            out.append(src)
    return out


def _items(source: Any) -> Any:
    """The Items of a STAC file (relative hrefs kept against its folder); other sources as they are.

    Raises:
        SourceError: naming the file, when it holds something other than STAC Items.
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    from mosaic.errors import SourceError
    from mosaic.index.sources import iter_items

    try:
        items, base = iter_items(source)
    except SourceError as exc:
        if exc.href == str(source):
            raise
        raise SourceError(str(source), f"{exc.href}: {exc.reason}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(str(source), f"is not STAC Items JSON ({exc})") from exc
    if not items:
        raise SourceError(str(source), "holds no STAC Items")
    return [{**item, "_base": item.get("_base", base)} for item in items]


def _from_stac(files: list[Any], assets: tuple[str, ...] | None, workers: int | None, **kw: Any) -> TileIndex:
    """One index of the Items of every file (each file's relative hrefs resolved against its folder)."""
    from mosaic.index.tile_index import TileIndex

    parts = [
        TileIndex.from_stac(_items(f), assets=list(assets) if assets else None, workers=workers, **kw)
        for f in files
    ]
    if len(parts) == 1:
        return parts[0]
    records = [r for p in parts for r in p.records()]
    return TileIndex.from_records(records, skipped=[s for p in parts for s in p.skipped])


def _keep_assets(idx: TileIndex, assets: tuple[str, ...]) -> TileIndex:
    """Rows whose asset name (from --pattern, default ``data``) is one of ``assets``."""
    from mosaic.errors import InvalidInputError

    names = idx.table.column("asset").to_pylist()
    rows = [i for i, name in enumerate(names) if name in assets]
    if not rows:
        raise InvalidInputError(
            f"--assets {','.join(assets)} matches none of the indexed files, whose assets are "
            f"{sorted(set(names))} (a file's asset is the 'asset' group of --pattern, else 'data')"
        )
    return idx.take(rows)


@index.command()
@click.argument("sources", nargs=-1, required=False, metavar="[SOURCES...]")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(writable=True),
    help="Where to write the index (GeoParquet): a file, or a folder with --partition-by.",
)
@click.option(
    "--partition-by",
    metavar="KEY[,KEY]",
    help="Write a folder of hive partitions, one file each: year, utm_zone or year,utm_zone "
    "(for archives of millions of scenes; queries then read only the partitions they need).",
)
@click.option(
    "--stac",
    is_flag=True,
    help="SOURCES are STAC Item files (JSON FeatureCollection, NDJSON or stac-geoparquet). "
    "Automatic for .json, .geojson, .ndjson and .parquet inputs.",
)
@click.option(
    "--assets",
    metavar="A,B,...",
    help="Asset names to index. [default: every raster asset of an Item; every file]",
)
@click.option(
    "--pattern",
    metavar="REGEX",
    help="For raster files: a regex searched in each path whose named groups id, asset and datetime "
    "set the scene id (default: file stem), the asset name (default: data) and the time "
    "(default: the TIFF DATETIME tag).",
)
@src_nodata_opt
@click.option("--stac-url", metavar="URL", help="Search this STAC API for the Items to index.")
@click.option(
    "--collection",
    "collections",
    metavar="ID[,ID...]",
    multiple=True,
    help="With --stac-url: the collections to search (repeatable or comma-separated).",
)
@click.option("--bbox", metavar="W,S,E,N", help="With --stac-url: the search area (lon/lat).")
@click.option(
    "--datetime", "when", metavar="TIME", help="With --stac-url: a date, 'start/end' or an open '../end'."
)
@click.option("--max-items", type=int, metavar="N", help="With --stac-url: stop after N Items.")
@click.option(
    "--tile-ranges",
    is_flag=True,
    help="Record each tiled GeoTIFF's tile layout (every tile's byte range, how to decode it): loads "
    "then fetch tiles with no HEAD and no header request. Opens every file once (STAC Items too).",
)
@on_error_opt
@workers_opt
@quiet_opt
def build(
    sources: tuple[str, ...],
    output: str,
    partition_by: str | None,
    stac: bool,
    assets: str | None,
    pattern: str | None,
    src_nodata: float | dict[str, float] | None,
    stac_url: str | None,
    collections: tuple[str, ...],
    bbox: str | None,
    when: str | None,
    max_items: int | None,
    tile_ranges: bool,
    on_error: str,
    workers: int | None,
    quiet: bool,
) -> None:
    """Index raster files or STAC Items into a GeoParquet tile index.

    SOURCES are raster files, globs (quote them: 'data/**/*.tif'), directories (searched recursively)
    or URLs; or STAC Item files (with --stac, or when they end in .json, .ndjson or .parquet). Or,
    instead of SOURCES, a STAC API search: --stac-url with --collection, --bbox and --datetime.

    \b
    Examples:
      mosaic index build 'scenes/**/*.tif' -o index.parquet
      mosaic index build scenes/ --pattern '(?P<id>[^/]+)/(?P<asset>\\w+)\\.tif$' -o index.parquet
      mosaic index build items.json --assets B02,B8A -o index.parquet
      mosaic index build 'LT05_L1TP_*_B*.TIF' --src-nodata 0 -o index.parquet
      mosaic index build items.ndjson --partition-by year,utm_zone -o archive/
      mosaic index build --stac-url https://earth-search.aws.element84.com/v1 \\
          --collection sentinel-2-l2a --bbox 11,45,12,46 --datetime 2024-06 -o index.parquet
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    import re
    import sys

    from mosaic.errors import InvalidInputError
    from mosaic.index.tile_index import TileIndex

    progress = not quiet and sys.stderr.isatty()
    wanted = parse_list(assets) if assets else None
    keys = parse_list(partition_by) if partition_by else None
    if keys is None and os.path.isdir(output):
        raise click.BadParameter(
            f"{output} is a folder: give a file path, or --partition-by to write a partitioned index there",
            param_hint="'-o'",
        )
    nodata = src_nodata
    if stac_url is not None:
        if sources or pattern or stac:
            raise click.UsageError("--stac-url searches a STAC API: give no SOURCES, --stac or --pattern")
        search = _search(stac_url, collections, bbox, when, max_items)
        idx = _from_stac(
            [search],
            wanted,
            workers,
            progress=progress,
            on_error=on_error,
            nodata=nodata,
            tile_ranges=tile_ranges,
        )
        _write_and_report(idx, output, quiet, keys)
        return
    if not sources:
        raise click.UsageError("give SOURCES (files, globs, folders, URLs, STAC Item files) or --stac-url")
    if collections or bbox or when or max_items is not None:
        raise click.UsageError("--collection, --bbox, --datetime and --max-items go with --stac-url")
    stac_flags = [is_stac_source(s) for s in sources]
    use_stac = stac or all(stac_flags)
    if not use_stac and any(stac_flags):
        listed = ", ".join(s for s, f in zip(sources, stac_flags, strict=True) if f)
        raise click.UsageError(
            f"SOURCES mix STAC files ({listed}) with raster files; index them separately, "
            "or pass --stac if every source is a STAC file"
        )
    if use_stac:
        if pattern:
            raise click.UsageError("--pattern applies to raster files, not to STAC Items")
        idx = _from_stac(
            _stac_files(sources),
            wanted,
            workers,
            progress=progress,
            on_error=on_error,
            nodata=nodata,
            tile_ranges=tile_ranges,
        )
    else:
        try:
            regex = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise click.BadParameter(
                f"{pattern!r} is not a valid regex ({exc})", param_hint="'--pattern'"
            ) from None
        try:
            idx = TileIndex.from_files(
                list(sources),
                pattern=regex,
                workers=workers,
                progress=progress,
                on_error=on_error,  # type: ignore[arg-type]
                nodata=nodata,
                tile_ranges=tile_ranges,
            )
        except InvalidInputError as exc:
            if regex is None and "duplicate index row" in str(exc):
                raise InvalidInputError(
                    f"{exc}: scene ids default to file stems, which repeat here; pass --pattern with an "
                    "'id' group, e.g. --pattern '(?P<id>[^/]+)/(?P<asset>[^/]+)\\.tif$'"
                ) from exc
            raise
        if wanted:
            idx = _keep_assets(idx, wanted)
    _write_and_report(idx, output, quiet, keys)


def _search(
    url: str, collections: tuple[str, ...], bbox: str | None, when: str | None, max_items: int | None
) -> Any:
    """A pystac-client search of the STAC API at ``url`` (lazy: pages are fetched while indexing)."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    from mosaic.errors import SourceError

    area = None
    if bbox:
        try:
            area = [float(v) for v in bbox.split(",")]
        except ValueError:
            area = []
        if len(area) != 4:
            raise click.BadParameter(f"{bbox!r} is not W,S,E,N", param_hint="'--bbox'")
    names = [c for value in collections for c in parse_list(value)] or None
    try:
        client = Client.open(url)
        search = client.search(collections=names, bbox=area, datetime=when, max_items=max_items)
        search.matched()  # reach the API now, so a wrong URL fails here with its reason
    except (APIError, OSError, ValueError) as exc:
        raise SourceError(url, f"STAC API search failed: {exc}") from exc
    return search


def _write_and_report(idx: TileIndex, output: str, quiet: bool, partition_by: tuple[str, ...] | None) -> None:
    from mosaic.errors import OutputError

    try:
        path = idx.write(output, partition_by=partition_by)
    except OSError as exc:
        raise OutputError.at(output, "the index", exc) from exc
    if not quiet:
        from mosaic._repr import short_crs

        facts = describe(idx)
        crs = ", ".join(f"{short_crs(k)} ({v})" for k, v in facts["crs"].items())
        click.echo(
            f"wrote {path}: {facts['rows']} asset(s) of {facts['scenes']} scene(s) "
            f"in {len(facts['crs'])} CRS ({crs}); time {_span(facts['time_range'])}"
            + (f"; skipped {len(idx.skipped)} input(s)" if idx.skipped else "")
        )


# --------------------------------------------------------------------------------------------- info


def describe(idx: TileIndex) -> dict[str, Any]:
    """Facts about an index as plain JSON types: counts, CRSs, time range, extent, dtypes, assets.

    ``asset_info`` gives, per asset, the distinct dtypes, nodata values, band counts and common names
    of its rows.
    """
    from mosaic._repr import index_facts

    return index_facts(idx)


def _span(time_range: list[str | None]) -> str:
    lo, hi = time_range
    return "unknown" if lo is None and hi is None else f"{lo or '?'} .. {hi or '?'}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in counts.items()) or "-"


def _asset_line(name: str, width: int, info: dict[str, list[Any]]) -> str:
    """One asset's line of ``index info``: ``  B04  uint16  nodata 0  red``."""

    def text(value: Any) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    counts = info["band_count"]
    dtypes = "/".join("dtype unknown" if d == "unknown" else d for d in info["dtype"])
    bands = "" if counts == [1] else f" x {'/'.join(map(str, counts))} bands"
    common = " | ".join(",".join(c or "-" for c in names) for names in info["common_names"] if names)
    return f"  {name:<{width}}  {dtypes}{bands}, nodata {'/'.join(map(text, info['nodata']))}" + (
        f", {common}" if common else ""
    )


def format_info(facts: dict[str, Any]) -> str:
    """The human-readable ``mosaic index info`` text."""
    from mosaic._repr import short_crs

    names = {crs: short_crs(crs) for crs in facts["crs"]}
    width = max((len(k) for k in names.values()), default=0)
    width_assets = max((len(k) for k in facts["asset_info"]), default=0)
    extent = facts["extent"]
    lines = [
        f"index:       {facts['path']}",
        f"rows:        {facts['rows']} assets of {facts['scenes']} scenes",
        f"CRS:         {len(facts['crs'])}",
        *(f"  {names[crs]:<{width}}  {n}" for crs, n in facts["crs"].items()),
        f"time range:  {_span(facts['time_range'])}",
        "extent:      "
        + (
            "-"
            if extent is None
            else f"lon {extent[0]:.4f} .. {extent[2]:.4f}, lat {extent[1]:.4f} .. {extent[3]:.4f} "
            "(footprints, EPSG:4326)"
        ),
        f"dtypes:      {_counts(facts['dtypes'])}",
        f"assets:      {_counts(facts['assets'])}",
        *(_asset_line(name, width_assets, info) for name, info in facts["asset_info"].items()),
        f"skipped:     {len(facts['skipped'])}",
        *(f"  {s['href']}: {s['reason']}" for s in facts["skipped"]),
    ]
    return "\n".join(lines)


@index.command()
@index_opt
@json_opt
def info(index: str | None, as_json: bool) -> None:
    """Describe a tile index: rows, scenes, CRSs, time range, footprint extent, dtypes and assets.

    \b
    Examples:
      mosaic index info --index index.parquet
      mosaic index info --index items.json --json
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    from mosaic.planning.planner import resolve_index

    path = require_index(index)
    facts = describe(resolve_index(path))
    facts["path"] = facts["path"] or str(Path(path))
    click.echo(json.dumps(facts, indent=2) if as_json else format_info(facts))
