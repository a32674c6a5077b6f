"""Synthetic satellite collections with a known analytic truth, for tests and the demo.

**Truth.** :func:`truth` gives the noise-free physical value of band ``b`` at (lon, lat). It is built
from the unit vector ``p = (cos(lat)cos(lon), cos(lat)sin(lon), sin(lat))``, so it is smooth everywhere
on the sphere, across the antimeridian and at the poles::

    truth = 2400 + 300 x + 200 y + 600 z                            (large-scale trend, +-700)
          + sum_k A_k sin(2 pi R (d_k . p) / L_k + phi_k)           (texture, see _WAVES)
          + BAND_STEP (b - 1)                                        (75 per band, b in 1..8)
          + TIME_SLOPE * days(when.date() - 2024-01-01)              (0.2 per whole UTC day)

with R the mean Earth radius, unit directions ``d_k``, wavelengths ``L_k`` of 6, 9 and 14 km and
amplitudes 70, 50 and 35, giving a mean gradient of ~0.04 value units per metre (99% below 0.085), so
one-pixel misregistration is visible. Values stay within ~1550-3850 for dates in 2024-2025.
``when=None`` drops the time term.

**Noise and encoding.** A stored pixel is the truth at the pixel *centre* (lon/lat by pyproj) plus
uniform noise in ``[-NOISE_AMPLITUDE, NOISE_AMPLITUDE]`` drawn from
``numpy.random.default_rng([seed, crc32(asset name), band])``, encoded as
``stored = (value - offset) / scale`` (rounded for integer dtypes), so ``physical = stored * scale +
offset`` as in STAC ``raster:bands``. Only uint8 truth assets use a scale (``UINT8_SCALE``). Pixels on
the collar side of the scene (a tilted swath edge, :class:`Collar`) hold nodata: 0 for integers, NaN
or -9999 for floats; an integer value that would equal nodata is moved one step away. ``quality``
assets hold the scene's constant ``mosaic:quality`` (1..250, from the seed) in every valid pixel.

**Clouds.** A scene may have clouds (:class:`Cloud`: discs in lon/lat) and quality-mask assets
describing them: ``scl`` (uint8, Sentinel-2 SCL classes: ``SCL_CLEAR`` 4, ``SCL_CLOUD`` 9 under a cloud,
nodata 0) and ``qa_pixel`` (uint16, Landsat Collection 2 QA_PIXEL: ``QA_CLEAR`` with bit 6 "clear",
``QA_CLOUD`` with bit 3 "cloud", nodata 1 = bit 0 "fill"). Clouds are decided on the grid of the
scene's first mask asset (else its finest): a pixel is cloudy when its centre lies in a disc; every
other asset's pixel is cloudy when the cloud-grid pixel holding its centre is (nearest, as a mask is
applied), and holds ``CLOUD_VALUE`` (physical) instead of the truth. A scene without clouds is
unchanged (same files, same fingerprint as before clouds existed).

**On disk.** ``<root>/<scene_id>/<asset>.tif`` (tiled DEFLATE COGs with internal overviews),
``<root>/<scene_id>/<scene_id>.json`` (a STAC Item, projection v2 and raster extensions, asset hrefs
absolute paths) and ``<root>/items.json`` (a FeatureCollection of all Items). An Item's geometry is the
valid-data footprint. Generation is deterministic and skipped when files with the same content exist.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import threading
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pystac
import rasterio
import rasterio.errors
import rasterio.shutil
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.io import MemoryFile
from shapely.geometry import MultiPolygon, Polygon, box, mapping

from mosaic.errors import InvalidInputError
from mosaic.index.geom import to_lonlat
from mosaic.io.runtime import WARNINGS_LOCK

__all__ = [
    "BAND_STEP",
    "CLOUD_VALUE",
    "DEMO_SIZE",
    "DEMO_WIDTH_M",
    "MAX_BAND",
    "NOISE_AMPLITUDE",
    "PROJECTION_EXTENSION",
    "QA_CLEAR",
    "QA_CLOUD",
    "RASTER_EXTENSION",
    "SCL_CLEAR",
    "SCL_CLOUD",
    "TIME_ORIGIN",
    "TIME_SLOPE",
    "UINT8_SCALE",
    "AssetSpec",
    "Cloud",
    "Collar",
    "SceneSpec",
    "cloud_cover",
    "demo_assets",
    "demo_clouds",
    "demo_collection",
    "demo_specs",
    "expected_value",
    "make_bad_files",
    "make_collection",
    "make_scene",
    "time_term",
    "to_physical",
    "tolerance",
    "truth",
    "write_raster",
]

NOISE_AMPLITUDE = 2.0
TIME_ORIGIN = _dt.date(2024, 1, 1)
TIME_SLOPE = 0.2  # value units per whole UTC day since TIME_ORIGIN
BAND_STEP = 75.0
MAX_BAND = 8
UINT8_SCALE = 20.0
CLOUD_VALUE = 5000.0
"""The physical value of every truth band under a cloud (the truth stays within ~1550-3850)."""
SCL_CLEAR, SCL_CLOUD = 4, 9
"""SCL classes of ``scl`` assets: vegetation where clear, cloud (high probability) under a cloud."""
QA_CLEAR = (1 << 6) | (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)
"""QA_PIXEL of a clear pixel (21824: bit 6 clear, low cloud/shadow/snow/cirrus confidence)."""
QA_CLOUD = (1 << 3) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 12) | (1 << 14)
"""QA_PIXEL under a cloud (22280: bit 3 cloud, high cloud confidence)."""
_MASK_CONTENT = ("scl", "qa_pixel")
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_EXTENSION = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"

_VERSION = "2"  # bump to invalidate files generated by an older generator
_EARTH_RADIUS_M = 6_371_008.8
_BASE = 2400.0
_TREND = (300.0, 200.0, 600.0)
# (amplitude, wavelength in metres, direction, phase)
_WAVES = (
    (70.0, 6_000.0, (0.48, 0.62, 0.62), 0.3),
    (50.0, 9_000.0, (-0.71, 0.30, 0.64), 1.7),
    (35.0, 14_000.0, (0.20, -0.81, 0.55), 4.1),
)
_INT_DTYPES = ("uint8", "uint16", "int16", "int32")
_FLOAT_DTYPES = ("float32", "float64")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_MAX_SIDE = 16_384
_BLOCKSIZE = 256


def time_term(when: _dt.datetime | _dt.date | None) -> float:
    """The truth's time term: ``TIME_SLOPE`` per whole UTC day since ``TIME_ORIGIN`` (0 for None).

    Whole days, so scenes of one pass on one UTC day share the same truth. Naive datetimes are UTC.
    """
    if when is None:
        return 0.0
    if isinstance(when, _dt.datetime):
        if when.tzinfo is not None:
            when = when.astimezone(_dt.UTC)
        when = when.date()
    _require(isinstance(when, _dt.date), f"when must be a datetime, a date or None, got {when!r}")
    return TIME_SLOPE * (when - TIME_ORIGIN).days


def _check_band(band: int) -> None:
    _require(_is_int(band) and 1 <= band <= MAX_BAND, f"truth bands are integers 1..{MAX_BAND}: {band!r}")


def _truth_base(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Trend plus texture (band 1, no time term) from 3-D unit-sphere coordinates."""
    lam, phi = np.radians(lon), np.radians(lat)
    cos_phi = np.cos(phi)
    p = (cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi))
    value = _BASE + _TREND[0] * p[0] + _TREND[1] * p[1] + _TREND[2] * p[2]
    for amplitude, wavelength, direction, phase in _WAVES:
        d = np.asarray(direction) / np.linalg.norm(direction)
        along = d[0] * p[0] + d[1] * p[1] + d[2] * p[2]
        value = value + amplitude * np.sin(2.0 * np.pi * _EARTH_RADIUS_M * along / wavelength + phase)
    return np.asarray(value)


def truth(lon: Any, lat: Any, band: int = 1, *, when: _dt.datetime | _dt.date | None = None) -> np.ndarray:
    """Noise-free physical value of ``band`` at (lon, lat) in degrees; vectorised, see the module doc."""
    _check_band(band)
    lon_a, lat_a = np.asarray(lon, dtype="float64"), np.asarray(lat, dtype="float64")
    return _truth_base(lon_a, lat_a) + BAND_STEP * (band - 1) + time_term(when)


def _require(ok: bool, message: str) -> None:
    """Raise InvalidInputError(message) unless ``ok``: validation that survives ``python -O``."""
    if not ok:
        raise InvalidInputError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _finite(kind: str, value: object, *, positive: bool = False) -> float:
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool) and math.isfinite(value)
    _require(
        ok and (not positive or value > 0),  # type: ignore[operator]
        f"{kind} must be a finite{' positive' if positive else ''} number, got {value!r}",
    )
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AssetSpec:
    """One asset (one COG) of a scene.

    Attributes:
        name: asset key and file stem.
        dtype: one of uint8, uint16, int16, int32, float32, float64.
        resolution: pixel size in CRS units (metres).
        bands: band count; asset band i holds truth band ``truth_band + i - 1``.
        nodata: None for the default (0 for integers, NaN for floats).
        scale, offset: encoding, ``physical = stored * scale + offset``.
        truth_band: truth band of the asset's first band.
        content: "truth" (truth + noise), "quality" (the scene's constant quality, no noise), or a
            quality mask of the scene's clouds: "scl" (uint8 SCL classes) or "qa_pixel" (uint16
            QA_PIXEL bit flags); see the module doc.
    """

    name: str
    dtype: str
    resolution: float
    bands: int = 1
    nodata: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    truth_band: int = 1
    content: Literal["truth", "quality", "scl", "qa_pixel"] = "truth"

    def __post_init__(self) -> None:
        where = f"asset {self.name!r}"
        _require(
            isinstance(self.name, str) and bool(_NAME.match(self.name)),
            f"{where}: names are letters, digits, _ . - only",
        )
        _require(
            self.dtype in _INT_DTYPES + _FLOAT_DTYPES,
            f"{where}: dtype must be one of {_INT_DTYPES + _FLOAT_DTYPES}, got {self.dtype!r}",
        )
        _finite(f"{where} resolution", self.resolution, positive=True)
        _require(_is_int(self.bands) and self.bands >= 1, f"{where}: bands must be >= 1, got {self.bands!r}")
        _require(_finite(f"{where} scale", self.scale) != 0, f"{where}: scale must not be 0")
        _finite(f"{where} offset", self.offset)
        _require(
            self.content in ("truth", "quality", *_MASK_CONTENT),
            f"{where}: content must be 'truth', 'quality', 'scl' or 'qa_pixel'",
        )
        _require(
            self.content not in _MASK_CONTENT
            or (self.bands == 1 and self.dtype == ("uint8" if self.content == "scl" else "uint16")),
            f"{where}: an scl asset has one uint8 band, a qa_pixel asset one uint16 band",
        )
        _require(
            self.content == "truth" or (self.bands == 1 and self.dtype in _INT_DTYPES),
            f"{where}: a quality asset has one integer band",
        )
        _check_band(self.truth_band)
        _check_band(self.truth_band + self.bands - 1)
        object.__setattr__(self, "nodata", self._checked_nodata(where))

    def _checked_nodata(self, where: str) -> float:
        if self.nodata is None and self.content == "qa_pixel":
            return 1.0  # bit 0, fill
        if self.nodata is None:
            return 0.0 if self.dtype in _INT_DTYPES else math.nan
        value = float(self.nodata)
        if self.dtype in _INT_DTYPES:
            info = np.iinfo(self.dtype)
            _require(
                value.is_integer() and info.min <= value <= info.max,
                f"{where}: nodata {self.nodata!r} is not a {self.dtype}",
            )
        _require(not math.isinf(value), f"{where}: nodata must be finite or NaN")
        return value


@dataclass(frozen=True)
class Collar:
    """A slanted swath edge: everything on ``side`` of a line is nodata.

    The line crosses the scene's mid-height at ``fraction`` of its width from the ``side`` edge and is
    tilted ``tilt_deg`` clockwise from grid north.
    """

    side: Literal["west", "east"] = "west"
    fraction: float = 0.15
    tilt_deg: float = 10.0

    def __post_init__(self) -> None:
        _require(self.side in ("west", "east"), f"collar side must be 'west' or 'east', got {self.side!r}")
        _require(
            0 < _finite("collar fraction", self.fraction) < 0.9,
            f"collar fraction must lie in (0, 0.9), got {self.fraction}",
        )
        _require(
            abs(_finite("collar tilt_deg", self.tilt_deg)) < 45,
            f"collar tilt_deg must lie in (-45, 45), got {self.tilt_deg}",
        )


@dataclass(frozen=True)
class Cloud:
    """A cloud: a disc of ``radius_m`` metres (in the scene's CRS) around ``center_lonlat``."""

    center_lonlat: tuple[float, float]
    radius_m: float

    def __post_init__(self) -> None:
        centre = self.center_lonlat
        _require(isinstance(centre, Sequence) and len(centre) == 2, "cloud center_lonlat is (lon, lat)")
        lon, lat = (_finite("cloud centre", v) for v in centre)
        _require(-180 <= lon <= 180 and -90 <= lat <= 90, f"cloud centre {centre} is not a lon/lat")
        object.__setattr__(self, "center_lonlat", (lon, lat))
        _finite("cloud radius_m", self.radius_m, positive=True)


@dataclass(frozen=True)
class SceneSpec:
    """One scene: a grid in a projected EPSG CRS, a date and assets.

    Attributes:
        id: scene id (also its folder name).
        crs: an EPSG code of a projected CRS in metres; normalised to "EPSG:n".
        center_lonlat: (lon, lat) of the scene centre; the grid is snapped to multiples of the least
            common multiple of the asset resolutions (all asset grids share the scene bounds and are
            aligned to their own resolution, as Sentinel-2 tiles are).
        width_m, height_m: scene size in CRS units (rounded to that common step).
        datetime: acquisition time; naive means UTC.
        assets: the assets (unique names).
        collar: the nodata collar, or None for a fully valid scene.
        seed: noise and quality seed; None derives it from the id (crc32).
        platform: STAC ``platform``.
        clouds: clouds over the scene (see the module doc); the truth assets hold ``CLOUD_VALUE``
            under them, its ``scl``/``qa_pixel`` assets say where they are.
    """

    id: str
    crs: str
    center_lonlat: tuple[float, float]
    width_m: float
    height_m: float
    datetime: _dt.datetime
    assets: tuple[AssetSpec, ...]
    collar: Collar | None = None
    seed: int | None = None
    platform: str = "synthetic-2a"
    clouds: tuple[Cloud, ...] = field(default=(), repr=False)  # (not in the repr: fingerprints stay)

    def __post_init__(self) -> None:
        where = f"scene {self.id!r}"
        clouds = tuple(self.clouds) if isinstance(self.clouds, Sequence) else None
        _require(
            clouds is not None and all(isinstance(c, Cloud) for c in clouds),
            f"{where}: clouds must be a list of Clouds",
        )
        object.__setattr__(self, "clouds", clouds)
        _require(
            isinstance(self.id, str) and bool(_NAME.match(self.id)),
            f"{where}: ids are letters, digits, _ . - only",
        )
        object.__setattr__(self, "crs", _epsg_code(self.crs))
        centre = self.center_lonlat
        _require(isinstance(centre, Sequence) and len(centre) == 2, f"{where}: center_lonlat is (lon, lat)")
        lon, lat = (_finite(f"{where} centre", v) for v in centre)
        _require(-180 <= lon <= 180 and -90 <= lat <= 90, f"{where}: centre {centre} is not a lon/lat")
        object.__setattr__(self, "center_lonlat", (lon, lat))
        _finite(f"{where} width_m", self.width_m, positive=True)
        _finite(f"{where} height_m", self.height_m, positive=True)
        _require(isinstance(self.datetime, _dt.datetime), f"{where}: datetime must be a datetime")
        when = self.datetime.replace(tzinfo=_dt.UTC) if self.datetime.tzinfo is None else self.datetime
        object.__setattr__(self, "datetime", when.astimezone(_dt.UTC))
        assets = tuple(self.assets) if isinstance(self.assets, Sequence) else ()
        names = {a.name for a in assets if isinstance(a, AssetSpec)}
        _require(bool(assets) and len(names) == len(assets), f"{where}: assets are AssetSpecs, unique names")
        object.__setattr__(self, "assets", assets)
        step = _common_step([a.resolution for a in assets])
        _require(
            step <= min(self.width_m, self.height_m),
            f"{where}: the asset resolutions only share a {step} m grid, larger than the scene",
        )
        _require(self.collar is None or isinstance(self.collar, Collar), f"{where}: collar must be a Collar")
        seed = zlib.crc32(self.id.encode()) if self.seed is None else self.seed
        _require(_is_int(seed) and seed >= 0, f"{where}: seed must be a non-negative integer, got {seed!r}")
        object.__setattr__(self, "seed", int(seed))


def _epsg_code(crs: object) -> str:
    try:
        parsed = CRS.from_user_input(crs)
    except Exception as exc:
        raise InvalidInputError(f"not a CRS: {crs!r}") from exc
    units = {axis.unit_name for axis in parsed.axis_info}
    _require(
        parsed.to_epsg() is not None and parsed.is_projected and units == {"metre"},
        f"scene CRS must be a projected EPSG CRS in metres, got {crs!r}",
    )
    return f"EPSG:{parsed.to_epsg()}"


def _common_step(resolutions: Sequence[float]) -> float:
    """Least common multiple of the resolutions, so every asset grid shares the scene's bounds."""
    fractions = [Fraction(r).limit_denominator(10**6) for r in resolutions]
    numerator = math.lcm(*(f.numerator for f in fractions))
    return float(Fraction(numerator, math.gcd(*(f.denominator for f in fractions))))


def _scene_bounds(spec: SceneSpec) -> tuple[float, float, float, float]:
    """Native (left, bottom, right, top), snapped to the common step of the asset resolutions."""
    tr = Transformer.from_crs("EPSG:4326", spec.crs, always_xy=True)
    cx, cy = tr.transform(*spec.center_lonlat, errcheck=False)
    _require(math.isfinite(cx) and math.isfinite(cy), f"scene {spec.id}: centre is outside {spec.crs}")
    step = _common_step([a.resolution for a in spec.assets])
    left = round((cx - spec.width_m / 2) / step) * step
    top = round((cy + spec.height_m / 2) / step) * step
    right = left + max(1, round(spec.width_m / step)) * step
    bottom = top - max(1, round(spec.height_m / step)) * step
    return left, bottom, right, top


def _asset_grid(bounds: Sequence[float], resolution: float) -> tuple[Affine, tuple[int, int]]:
    left, bottom, right, top = bounds
    shape = (round((top - bottom) / resolution), round((right - left) / resolution))
    _require(max(shape) <= _MAX_SIDE, f"asset grid {shape} exceeds {_MAX_SIDE} pixels a side")
    return Affine(resolution, 0.0, left, 0.0, -resolution, top), shape


def _collar_line(bounds: Sequence[float], collar: Collar) -> tuple[tuple[float, float], tuple[float, float]]:
    """A point on the collar line and the unit normal pointing into the valid side."""
    left, bottom, right, top = bounds
    width, mid = right - left, (bottom + top) / 2
    tilt = math.radians(collar.tilt_deg)
    east = (math.cos(tilt), -math.sin(tilt))  # normal to the direction (sin t, cos t)
    if collar.side == "west":
        return (left + collar.fraction * width, mid), east
    return (right - collar.fraction * width, mid), (-east[0], -east[1])


def _valid_polygon(bounds: Sequence[float], line: tuple[Any, Any] | None) -> Polygon:
    """The scene box, cut by the collar line: the data footprint in native coordinates."""
    scene = box(*bounds)
    if line is None:
        return scene
    (px, py), (nx, ny) = line
    big = 4 * (bounds[2] - bounds[0] + bounds[3] - bounds[1])
    ux, uy = -ny, nx  # along the line
    a, b = (px - ux * big, py - uy * big), (px + ux * big, py + uy * big)
    half = Polygon([a, b, (b[0] + nx * big, b[1] + ny * big), (a[0] + nx * big, a[1] + ny * big)])
    valid = scene.intersection(half)
    _require(isinstance(valid, Polygon) and valid.area > 0, f"collar {line} leaves no valid area")
    return valid


def _centres(transform: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    cols = transform.c + (np.arange(shape[1]) + 0.5) * transform.a
    rows = transform.f + (np.arange(shape[0]) + 0.5) * transform.e
    return np.meshgrid(cols, rows)


def _lonlat_bbox(geom: Polygon | MultiPolygon) -> list[float]:
    """[west, south, east, north]; west > east when the geometry crosses the antimeridian."""
    parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
    spans = sorted((p.bounds[0], p.bounds[2]) for p in parts)
    merged: list[list[float]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1e-9:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    _, south, _, north = geom.bounds
    gaps = [(merged[i][1], merged[i + 1][0]) for i in range(len(merged) - 1)]
    wrap = merged[0][0] + 360.0 - merged[-1][1]
    if not gaps or wrap >= max(hi - lo for lo, hi in gaps):
        return [merged[0][0], south, merged[-1][1], north]
    east, west = max(gaps, key=lambda g: g[1] - g[0])
    return [west, south, east, north]


def _quality(seed: int) -> int:
    return int(np.random.default_rng([seed, 0x9A11]).integers(1, 251))


def cloud_cover(quality: int) -> float:
    """A scene's ``eo:cloud_cover`` (percent) from its quality (1..250): 0 at 250, 100 at 1.

    So the least cloudy scene is the one of highest quality (and ``sortby="eo:cloud_cover"`` orders
    scenes as ``method="highest:quality"`` ranks them).
    """
    return round(100.0 * (250 - quality) / 249, 2)


def _noise(seed: int, asset: str, band: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(asset.encode()), band])
    return rng.uniform(-NOISE_AMPLITUDE, NOISE_AMPLITUDE, size=shape)


def _encode(physical: np.ndarray, asset: AssetSpec, valid: np.ndarray, scene: str) -> np.ndarray:
    """Physical values to the stored dtype (nodata outside ``valid``), see the module doc."""
    value = (physical - asset.offset) / asset.scale
    nodata = float(asset.nodata)  # type: ignore[arg-type]
    if asset.dtype in _FLOAT_DTYPES:
        return np.where(valid, value, nodata).astype(asset.dtype)
    value = np.rint(value)
    info = np.iinfo(asset.dtype)
    inside = value[valid]
    _require(
        not inside.size or info.min <= inside.min() <= inside.max() <= info.max,
        f"scene {scene} asset {asset.name}: values do not fit {asset.dtype}; change scale/offset",
    )
    value[value == nodata] += 1 if nodata < info.max else -1
    return np.where(valid, value, nodata).astype(asset.dtype)


def _asset_array(
    spec: SceneSpec, asset: AssetSpec, base: np.ndarray, valid: np.ndarray, cloudy: np.ndarray | None = None
) -> np.ndarray:
    if asset.content in _MASK_CONTENT:
        clear, cloud = (SCL_CLEAR, SCL_CLOUD) if asset.content == "scl" else (QA_CLEAR, QA_CLOUD)
        codes = np.full(base.shape, clear) if cloudy is None else np.where(cloudy, cloud, clear)
        return np.where(valid, codes, float(asset.nodata)).astype(asset.dtype)[None]  # type: ignore[arg-type]
    layers = []
    for i in range(asset.bands):
        if asset.content == "quality":
            physical = np.full(base.shape, float(_quality(int(spec.seed or 0))))
        else:
            band = asset.truth_band + i
            physical = (
                base
                + BAND_STEP * (band - 1)
                + time_term(spec.datetime)
                + _noise(int(spec.seed or 0), asset.name, i + 1, base.shape)
            )
            if cloudy is not None:
                physical = np.where(cloudy, CLOUD_VALUE, physical)
        layers.append(_encode(physical, asset, valid, spec.id))
    return np.stack(layers)


def _overview_count(shape: tuple[int, ...]) -> int:
    count, side = 1, max(shape) // 2
    while side // 2 >= 64:
        count, side = count + 1, side // 2
    return count


def write_raster(
    path: str | Path,
    array: np.ndarray,
    crs: str | None,
    transform: Affine,
    nodata: float | None = None,
    *,
    resampling: str = "average",
    overviews: int | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a tiled DEFLATE COG with internal overviews.

    The COG driver only copies datasets, so the array goes to an in-memory GTiff first. The file is
    written next to ``path`` and renamed into place, so readers never see a half-written file.
    """
    data = np.asarray(array)
    data = data[None] if data.ndim == 2 else data
    _require(data.ndim == 3 and 0 not in data.shape, f"array must be 2-D or 3-D, got {np.shape(array)}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    profile = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    with MemoryFile() as memfile, memfile.open(**profile) as dataset:
        dataset.write(data)
        if tags:
            dataset.update_tags(**tags)
        rasterio.shutil.copy(
            dataset,
            tmp,
            driver="COG",
            compress="DEFLATE",
            predictor="YES",
            blocksize=_BLOCKSIZE,
            overview_resampling=resampling,
            overview_count=overviews or _overview_count(data.shape[1:]),
            bigtiff="NO",
        )
    os.replace(tmp, path)
    return path


def _json_nodata(value: float) -> float | str:
    return "nan" if math.isnan(value) else (int(value) if value.is_integer() else value)


def _stac_asset(asset: AssetSpec, path: Path, transform: Affine, shape: tuple[int, int]) -> pystac.Asset:
    nodata = _json_nodata(float(asset.nodata))  # type: ignore[arg-type]
    band: dict[str, Any] = {
        "data_type": asset.dtype,
        "nodata": nodata,
        "spatial_resolution": asset.resolution,
    }
    if (asset.scale, asset.offset) != (1.0, 0.0):
        band.update(scale=asset.scale, offset=asset.offset)
    left, top = transform.c, transform.f
    extra: dict[str, Any] = {
        "proj:shape": list(shape),
        "proj:transform": list(transform)[:6],
        "proj:bbox": [left, top + shape[0] * transform.e, left + shape[1] * transform.a, top],
        "raster:bands": [dict(band) for _ in range(asset.bands)],
        "mosaic:content": asset.content,
        "mosaic:sha256": _sha256(path),
    }
    if asset.content == "truth":
        extra["mosaic:truth_bands"] = list(range(asset.truth_band, asset.truth_band + asset.bands))
    roles = ["data"] if asset.content == "truth" else ["data", "quality"]
    if asset.content in _MASK_CONTENT:
        roles = ["data", "cloud"]
    return pystac.Asset(
        str(path), title=asset.name, media_type=pystac.MediaType.COG, roles=roles, extra_fields=extra
    )


def _fingerprint(spec: SceneSpec) -> str:
    facts = f"{_VERSION}|{spec!r}|{NOISE_AMPLITUDE}|{TIME_SLOPE}|{_WAVES}|{_BASE}|{_TREND}"
    if spec.clouds:
        facts += f"|{spec.clouds!r}|{CLOUD_VALUE}|{QA_CLEAR}|{QA_CLOUD}|{SCL_CLEAR}|{SCL_CLOUD}"
    return hashlib.sha256(facts.encode()).hexdigest()[:20]


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False))
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached_item(spec: SceneSpec, folder: Path) -> pystac.Item | None:
    """The Item on disk if it was generated from ``spec`` and its files are intact, else None."""
    path = folder / f"{spec.id}.json"
    try:
        with WARNINGS_LOCK:  # pystac's extension hooks use warnings.catch_warnings (not thread-safe)
            item = pystac.Item.from_file(str(path))
        if item.properties.get("mosaic:fingerprint") != _fingerprint(spec):
            return None
        for asset in spec.assets:
            stac = item.assets[asset.name]
            file = folder / f"{asset.name}.tif"
            if stac.href != str(file) or _sha256(file) != stac.extra_fields.get("mosaic:sha256"):
                return None
    except (OSError, ValueError, KeyError, pystac.STACError):
        return None
    item.set_self_href(str(path))
    return item


_Grid = tuple[Affine, tuple[int, int], np.ndarray, np.ndarray]


def _grid(crs: str, bounds: Sequence[float], resolution: float, line: tuple[Any, Any] | None) -> _Grid:
    """An asset grid: transform, shape, valid-pixel mask and the truth (band 1, no time) at centres."""
    transform, shape = _asset_grid(bounds, resolution)
    x, y = _centres(transform, shape)
    valid = np.ones(shape, bool)
    if line is not None:
        (px, py), (nx, ny) = line
        valid = (x - px) * nx + (y - py) * ny >= 0
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return transform, shape, valid, _truth_base(lon, lat)


def _cloud_grid(spec: SceneSpec, bounds: Sequence[float]) -> tuple[np.ndarray, float]:
    """The clouds on the cloud grid (the first mask asset's, else the finest), and its resolution."""
    masks = [a.resolution for a in spec.assets if a.content in _MASK_CONTENT]
    resolution = masks[0] if masks else min(a.resolution for a in spec.assets)
    transform, shape = _asset_grid(bounds, resolution)
    x, y = _centres(transform, shape)
    cloudy = np.zeros(shape, bool)
    to_scene = Transformer.from_crs("EPSG:4326", spec.crs, always_xy=True)
    for cloud in spec.clouds:
        cx, cy = to_scene.transform(*cloud.center_lonlat)
        cloudy |= (x - cx) ** 2 + (y - cy) ** 2 <= cloud.radius_m**2
    return cloudy, resolution


def _cloudy(clouds: tuple[np.ndarray, float], shape: tuple[int, int], resolution: float) -> np.ndarray:
    """Where an asset grid of ``resolution`` is cloudy: the cloud-grid pixel holding each centre."""
    flags, step = clouds
    ratio = resolution / step
    rows = np.minimum(np.floor((np.arange(shape[0]) + 0.5) * ratio + 1e-6).astype(int), flags.shape[0] - 1)
    cols = np.minimum(np.floor((np.arange(shape[1]) + 0.5) * ratio + 1e-6).astype(int), flags.shape[1] - 1)
    return flags[np.ix_(rows, cols)]


def make_scene(spec: SceneSpec, root: str | Path) -> pystac.Item:
    """Generate one scene's COGs and STAC Item under ``root/<id>/`` (skipped if already up to date)."""
    _require(isinstance(spec, SceneSpec), f"spec must be a SceneSpec, got {type(spec).__name__}")
    folder = Path(root).resolve() / spec.id
    cached = _cached_item(spec, folder)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    bounds = _scene_bounds(spec)
    line = _collar_line(bounds, spec.collar) if spec.collar else None
    grids: dict[float, _Grid] = {}
    assets = {}
    clouds = _cloud_grid(spec, bounds) if spec.clouds else None
    for asset in spec.assets:
        if asset.resolution not in grids:
            grids[asset.resolution] = _grid(spec.crs, bounds, asset.resolution, line)
        transform, shape, valid, base = grids[asset.resolution]
        cloudy = None if clouds is None else _cloudy(clouds, shape, asset.resolution)
        path = write_raster(
            folder / f"{asset.name}.tif",
            _asset_array(spec, asset, base, valid, cloudy),
            spec.crs,
            transform,
            asset.nodata,
            resampling="average" if asset.content == "truth" else "nearest",
            # the acquisition time, as the TIFF DATETIME tag, so an index of the files alone has it too
            tags={"TIFFTAG_DATETIME": spec.datetime.strftime("%Y:%m:%d %H:%M:%S")},  # spec.datetime is UTC
        )
        assets[asset.name] = _stac_asset(asset, path, transform, shape)
    item = _build_item(spec, bounds, line, assets)
    item.set_self_href(str(folder / f"{spec.id}.json"))
    _write_json(folder / f"{spec.id}.json", item.to_dict(include_self_link=False, transform_hrefs=False))
    return item


def _build_item(
    spec: SceneSpec, bounds: Sequence[float], line: tuple[Any, Any] | None, assets: dict[str, pystac.Asset]
) -> pystac.Item:
    footprint = to_lonlat(_valid_polygon(bounds, line), spec.crs)
    collar = None
    if spec.collar is not None and line is not None:
        collar = {
            "side": spec.collar.side,
            "fraction": spec.collar.fraction,
            "tilt_deg": spec.collar.tilt_deg,
            "point": list(line[0]),
            "normal": list(line[1]),
        }
    properties: dict[str, Any] = {
        "platform": spec.platform,
        "constellation": "synthetic",
        "proj:code": spec.crs,
        "proj:bbox": list(bounds),
        "mosaic:seed": spec.seed,
        "mosaic:quality": _quality(int(spec.seed or 0)),
        "eo:cloud_cover": cloud_cover(_quality(int(spec.seed or 0))),
        "mosaic:collar": collar,
        "mosaic:noise_amplitude": NOISE_AMPLITUDE,
        "mosaic:fingerprint": _fingerprint(spec),
    }
    if spec.clouds:
        properties["mosaic:clouds"] = [
            {"center_lonlat": list(c.center_lonlat), "radius_m": c.radius_m} for c in spec.clouds
        ]
    geometry = json.loads(json.dumps(mapping(footprint)))  # plain lists, as when read back from JSON
    item = pystac.Item(
        spec.id,
        geometry=geometry,
        bbox=_lonlat_bbox(footprint),
        datetime=spec.datetime,
        properties=properties,
        stac_extensions=[PROJECTION_EXTENSION, RASTER_EXTENSION],
    )
    for name, asset in assets.items():
        item.add_asset(name, asset)
    return item


def make_collection(
    specs: Sequence[SceneSpec], root: str | Path, *, workers: int | None = None
) -> list[pystac.Item]:
    """Generate every scene (in a thread pool) and ``root/items.json``; returns Items in spec order."""
    specs = list(specs)
    _require(bool(specs) and all(isinstance(s, SceneSpec) for s in specs), "specs must be SceneSpecs")
    ids = [s.id for s in specs]
    _require(len(set(ids)) == len(ids), f"scene ids must be unique, got {ids}")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers or min(len(specs), os.cpu_count() or 1)) as pool:
        items = list(pool.map(lambda s: make_scene(s, root), specs))
    features = [item.to_dict(include_self_link=False, transform_hrefs=False) for item in items]
    _write_json(root / "items.json", {"type": "FeatureCollection", "features": features})
    return items


def _band_info(item: pystac.Item, asset: str, band: int) -> dict[str, Any]:
    _require(asset in item.assets, f"item {item.id} has no asset {asset!r}")
    bands = item.assets[asset].extra_fields.get("raster:bands", [])
    _require(_is_int(band) and 1 <= band <= len(bands), f"item {item.id} asset {asset} has no band {band!r}")
    return dict(bands[band - 1])


def expected_value(item: pystac.Item, asset: str, lon: Any, lat: Any, band: int = 1) -> np.ndarray:
    """Noise-free physical value of ``asset`` band ``band`` of ``item`` at (lon, lat).

    The truth of the asset's truth band with the item's time term, or the scene's quality for a
    quality asset. Compare with :func:`to_physical` of the stored pixel within :func:`tolerance`.
    """
    _band_info(item, asset, band)
    extra = item.assets[asset].extra_fields
    shape = np.broadcast(np.asarray(lon), np.asarray(lat)).shape
    if extra.get("mosaic:content") == "quality":
        return np.full(shape, float(item.properties["mosaic:quality"]))
    _require(
        extra.get("mosaic:content") == "truth", f"asset {asset} of {item.id} is a quality mask: no truth"
    )
    return truth(lon, lat, int(extra["mosaic:truth_bands"][band - 1]), when=item.datetime)


def tolerance(item: pystac.Item, asset: str, band: int = 1) -> float:
    """Largest |physical - expected| a valid pixel can show: noise plus half a quantum (or float32 eps)."""
    info = _band_info(item, asset, band)
    if item.assets[asset].extra_fields.get("mosaic:content") == "quality":
        return 0.0
    scale = abs(float(info.get("scale", 1.0)))
    quantum = 0.5 * scale if info["data_type"] in _INT_DTYPES else 1e-3 * scale
    return NOISE_AMPLITUDE + quantum + 1e-9


def to_physical(array: Any, item: pystac.Item, asset: str, band: int = 1) -> np.ndarray:
    """Stored values of one band as float64 physical values (``stored * scale + offset``), nodata as NaN."""
    info = _band_info(item, asset, band)
    stored = np.asarray(array, dtype="float64")
    nodata = info.get("nodata")
    invalid = np.isnan(stored) if nodata in (None, "nan") else (stored == float(nodata)) | np.isnan(stored)
    physical = stored * float(info.get("scale", 1.0)) + float(info.get("offset", 0.0))
    return np.where(invalid, np.nan, physical)


DEMO_WIDTH_M = 15_360.0
DEMO_SIZE = 768
_SEAM_DATES = (_dt.date(2024, 6, 1), _dt.date(2024, 6, 11), _dt.date(2024, 6, 21))
# id stem, CRS, centre, dates (index into _SEAM_DATES), UTC time, collar
_SEAM_SCENES = (
    ("S32-seam12", "EPSG:32632", (11.96, 45.50), (0, 1, 2), (10, 20, 0), Collar("west", 0.15, 12.0)),
    ("S33-seam12", "EPSG:32633", (12.04, 45.46), (0, 1, 2), (10, 20, 4), Collar("west", 0.12, 12.0)),
    ("S33-mid", "EPSG:32633", (15.00, 45.70), (0, 1), (10, 17, 30), None),
    ("S33-seam18", "EPSG:32633", (17.96, 45.90), (0, 1, 2), (10, 15, 0), Collar("west", 0.15, 10.0)),
    ("S34-seam18", "EPSG:32634", (18.04, 45.95), (0, 1, 2), (10, 15, 4), Collar("west", 0.12, 10.0)),
)
_OTHER_SCENES = (
    ("N80", "EPSG:32633", (15.0, 80.0), _dt.datetime(2024, 7, 2, 11, 0), Collar("west", 0.20, 14.0)),
    ("NP", "EPSG:3413", (0.0, 89.97), _dt.datetime(2024, 7, 2, 11, 5), Collar("west", 0.10, 9.0)),
    ("SP", "EPSG:3031", (0.0, -89.85), _dt.datetime(2024, 12, 15, 3, 0), Collar("east", 0.15, -10.0)),
    ("AM60", "EPSG:32760", (179.96, -17.0), _dt.datetime(2024, 6, 10, 22, 30), Collar("west", 0.15, 11.0)),
    ("AM01", "EPSG:32701", (-179.97, -17.05), _dt.datetime(2024, 6, 10, 22, 30), Collar("east", 0.15, 11.0)),
)


def demo_assets(resolution: float) -> tuple[AssetSpec, ...]:
    """The demo's asset set: uint16, int16, 2 float32 (NaN and -9999 nodata), 3-band uint8, quality."""
    r = resolution
    return (
        AssetSpec("B02", "uint16", r, truth_band=1),
        AssetSpec("B8A", "int16", 2 * r, truth_band=2),
        AssetSpec("WVP", "float32", 3 * r, truth_band=3),
        AssetSpec("AOT", "float32", 3 * r, nodata=-9999.0, truth_band=7),
        AssetSpec("visual", "uint8", 2 * r, bands=3, scale=UINT8_SCALE, truth_band=4),
        AssetSpec("quality", "uint8", 3 * r, content="quality"),
    )


def demo_specs(size: int | None = None, *, clouds: bool = False) -> list[SceneSpec]:
    """The demo collection's scenes; ``size`` is the finest asset's pixels a side (default 768).

    With ``clouds``, every scene also has clouds (:func:`demo_clouds`) and two quality-mask assets,
    ``SCL`` (uint8 SCL classes, at the resolution of ``B8A``) and ``QA_PIXEL`` (uint16 QA_PIXEL bit
    flags, at the resolution of ``B02``); without, the scenes are exactly as before.
    """
    size = DEMO_SIZE if size is None else size
    _require(_is_int(size) and 48 <= size <= 4096, f"size must be an integer in 48..4096, got {size!r}")
    assets = demo_assets(DEMO_WIDTH_M / size)
    if clouds:
        r = DEMO_WIDTH_M / size
        assets += (
            AssetSpec("SCL", "uint8", 2 * r, content="scl"),
            AssetSpec("QA_PIXEL", "uint16", r, content="qa_pixel"),
        )

    def scene(
        stem: str,
        crs: str,
        centre: tuple[float, float],
        when: _dt.datetime,
        collar: Collar | None,
        platform: str = "synthetic-2a",
    ) -> SceneSpec:
        sky = demo_clouds(anchors.get(stem.split("-")[-1], centre), when) if clouds else ()
        return SceneSpec(
            f"{stem}-{when:%Y%m%d}",
            crs,
            centre,
            DEMO_WIDTH_M,
            DEMO_WIDTH_M,
            when.replace(tzinfo=_dt.UTC),
            assets,
            collar=collar,
            platform=platform,
            clouds=sky,
        )

    groups: dict[str, list[tuple[float, float]]] = {}
    for stem, _, centre, *_ in _SEAM_SCENES:  # the scenes of a seam (or of 15E), one pass
        groups.setdefault(stem.split("-")[-1], []).append(centre)
    anchors = {
        key: (float(np.mean([c[0] for c in cs])), float(np.mean([c[1] for c in cs])))
        for key, cs in groups.items()
    }
    specs = []
    for stem, crs, centre, dates, (hh, mm, ss), collar in _SEAM_SCENES:
        for i in dates:
            when = _dt.datetime.combine(_SEAM_DATES[i], _dt.time(hh, mm, ss))
            revisit = Collar(collar.side, collar.fraction + 0.04 * i, collar.tilt_deg) if collar else None
            specs.append(scene(stem, crs, centre, when, revisit, ("synthetic-2a", "synthetic-2b")[i % 2]))
    specs += [scene(stem, crs, centre, when, collar) for stem, crs, centre, when, collar in _OTHER_SCENES]
    return specs


def demo_clouds(anchor: tuple[float, float], when: _dt.datetime | _dt.date) -> tuple[Cloud, ...]:
    """The demo's clouds around ``anchor`` (lon, lat) on the UTC day of ``when``.

    One cloud stays on every date (4 km east and 3 km south of the anchor, radius 2.5 km), three move
    with the date (radius 1.2 to 3 km, centres within 6 km of it), from a seed of the day and the
    place. :func:`demo_specs` anchors the two scenes of a seam pass at their midpoint, so they share
    their clouds, and other scenes at their centre.
    """
    lat = anchor[1]
    day = when.date() if isinstance(when, _dt.datetime) else when
    per_m = (1.0 / (111_320.0 * math.cos(math.radians(lat))), 1.0 / 110_540.0)

    def at(dx: float, dy: float, radius: float) -> Cloud:
        lon_c = (anchor[0] + dx * per_m[0] + 180.0) % 360.0 - 180.0  # across the antimeridian
        return Cloud((lon_c, min(90.0, max(-90.0, anchor[1] + dy * per_m[1]))), radius)

    rng = np.random.default_rng([day.toordinal(), round(anchor[0] * 100) % 2**32, round(lat * 100) % 2**32])
    moving = []
    for _ in range(3):
        dx, dy = rng.uniform(-6000, 6000, 2)
        moving.append(at(float(dx), float(dy), float(rng.uniform(1200, 3000))))
    return (at(4000.0, -3000.0, 2500.0), *moving)


def demo_collection(root: str | Path, *, size: int | None = None, clouds: bool = False) -> list[pystac.Item]:
    """Generate (or reuse) the demo collection under ``root`` (19 scenes of 15.36 km, ~4 s, ~16 MB).

    UTM 32N/33N/34N scenes straddling the 12E and 18E zone seams on three dates (2024-06-01/11/21, the
    two scenes of a seam 4 s apart: one pass) plus a 33N scene at 15E on two dates; a UTM 33N scene at
    80N; an EPSG:3413 scene containing the North Pole; an EPSG:3031 scene 17 km from the South Pole;
    UTM 60S and 1S scenes both crossing 180 near Fiji, from one pass. Every scene has the assets of
    :func:`demo_assets`; all but the 15E scenes have a collar. With ``clouds``, the scenes have clouds
    and the ``SCL`` and ``QA_PIXEL`` assets (:func:`demo_specs`); generate them in another folder.
    """
    return make_collection(demo_specs(size, clouds=clouds), root)


def make_bad_files(root: str | Path) -> dict[str, Path]:
    """Files that must fail indexing, by kind.

    ``not_a_raster`` (text named .tif), ``empty`` (0 bytes), ``no_crs`` (georeferenced GeoTIFF without a
    CRS), ``no_transform`` (GeoTIFF with a CRS but no geotransform) and ``truncated`` (a COG cut after
    its header: opens, but reading full-resolution pixels fails).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {
        "not_a_raster": root / "not_a_raster.tif",
        "empty": root / "empty.tif",
        "no_crs": root / "no_crs.tif",
        "no_transform": root / "no_transform.tif",
        "truncated": root / "truncated.tif",
    }
    out["not_a_raster"].write_text("this is not a GeoTIFF\n")
    out["empty"].write_bytes(b"")
    data = (np.arange(64 * 64, dtype="uint16").reshape(64, 64) % 1000) + 1
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint16"}
    transform = Affine(20, 0, 500_000, 0, -20, 5_000_000)
    with rasterio.open(out["no_crs"], "w", **profile, transform=transform) as ds:
        ds.write(data, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(out["no_transform"], "w", **profile, crs="EPSG:32633") as ds:
            ds.write(data, 1)
    big = np.tile(data, (8, 8))
    write_raster(out["truncated"], big, "EPSG:32633", transform, 0)
    raw = out["truncated"].read_bytes()
    out["truncated"].write_bytes(raw[: len(raw) // 2])
    return out
