"""Quality masks: which pixels of a scene to drop, from the scene's own quality band, before fusion.

A mask spec names a band of each scene (an asset, or ``asset.N``) and a rule on its values:

- :class:`Classes`: a classification band (Sentinel-2 ``SCL``): ``exclude=`` the classes to drop, or
  ``include=`` the only ones to keep;
- :class:`Bits`: a bit-flag band (Landsat ``QA_PIXEL``): a pixel with any of ``bits`` set is dropped;
- :class:`Range`: a value band: a pixel below ``min`` or above ``max`` is dropped.

Specs combine with ``|`` (dropped where either drops) and ``&`` (dropped where both drop), and each
rule can grow what it drops by ``dilate=`` pixels (a disc of that radius, on the quality band's own
grid: a buffer around clouds). A pixel where a rule's band has no data counts as dropped (nothing says
it is clear); dilation grows only what the rule drops, not the band's no-data edge.

Specs are frozen, slotted, picklable records; :func:`as_mask` turns a preset name or an expression
(the same Python syntax, for the CLI's ``--mask``) into one, and :func:`masked` applies one to a
scene's quality pixels. The presets :func:`sentinel2_scl` and :func:`landsat_c2_qa` follow the product
guides (see their docstrings and ``docs/concepts.md``).

How a load applies a mask: the planner adds to each scene read a read of the quality band(s)
(:attr:`mosaic.planning.planner.Read.masks`, at full resolution, covering the read's window plus the
dilation); the reader evaluates each rule on that band's grid, dilates there, takes for each pixel of the data
window the quality pixel containing its centre (nearest), and sets the dropped pixels to no data before
the layer is warped and fused. So ``first`` takes the next clear scene, ``median`` ignores the clouds,
and a masked load equals a load of files whose dropped pixels were blanked.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mosaic.errors import InvalidMaskError

__all__ = [
    "LANDSAT_C2_QA_BITS",
    "PRESETS",
    "SENTINEL2_SCL_CLASSES",
    "AllOf",
    "AnyOf",
    "Bits",
    "Classes",
    "MaskSpec",
    "Range",
    "as_mask",
    "band_ref",
    "dilate",
    "landsat_c2_qa",
    "masked",
    "sentinel2_scl",
]

MAX_DILATE = 256
"""The largest ``dilate=`` accepted, in pixels."""


class MaskSpec:
    """Base of every mask spec: combine specs with ``|`` and ``&``; see :mod:`mosaic.masks`."""

    __slots__ = ()

    def __or__(self, other: object) -> AnyOf:
        _check_spec(other, "|")
        return AnyOf((*_parts(self, AnyOf), *_parts(other, AnyOf)))  # type: ignore[arg-type]

    def __and__(self, other: object) -> AllOf:
        _check_spec(other, "&")
        return AllOf((*_parts(self, AllOf), *_parts(other, AllOf)))  # type: ignore[arg-type]

    @property
    def leaves(self) -> tuple[Leaf, ...]:
        """The rules (Classes, Bits, Range) this spec combines, in order."""
        raise NotImplementedError

    @property
    def bands(self) -> tuple[str, ...]:
        """The bands the spec reads (``asset`` or ``asset.N``), each once, in order of first use."""
        return tuple(dict.fromkeys(leaf.band for leaf in self.leaves))

    def dilation(self, band: str) -> int:
        """The widest dilation of the rules on ``band``: the quality pixels a read needs around a window."""
        return max((leaf.dilate for leaf in self.leaves if leaf.band == band), default=0)

    def _combine(self, evaluate: Callable[[Leaf], np.ndarray]) -> np.ndarray:
        raise NotImplementedError


def _check_spec(other: object, op: str) -> None:
    if not isinstance(other, MaskSpec):
        raise InvalidMaskError(f"mask specs combine with {op} only with other mask specs, got {other!r}")


def _parts(spec: object, kind: type) -> tuple[object, ...]:
    return spec.parts if isinstance(spec, kind) else (spec,)  # type: ignore[attr-defined]


class Leaf(MaskSpec):
    """A rule on one band's values (shared by :class:`Classes`, :class:`Bits` and :class:`Range`)."""

    __slots__ = ()
    band: str
    dilate: int

    @property
    def leaves(self) -> tuple[Leaf, ...]:
        return (self,)

    def flags(self, values: np.ndarray) -> np.ndarray:
        """Where the rule drops a pixel, from the band's values (NaN, no data, is never flagged here)."""
        raise NotImplementedError

    def _combine(self, evaluate: Callable[[Leaf], np.ndarray]) -> np.ndarray:
        return evaluate(self)

    def _check_common(self) -> None:
        band_ref(self.band)
        if isinstance(self.dilate, bool) or not isinstance(self.dilate, int | np.integer):
            raise InvalidMaskError(f"{self!r}: dilate= is a whole number of pixels, got {self.dilate!r}")
        if not 0 <= self.dilate <= MAX_DILATE:
            raise InvalidMaskError(f"{self!r}: dilate= must lie in 0..{MAX_DILATE} pixels, got {self.dilate}")
        object.__setattr__(self, "dilate", int(self.dilate))


def _ints(
    values: Any, what: str, owner: str, *, low: int | None = None, high: int | None = None
) -> tuple[int, ...]:
    """``values`` as a sorted tuple of distinct whole numbers (a single number is a list of one)."""
    if isinstance(values, int | np.integer) and not isinstance(values, bool):
        values = (values,)
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidMaskError(f"{owner}: {what} must be a list of whole numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise InvalidMaskError(f"{owner}: {what} must be whole numbers, got {v!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise InvalidMaskError(f"{owner}: {what} must lie in {low}..{high}, got {v}")
        out.append(int(v))
    return tuple(sorted(set(out)))


@dataclass(frozen=True, slots=True, repr=False)
class Classes(Leaf):
    """Drop pixels by class value: ``exclude=`` the classes to drop, or ``include=`` the ones to keep.

    Args:
        band: the classification band: an asset name (``"SCL"``) or ``"asset.N"``.
        exclude: class values dropped (every other value is kept).
        include: class values kept (every other value is dropped); give exclude or include, not both.
        dilate: grow the dropped pixels by a disc of this radius, in the band's own pixels.
    """

    band: str
    exclude: tuple[int, ...] = ()
    include: tuple[int, ...] = ()
    dilate: int = 0

    def __post_init__(self) -> None:
        owner = f"Classes({self.band!r})"
        object.__setattr__(self, "exclude", _ints(self.exclude, "exclude=", owner))
        object.__setattr__(self, "include", _ints(self.include, "include=", owner))
        if bool(self.exclude) == bool(self.include):
            raise InvalidMaskError(
                f"{owner}: give the classes to drop (exclude=[...]) or the classes to keep (include=[...]), "
                "one of the two"
            )
        self._check_common()

    def flags(self, values: np.ndarray) -> np.ndarray:
        """Where the value is an excluded class, or not an included one (no data never)."""
        if self.exclude:
            return np.asarray(np.isin(values, self.exclude))
        return np.asarray(~np.isin(values, self.include) & ~np.isnan(np.asarray(values, dtype="float64")))

    def __repr__(self) -> str:
        rule = f"exclude={list(self.exclude)}" if self.exclude else f"include={list(self.include)}"
        return f"Classes({self.band!r}, {rule}{_dilate_text(self.dilate)})"


@dataclass(frozen=True, slots=True, repr=False)
class Bits(Leaf):
    """Drop pixels with any of ``bits`` set (bit 0 is the least significant).

    Args:
        band: the bit-flag band: an asset name (``"QA_PIXEL"``) or ``"asset.N"``.
        bits: the bit positions (0..63) that drop a pixel when set.
        dilate: grow the dropped pixels by a disc of this radius, in the band's own pixels.
    """

    band: str
    bits: tuple[int, ...] = ()
    dilate: int = 0

    def __post_init__(self) -> None:
        owner = f"Bits({self.band!r})"
        object.__setattr__(self, "bits", _ints(self.bits, "bits=", owner, low=0, high=63))
        if not self.bits:
            raise InvalidMaskError(f"{owner}: give the bits that drop a pixel, e.g. bits=[3, 4]")
        self._check_common()

    @property
    def bitmask(self) -> int:
        """The bits as one integer (``sum(1 << b)``)."""
        return sum(1 << b for b in self.bits)

    def flags(self, values: np.ndarray) -> np.ndarray:
        """Where any of the bits is set (no data never)."""
        values = np.asarray(values)
        if values.dtype.kind == "f":
            known = ~np.isnan(values)
            ints = np.where(known, values, 0).astype(np.uint64)
            return np.asarray(known & ((ints & np.uint64(self.bitmask)) != 0))
        return np.asarray((values.astype(np.uint64) & np.uint64(self.bitmask)) != 0)

    def __repr__(self) -> str:
        return f"Bits({self.band!r}, bits={list(self.bits)}{_dilate_text(self.dilate)})"


@dataclass(frozen=True, slots=True, repr=False)
class Range(Leaf):
    """Keep pixels whose value lies in ``[min, max]``; drop those below ``min`` or above ``max``.

    Args:
        band: the band: an asset name or ``"asset.N"``.
        min: the smallest value kept (None: no lower bound).
        max: the largest value kept (None: no upper bound); give at least one of the two.
        dilate: grow the dropped pixels by a disc of this radius, in the band's own pixels.
    """

    band: str
    min: float | None = None
    max: float | None = None
    dilate: int = 0

    def __post_init__(self) -> None:
        owner = f"Range({self.band!r})"
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float | np.number)
                or not math.isfinite(value)
            ):
                raise InvalidMaskError(f"{owner}: {name}= must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.min is None and self.max is None:
            raise InvalidMaskError(f"{owner}: give min=, max= or both (the range of values kept)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidMaskError(f"{owner}: min={self.min:g} is above max={self.max:g}")
        self._check_common()

    def flags(self, values: np.ndarray) -> np.ndarray:
        """Where the value lies below ``min`` or above ``max`` (no data never)."""
        values = np.asarray(values, dtype="float64")
        out = np.zeros(values.shape, dtype=bool)
        if self.min is not None:
            out |= values < self.min
        if self.max is not None:
            out |= values > self.max
        return out

    def __repr__(self) -> str:
        bounds = ", ".join(f"{k}={v:g}" for k, v in (("min", self.min), ("max", self.max)) if v is not None)
        return f"Range({self.band!r}, {bounds}{_dilate_text(self.dilate)})"


def _dilate_text(pixels: int) -> str:
    return f", dilate={pixels}" if pixels else ""


@dataclass(frozen=True, slots=True, repr=False)
class _Combination(MaskSpec):
    """Two or more specs combined pixel by pixel: :class:`AnyOf` (``|``) or :class:`AllOf` (``&``)."""

    parts: tuple[MaskSpec, ...] = field(default=())
    _symbol: ClassVar[str] = ""
    _join: ClassVar[Any] = None
    """The NumPy ufunc joining two parts' dropped pixels (``logical_or``, ``logical_and``)."""

    def __post_init__(self) -> None:
        _check_parts(self, type(self).__name__)

    @property
    def leaves(self) -> tuple[Leaf, ...]:
        """The rules of every part, in order."""
        return tuple(leaf for part in self.parts for leaf in part.leaves)

    def _combine(self, evaluate: Callable[[Leaf], np.ndarray]) -> np.ndarray:
        out = self.parts[0]._combine(evaluate).copy()
        for part in self.parts[1:]:
            self._join(out, part._combine(evaluate), out=out)
        return out

    def __repr__(self) -> str:
        other = AllOf if isinstance(self, AnyOf) else AnyOf
        return f" {self._symbol} ".join(f"({p!r})" if isinstance(p, other) else repr(p) for p in self.parts)


@dataclass(frozen=True, slots=True, repr=False)
class AnyOf(_Combination):
    """Drop a pixel where any part drops it (``a | b``)."""

    _symbol: ClassVar[str] = "|"
    _join: ClassVar[Any] = np.logical_or


@dataclass(frozen=True, slots=True, repr=False)
class AllOf(_Combination):
    """Drop a pixel where every part drops it (``a & b``)."""

    _symbol: ClassVar[str] = "&"
    _join: ClassVar[Any] = np.logical_and


def _check_parts(spec: _Combination, kind: str) -> None:
    parts = spec.parts
    if isinstance(parts, MaskSpec) or not isinstance(parts, Iterable):
        raise InvalidMaskError(f"{kind} takes a list of mask specs, got {parts!r}")
    parts = tuple(parts)
    if len(parts) < 2 or not all(isinstance(p, MaskSpec) for p in parts):
        raise InvalidMaskError(f"{kind} combines two or more mask specs, got {parts!r}")
    object.__setattr__(spec, "parts", parts)


# ----------------------------------------------------------------------------------------- presets

SENTINEL2_SCL_CLASSES: Mapping[int, str] = {
    0: "no data",
    1: "saturated or defective",
    2: "dark area pixels (topographic or cast shadows)",
    3: "cloud shadows",
    4: "vegetation",
    5: "not vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud, medium probability",
    9: "cloud, high probability",
    10: "thin cirrus",
    11: "snow or ice",
}
"""The classes of the Sentinel-2 Level-2A Scene Classification (``SCL``, 20 m), from the Sen2Cor
product guide."""

SENTINEL2_SCL_EXCLUDED = (0, 1, 3, 8, 9, 10)
"""What :func:`sentinel2_scl` drops: no data, saturated/defective, cloud shadows, medium- and
high-probability cloud, thin cirrus."""

LANDSAT_C2_QA_BITS: Mapping[int, str] = {
    0: "fill",
    1: "dilated cloud",
    2: "cirrus (high confidence; Landsat 8-9 only)",
    3: "cloud",
    4: "cloud shadow",
    5: "snow",
    6: "clear (bits 3 and 4 unset)",
    7: "water",
}
"""The single-bit flags of the Landsat Collection 2 ``QA_PIXEL`` band (bits 8-15 hold two-bit
confidences), from the USGS Collection 2 Level-2 Science Product Guides."""

LANDSAT_C2_QA_DROPPED = (0, 1, 2, 3, 4)
"""What :func:`landsat_c2_qa` drops: fill, dilated cloud, cirrus, cloud, cloud shadow."""


def sentinel2_scl(band: str = "SCL", *, snow: bool = False, dilate: int = 0) -> Classes:
    """The Sentinel-2 L2A cloud mask from the Scene Classification band.

    Drops classes 0 (no data), 1 (saturated or defective), 3 (cloud shadows), 8 and 9 (cloud, medium
    and high probability) and 10 (thin cirrus); with ``snow=True`` also 11 (snow or ice). It keeps 2
    (dark area pixels: mostly terrain shadow, often wrongly set on dark water and fields), 7
    (unclassified: includes low-probability cloud, but dropping it empties many clear scenes) and 11
    by default (snow is the surface, for a snow composite).

    Args:
        band: the asset holding SCL (``"SCL"`` on Planetary Computer, ``"scl"`` on Earth Search).
        snow: also drop snow and ice.
        dilate: a buffer around the dropped pixels, in SCL pixels (20 m).
    """
    excluded = SENTINEL2_SCL_EXCLUDED + ((11,) if snow else ())
    return Classes(band, exclude=excluded, dilate=dilate)


def landsat_c2_qa(band: str = "qa_pixel", *, snow: bool = False, dilate: int = 0) -> Bits:
    """The Landsat Collection 2 cloud mask from the ``QA_PIXEL`` bit flags.

    Drops pixels with bit 0 (fill), 1 (dilated cloud), 2 (cirrus), 3 (cloud) or 4 (cloud shadow)
    set; with ``snow=True`` also bit 5 (snow). Bit 1 is the USGS's own buffer around clouds, so
    ``dilate`` is rarely needed.

    Args:
        band: the asset holding QA_PIXEL (``"qa_pixel"`` on Planetary Computer and Earth Search).
        snow: also drop snow.
        dilate: a further buffer, in QA pixels (30 m).
    """
    bits = LANDSAT_C2_QA_DROPPED + ((5,) if snow else ())
    return Bits(band, bits=bits, dilate=dilate)


PRESETS: Mapping[str, Callable[..., MaskSpec]] = {
    "sentinel2-scl": sentinel2_scl,
    "landsat-c2-qa": landsat_c2_qa,
}
"""The named masks :func:`as_mask` (and ``--mask``) accept: the preset with its defaults."""

_CALLS: Mapping[str, Callable[..., MaskSpec]] = {
    "Classes": Classes,
    "Bits": Bits,
    "Range": Range,
    "sentinel2_scl": sentinel2_scl,
    "landsat_c2_qa": landsat_c2_qa,
}


# ----------------------------------------------------------------------------------------- parsing


def as_mask(value: Any) -> MaskSpec | None:
    """A mask spec from a spec, a preset name, or an expression; None stays None.

    An expression is the Python syntax of the builders, combined with ``|`` and ``&``:
    ``"Bits('QA_PIXEL', bits=[3, 4], dilate=2) | Classes('SCL', exclude=[9])"``, or a preset called
    with its options, ``"sentinel2_scl(dilate=3)"``. Only these calls, literals, ``|``, ``&`` and
    parentheses are accepted (nothing is evaluated as Python).

    Raises:
        InvalidMaskError: naming what is wrong, in one line.
    """
    if value is None or isinstance(value, MaskSpec):
        return value
    if not isinstance(value, str):
        raise InvalidMaskError(
            f"mask must be a mask spec (mosaic.masks.Classes, Bits, Range), a preset name "
            f"({', '.join(PRESETS)}) or an expression, got {type(value).__name__}"
        )
    text = value.strip()
    if text in PRESETS:
        return PRESETS[text]()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise InvalidMaskError(f"mask {value!r}: {_SYNTAX}") from None
    result = _evaluate(tree.body, value)
    if not isinstance(result, MaskSpec):
        raise InvalidMaskError(f"mask {value!r}: {_SYNTAX}")
    return result


_SYNTAX = (
    f"not a preset ({', '.join(PRESETS)}) nor a mask expression such as "
    "\"Classes('SCL', exclude=[3, 8, 9]) | Bits('QA', bits=[3], dilate=2)\""
)


def _evaluate(node: ast.AST, text: str) -> Any:
    """The value of one node of a mask expression: builder calls, literals, ``|``, ``&``."""
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, int | float | str)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = _evaluate(node.operand, text)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return -operand
    if isinstance(node, ast.List | ast.Tuple):
        return [_evaluate(e, text) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr | ast.BitAnd):
        left, right = _evaluate(node.left, text), _evaluate(node.right, text)
        if isinstance(left, MaskSpec) and isinstance(right, MaskSpec):
            return left | right if isinstance(node.op, ast.BitOr) else left & right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        builder = _CALLS.get(node.func.id)
        if builder is None:
            raise InvalidMaskError(f"mask {text!r}: unknown call {node.func.id}(); use {', '.join(_CALLS)}")
        args = [_evaluate(a, text) for a in node.args]
        kwargs = {k.arg: _evaluate(k.value, text) for k in node.keywords if k.arg is not None}
        if len(kwargs) != len(node.keywords):
            raise InvalidMaskError(f"mask {text!r}: {_SYNTAX}")
        try:
            return builder(*args, **kwargs)
        except TypeError as exc:
            raise InvalidMaskError(f"mask {text!r}: {node.func.id}(): {exc}") from None
    if isinstance(node, ast.Name) and node.id.replace("_", "-") in PRESETS:
        return PRESETS[node.id.replace("_", "-")]()
    raise InvalidMaskError(f"mask {text!r}: {_SYNTAX}")


def band_ref(name: Any) -> tuple[str, int]:
    """The (asset, band number) a mask band names: ``"SCL"`` is band 1 of asset SCL, ``"QA.2"`` band 2.

    Raises:
        InvalidMaskError: not a non-empty string.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidMaskError(f"a mask band is an asset name ('SCL') or 'asset.N', got {name!r}")
    asset, dot, number = name.rpartition(".")
    if dot and number.isdigit() and asset and int(number) >= 1:
        return asset, int(number)
    return name, 1


# ------------------------------------------------------------------------------------- application


def dilate(flags: np.ndarray, pixels: int) -> np.ndarray:
    """``flags`` grown by a disc of radius ``pixels`` (``dy^2 + dx^2 <= pixels^2``, as skimage's ``disk``).

    Pixels beyond the array's edge count as unflagged.

    Row by row: for each row offset ``dy`` the disc is a run of half-width ``floor(sqrt(r^2 - dy^2))``,
    a running maximum along x (from cumulative sums), shifted by ``dy``: O(pixels x size).
    """
    flags = np.asarray(flags, dtype=bool)
    if pixels <= 0 or not flags.any():
        return flags.copy()
    rows, cols = flags.shape
    out = np.zeros_like(flags)
    counts = np.concatenate([np.zeros((rows, 1), np.int64), np.cumsum(flags, axis=1, dtype=np.int64)], axis=1)
    runs: dict[int, np.ndarray] = {}
    for dy in range(-pixels, pixels + 1):
        half = math.isqrt(pixels * pixels - dy * dy)
        if half not in runs:
            lo = np.clip(np.arange(cols) - half, 0, cols)
            hi = np.clip(np.arange(cols) + half + 1, 0, cols)
            runs[half] = (counts[:, hi] - counts[:, lo]) > 0
        run = runs[half]
        if dy >= 0:
            out[dy:] |= run[: rows - dy] if dy else run
        else:
            out[:dy] |= run[-dy:]
    return out


def masked(
    spec: MaskSpec,
    bands: Mapping[str, np.ndarray],
    *,
    to_target: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Where ``spec`` drops pixels: a boolean array, True = masked (set to no data before fusion).

    Each rule is evaluated on its band's pixels as given (its own grid), its dropped pixels dilated
    there, and pixels where the band has no data (NaN) added; then ``to_target`` (default: none, every
    band already on one grid) takes each rule's result to the target grid, where the rules combine.

    Args:
        spec: the mask spec.
        bands: each band of ``spec.bands``: its values (float with NaN for no data, or integers) on
            its own grid, with enough pixels around the target's for the dilation.
        to_target: ``(band, flags) -> flags on the target grid`` (nearest: the band pixel holding each
            target pixel's centre); the engine's reader passes one, a caller with every band on the
            target grid passes none.

    Raises:
        InvalidMaskError: a band of the spec is missing from ``bands``.
    """
    missing = [b for b in spec.bands if b not in bands]
    if missing:
        raise InvalidMaskError(f"mask {spec!r}: no pixels given for band(s) {missing}")

    def evaluate(leaf: Leaf) -> np.ndarray:
        values = np.asarray(bands[leaf.band])
        flags = dilate(leaf.flags(values), leaf.dilate)
        if values.dtype.kind == "f":
            flags |= np.isnan(values)
        return flags if to_target is None else to_target(leaf.band, flags)

    return spec._combine(evaluate)
