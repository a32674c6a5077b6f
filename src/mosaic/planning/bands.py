"""Output variables: which asset band each comes from, and its dtype, nodata and resampling.

Part of planning (no I/O). A request names bands as asset names (every band of a multi-band asset),
``asset.N``, or STAC common names (``red``, ``nir``... from ``eo:bands``; a name both a single-band
asset and a band of a multi-band one carry means the single-band asset); options that may differ per
band (``dtype``, ``nodata``, ``resampling``) take one value or a mapping from band name to value, with
``"*"`` for the rest (as odc-stac). Every name in a mapping must be a band of the request: a typo is an
error, never a silently ignored setting.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from mosaic.errors import InvalidInputError, MosaicWarning
from mosaic.planning.records import SceneAsset
from mosaic.types import RESAMPLING

__all__ = [
    "RESAMPLING",
    "RESERVED_NAMES",
    "BandSpec",
    "band_specs",
    "common_name_asset",
    "mixed_scale_assets",
    "per_band",
    "resampling_name",
    "to_physical",
    "with_source_nodata",
]

_RESAMPLING_ALIASES = {"cubicspline": "cubic_spline", "near": "nearest", "median": "med"}
"""GDAL's own spellings (``gdalwarp -r cubicspline``, ``near``) and a common synonym."""

RESERVED_NAMES = frozenset({"x", "y", "time", "spatial_ref"})
"""Coordinate names of a loaded Dataset: a band with one of these names is renamed ``<name>_band``."""

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class BandSpec:
    """An output variable: which asset band it comes from and how it is stored."""

    name: str
    asset: str
    band: int
    dtype: str
    nodata: float | None
    work_dtype: str
    scale: float | None = None
    offset: float | None = None
    native: bool = False
    """Every source has this band's dtype and nodata: ``first``/``last`` with nearest can skip floats."""
    physical: bool = False
    """The sources disagree on scale/offset: each read is converted to physical units, and the band is
    a float of physical values (``scale``/``offset`` None)."""
    resampling: str = "nearest"
    """The warp kernel of this band's reads."""


def resampling_name(value: Any) -> str:
    """A resampling as rasterio names it, from any case, GDAL's spelling or a ``Resampling`` member.

    Raises:
        InvalidInputError: naming the value and the choices.
    """
    name = getattr(value, "name", value)  # rasterio.enums.Resampling.bilinear -> "bilinear"
    if isinstance(name, str):
        key = name.strip().lower().replace("-", "_")
        key = _RESAMPLING_ALIASES.get(key, key)
        if key in RESAMPLING:
            return key
    raise InvalidInputError(
        f"unknown resampling {value!r}; choose from {', '.join(RESAMPLING)} (any case, or a "
        "rasterio.enums.Resampling), or give a mapping from band name to one of them"
    )


def per_band(
    value: Any, names: Sequence[str], *, what: str, parse: Callable[[Any], T], default: U
) -> dict[str, T | U]:
    """One value per band from a single value or a ``{band: value, "*": value}`` mapping.

    Raises:
        InvalidInputError: a mapping names a band the request does not have.
    """
    if not isinstance(value, Mapping):
        one: T | U = default if value is None else parse(value)
        return dict.fromkeys(names, one)
    unknown = sorted(str(k) for k in value if k != "*" and k not in names)
    if unknown:
        raise InvalidInputError(
            f"{what}= names {unknown}, which the request does not load; its bands are {list(names)} "
            "('*' sets the rest)"
        )
    fallback: T | U = default if value.get("*") is None else parse(value["*"])
    return {n: fallback if value.get(n) is None else parse(value[n]) for n in names}


def with_source_nodata(
    records: Sequence[SceneAsset], src_nodata: float | Mapping[str, float] | None
) -> list[SceneAsset]:
    """The records with the user's source nodata: one value for every asset, or ``{asset: value}``.

    It says which stored value means "no data" in files that do not declare it (real Landsat
    Level-1 files use 0 without a nodata tag); it replaces what the index or the file says.

    Raises:
        InvalidInputError: a mapping names an asset the selected scenes do not have, or a value is
            not a number.
    """
    if src_nodata is None:
        return list(records)
    assets = sorted({r.asset for r in records})
    if isinstance(src_nodata, Mapping):
        unknown = sorted(str(k) for k in src_nodata if k not in assets)
        if unknown:
            raise InvalidInputError(
                f"src_nodata= names {unknown}, which the selected scenes do not have; their assets are "
                f"{assets}"
            )
        values = {a: _number(v, "src_nodata") for a, v in src_nodata.items()}
    else:
        values = dict.fromkeys(assets, _number(src_nodata, "src_nodata"))
    return [replace(r, nodata=values[r.asset]) if r.asset in values else r for r in records]


def to_physical(rec: SceneAsset) -> tuple[float, float]:
    """(scale, offset) of a scene asset's stored values (1 and 0 when it has none)."""
    return (1.0 if rec.scale is None else rec.scale, 0.0 if rec.offset is None else rec.offset)


def mixed_scale_assets(records: Sequence[SceneAsset]) -> set[str]:
    """Assets whose scenes disagree on scale/offset: their stored values cannot be mosaicked as they are."""
    seen: dict[str, set[tuple[float, float]]] = defaultdict(set)
    for r in records:
        seen[r.asset].add(to_physical(r))
    return {asset for asset, pairs in seen.items() if len(pairs) > 1}


def _method_dtype(method: Any, src: np.dtype) -> np.dtype:
    if method == "count":
        return np.dtype("uint16")
    if method in ("mean", "median") and src.kind in "iu":
        return np.dtype("float32")
    return src


def _dtype(value: Any) -> np.dtype:
    try:
        return np.dtype(value)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise InvalidInputError(f"dtype {value!r} is not a NumPy dtype ({exc})") from exc


def _number(value: Any, what: str = "nodata") -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} {value!r} is not a number") from exc


def _available(by_asset: Mapping[str, list[SceneAsset]]) -> dict[str, tuple[str, int]]:
    """Every band the records offer, by name: the asset name, or ``asset.N`` for multi-band assets."""
    available: dict[str, tuple[str, int]] = {}
    for asset, rows in by_asset.items():
        count = max(r.band_count for r in rows)
        if count == 1:
            available[asset] = (asset, 1)
        else:
            for b in range(1, count + 1):
                available[f"{asset}.{b}"] = (asset, b)
    return available


def _common_names(by_asset: Mapping[str, list[SceneAsset]]) -> dict[str, list[tuple[str, bool]]]:
    """STAC common name (lower case) -> the bands that carry it, each with whether its asset has one band."""
    found: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for asset, rows in sorted(by_asset.items()):
        count = max(r.band_count for r in rows)
        names = next((r.common_names for r in rows if r.common_names), ())
        for i, common in enumerate(names[:count], start=1):
            if common:
                found[common.lower()].append((asset if count == 1 else f"{asset}.{i}", count == 1))
    return found


def _by_common_name(name: str, aliases: Mapping[str, list[tuple[str, bool]]]) -> str | None:
    """The band a common name means: its one single-band asset, else its only band; None if none.

    Raises:
        InvalidInputError: several bands carry the name and no single-band asset settles it.
    """
    candidates = aliases.get(name.lower(), [])
    single = [band for band, alone in candidates if alone]
    if len(single) == 1:
        return single[0]
    if len(candidates) == 1:
        return candidates[0][0]
    if candidates:
        raise InvalidInputError(
            f"band {name!r} is the common name of several bands: {[band for band, _ in candidates]}; "
            "name the one you want"
        )
    return None


def _requested(
    bands: Sequence[str] | str | None,
    available: Mapping[str, tuple[str, int]],
    aliases: Mapping[str, list[tuple[str, bool]]],
) -> list[tuple[str, str]]:
    """(variable name, band) pairs asked for, in order, each once.

    A name is a band (an asset name, or ``asset.N``), an asset name standing for all its bands, or a
    STAC common name (``red``), which names the variable as asked, as odc-stac's aliases.
    """
    if bands is None:
        return [(name, name) for name in sorted(available)]
    pairs: list[tuple[str, str]] = []
    for name in [bands] if isinstance(bands, str) else bands:
        if name in available:
            found = [(name, name)]
        else:
            parts = sorted((k for k in available if k.startswith(f"{name}.")), key=lambda k: available[k][1])
            alias = None if parts else _by_common_name(name, aliases)
            found = [(k, k) for k in parts] if parts else [(name, alias)] if alias else []
        if not found:
            common = f"; common names: {sorted(aliases)}" if aliases else ""
            raise InvalidInputError(
                f"band {name!r} is in none of the selected scenes; available: {sorted(available)}{common}"
            )
        pairs.extend(pair for pair in found if pair[0] not in (p[0] for p in pairs))
    return pairs


def common_name_asset(name: str, records: Sequence[SceneAsset]) -> str | None:
    """The single-band asset a STAC common name means among ``records`` (e.g. for ``highest:nir``)."""
    by_asset: dict[str, list[SceneAsset]] = defaultdict(list)
    for r in records:
        by_asset[r.asset].append(r)
    band = _by_common_name(name, _common_names(by_asset))
    return band if band in by_asset else None


def _variable_name(name: str) -> str:
    """The Dataset variable of band ``name``: renamed when it would clash with a coordinate."""
    if name not in RESERVED_NAMES:
        return name
    renamed = f"{name}_band"
    warnings.warn(
        f"band {name!r} is loaded as variable {renamed!r}: {name!r} names a coordinate of the output "
        f"({', '.join(sorted(RESERVED_NAMES))})",
        MosaicWarning,
        stacklevel=4,
    )
    return renamed


def band_specs(
    records: Sequence[SceneAsset],
    *,
    bands: Sequence[str] | str | None,
    method: Any,
    dtype: Any,
    nodata: Any,
    resampling: Any,
    mixed_scales: set[str],
) -> tuple[BandSpec, ...]:
    """The output variables of a request over ``records`` (the scenes it selected).

    Raises:
        InvalidInputError: an unknown band, a mapping naming a band not loaded, a bad dtype, nodata or
            resampling, or a nodata the output dtype cannot hold.
    """
    by_asset: dict[str, list[SceneAsset]] = defaultdict(list)
    for r in records:
        by_asset[r.asset].append(r)
    available = _available(by_asset)
    requested = _requested(bands, available, _common_names(by_asset))
    names = [name for name, _ in requested]
    dtypes = per_band(dtype, names, what="dtype", parse=_dtype, default=None)
    nodatas_out = per_band(nodata, names, what="nodata", parse=_number, default=None)
    kernels = per_band(resampling, names, what="resampling", parse=resampling_name, default="nearest")
    specs = []
    for name, key in requested:
        asset, band = available[key]
        rows = by_asset[asset]
        src_types = {r.dtype for r in rows if r.dtype}
        src_dtype = np.result_type(*src_types) if src_types else np.dtype("float32")
        nodatas = {("nan" if r.nodata is not None and math.isnan(r.nodata) else r.nodata) for r in rows}
        physical = asset in mixed_scales and method != "count"
        natural = _method_dtype(method, np.dtype("float32") if physical else src_dtype)
        asked = dtypes[name]
        out_dtype = natural if asked is None else asked
        shared = next(iter(nodatas)) if len(nodatas) == 1 else None  # the sources' common nodata
        out_nodata = nodatas_out[name]
        if out_nodata is None:
            if method == "count":
                out_nodata = None  # a count of 0 is a value: no scene has data there
            elif out_dtype.kind == "f":
                out_nodata = math.nan
            elif isinstance(shared, float) and out_dtype == src_dtype:
                out_nodata = shared
            else:
                out_nodata = 0.0
        _check_nodata_fits(name, out_nodata, out_dtype)
        work = (
            "float64"
            if (src_dtype.itemsize > 2 and src_dtype.kind in "iu") or src_dtype == np.float64
            else "float32"
        )
        scale, offset = (None, None) if physical or asset in mixed_scales else (rows[0].scale, rows[0].offset)
        native = (
            not physical
            and len(src_types) == 1
            and out_dtype == src_dtype
            and src_dtype.kind in "iu"
            and out_nodata is not None
            and nodatas == {out_nodata}
        )
        specs.append(
            BandSpec(
                _variable_name(name),
                asset,
                band,
                out_dtype.name,
                out_nodata,
                work,
                scale,
                offset,
                native,
                physical,
                kernels[name],
            )
        )
    return tuple(specs)


def _check_nodata_fits(name: str, nodata: float | None, dtype: np.dtype) -> None:
    """An integer band's nodata must be a whole number its dtype holds."""
    if nodata is None or dtype.kind not in "iu":
        return
    info = np.iinfo(dtype)
    if math.isnan(nodata) or not float(nodata).is_integer() or not info.min <= nodata <= info.max:
        raise InvalidInputError(
            f"band {name!r}: nodata {nodata!r} does not fit its dtype {dtype.name} "
            f"({info.min}..{info.max}); pass another nodata= or dtype="
        )
