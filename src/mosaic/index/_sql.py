"""SQL over a tile index with DuckDB (the optional ``sql`` extra): :meth:`mosaic.TileIndex.sql`.

The index is the table ``scenes``: its columns (those of :data:`mosaic.index.tile_index.SCHEMA`, then one per
Item property, named as the property: quote them, ``"eo:cloud_cover"``), the footprint as WKB in
``geometry`` and its bounding box in ``bbox`` (a struct of ``xmin``, ``ymin``, ``xmax``, ``ymax``, in
lon/lat). DuckDB reads the Arrow table in place (no copy, no file); no DuckDB extension is installed
or loaded (``spatial`` is not needed: select areas with ``bbox``, or query the result with
:meth:`~mosaic.TileIndex.query`). Times are in UTC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import shapely

from mosaic.errors import InvalidInputError, MissingExtraError

if TYPE_CHECKING:
    from mosaic.index.tile_index import TileIndex

__all__ = ["run_sql"]

TABLE = "scenes"
"""The name the index has in the query."""


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise MissingExtraError(
            "TileIndex.sql needs DuckDB: pip install 'virtual-mosaic[sql]' (or pip install duckdb)"
        ) from None
    return duckdb


def run_sql(index: TileIndex, query: str) -> TileIndex | pa.Table:
    """The result of ``query`` over ``index`` (as table ``scenes``).

    Returns:
        A :class:`~mosaic.TileIndex` when the result keeps every column of the index and ``geometry``
        (``SELECT * FROM scenes WHERE ...``: its rows, with each (id, asset) kept once), else a
        ``pyarrow.Table`` (``.to_pandas()`` gives a DataFrame).

    Raises:
        InvalidInputError: the query is not a string, or DuckDB cannot run it (its message, one line).
    """
    from mosaic.index.tile_index import SCHEMA, TileIndex, _concat, _without_duplicates

    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(f"sql takes a query over the table {TABLE!r}, got {query!r}")
    duckdb = _duckdb()
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register(TABLE, _arrow(index))
        try:
            relation = con.sql(query)
            if relation is None:
                raise InvalidInputError(f"sql {query!r}: the statement returns no rows; give a SELECT")
            result = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
        except duckdb.Error as exc:
            message = " ".join(str(exc).split())
            raise InvalidInputError(f"sql {query!r}: {message}") from None
    finally:
        con.close()
    if not all(name in result.column_names for name in [*SCHEMA.names, "geometry"]):
        return result
    geometry = np.asarray(shapely.from_wkb(result.column("geometry").to_numpy(zero_copy_only=False)))
    core = result.select(SCHEMA.names).cast(SCHEMA)
    extra = [n for n in result.column_names if n not in SCHEMA.names and n not in ("geometry", "bbox")]
    for name in extra:
        core = core.append_column(result.schema.field(name), result.column(name))
    table = _concat([core]).combine_chunks()
    table, geometry = _without_duplicates(table, np.asarray(geometry, dtype=object), "sql result")
    return TileIndex(table, geometry, skipped=index.skipped, source=index.source)._sorted()


def _arrow(index: TileIndex) -> pa.Table:
    """The index's columns with ``geometry`` (WKB) and ``bbox`` (struct), as written to GeoParquet."""
    table = index.table
    footprints = index.footprints
    n = len(footprints)
    wkb = shapely.to_wkb(footprints, output_dimension=2) if n else np.empty(0, dtype=object)
    bounds = shapely.bounds(footprints) if n else np.empty((0, 4))
    bbox = pa.StructArray.from_arrays(
        [pa.array(bounds[:, i], pa.float64()) for i in range(4)], names=["xmin", "ymin", "xmax", "ymax"]
    )
    return table.append_column("geometry", pa.array(wkb, pa.binary())).append_column("bbox", bbox)
