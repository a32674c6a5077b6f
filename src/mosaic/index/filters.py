"""Catalogue queries over a tile index: typed property columns, CQL2 filters and STAC ``sortby``.

**Property columns.** Beside the ``properties`` JSON text of each row, an index keeps every scalar
STAC Item property as a column named as the property (``eo:cloud_cover``, ``platform``,
``sat:orbit_state``...), typed from the values the Items hold: numbers as ``int64`` (all whole) or
``float64``, booleans as ``bool``, RFC 3339 date-times (with a time zone) as UTC timestamps, other
strings as strings. A property whose values mix kinds, or that holds lists or objects, stays in the
JSON only; so does one named like a column of the index itself (``id``, ``datetime``, ``crs``...).
:func:`property_columns` derives them (from the JSON, for files of an older index format too).

**Filters.** :func:`parse_filter` reads CQL2 text or CQL2 JSON (with the ``cql2`` package) into a
:class:`Filter`, which compiles to a :mod:`pyarrow.compute` expression over the index's columns: the
property columns and the index's own scalar columns (``id``, ``collection``, ``asset``, ``crs``,
``datetime``...). Supported: ``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``, ``LIKE``, ``BETWEEN``,
``IN``, ``IS NULL``, ``AND``/``OR``/``NOT``, numbers, strings, booleans, ``TIMESTAMP('...')`` and
``DATE('...')`` (a plain string compared with a timestamp column is read as a time, too). Logic is
SQL's: a comparison with a missing value is unknown, and a row is kept only where the filter is true
(so ``NOT eo:cloud_cover < 20`` leaves out rows without a cloud cover). The same expression prunes
Parquet row groups by their statistics when an index file is read (:mod:`mosaic.index._store`).

**Sort order.** :func:`parse_sortby` reads STAC API ``sortby`` (``"-eo:cloud_cover"``,
``["+datetime", "id"]``, or ``[{"field": ..., "direction": "desc"}]``); :func:`ordered` sorts rows by
it, then by the default order (datetime, then id). Rows without a value of a field come after the
others in either direction.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mosaic.errors import FilterError

if TYPE_CHECKING:
    import pandas as pd

    from mosaic.planning.records import SceneAsset

__all__ = [
    "CORE_FIELDS",
    "Filter",
    "SortBy",
    "ordered",
    "parse_filter",
    "parse_sortby",
    "property_columns",
    "sortby_text",
]

_TS = pa.timestamp("us", tz="UTC")
CORE_FIELDS = (
    "id",
    "asset",
    "href",
    "crs",
    "datetime",
    "start_datetime",
    "end_datetime",
    "band_count",
    "dtype",
    "nodata",
    "scale",
    "offset",
    "collection",
)
"""The index's own scalar columns, which filters and ``sortby`` can name as well as Item properties."""
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})$")
_INT64 = 2**63

SortBy = tuple[tuple[str, bool], ...]
"""(field, descending) pairs, most significant first."""


# =================================================================================== property columns


def _kind(values: Sequence[Any]) -> pa.DataType | None:
    """The column type of a property's (non-null) values, or None: stays in the JSON only."""
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pa.int64() if all(-_INT64 <= v < _INT64 for v in values) else pa.float64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return pa.float64()
    if all(isinstance(v, str) for v in values):
        return _TS if all(_RFC3339.match(v) for v in values) else pa.string()
    return None


def _array(values: list[Any], kind: pa.DataType) -> pa.Array:
    if kind == _TS:
        import pandas as pd

        stamps = pd.to_datetime(
            pd.Series([v for v in values], dtype=object), utc=True, format="ISO8601", errors="coerce"
        )
        return pa.array(stamps.dt.as_unit("us"), type=_TS, from_pandas=True)
    if kind == pa.float64():
        values = [None if v is None else float(v) for v in values]
    return pa.array(values, type=kind)


def property_columns(
    properties: pa.Array | pa.ChunkedArray, reserved: Collection[str]
) -> dict[str, pa.Array]:
    """The typed columns of the scalar Item properties in a ``properties`` JSON column, by name (sorted).

    Each distinct JSON text is parsed once (the rows of one Item's assets share theirs).

    Args:
        properties: the JSON texts (null: no properties).
        reserved: column names of the index itself: properties of those names are not made columns.
    """
    column = properties
    if len(column) == 0 or column.null_count == len(column):
        return {}
    if column.null_count:
        column = pc.fill_null(column, "{}")
    # the rows of one Item's assets are neighbours (the index's order): each run is parsed once
    starts = np.ones(len(column), dtype=bool)
    if len(column) > 1:
        same = pc.equal(column.slice(1), column.slice(0, len(column) - 1))
        starts[1:] = ~np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
    every = bool(starts.all())  # all distinct: no copy, no take
    texts = column if every else column.take(pa.array(np.flatnonzero(starts)))
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    indices = None if every else pa.array(np.cumsum(starts) - 1)
    columns = _read_json(texts)
    if columns is None:  # kinds mixed within a property (Arrow refuses): the slow path sorts them out
        columns = _parse_json(texts.to_pylist())
    out: dict[str, pa.Array] = {}
    for name in sorted(set(columns) - set(reserved)):
        distinct = columns[name]
        out[name] = distinct if indices is None else distinct.take(indices)
    return out


def _read_json(texts: pa.Array) -> dict[str, pa.Array] | None:
    """The scalar properties of JSON objects, one per text, parsed by Arrow (C++), or None: mixed kinds."""
    import pyarrow.json as pj

    lines = pc.binary_join_element_wise(texts, pa.scalar(""), "\n")  # each text and a newline
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    data = lines.buffers()[2][int(offsets[0]) : int(offsets[-1])]  # the texts, one a line, not copied
    if not data.size:
        return None
    read = pj.ReadOptions(block_size=min(data.size + 1, 2**31 - 1), use_threads=True)  # one inference
    try:
        table = pj.read_json(pa.BufferReader(data), read_options=read)
        times = [f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
        if times:  # Arrow takes "2024-06-01" for a time: read those as text, typed by our rule below
            parse = pj.ParseOptions(
                explicit_schema=pa.schema([(n, pa.string()) for n in times]),
                unexpected_field_behavior="infer",
            )
            table = pj.read_json(pa.BufferReader(data), read_options=read, parse_options=parse)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out: dict[str, pa.Array] = {}
    for found in table.schema:
        column = table.column(found.name).combine_chunks()
        kind = found.type
        if pa.types.is_boolean(kind) or kind in (pa.int64(), pa.float64()):
            out[found.name] = column
        elif pa.types.is_string(kind):
            valid = column.drop_null()
            if len(valid) and pc.all(pc.match_substring_regex(valid, _RFC3339.pattern)).as_py():
                out[found.name] = _array(column.to_pylist(), _TS)
            elif len(valid):
                out[found.name] = column
    return out


def _parse_json(texts: list[str | None]) -> dict[str, pa.Array]:
    """As :func:`_read_json`, in Python: a property whose values mix kinds is left out."""
    parsed = [_object(t) for t in texts]
    names = sorted({k for p in parsed for k, v in p.items() if v is not None})
    out: dict[str, pa.Array] = {}
    for name in names:
        values = [p.get(name) for p in parsed]
        kind = _kind([v for v in values if v is not None])
        if kind is not None:
            out[name] = _array(values, kind)
    return out


def _object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def with_property_columns(table: pa.Table, core: Sequence[str]) -> pa.Table:
    """``table`` (its ``core`` columns) with the property columns derived from its ``properties`` column."""
    table = table.select(list(core))
    for name, column in property_columns(table.column("properties"), [*core, "geometry", "bbox"]).items():
        table = table.append_column(pa.field(name, column.type), column)
    return table


# ========================================================================================= filters


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed CQL2 filter: its text, its CQL2 JSON, and the fields it names."""

    text: str
    """The filter as CQL2 text (for messages and reprs)."""
    tree: Mapping[str, Any] | bool = field(repr=False)
    """The filter as CQL2 JSON."""
    fields: tuple[str, ...] = ()
    """The property and column names the filter refers to, in order of appearance."""

    def expression(self, schema: pa.Schema) -> pc.Expression:
        """The filter as a pyarrow expression over ``schema``'s columns.

        Raises:
            FilterError: a field the schema lacks (naming the known ones), an operator mosaic does not
                evaluate, or a value of the wrong type for its field.
        """
        return _Compiler(self, schema).build(self.tree)

    def pushable(self, schema: pa.Schema) -> pc.Expression | None:
        """The expression when every field is a column of ``schema`` and it compiles, else None."""
        if not all(f in schema.names for f in self.fields):
            return None
        try:
            return self.expression(schema)
        except FilterError:
            return None

    def mask(self, table: pa.Table) -> np.ndarray:
        """Per row of ``table``, whether the filter is true (unknown counts as false).

        Raises:
            FilterError: as :meth:`expression`.
        """
        expr = self.expression(table.schema)
        if len(table) == 0:
            return np.zeros(0, dtype=bool)
        rows = pa.array(np.arange(len(table), dtype=np.int64))
        probe = pa.table({"__row__": rows})
        for name in dict.fromkeys(self.fields):
            probe = probe.append_column(table.schema.field(name), table.column(name))
        kept = probe.filter(expr).column("__row__").to_numpy()
        out = np.zeros(len(table), dtype=bool)
        out[kept] = True
        return out


def parse_filter(value: Any) -> Filter | None:
    """A :class:`Filter` from CQL2 text, CQL2 JSON (a mapping, or its JSON text), or a Filter; None: none.

    Raises:
        FilterError: the text or JSON is not valid CQL2 (the message points at the problem).
    """
    if value is None or isinstance(value, Filter):
        return value
    import cql2

    try:
        if isinstance(value, Mapping):
            expr = cql2.parse_json(json.dumps(value))
            given = json.dumps(value)
        elif isinstance(value, str):
            given = value.strip()
            if not given:
                raise FilterError('filter is empty: give CQL2 text, e.g. "eo:cloud_cover < 20"')
            expr = cql2.parse_json(given) if given.startswith("{") else cql2.parse_text(given)
        else:
            raise FilterError(
                f'filter takes CQL2 text ("eo:cloud_cover < 20") or CQL2 JSON (a dict), got '
                f"{type(value).__name__}"
            )
        tree = expr.to_json()
        text = expr.to_text()
    except FilterError:
        raise
    except (cql2.ParseError, cql2.ValidationError, ValueError) as exc:
        raise FilterError(f"filter {given!r}: {_parse_message(str(exc))}") from None
    return Filter(text, tree, tuple(dict.fromkeys(_fields(tree))))


def _parse_message(message: str) -> str:
    """cql2's multi-line parse error as one line: where, and what was expected."""
    where = re.search(r"-->\s*(\d+):(\d+)", message)
    expected = re.search(r"=\s*(.+)$", message.strip())
    if where:
        what = expected.group(1).strip() if expected else "a valid expression"
        return f"syntax error at line {where.group(1)}, column {where.group(2)}: {what}"
    return " ".join(message.split())


def _fields(node: Any) -> Iterable[str]:
    if isinstance(node, Mapping):
        if "property" in node:
            yield _field_name(node["property"])
            return
        for value in node.values():
            yield from _fields(value)
    elif isinstance(node, list):
        for value in node:
            yield from _fields(value)


def _field_name(name: Any) -> str:
    text = str(name)
    return text[len("properties.") :] if text.startswith("properties.") else text


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_SUPPORTED = "=, <>, <, <=, >, >=, LIKE, BETWEEN, IN, IS NULL, AND, OR, NOT"


def _kind_of(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return "timestamp"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    return str(kind)


class _Compiler:
    """CQL2 JSON to a pyarrow expression, checked against a schema (fields, types)."""

    def __init__(self, flt: Filter, schema: pa.Schema):
        self.flt = flt
        self.schema = schema

    def fail(self, what: str) -> FilterError:
        return FilterError(f"filter {self.flt.text!r}: {what}")

    def build(self, node: Any) -> pc.Expression:
        if isinstance(node, bool):
            return pc.scalar(node)
        if not isinstance(node, Mapping) or "op" not in node:
            raise self.fail(f"{json.dumps(node)} is not a condition")
        op, args = str(node["op"]), list(node.get("args", []))
        if op in ("and", "or"):
            parts = [self.build(a) for a in args]
            out = parts[0]
            for part in parts[1:]:
                out = (out & part) if op == "and" else (out | part)
            return out
        if op == "not":
            return ~self.build(args[0])
        if op in _COMPARE:
            (left, lk), (right, rk) = self.operand(args[0], args[1]), self.operand(args[1], args[0])
            self.same_kind(op, args, lk, rk)
            return _COMPARE[op](left, right)
        if op == "isNull":
            return self.operand(args[0], None)[0].is_null()
        if op == "like":
            target, kind = self.operand(args[0], None)
            if kind != "string":
                raise self.fail(f"LIKE compares text; {self.label(args[0])} holds {kind}s")
            if not isinstance(args[1], str):
                raise self.fail(f"LIKE takes a text pattern ('S2%'), got {json.dumps(args[1])}")
            return pc.match_like(target, args[1])
        if op == "between":
            target, kind = self.operand(args[0], None)
            (lo, lk), (hi, hk) = self.operand(args[1], args[0]), self.operand(args[2], args[0])
            self.same_kind(op, args[:2], kind, lk)
            self.same_kind(op, [args[0], args[2]], kind, hk)
            return (target >= lo) & (target <= hi)
        if op == "in":
            target, kind = self.operand(args[0], None)
            values = args[1] if isinstance(args[1], list) else [args[1]]
            literal = [self.literal(v, args[0]) for v in values]
            for (_, vk), raw in zip(literal, values, strict=True):
                self.same_kind(op, [args[0], raw], kind, vk)
            kind_type = self.schema.field(self.name(args[0])).type if self.is_field(args[0]) else None
            value_set = pa.array([v for v, _ in literal], type=kind_type)
            # SQL: x IN (...) is unknown where x is missing, so NOT x IN (...) leaves those rows out too
            return pc.if_else(
                target.is_null(), pc.scalar(pa.scalar(None, pa.bool_())), target.isin(value_set)
            )
        hint = " (select an area with bbox= or geopolygon=)" if op.startswith("s_") else ""
        raise self.fail(f"operator {op!r} is not supported{hint}; mosaic filters support {_SUPPORTED}")

    # ---------------------------------------------------------------------------------- operands

    @staticmethod
    def is_field(node: Any) -> bool:
        return isinstance(node, Mapping) and "property" in node

    @staticmethod
    def name(node: Any) -> str:
        return _field_name(node["property"])

    def label(self, node: Any) -> str:
        return self.name(node) if self.is_field(node) else json.dumps(node)

    def operand(self, node: Any, other: Any) -> tuple[Any, str]:
        """An expression for ``node`` and its kind; a literal is typed after the field it meets."""
        if self.is_field(node):
            name = self.name(node)
            if name not in self.schema.names or name in ("properties", "geometry", "bbox", "tiles"):
                raise self.unknown(name)
            kind = self.schema.field(name).type
            if _kind_of(kind) not in ("number", "string", "timestamp", "boolean"):
                raise self.fail(f"{name} holds {kind} values, which filters cannot compare")
            return pc.field(name), _kind_of(kind)
        value, kind = self.literal(node, other)
        return pc.scalar(value), kind

    def literal(self, node: Any, other: Any) -> tuple[Any, str]:
        """A literal's pyarrow scalar and kind (a string meeting a timestamp field becomes a time)."""
        meets = (
            _kind_of(self.schema.field(self.name(other)).type)
            if self.is_field(other) and self.name(other) in self.schema.names
            else None
        )
        if isinstance(node, Mapping):
            if "timestamp" in node or "date" in node:
                return self.time(node.get("timestamp", node.get("date"))), "timestamp"
            raise self.fail(f"{json.dumps(node)} is not a value mosaic filters compare ({_SUPPORTED})")
        if isinstance(node, bool):
            return pa.scalar(node), "boolean"
        if isinstance(node, int | float):
            if meets == "number" and isinstance(node, float) and node.is_integer() and math.isfinite(node):
                kind = self.schema.field(self.name(other)).type
                if pa.types.is_integer(kind):
                    return pa.scalar(int(node), kind), "number"
            return pa.scalar(node), "number"
        if isinstance(node, str):
            if meets == "timestamp":
                return self.time(node), "timestamp"
            return pa.scalar(node), "string"
        if node is None:
            raise self.fail("compare with NULL using IS NULL (a comparison with NULL is never true)")
        raise self.fail(f"{json.dumps(node)} is not a value mosaic filters compare")

    def time(self, text: Any) -> pa.Scalar:
        import pandas as pd

        try:
            stamp = pd.Timestamp(str(text))
        except ValueError:
            raise self.fail(f"{text!r} is not a time (give RFC 3339, e.g. '2024-06-01T00:00:00Z')") from None
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return pa.scalar(stamp.as_unit("us"), type=_TS)

    def same_kind(self, op: str, args: Sequence[Any], left: str, right: str) -> None:
        if left != right:
            a, b = self.label(args[0]), self.label(args[1])
            raise self.fail(f"{op.upper()} compares {a} ({left}) with {b} ({right}): give a {left}")

    def unknown(self, name: str) -> FilterError:
        known = known_fields(self.schema)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return FilterError(
            f"filter {self.flt.text!r}: the index holds no property {name!r}{hint}; it holds: "
            f"{', '.join(known)}"
        )


def known_fields(schema: pa.Schema) -> list[str]:
    """The names a filter or ``sortby`` can use on a table of ``schema``: core columns, then properties."""
    from mosaic.index.tile_index import SCHEMA

    core = [n for n in CORE_FIELDS if n in schema.names]
    extra = [n for n in schema.names if n not in SCHEMA.names and n not in ("geometry", "bbox")]
    return core + extra


# ========================================================================================= sortby


def parse_sortby(value: Any) -> SortBy:
    """STAC API ``sortby`` as (field, descending) pairs.

    Takes ``"-eo:cloud_cover"``, ``"+datetime,id"``, ``["-eo:cloud_cover", "datetime"]`` or
    ``[{"field": "properties.eo:cloud_cover", "direction": "desc"}]``; None: ().

    Raises:
        FilterError: anything else, or a field given twice.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, Mapping):
        items = [value]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise FilterError(
            f"sortby takes '-eo:cloud_cover', a list of such fields, or STAC dicts; got {value!r}"
        )
    out: list[tuple[str, bool]] = []
    for item in items:
        if isinstance(item, Mapping):
            name, direction = item.get("field"), str(item.get("direction", "asc")).lower()
            if not isinstance(name, str) or direction not in ("asc", "desc"):
                raise FilterError(f"sortby {item!r}: give {{'field': NAME, 'direction': 'asc' or 'desc'}}")
            pair = (_field_name(name.strip()), direction == "desc")
        elif isinstance(item, str):
            text = item.strip()
            desc = text.startswith("-")
            name = text[1:].strip() if text[:1] in "+-" else text
            if not name:
                raise FilterError(f"sortby {value!r}: {item!r} names no field")
            pair = (_field_name(name), desc)
        else:
            raise FilterError(f"sortby {value!r}: {item!r} is not a field name")
        if pair[0] in (p[0] for p in out):
            raise FilterError(f"sortby {value!r}: {pair[0]!r} is given twice")
        out.append(pair)
    return tuple(out)


def sortby_text(sortby: SortBy) -> str:
    """``sortby`` as STAC text, with the default order that breaks ties: ``-eo:cloud_cover, datetime, id``."""
    names = [f"{'-' if desc else ''}{name}" for name, desc in sortby]
    tail = [n for n in ("datetime", "id") if n not in (s for s, _ in sortby)]
    return ", ".join([*names, *tail])


def _value(rec: SceneAsset, name: str, props: Mapping[str, Any]) -> Any:
    if name == "datetime":
        return rec.datetime or rec.start_datetime
    if name in CORE_FIELDS:
        return getattr(rec, name)
    value = props.get(name)
    if isinstance(value, str) and _RFC3339.match(value):
        import pandas as pd

        return pd.Timestamp(value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return json.dumps(value, sort_keys=True)


def sort_values(rec: SceneAsset, sortby: SortBy) -> list[Any]:
    """The values of ``rec`` that ``sortby`` orders by (None where it has none)."""
    props = json.loads(rec.properties) if rec.properties else {}
    return [_value(rec, name, props) for name, _ in sortby]


def check_sortby(sortby: SortBy, records: Sequence[SceneAsset]) -> None:
    """Every field of ``sortby`` is a core field or a property of some record.

    Raises:
        FilterError: naming the unknown field and the known ones.
    """
    if not sortby or not records:
        return
    names: set[str] = set()
    for text in {r.properties for r in records if r.properties}:
        names |= set(json.loads(text))
    for name, _ in sortby:
        if name not in CORE_FIELDS and name not in names:
            known = [*CORE_FIELDS, *sorted(names)]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FilterError(
                f"sortby: no selected scene has a property {name!r}{hint}; they have: {', '.join(known)}"
            )


def ordered(records: Iterable[SceneAsset], sortby: SortBy, epoch: pd.Timestamp) -> list[SceneAsset]:
    """``records`` in ``sortby`` order, ties in the default order (datetime, then id).

    Raises:
        FilterError: a field whose values cannot be ordered together (numbers and text).
    """
    rows = sorted(records, key=lambda r: (r.datetime or r.start_datetime or epoch, r.id))
    if not sortby:
        return rows
    values = {id(r): sort_values(r, sortby) for r in rows}
    for position in reversed(range(len(sortby))):  # stable sorts, least significant field first
        name, desc = sortby[position]
        known = [r for r in rows if values[id(r)][position] is not None]
        unknown = [r for r in rows if values[id(r)][position] is None]
        try:
            known = sorted(known, key=lambda r: values[id(r)][position], reverse=desc)
        except TypeError:
            kinds = sorted({type(values[id(r)][position]).__name__ for r in known})
            raise FilterError(
                f"sortby: {name!r} holds values of several kinds ({', '.join(kinds)})"
            ) from None
        rows = known + unknown
    return rows
