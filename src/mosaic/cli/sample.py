"""``mosaic sample``: the time series of a collection at points (field sites, stations) to a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mosaic.cli.options import (
    bands_opt,
    filter_opt,
    groupby_opt,
    index_opt,
    mask_opt,
    on_error_opt,
    parse_crs,
    parse_list,
    require_index,
    sortby_opt,
    src_nodata_opt,
    time_opt,
)

__all__ = ["read_points", "sample"]

_XY_NAMES = (("x", "y"), ("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"), ("long", "lat"))
"""Column pairs taken as a CSV's coordinates, in this order of preference (any case)."""


def read_points(path: Path, crs: str, xy: tuple[str, ...] | None = None) -> Any:
    """The points of a CSV (x/y columns) or of a vector file (GeoJSON, GeoPackage...) as a GeoDataFrame.

    A CSV's points are in ``crs``; a vector file's CRS wins. Columns other than the coordinates (and
    the geometry) become the points' ids.

    Raises:
        InvalidInputError: naming the file, when it is missing, unreadable, or has no coordinates.
    """
    import geopandas as gpd
    import pandas as pd

    from mosaic.errors import InvalidInputError

    if not path.is_file():
        raise InvalidInputError(
            f"points file {path} does not exist; give a CSV with x,y (or lon,lat) or a GeoJSON"
        )
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        try:
            table = pd.read_csv(path, sep=None, engine="python")
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise InvalidInputError(f"points file {path}: not a readable CSV ({exc})") from exc
        columns = {str(c).lower(): c for c in table.columns}
        if xy is not None:
            if len(xy) != 2 or any(c.lower() not in columns for c in xy):
                raise InvalidInputError(
                    f"points file {path}: --xy-columns {','.join(xy)} are not two of its columns "
                    f"{list(table.columns)}"
                )
            pair = (columns[xy[0].lower()], columns[xy[1].lower()])
        else:
            found = [(columns[a], columns[b]) for a, b in _XY_NAMES if a in columns and b in columns]
            if not found:
                raise InvalidInputError(
                    f"points file {path}: no x,y or lon,lat columns in {list(table.columns)}; name them with "
                    "--xy-columns X,Y"
                )
            pair = found[0]
        ids = table.drop(columns=list(pair))
        return gpd.GeoDataFrame(ids, geometry=gpd.points_from_xy(table[pair[0]], table[pair[1]]), crs=crs)
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio's errors vary by driver
        raise InvalidInputError(f"points file {path}: not a readable vector file ({exc})") from exc
    if frame.crs is None:
        frame = frame.set_crs(crs)
    return frame


@click.command()
@index_opt
@click.option(
    "--points",
    "points_path",
    required=True,
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="The points: a CSV with x,y or lon,lat columns (other columns are kept as ids), or a vector file "
    "(GeoJSON, GeoPackage...) of points with its own CRS.",
)
@click.option(
    "--crs",
    "points_crs",
    default="EPSG:4326",
    show_default=True,
    metavar="CRS",
    callback=lambda ctx, param, value: parse_crs(value),
    help="CRS of a CSV's coordinates (a vector file's own CRS wins).",
)
@click.option(
    "--xy-columns",
    metavar="X,Y",
    callback=lambda ctx, param, value: None if value is None else parse_list(value),
    help="The CSV's coordinate columns. [default: x,y or lon,lat or longitude,latitude]",
)
@time_opt
@bands_opt
@click.option(
    "--method",
    default="first",
    show_default=True,
    metavar="METHOD",
    help="How the scenes of one time step combine at a point: first, last, min, max, mean, median, count.",
)
@groupby_opt
@click.option(
    "--resampling",
    type=click.Choice(["nearest", "bilinear"]),
    default="nearest",
    show_default=True,
    help="The pixel holding the point, or GDAL's bilinear of the 2 x 2 pixels around it.",
)
@mask_opt
@filter_opt
@sortby_opt
@src_nodata_opt
@on_error_opt
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="OUT.csv|OUT.parquet",
    type=click.Path(path_type=Path),
    help="The long table: one row per (time, point), with the points' ids, x, y and one column per band.",
)
def sample(
    index: str | None,
    points_path: Path,
    points_crs: str,
    xy_columns: tuple[str, ...] | None,
    time: str | None,
    bands: tuple[str, ...] | None,
    method: str,
    groupby: str | None,
    resampling: str,
    mask: Any,
    filter: str | None,
    sortby: str | None,
    src_nodata: Any,
    on_error: str,
    output: Path,
) -> None:
    """The time series at points: one row per time step and point, one column per band.

    \b
    Examples:
      mosaic sample --index index.parquet --points sites.csv --time 2024 --bands B04,B08 -o series.csv
      mosaic sample --index index.parquet --points sites.geojson --method median -o series.parquet
      mosaic sample --index index.parquet --points sites.csv --mask sentinel2-scl -o clear.csv
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    from mosaic.errors import InvalidInputError
    from mosaic.outputs.sampling import sample as sample_points

    index = require_index(index)
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise click.BadParameter(f"{output}: write a .csv or .parquet table", param_hint="'--output'")
    frame = read_points(points_path, points_crs, xy_columns)
    ds = sample_points(
        frame,
        time,
        index=index,
        bands=list(bands) if bands else None,
        method=method,
        groupby=groupby,
        resampling=resampling,
        mask=mask,
        filter=filter,
        sortby=sortby,
        src_nodata=src_nodata,
        on_error=on_error,
    )
    table = ds.to_dataframe().reset_index()
    try:
        if suffix == ".csv":
            table.to_csv(output, index=False)
        else:
            table.to_parquet(output, index=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot write {output}: {exc}") from exc
    click.echo(
        f"{len(table)} rows ({ds.sizes['time']} times x {ds.sizes['point']} points) -> {output}", err=True
    )
