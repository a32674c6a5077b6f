"""``mosaic gti export``: a GDAL GTI (Raster Tile Index) of a mosaic, for GDAL and QGIS."""

from __future__ import annotations

from typing import Any

import click

from mosaic.cli.options import (
    anchor_opt,
    bands_opt,
    bbox_crs_opt,
    check_bbox,
    crs_opt,
    filter_opt,
    index_opt,
    max_pixels_opt,
    parse_bbox,
    quiet_opt,
    require_index,
    resolution_opt,
    sortby_opt,
    time_opt,
)

__all__ = ["export", "gti"]


def _optional(parser: Any) -> Any:
    """A click callback applying ``parser`` to a given value (None passes through)."""
    return lambda ctx, param, value: None if value is None else parser(value)


@click.group()
def gti() -> None:
    """GDAL GTI (Raster Tile Index) files: the mosaic as GDAL and QGIS open it."""


@gti.command()
@index_opt
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Output .gti.gpkg (with several assets: OUT.<asset>.gti.gpkg each).",
)
@crs_opt
@resolution_opt
@click.option(
    "--bbox",
    metavar="MINX,MINY,MAXX,MAXY",
    callback=_optional(parse_bbox),
    help="Area in --bbox-crs (MINX > MAXX crosses the antimeridian in lon/lat). [default: the extent "
    "of the scenes]",
)
@bbox_crs_opt
@time_opt
@bands_opt
@anchor_opt
@click.option(
    "--method",
    type=click.Choice(["first", "last"]),
    default="first",
    show_default=True,
    help="Which scene wins where scenes overlap: the first or last valid pixel in time-then-id order.",
)
@click.option(
    "--warp",
    type=click.Choice(["exact", "gdal"]),
    default="exact",
    show_default=True,
    help="exact: tiles in other CRSs become inline VRTs warped as mosaic warps them; gdal: plain paths, "
    "GDAL warps on the fly (its 0.125 px approximation; not across the antimeridian).",
)
@click.option("--xml", is_flag=True, help="Also write a .gti XML wrapper beside each GeoPackage.")
@max_pixels_opt
@filter_opt
@sortby_opt
@quiet_opt
def export(
    index: str | None,
    output: str,
    crs: str,
    resolution: float | tuple[float, float] | None,
    bbox: tuple[float, float, float, float] | None,
    bbox_crs: str,
    time: str | None,
    bands: tuple[str, ...] | None,
    anchor: str | tuple[float, float] | None,
    method: str,
    warp: str,
    xml: bool,
    max_pixels: float | None,
    filter: Any,
    sortby: str | None,
    quiet: bool,
) -> None:
    """Write GTI files that GDAL opens as the mosaic 'mosaic regrid --groupby none' writes (same --method).

    One file is written per asset of the --index; 'gdalinfo OUT.gti.gpkg' then shows the mosaic grid,
    and a GTI FILTER open option selects a time slice (-oo "FILTER=datetime >= '2024-06-10'"). In
    Python: mosaic.export_gti(), which shows what mosaic.load(..., groupby=None) returns.

    \b
    Examples:
      mosaic gti export --index index.parquet -o seam.gti.gpkg --crs EPSG:4326 --resolution 0.0002 \\
          --bbox 11.88,45.40,12.12,45.58 --bands B02
      mosaic gti export --index index.parquet -o utm.gti.gpkg --crs utm --resolution 20 \\
          --bbox 11.88,45.40,12.12,45.58 --time 2024-06 --xml
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    from mosaic.outputs.gti import export_gti

    if bbox is not None:
        check_bbox(bbox, bbox_crs)
    written = export_gti(
        require_index(index),
        output,
        crs=crs,
        resolution=resolution,
        bbox=bbox,
        bbox_crs=bbox_crs,
        time=time,
        bands=list(bands) if bands else None,
        anchor=anchor,
        method=method,  # type: ignore[arg-type]
        warp=warp,  # type: ignore[arg-type]
        xml=xml,
        max_pixels=max_pixels,
        filter=filter,
        sortby=sortby,
    )
    if not quiet:
        for path in written:
            click.echo(f"wrote {path}")
