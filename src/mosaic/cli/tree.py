"""``mosaic tree export``: the scenes' native grids as a virtual Zarr store (references to COG tiles)."""

from __future__ import annotations

import click

from mosaic.cli.options import (
    bands_opt,
    bbox_crs_opt,
    check_bbox,
    filter_opt,
    index_opt,
    parse_bbox,
    quiet_opt,
    require_index,
    time_opt,
)

__all__ = ["export", "tree"]


@click.group()
def tree() -> None:
    """The virtual data tree: every native grid as its own cube, and its export as a virtual store."""


@tree.command()
@index_opt
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(writable=True),
    help="Output store: a .json file, or a folder with --format parquet; OUTPUT.open.json beside it.",
)
@click.option(
    "--bbox",
    metavar="MINX,MINY,MAXX,MAXY",
    callback=lambda ctx, param, value: None if value is None else parse_bbox(value),
    help="Scenes touching this area in --bbox-crs (written whole). [default: every scene]",
)
@bbox_crs_opt
@time_opt
@bands_opt
@filter_opt
@click.option(
    "--format",
    "store_format",
    type=click.Choice(["json", "parquet"]),
    default="json",
    show_default=True,
    help="Kerchunk references as one JSON file, or as a folder of Parquet files (for many chunks).",
)
@click.option(
    "--mixed",
    type=click.Choice(["split", "error"]),
    default="split",
    show_default=True,
    help="Scenes of one grid whose tiles are encoded differently: own groups (GRID~2...), or an error.",
)
@quiet_opt
def export(
    index: str | None,
    output: str,
    bbox: tuple[float, float, float, float] | None,
    bbox_crs: str,
    time: str | None,
    bands: tuple[str, ...] | None,
    filter: str | None,
    store_format: str,
    mixed: str,
    quiet: bool,
) -> None:
    """Write a virtual Zarr store whose chunks are the COGs' own tiles (no pixel copied).

    One group per native grid (/EPSG_32632/<grid>), one (time, y, x) array per band. The index must be
    built with 'mosaic index build --tile-ranges'. OUTPUT.open.json holds the arguments of
    xarray.open_datatree that open it without mosaic (with imagecodecs for ZSTD, LZW and predictors).

    \b
    Examples:
      mosaic tree export --index index.parquet -o scenes.json
      mosaic tree export --index index.parquet -o s2.parq --format parquet --bands B02,B03 --time 2024-06
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    from mosaic.outputs.virtual import export_virtual

    if bbox is not None:
        check_bbox(bbox, bbox_crs)
    written = export_virtual(
        require_index(index),
        output,
        bbox=bbox,
        bbox_crs=bbox_crs,
        time=time,
        bands=list(bands) if bands else None,
        format=store_format,  # type: ignore[arg-type]
        mixed=mixed,  # type: ignore[arg-type]
        filter=filter,
    )
    if not quiet:
        for path in written:
            click.echo(f"wrote {path}")
