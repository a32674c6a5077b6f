"""``mosaic serve``: a tile server and map page over a tile index (needs the ``serve`` extra)."""

from __future__ import annotations

import click

from mosaic.cli.options import (
    bands_opt,
    filter_opt,
    index_opt,
    mask_opt,
    method_opt,
    require_index,
    sortby_opt,
    time_opt,
)

__all__ = ["serve"]


@click.command()
@index_opt
@time_opt
@bands_opt
@click.option(
    "--rescale", metavar="MIN,MAX[;...]", help="Values drawn as 0 and 255, one range or one per band."
)
@click.option(
    "--colormap", default="viridis", show_default=True, help="Matplotlib colormap of one-band tiles."
)
@method_opt
@mask_opt
@filter_opt
@sortby_opt
@click.option("--resampling", default="nearest", show_default=True, help="Resampling of the tiles' reads.")
@click.option(
    "--max-scenes",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Most scenes one tile may read; a tile needing more is refused (HTTP 413: zoom in).",
)
@click.option("--tile-size", type=click.Choice(["256", "512"]), default="256", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
def serve(
    index: str | None,
    time: str | None,
    bands: list[str] | None,
    rescale: str | None,
    colormap: str,
    method: str,
    mask: str | None,
    filter: str | None,
    sortby: str | None,
    resampling: str,
    max_scenes: int,
    tile_size: str,
    host: str,
    port: int,
) -> None:
    """Serve web map tiles of the mosaic and a map page at http://HOST:PORT/.

    Tiles are Web Mercator XYZ tiles (/tiles/{z}/{x}/{y}.png, .webp, .npy), each planned like a chunk:
    only the scenes that touch it, at the right overview. /tilejson.json and /wmts describe them for
    QGIS and web maps.

    \b
    Example:
      mosaic serve --index demo_output/index.parquet --bands B02
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    try:
        import uvicorn
    except ImportError:
        raise click.ClickException(
            "mosaic serve needs the 'serve' extra: pip install 'virtual-mosaic[serve]'"
        ) from None
    from mosaic.serve import app

    application = app(
        require_index(index),
        time=time,
        bands=bands,
        rescale=rescale,
        colormap=colormap,
        method=method,
        resampling=resampling,
        max_scenes=max_scenes,
        tile_size=int(tile_size),
        mask=mask,
        filter=filter,
        sortby=sortby,
    )
    click.echo(f"mosaic: serving on http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    uvicorn.run(application, host=host, port=port, log_level="warning")
