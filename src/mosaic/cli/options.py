"""Options and value parsers shared by the ``mosaic`` commands (as rasterio's ``rio/options.py``).

Each parser turns one command-line string into the value the Python API takes, or raises
:class:`click.BadParameter` (a usage error: exit code 2) saying what is wrong and what to write
instead. The option decorators bundle a parser with its flag names and help text, so every command
spells a shared option the same way; :func:`plan_options` bundles every option that changes a plan,
for the commands that make one (``mosaic plan`` and ``mosaic regrid``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from mosaic.types import RESAMPLING

__all__ = [
    "anchor_opt",
    "bands_opt",
    "bbox_crs_opt",
    "bbox_opt",
    "check_bbox",
    "chunks_opt",
    "crs_opt",
    "dtype_opt",
    "groupby_opt",
    "index_opt",
    "json_opt",
    "method_opt",
    "nodata_opt",
    "on_error_opt",
    "parse_anchor",
    "parse_bbox",
    "parse_chunks",
    "parse_crs",
    "parse_dtype",
    "parse_groupby",
    "parse_layout",
    "parse_list",
    "parse_resolution",
    "parse_src_nodata",
    "parse_time",
    "plan_options",
    "quiet_opt",
    "require_index",
    "resampling_opt",
    "resolution_opt",
    "src_nodata_opt",
    "time_opt",
    "workers_opt",
]

F = TypeVar("F", bound=Callable[..., Any])
_SPLIT = re.compile(r"[,\s]+")


def _numbers(text: str, what: str) -> list[float]:
    """Comma (or space) separated numbers; ``what`` names the expected form in the error."""
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not {what}") from None
    if not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"{text!r}: numbers must be finite")
    return values


# ------------------------------------------------------------------------------------------ parsers


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"minx,miny,maxx,maxy"`` to a 4-tuple of floats (negative numbers welcome: ``-10,40,5,50``).

    Raises:
        click.BadParameter: not four finite numbers, or ``miny >= maxy``, or ``minx == maxx``.
            (``minx > maxx`` is allowed here: in lon/lat it crosses the antimeridian; see
            :func:`check_bbox`.)
    """
    values = _numbers(text, "four numbers minx,miny,maxx,maxy")
    if len(values) != 4:
        raise click.BadParameter(
            f"{text!r} has {len(values)} number(s); give four: minx,miny,maxx,maxy (e.g. -10,40,5,50)"
        )
    minx, miny, maxx, maxy = values
    if miny >= maxy:
        raise click.BadParameter(f"{text!r}: miny ({miny:g}) must be below maxy ({maxy:g})")
    if minx == maxx:
        raise click.BadParameter(f"{text!r}: minx and maxx are equal ({minx:g}); the box has no width")
    return (minx, miny, maxx, maxy)


def require_index(index: str | None) -> str:
    """The index of a command that reads one: ``--index`` (which click fills from ``$MOSAIC_INDEX``).

    Raises:
        click.UsageError: neither is given.
    """
    if not index:
        raise click.UsageError("no tile index: pass --index PATH or set MOSAIC_INDEX to the path of one")
    return index


def check_bbox(bbox: tuple[float, float, float, float], bbox_crs: str) -> None:
    """Checks that need the bbox CRS: lon/lat ranges, and ``minx > maxx`` only across the antimeridian.

    Raises:
        click.BadParameter: (for ``--bbox``) when the box does not make sense in ``bbox_crs``.
    """
    from pyproj import CRS

    minx, miny, maxx, maxy = bbox
    text = ",".join(f"{v:g}" for v in bbox)
    if CRS.from_user_input(bbox_crs).is_geographic:
        if not (-90 <= miny and maxy <= 90):
            raise click.BadParameter(f"{text}: latitudes must lie in [-90, 90]", param_hint="'--bbox'")
        if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
            raise click.BadParameter(f"{text}: longitudes must lie in [-180, 180]", param_hint="'--bbox'")
    elif minx > maxx:
        raise click.BadParameter(
            f"{text}: minx ({minx:g}) is greater than maxx ({maxx:g}); only a lon/lat box may cross the "
            "antimeridian",
            param_hint="'--bbox'",
        )


def parse_crs(text: str) -> str:
    """A CRS pyproj understands (``EPSG:32633``, ``32633``, WKT, PROJ), or ``utm`` for the bbox's zone."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    value = text.strip()
    if value.lower() == "utm":
        return "utm"
    if value.isdigit():
        value = f"EPSG:{value}"
    try:
        CRS.from_user_input(value)
    except CRSError as exc:
        raise click.BadParameter(f"{text!r} is not a CRS pyproj understands ({exc})") from None
    return value


def parse_time(text: str) -> str:
    """A date, partial date (``2024-06``) or ``start/end`` range, validated; returned as given."""
    from mosaic.errors import InvalidInputError
    from mosaic.times import parse_time as _parse

    try:
        _parse(text)
    except InvalidInputError as exc:
        raise click.BadParameter(f"{exc} (write e.g. 2024-06-01, 2024-06 or 2024-06-01/2024-06-30)") from None
    return text


def parse_resolution(text: str) -> float | tuple[float, float]:
    """One pixel size, or ``x,y`` sizes, in target CRS units; all positive."""
    values = _numbers(text, "a pixel size (e.g. 10, or 0.0002,0.0002 for x,y)")
    if len(values) not in (1, 2) or not all(v > 0 for v in values):
        raise click.BadParameter(f"{text!r}: give one positive pixel size, or two (x,y)")
    return values[0] if len(values) == 1 else (values[0], values[1])


def parse_chunks(text: str) -> int | tuple[int, int]:
    """A chunk size in pixels, or ``y,x`` sizes; positive integers."""
    values = _numbers(text, "a chunk size in pixels (e.g. 2048, or 1024,2048 for y,x)")
    if len(values) not in (1, 2) or not all(v > 0 and v.is_integer() for v in values):
        raise click.BadParameter(f"{text!r}: give one positive whole number of pixels, or two (y,x)")
    return int(values[0]) if len(values) == 1 else (int(values[0]), int(values[1]))


def parse_layout(text: str) -> dict[str, int]:
    """Output chunks ``time=T,y=Y,x=X`` (any subset; default time 1, y and x 2048), or ``N`` / ``Y,X``.

    Raises:
        click.BadParameter: an unknown dimension, or a size that is not a positive whole number.
    """
    layout = {"time": 1, "y": 2048, "x": 2048}
    if "=" not in text:
        size = parse_chunks(text)
        cy, cx = (size, size) if isinstance(size, int) else size
        layout.update(y=cy, x=cx)
        return layout
    for part in (p for p in _SPLIT.split(text.strip()) if p):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name not in layout:
            raise click.BadParameter(f"{part!r}: the dimensions are time, y and x (time=1,y=2048,x=2048)")
        if not value.strip().isdigit() or int(value) < 1:
            raise click.BadParameter(f"{part!r}: give a positive whole number of {name} steps or pixels")
        layout[name] = int(value)
    return layout


def parse_mask(text: str) -> str:
    """``--mask``: a preset name (``sentinel2-scl``, ``landsat-c2-qa``) or a mask expression, checked here.

    Raises:
        click.BadParameter: the text is neither (the message says what is wrong).
    """
    from mosaic.errors import InvalidMaskError
    from mosaic.masks import as_mask

    try:
        as_mask(text)
    except InvalidMaskError as exc:
        raise click.BadParameter(str(exc), param_hint="'--mask'") from None
    return text


def parse_max_pixels(text: str) -> float | None:
    """``--max-pixels``: a positive number of pixels (``1e12``, ``200000000000``), or ``none`` (no limit)."""
    value = text.strip().lower().replace("_", "")
    if value in ("none", "unlimited", "inf"):
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise click.BadParameter(
            f"{text!r}: give a positive number of pixels (e.g. 1e12), or none for no limit"
        )
    return number


def parse_groupby(text: str) -> str | None:
    """``solar_day``, ``time``, an Item property name, or ``none`` (one layer for the whole period)."""
    value = text.strip()
    return None if value.lower() in ("none", "") else value


def parse_dtype(text: str) -> str:
    """A NumPy dtype name (``uint16``, ``float32``, ``int16``...), returned as NumPy spells it."""
    import numpy as np

    try:
        dtype = np.dtype(text.strip())
    except TypeError:
        raise click.BadParameter(f"{text!r} is not a NumPy dtype (e.g. uint16, int16, float32)") from None
    if dtype.kind not in "uif":
        raise click.BadParameter(f"{text!r}: give an integer or float dtype (e.g. uint16, int16, float32)")
    return dtype.name


def parse_list(text: str) -> tuple[str, ...]:
    """``"a,b"`` to ``("a", "b")`` (blanks dropped)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _callback(parser: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback applying ``parser`` to a given value (None passes through)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        return None if value is None else parser(value)

    return callback


def parse_src_nodata(text: str) -> float | dict[str, float]:
    """``--src-nodata``: ``"0"`` (every asset), ``"nan"``, or ``"B01=0,SCL=0"`` (per asset).

    Raises:
        click.BadParameter: a value that is not a number, or an entry without ``ASSET=``.
    """

    def number(value: str, where: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise click.BadParameter(
                f"{where!r}: {value!r} is not a number; give e.g. --src-nodata 0 or --src-nodata B01=0,SCL=0",
                param_hint="'--src-nodata'",
            ) from None

    if "=" not in text:
        return number(text.strip(), text)
    out: dict[str, float] = {}
    for part in parse_list(text):
        asset, sep, value = part.partition("=")
        if not sep or not asset.strip():
            raise click.BadParameter(
                f"{part!r} is not ASSET=VALUE (e.g. --src-nodata B01=0,SCL=0)", param_hint="'--src-nodata'"
            )
        out[asset.strip()] = number(value.strip(), part)
    return out


def parse_anchor(text: str) -> str | tuple[float, float]:
    """``edge``, ``center``, ``native``, or ``FX,FY`` pixel fractions in [0, 1)."""
    value = text.strip().lower()
    if value in ("edge", "center", "centre", "native"):
        return value
    fractions = _numbers(text, "edge, center, native, or two pixel fractions FX,FY")
    if len(fractions) != 2 or not all(0 <= f < 1 for f in fractions):
        raise click.BadParameter(f"{text!r}: give edge, center, native, or FX,FY with each in [0, 1)")
    return (fractions[0], fractions[1])


# ------------------------------------------------------------------------------------------ options

bbox_opt = click.option(
    "--bbox",
    required=True,
    metavar="MINX,MINY,MAXX,MAXY",
    callback=_callback(parse_bbox),
    help="Area of interest in --bbox-crs, e.g. --bbox -10,40,5,50. In lon/lat, MINX > MAXX crosses "
    "the antimeridian.",
)
bbox_crs_opt = click.option(
    "--bbox-crs",
    default="EPSG:4326",
    show_default=True,
    metavar="CRS",
    callback=_callback(parse_crs),
    help="CRS of --bbox.",
)
crs_opt = click.option(
    "--crs",
    required=True,
    metavar="CRS",
    callback=_callback(parse_crs),
    help="Output CRS: EPSG:n, n, WKT or PROJ string, or 'utm' for the UTM zone of the bbox centre.",
)
resolution_opt = click.option(
    "--resolution",
    metavar="RES|X,Y",
    callback=_callback(parse_resolution),
    help="Pixel size in output CRS units (pixel edges: see --anchor). "
    "[default: the finest native resolution of the scenes]",
)
time_opt = click.option(
    "--time",
    metavar="TIME",
    callback=_callback(parse_time),
    help="Date, partial date (2024-06 is the whole month) or START/END range (inclusive; '..' for open).",
)
chunks_opt = click.option(
    "--chunks",
    default="2048",
    show_default=True,
    metavar="N|Y,X",
    callback=_callback(parse_chunks),
    help="Chunk size of the output in pixels.",
)


def parse_filter_option(text: str) -> Any:
    """``--filter``: CQL2 text or CQL2 JSON, checked for syntax here (its properties when planning).

    Raises:
        click.BadParameter: not CQL2 (the message points at the problem).
    """
    from mosaic.errors import FilterError
    from mosaic.index.filters import parse_filter

    try:
        return parse_filter(text)
    except FilterError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_sortby_option(text: str) -> str:
    """``--sortby``: STAC API sortby text (``-eo:cloud_cover,datetime``), checked here.

    Raises:
        click.BadParameter: a field given twice, or none.
    """
    from mosaic.errors import FilterError
    from mosaic.index.filters import parse_sortby

    try:
        parse_sortby(text)
    except FilterError as exc:
        raise click.BadParameter(str(exc)) from None
    return text


filter_opt = click.option(
    "--filter",
    "filter",
    metavar="CQL2",
    callback=_callback(parse_filter_option),
    help="Only the scenes for which this CQL2 filter (text, or JSON) is true, on Item properties and "
    "index columns: \"eo:cloud_cover < 20 AND sat:orbit_state = 'descending'\"; comparisons, LIKE, "
    "BETWEEN, IN, IS NULL, AND/OR/NOT, TIMESTAMP('...').",
)
sortby_opt = click.option(
    "--sortby",
    metavar="[-]FIELD,...",
    callback=_callback(parse_sortby_option),
    help="The order first/last take the scenes of a time step in, as STAC API sortby: "
    "--sortby=eo:cloud_cover is least cloudy first (- descending, + or nothing ascending); ties, and "
    "the default, by datetime then id.",
)
bands_opt = click.option(
    "--bands",
    metavar="A,B,...",
    callback=_callback(parse_list),
    help="Bands to load: asset names (all bands of a multi-band asset) or ASSET.N. [default: all]",
)
index_opt = click.option(
    "--index",
    "index",
    metavar="PATH",
    envvar="MOSAIC_INDEX",
    help="Tile index: a .parquet from 'mosaic index build', stac-geoparquet, STAC Items (JSON/NDJSON) "
    "or a GDAL GTI. [default: $MOSAIC_INDEX]",
)
method_opt = click.option(
    "--method",
    default="first",
    show_default=True,
    metavar="METHOD",
    help="How overlapping scenes combine: first, last, min, max, mean, median, count, "
    "highest:<band> or lowest:<band>.",
)
resampling_opt = click.option(
    "--resampling",
    type=click.Choice(RESAMPLING),
    default="nearest",
    show_default=True,
    help="Warp kernel.",
)
groupby_opt = click.option(
    "--groupby",
    default="solar_day",
    show_default=True,
    metavar="GROUPING",
    callback=_callback(parse_groupby),
    help="One output time step per: solar_day, time (each acquisition time), an Item property name; "
    "or none (one layer for the whole period).",
)
dtype_opt = click.option(
    "--dtype",
    metavar="DTYPE",
    callback=_callback(parse_dtype),
    help="Output dtype of every band (e.g. float32). [default: the sources']",
)
nodata_opt = click.option(
    "--nodata",
    type=float,
    metavar="VALUE",
    help="Output nodata of every band (a number, or nan). [default: NaN for float bands; else the "
    "sources' when they agree, else 0]",
)
src_nodata_opt = click.option(
    "--src-nodata",
    metavar="VALUE|ASSET=VALUE,...",
    callback=_callback(parse_src_nodata),
    help="The sources' nodata, over what the files or Items say: for files that carry none (real Landsat "
    "Level-1 files fill with 0 without saying so). One value for every asset, or per asset "
    "(B01=0,SCL=0).",
)
anchor_opt = click.option(
    "--anchor",
    metavar="edge|center|native|FX,FY",
    callback=_callback(parse_anchor),
    help="Where pixel edges fall: on multiples of the resolution (edge, as gdalwarp -tap), pixel centres "
    "there (center), at FX,FY pixel fractions past them, or on the scenes' own grid (native: their raw "
    "pixels, in their CRS at their resolution). [default: edge]",
)
max_pixels_opt = click.option(
    "--max-pixels",
    default="1e11",
    show_default=True,
    metavar="N|none",
    callback=_callback(parse_max_pixels),
    help="Refuse an output grid of more pixels than this (height x width, one band and time step), or "
    "with pixels over 100 times finer than the scenes' (a resolution in the wrong units); 'none' lifts "
    "both checks.",
)
mask_opt = click.option(
    "--mask",
    metavar="PRESET|EXPR",
    callback=_callback(parse_mask),
    help="Quality mask applied to each scene before fusion (its dropped pixels become nodata): a preset, "
    "sentinel2-scl (SCL classes 0, 1, 3, 8, 9, 10) or landsat-c2-qa (QA_PIXEL bits 0-4), or an "
    "expression such as \"Classes('SCL', exclude=[3, 8, 9], dilate=2) | Bits('QA', bits=[3])\".",
)
json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary; errors only.")
workers_opt = click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Threads reading file metadata. [default: a few per core]",
)
on_error_opt = click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default="raise",
    show_default=True,
    help="Stop at the first bad input, or skip bad inputs with a warning that lists them.",
)


# ------------------------------------------------------------------------------------ plan options

_PLAN_OPTIONS = (
    index_opt,
    bbox_opt,
    bbox_crs_opt,
    crs_opt,
    resolution_opt,
    time_opt,
    bands_opt,
    method_opt,
    resampling_opt,
    groupby_opt,
    anchor_opt,
    dtype_opt,
    nodata_opt,
    src_nodata_opt,
    max_pixels_opt,
    mask_opt,
    filter_opt,
    sortby_opt,
)
"""Every option that changes a plan, in help order. Each one's parameter name is a keyword argument of
:func:`mosaic.plan` and :func:`mosaic.regrid`, which receive it as it is parsed."""


def _names(options: tuple[Callable[[Any], Any], ...]) -> tuple[str, ...]:
    """The parameter names of click option decorators, as they reach a command."""

    def probe() -> None: ...

    for option in options:
        option(probe)
    params = cast(list[click.Parameter], getattr(probe, "__click_params__", []))
    return tuple(str(p.name) for p in params)


PLAN_PARAMETERS = _names(_PLAN_OPTIONS)
"""The keyword arguments of :func:`mosaic.plan` that :func:`plan_options` passes on."""


def plan_options(command: F) -> F:
    """Give a command every option that changes a plan, passed to it as one ``request`` mapping.

    ``request`` holds the keyword arguments of :func:`mosaic.plan` (and :func:`mosaic.regrid`):
    ``index``, ``bbox``, ``bbox_crs``, ``crs``, ``resolution``, ``time``, ``bands``, ``method``,
    ``resampling``, ``groupby``, ``anchor``, ``dtype``, ``nodata``, ``src_nodata``, ``max_pixels``,
    ``mask``, ``filter``, ``sortby``; the
    bbox is checked in its CRS and an index is required. A command calls
    ``mosaic.plan(**request, chunks=...)``, so an option added to ``_PLAN_OPTIONS`` reaches every such
    command and the API without touching them.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        request = {name: kwargs.pop(name) for name in PLAN_PARAMETERS}
        check_bbox(request["bbox"], request["bbox_crs"])
        request["index"] = require_index(request["index"])
        request["bands"] = list(request["bands"]) if request["bands"] else None
        return command(*args, request=request, **kwargs)

    for option in reversed(_PLAN_OPTIONS):
        run = option(run)
    return cast(F, run)
