"""``mosaic serve``: web map tiles, a map page and scene footprints over any multi-CRS index.

:func:`app` returns an ASGI application (Starlette), so it runs under ``mosaic serve`` (uvicorn) or
mounted in a user's own service. Each tile is planned like a chunk (:mod:`mosaic.outputs.tiles`):
only the scenes whose footprints touch it, at the right overview, read through the same limiter,
credentials and retries as :func:`mosaic.load`. The index is opened once and encoded tiles are kept in
a bounded cache. A tile that would need more than ``max_scenes`` scenes is refused with HTTP 413, a
failed read is HTTP 502 naming the scene, in the ``X-Mosaic-Error`` header and the log: never a
transparent tile that looks like "no data here".

Routes: ``/`` (the map page), ``/tiles/{z}/{x}/{y}.{png,webp,npy}``, ``/tilejson.json``, ``/wmts``
(WMTS capabilities), ``/footprints.geojson``, ``/times.json``, ``/point?lon=&lat=`` (the values at a
point over time, :func:`mosaic.sample`), ``/static/...`` (the vendored Leaflet).
Query parameters of tile requests override the server's defaults: ``time``, ``bands``, ``rescale``,
``colormap``, ``method``, ``resampling``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from mosaic.errors import InvalidInputError, MosaicError, ReadError
from mosaic.io.paths import redact
from mosaic.outputs.tiles import (
    FORMATS,
    HALF_WORLD,
    TileStyle,
    TooManyScenesError,
    check_bands,
    default_rescale,
    plan_tile,
    render_tile,
)

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = ["app", "parse_rescale"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CACHE_TILES = 1024
"""Encoded tiles kept per server (least recently used dropped first)."""
CACHE_PLANS = 4096
"""Tile plans kept per server: a tile drawn with another colormap or range, or as ``.npy``, is not
planned again."""


def parse_rescale(text: str | None) -> tuple[tuple[float, float], ...] | None:
    """``"0,3000"`` (all bands) or ``"0,3000;0,2500;0,2000"`` (per band) as ranges; None for none."""
    if text is None or text == "":
        return None
    ranges = []
    for part in text.split(";"):
        try:
            lo, hi = (float(v) for v in part.split(","))
        except ValueError:
            raise InvalidInputError(
                f"rescale {text!r} is not 'min,max' or 'min,max;min,max;...' with numbers"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise InvalidInputError(f"rescale {text!r}: each range needs finite min < max")
        ranges.append((lo, hi))
    return tuple(ranges)


def _bands(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(b.strip() for b in text.split(",") if b.strip()) or None


def app(
    index: Any,
    *,
    time: Any = None,
    bands: Sequence[str] | str | None = None,
    rescale: str | Sequence[tuple[float, float]] | None = None,
    colormap: str = "viridis",
    method: str = "first",
    resampling: str = "nearest",
    max_scenes: int = 64,
    tile_size: int = 256,
    **load_options: Any,
) -> Any:
    """The ASGI application serving ``index`` (a TileIndex or anything :func:`mosaic.load` takes).

    Args:
        index: the tile index, or its path (read once, here).
        time: the scenes' time, as :func:`mosaic.load` takes it (None: all, fused by ``method``).
        bands: one band (drawn with ``colormap``) or three (RGB); None: the index's only band.
        rescale: the values drawn as 0 and 255: ``"0,3000"``, ``"0,3000;0,2500;0,2000"`` or a sequence
            of (min, max); None: 2-98% of each band over the index, read once now.
        colormap: a matplotlib colormap for one-band tiles.
        method: how overlapping scenes combine, as in :func:`mosaic.load`.
        resampling: the reads' resampling, as in :func:`mosaic.load`.
        max_scenes: the most scenes one tile may read; beyond it the tile is refused (HTTP 413).
        tile_size: 256 or 512 pixels.
        load_options: further options of :func:`mosaic.plan`: ``mask`` (a quality mask applied to each
            scene before fusion), ``filter`` (CQL2) and ``sortby`` (which scene ``first`` takes), as
            :func:`mosaic.load` takes them; ``auth``, ``max_concurrency``, ``nodata``...

    Raises:
        InvalidInputError: a bad default (bands, rescale, colormap, tile size).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from mosaic.planning.planner import resolve_index

    if tile_size not in (256, 512):
        raise InvalidInputError(f"tile_size must be 256 or 512, got {tile_size}")
    if max_scenes < 1:
        raise InvalidInputError(f"max_scenes must be at least 1, got {max_scenes}")
    tiles = resolve_index(index)
    base = TileStyle(
        bands=_bands(bands) if isinstance(bands, str) else (tuple(bands) if bands else None),
        rescale=parse_rescale(rescale)
        if rescale is None or isinstance(rescale, str)
        else tuple((float(lo), float(hi)) for lo, hi in rescale),
        colormap=_colormap(colormap),
        method=method,
        resampling=resampling,
        time=time,
        tile_size=tile_size,
        max_scenes=max_scenes,
        extra=load_options,
    )
    if base.rescale is None:
        base = dataclasses.replace(base, rescale=default_rescale(tiles, base))
    cache = _TileCache(CACHE_TILES)
    plans: _TileCache = _TileCache(CACHE_PLANS)
    samples = _one_row_per_asset(tiles)
    checked: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def bands_of(fmt: str, style: TileStyle) -> tuple[str, ...]:
        key = (fmt == "npy", style.bands, style.method, style.resampling)
        if key not in checked:
            checked[key] = check_bands(samples, fmt, style)
        return checked[key]

    def style_of(request: Request) -> TileStyle:
        q = request.query_params
        changes: dict[str, Any] = {}
        if "bands" in q:
            changes["bands"] = _bands(q["bands"])
        if "rescale" in q:
            changes["rescale"] = parse_rescale(q["rescale"])
        if "colormap" in q:
            changes["colormap"] = _colormap(q["colormap"])
        for name in ("method", "resampling", "time"):
            if name in q:
                changes[name] = q[name] or None
        return dataclasses.replace(base, **changes) if changes else base

    def tile(request: Request) -> Response:
        p = request.path_params
        z, x, y, fmt = int(p["z"]), int(p["x"]), int(p["y"]), str(p["fmt"])
        where = f"tile {z}/{x}/{y}.{fmt}"
        try:
            style = style_of(request)
            key = (z, x, y, fmt, _style_key(style))
            names = bands_of(fmt, style) if fmt in FORMATS else ()
            plan_key = (z, x, y, style.bands, style.method, style.resampling, str(style.time))

            def plan() -> Any:  # the tile's plan, shared by its formats, colormaps and ranges
                return plans.get_or_make(plan_key, lambda: plan_tile(tiles, z, x, y, style))

            result = cache.get_or_make(key, lambda: render_tile(tiles, z, x, y, fmt, style, names, plan))
        except MosaicError as exc:
            return _failure(where, exc)
        return Response(
            result.content,
            media_type=result.media_type,
            headers={"X-Mosaic-Scenes": str(result.scenes), "Cache-Control": "max-age=3600"},
        )

    def tilejson(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        root = str(request.base_url).rstrip("/")
        west, south, east, north = _lonlat_bounds(tiles)
        return JSONResponse(
            {
                "tilejson": "3.0.0",
                "name": "mosaic",
                "tiles": [f"{root}/tiles/{{z}}/{{x}}/{{y}}.png{query}"],
                "minzoom": 0,
                "maxzoom": _max_zoom(tiles, tile_size),
                "bounds": [west, south, east, north],
                "center": [(west + east) / 2, (south + north) / 2, 2],
                "tileSize": tile_size,
            }
        )

    def wmts(request: Request) -> Response:
        root = str(request.base_url).rstrip("/")
        return Response(_wmts_xml(root, tiles, tile_size), media_type="application/xml")

    def footprints(request: Request) -> Response:
        return JSONResponse(_footprints(tiles))

    def times(request: Request) -> Response:
        return JSONResponse(_time_groups(tiles))

    def point(request: Request) -> Response:
        where = "point"
        try:
            lon, lat = _lonlat(request.query_params.get("lon"), request.query_params.get("lat"))
            where = f"point {lon:.6f},{lat:.6f}"
            style = style_of(request)
            series = _series(tiles, lon, lat, style)
        except MosaicError as exc:
            return _failure(where, exc)
        return JSONResponse({"lon": lon, "lat": lat, "series": series})

    def page(request: Request) -> Response:
        html = (STATIC / "map.html").read_text()
        config = {
            "tileSize": tile_size,
            "bands": list(base.bands or ()),
            "maxZoom": _max_zoom(tiles, tile_size),
        }
        return HTMLResponse(html.replace("/*CONFIG*/{}", json.dumps(config)))

    routes = [
        Route("/", page),
        Route("/tiles/{z:int}/{x:int}/{y:int}.{fmt}", tile),
        Route("/tilejson.json", tilejson),
        Route("/wmts", wmts),
        Route("/footprints.geojson", footprints),
        Route("/times.json", times),
        Route("/point", point),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


def _lonlat(lon: str | None, lat: str | None) -> tuple[float, float]:
    """``lon``/``lat`` query parameters as numbers on the Earth."""
    try:
        x, y = float(lon), float(lat)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(f"point needs numbers lon= and lat=, got lon={lon!r} lat={lat!r}") from None
    if not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):
        raise InvalidInputError(f"point lon={x} lat={y} is off the Earth (lon -180..180, lat -90..90)")
    return x, y


def _series(index: Any, lon: float, lat: float, style: TileStyle) -> list[dict[str, Any]]:
    """The time series of the style's bands at a point (:func:`mosaic.sample`), as JSON records.

    Every time group of the index (or of the style's ``time``), fused by the style's ``method`` and
    masked by its ``mask``; a date whose scenes hold no value at the point gives nulls.
    """
    import numpy as np

    from mosaic.errors import NoDataError
    from mosaic.outputs.sampling import sample

    wanted = ("mask", "auth", "max_concurrency", "nodata", "filter")
    options = {k: v for k, v in style.extra.items() if k in wanted and v is not None}
    try:
        ds = sample(
            [(lon, lat)],
            style.time,
            index=index,
            bands=list(style.bands) if style.bands else None,
            method=style.method,
            **options,
        )
    except NoDataError:
        return []
    records = []
    for i, when in enumerate(ds["time"].values):
        record: dict[str, Any] = {"time": str(np.datetime_as_string(when, unit="s"))}
        for name, var in ds.data_vars.items():
            value = var.values[i, 0].item()
            nodata = var.attrs.get("nodata")
            missing = value is None or (isinstance(value, float) and not math.isfinite(value))
            record[str(name)] = None if missing or (nodata is not None and value == nodata) else value
        records.append(record)
    return records


def _colormap(name: str) -> str:
    import matplotlib

    if name not in matplotlib.colormaps:
        raise InvalidInputError(
            f"colormap {name!r} is not a matplotlib colormap (e.g. viridis, gray, terrain)"
        )
    return name


def _style_key(style: TileStyle) -> tuple[Any, ...]:
    """What makes two tile requests the same (the server's ``extra`` options are fixed per server)."""
    return (style.bands, style.rescale, style.colormap, style.method, style.resampling, str(style.time))


def _failure(where: str, exc: MosaicError) -> Response:
    """The HTTP answer to a request that failed, its reason in ``X-Mosaic-Error``.

    413: too many scenes; 400: bad input; 502: a failed read (logged, the scene named); 500: anything
    else of mosaic's (logged).
    """
    if isinstance(exc, TooManyScenesError):
        return _error(413, where, exc)
    if isinstance(exc, InvalidInputError):
        return _error(400, where, exc)
    log.error("%s: %s", where, redact(str(exc)))
    return _error(502 if isinstance(exc, ReadError) else 500, where, exc)


def _error(status: int, where: str, exc: BaseException) -> Response:
    """A plain-text error whose first line is also in ``X-Mosaic-Error`` (secrets redacted)."""
    from starlette.responses import PlainTextResponse

    message = redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    header = message.encode("latin-1", "replace").decode("latin-1")[:1000]
    return PlainTextResponse(f"{where}: {message}\n", status_code=status, headers={"X-Mosaic-Error": header})


class _TileCache:
    """A thread-safe LRU (of encoded tiles, or plans); one make per key at a time (others wait for it)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[Any, threading.Lock] = {}

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._making.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                result = make()
            finally:
                with self._lock:
                    self._making.pop(key, None)
            with self._lock:
                self._items[key] = result
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return result


def _one_row_per_asset(index: Any) -> list[Any]:
    """A record of each asset (what band checks need), not the whole index."""
    import numpy as np

    _, first = np.unique(np.asarray(index.table.column("asset").to_pylist(), dtype=object), return_index=True)
    records: list[Any] = index.take(sorted(first.tolist())).records()
    return records


def _lonlat_bounds(index: Any) -> tuple[float, float, float, float]:
    import shapely

    west, south, east, north = (float(v) for v in shapely.total_bounds(index.footprints))
    return west, max(south, -85.0511), east, min(north, 85.0511)


def _max_zoom(index: Any, tile_size: int) -> int:
    """The zoom whose pixels are about the finest scene's (no point zooming the map further)."""
    import numpy as np

    res = index.table.column("resolution").to_pylist()
    finest = min((abs(r[0]) for r in res if r), default=None)
    crs = index.table.column("crs").to_pylist()
    if finest is None:
        return 18
    if all("4326" in c for c in crs):  # degrees: about 111 km a degree
        finest *= 111_320.0
    world_pixels = 2 * HALF_WORLD / finest
    return int(np.clip(math.ceil(math.log2(world_pixels / tile_size)), 0, 22))


def _footprints(index: Any) -> dict[str, Any]:
    """One GeoJSON Feature per scene (its footprint, CRS and time), for the map's footprint layer."""
    import shapely

    seen: set[str] = set()
    features = []
    for row, geometry in zip(index.records(), index.footprints, strict=True):
        if row.id in seen:
            continue
        seen.add(row.id)
        features.append(
            {
                "type": "Feature",
                "geometry": json.loads(shapely.to_geojson(geometry)),
                "properties": {
                    "id": row.id,
                    "crs": row.crs if len(row.crs) < 40 else row.crs[:40] + "...",
                    "datetime": None if row.datetime is None else str(row.datetime),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _time_groups(index: Any) -> list[str]:
    """The index's days (UTC dates of its scenes), for the map's time slider."""
    dates = {str(row.datetime)[:10] for row in index.records() if row.datetime is not None}
    return sorted(dates)


def _wmts_xml(root: str, index: Any, tile_size: int) -> str:
    """WMTS 1.0.0 capabilities of the one layer, on the GoogleMapsCompatible tile matrix set."""
    west, south, east, north = _lonlat_bounds(index)
    matrices = []
    for z in range(_max_zoom(index, tile_size) + 1):
        n = 2**z
        scale = 2 * HALF_WORLD / (tile_size * n) / 0.00028
        matrices.append(
            f"<TileMatrix><ows:Identifier>{z}</ows:Identifier><ScaleDenominator>{scale!r}</ScaleDenominator>"
            f"<TopLeftCorner>{-HALF_WORLD!r} {HALF_WORLD!r}</TopLeftCorner><TileWidth>{tile_size}</TileWidth>"
            f"<TileHeight>{tile_size}</TileHeight><MatrixWidth>{n}</MatrixWidth><MatrixHeight>{n}</MatrixHeight>"
            "</TileMatrix>"
        )
    template = escape(f"{root}/tiles/{{TileMatrix}}/{{TileCol}}/{{TileRow}}.png")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" version="1.0.0">'
        "<ows:ServiceIdentification><ows:Title>mosaic</ows:Title><ows:ServiceType>OGC WMTS</ows:ServiceType>"
        "<ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion></ows:ServiceIdentification>"
        "<Contents><Layer><ows:Title>mosaic</ows:Title><ows:Identifier>mosaic</ows:Identifier>"
        f"<ows:WGS84BoundingBox><ows:LowerCorner>{west} {south}</ows:LowerCorner>"
        f"<ows:UpperCorner>{east} {north}</ows:UpperCorner></ows:WGS84BoundingBox>"
        '<Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style><Format>image/png</Format>'
        "<TileMatrixSetLink><TileMatrixSet>GoogleMapsCompatible</TileMatrixSet></TileMatrixSetLink>"
        f'<ResourceURL format="image/png" resourceType="tile" template="{template}"/></Layer>'
        "<TileMatrixSet><ows:Identifier>GoogleMapsCompatible</ows:Identifier>"
        "<ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>"
        f"{''.join(matrices)}</TileMatrixSet></Contents></Capabilities>"
    )
