"""Tile layouts of tiled GeoTIFFs: recorded at index time, so that a load reads tiles with no header request.

Opening a remote TIFF costs GDAL a ``HEAD`` and a header request before any pixel. A
:class:`TileLayout` records, once, at index time (``TileIndex.from_files(..., tile_ranges=True)``),
what a reader needs to fetch and decode any tile of the file without its header: the byte offset and
size of every tile of every level (full resolution, then the overviews in GDAL's order), the
compression, predictor, tile size, data type, byte order, band layout, the file's own geotransform and
nodata. :func:`encode` packs it into a few hundred bytes (the index's ``tiles`` column);
:func:`decode_layout` reads it back.

:func:`parse_tiff` reads the layout with tifffile (its reading of the IFDs, tile offsets and byte
counts, compression, predictor, sample format and ``GDAL_NODATA``; overviews are the reduced-resolution
IFDs that follow, in GDAL's order). :func:`window_ranges` gives the byte ranges of a window's tiles, and
:func:`assemble` decodes the fetched tiles into the window, bit for bit what GDAL reads, with
imagecodecs (the decoders tifffile maps TIFF's codes to): uncompressed, LZW, DEFLATE, ZSTD and LZMA
tiles, with no predictor, horizontal differencing (predictor 2) or the floating-point predictor (3).
Lossy compressions (JPEG, WebP, LERC...) are recorded but :func:`decodable` says no, and the reader
uses GDAL. Parsing and decoding need the ``cog`` extra (tifffile, imagecodecs, obstore).
"""

from __future__ import annotations

import importlib
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO

import numpy as np
from affine import Affine

__all__ = [
    "EXTRA",
    "LAYOUT_VERSION",
    "Level",
    "TileLayout",
    "assemble",
    "decodable",
    "decode_layout",
    "encode",
    "parse_tiff",
    "require_extra",
    "window_ranges",
]

LAYOUT_VERSION = 1
"""First byte of an encoded layout; a reader meeting another version ignores the layout (GDAL reads)."""

NONE, LZW, JPEG, DEFLATE, ADOBE_DEFLATE, LZMA, ZSTD = 1, 5, 7, 8, 32946, 34925, 50000
_DECODERS = {NONE, LZW, DEFLATE, ADOBE_DEFLATE, LZMA, ZSTD}
"""Lossless codecs: imagecodecs decodes them to the same bytes as GDAL (lossy ones are left to GDAL)."""

_DTYPE_CODES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
)

Range = tuple[int, int]


@dataclass(frozen=True, eq=False)
class Level:
    """One image of the file (full resolution or an overview): its shape and its tiles' bytes.

    ``offsets`` and ``sizes`` are in the TIFF's order: tile rows, then columns; with separate band
    planes (``PlanarConfiguration`` 2), band after band.
    """

    height: int
    width: int
    offsets: np.ndarray
    sizes: np.ndarray


@dataclass(frozen=True, eq=False)
class TileLayout:
    """What reading any tile of a tiled TIFF takes, without its header.

    ``levels[0]`` is the full-resolution image, ``levels[i + 1]`` GDAL's overview ``i``. ``transform``
    is the full resolution's geotransform as GDAL reads it; ``nodata`` the file's ``GDAL_NODATA``.
    """

    byteorder: str
    dtype: str
    compression: int
    predictor: int
    tile: tuple[int, int]
    samples: int
    planar: int
    nodata: float | None
    transform: tuple[float, float, float, float, float, float]
    levels: tuple[Level, ...]

    @property
    def overview_factors(self) -> list[int]:
        """The overviews' decimation factors as rasterio gives them (``round(width / overview width)``)."""
        return [round(float(self.levels[0].width) / float(lv.width)) for lv in self.levels[1:]]

    def level_transform(self, level: int) -> Affine:
        """The geotransform of ``level`` (-1: full resolution, else overview ``level``) as GDAL has it."""
        a, b, c, d, e, f = self.transform
        if level < 0:
            return Affine(a, b, c, d, e, f)
        base, image = self.levels[0], self.levels[level + 1]
        rx = float(base.width) / image.width
        ry = float(base.height) / image.height
        return Affine(a * rx, b * ry, c, d * rx, e * ry, f)

    def level(self, level: int) -> Level:
        """The image of ``level`` (-1: full resolution)."""
        return self.levels[level + 1]


# ------------------------------------------------------------------------------------------- parse

EXTRA = "cog"
"""The extra of ``virtual-mosaic`` holding what header-less reads need (tifffile, imagecodecs, obstore)."""


class NotTiled(ValueError):
    """The file is not a tiled TIFF whose tiles can be read without GDAL (no layout is recorded)."""


def require_extra() -> None:
    """Check that the packages of the ``cog`` extra can be imported.

    Raises:
        MissingExtraError: one of them is missing (the message names the extra to install).
    """
    from mosaic.errors import MissingExtraError

    for name in ("tifffile", "imagecodecs", "obstore"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtraError(
                f"tile_ranges=True needs {name}: pip install 'virtual-mosaic[{EXTRA}]'"
            ) from exc


def parse_tiff(file: BinaryIO, transform: Sequence[float]) -> TileLayout:
    """The layout of the tiled TIFF read from the binary ``file`` (seekable; parsed by tifffile).

    ``transform`` is the full resolution's geotransform as GDAL reads it (GDAL derives it from tags of
    its own; the overviews' transforms are derived from it as GDAL does).

    Raises:
        NotTiled: not a tiled TIFF, a layout this module does not describe (several images that are not
            overviews, masks, JPEG tables), or overviews not in decreasing size.
        MissingExtraError: tifffile is not installed.
    """
    require_extra()
    import tifffile

    try:
        with tifffile.TiffFile(file) as tif:
            pages = list(tif.pages)
            byteorder = tif.byteorder
            layout = _layout(pages, byteorder, transform)
    except tifffile.TiffFileError as exc:
        raise NotTiled(f"not a TIFF tifffile reads: {exc}") from exc
    return layout


def _layout(pages: Sequence[Any], byteorder: str, transform: Sequence[float]) -> TileLayout:
    if not pages:
        raise NotTiled("no image")
    main = pages[0]
    for page in pages[1:]:
        if page.subfiletype & 4:
            raise NotTiled("has a mask")
        if not page.subfiletype & 1:
            raise NotTiled("holds several images")
    common = _facts(main)
    levels: list[Level] = []
    for page in pages:
        if _facts(page) != common:
            raise NotTiled("overviews differ from the full resolution in encoding")
        height, width = int(page.imagelength), int(page.imagewidth)
        if levels and (width >= levels[-1].width or height > levels[-1].height):
            raise NotTiled("overviews not in decreasing size")
        offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
        sizes = np.asarray(page.databytecounts, dtype=np.uint64)
        th, tw = common["tile"]
        expected = (
            math.ceil(height / th)
            * math.ceil(width / tw)
            * (common["samples"] if common["planar"] == 2 else 1)
        )
        if offsets.size != expected or sizes.size != expected:
            raise NotTiled("tile offsets do not match the image size")
        levels.append(Level(height, width, offsets, sizes))
    tag = main.tags.get(42113)  # GDAL_NODATA (tifffile's page.nodata says 0 when it is absent)
    nodata = _parse_nodata(tag.value) if tag is not None and tag.value else None
    return TileLayout(
        byteorder=">" if byteorder == ">" else "<",
        dtype=common["dtype"],
        compression=common["compression"],
        predictor=common["predictor"],
        tile=common["tile"],
        samples=common["samples"],
        planar=common["planar"],
        nodata=nodata,
        transform=tuple(float(v) for v in transform[:6]),  # type: ignore[arg-type]
        levels=tuple(levels),
    )


def _facts(page: Any) -> dict[str, Any]:
    """What decoding a page's tiles takes (tifffile's reading of its tags)."""
    if not page.is_tiled or page.tiledepth != 1 or page.imagedepth != 1:
        raise NotTiled("not tiled")
    if page.jpegtables is not None:
        raise NotTiled("JPEG tables")
    if page.fillorder != 1:
        raise NotTiled("bit order")
    dtype = page.dtype
    sample_format = page.tags.get(339)
    formats = set(sample_format.value) if sample_format is not None and sample_format.count > 1 else set()
    if dtype is None or len(formats) > 1 or np.dtype(dtype).name not in _DTYPE_CODES:
        raise NotTiled("sample type")
    if int(page.bitspersample) != np.dtype(dtype).itemsize * 8:
        raise NotTiled("packed samples")
    return {
        "dtype": np.dtype(dtype).name,
        "compression": int(page.compression),
        "predictor": int(page.predictor),
        "tile": (int(page.tilelength), int(page.tilewidth)),
        "samples": int(page.samplesperpixel),
        "planar": int(page.planarconfig),
    }


def _parse_nodata(text: Any) -> float | None:
    value = text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
    value = value.strip("\x00 ").strip()
    try:
        return float(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------- encoding

_HEAD = struct.Struct("<BBHBHBBIIBd6d")
"""version, flags (1: big-endian, 2: has nodata), compression, predictor, samples, planar, dtype code,
tile height, tile width, number of levels, nodata, geotransform."""


def encode(layout: TileLayout) -> bytes:
    """``layout`` packed (zlib; sizes byte-shuffled, offsets as gaps from the previous tile's end)."""
    flags = (1 if layout.byteorder == ">" else 0) | (2 if layout.nodata is not None else 0)
    head = _HEAD.pack(
        LAYOUT_VERSION,
        flags,
        layout.compression,
        layout.predictor,
        layout.samples,
        layout.planar,
        _DTYPE_CODES.index(layout.dtype),
        layout.tile[0],
        layout.tile[1],
        len(layout.levels),
        0.0 if layout.nodata is None else layout.nodata,
        *layout.transform,
    )
    shapes = np.array([(lv.height, lv.width) for lv in layout.levels], dtype="<u4").tobytes()
    sizes = np.concatenate([lv.sizes for lv in layout.levels]).astype("<u4")
    gaps = np.concatenate([_gaps(lv.offsets, lv.sizes) for lv in layout.levels]).astype("<i8")
    body = (
        shapes
        + sizes.view(np.uint8).reshape(-1, 4).T.tobytes()
        + gaps.view(np.uint8).reshape(-1, 8).T.tobytes()
    )
    return head[:1] + zlib.compress(head[1:] + body, 9)


def _gaps(offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    ends = np.concatenate([[0], (offsets + sizes)[:-1]]).astype(np.int64)
    return offsets.astype(np.int64) - ends


@lru_cache(maxsize=4096)
def decode_layout(blob: bytes) -> TileLayout | None:
    """The layout :func:`encode` packed, or None for a layout of another version (read with GDAL)."""
    if not blob or blob[0] != LAYOUT_VERSION:
        return None
    raw = zlib.decompress(blob[1:])
    fields = _HEAD.unpack(blob[:1] + raw[: _HEAD.size - 1])
    _, flags, compression, predictor, samples, planar, code, th, tw, nlevels, nodata = fields[:11]
    transform = tuple(float(v) for v in fields[11:17])
    pos = _HEAD.size - 1
    shapes = np.frombuffer(raw, dtype="<u4", count=2 * nlevels, offset=pos).reshape(nlevels, 2)
    pos += 8 * nlevels
    counts = [
        math.ceil(int(h) / th) * math.ceil(int(w) / tw) * (samples if planar == 2 else 1) for h, w in shapes
    ]
    total = sum(counts)
    sizes = np.frombuffer(raw, dtype=np.uint8, count=4 * total, offset=pos).reshape(4, total).T.copy()
    pos += 4 * total
    gaps = np.frombuffer(raw, dtype=np.uint8, count=8 * total, offset=pos).reshape(8, total).T.copy()
    sizes_all = sizes.view("<u4").reshape(-1).astype(np.uint64)
    gaps_all = gaps.view("<i8").reshape(-1)
    levels = []
    start = 0
    for (h, w), n in zip(shapes, counts, strict=True):
        lv_sizes = sizes_all[start : start + n]
        lv_gaps = gaps_all[start : start + n]
        ends = np.cumsum(lv_gaps + lv_sizes.astype(np.int64))
        offsets = (ends - lv_sizes.astype(np.int64)).astype(np.uint64)
        levels.append(Level(int(h), int(w), offsets, lv_sizes))
        start += n
    return TileLayout(
        byteorder=">" if flags & 1 else "<",
        dtype=_DTYPE_CODES[code],
        compression=compression,
        predictor=predictor,
        tile=(th, tw),
        samples=samples,
        planar=planar,
        nodata=nodata if flags & 2 else None,
        transform=transform,  # type: ignore[arg-type]
        levels=tuple(levels),
    )


# ------------------------------------------------------------------------------------------ decode


def decodable(layout: TileLayout) -> bool:
    """Whether :func:`assemble` decodes this layout's tiles bit for bit as GDAL (else GDAL reads the file).

    Lossless codecs only (none, LZW, DEFLATE, ZSTD, LZMA), with no predictor, horizontal differencing
    or the floating-point predictor; and only with the ``cog`` extra installed.
    """
    if layout.compression not in _DECODERS or layout.predictor not in (1, 2, 3):
        return False
    if layout.predictor == 3 and np.dtype(layout.dtype).kind != "f":
        return False
    return _codecs() is not None


@lru_cache(maxsize=1)
def _codecs() -> tuple[Mapping[int, Callable[..., Any]], Mapping[int, Callable[..., Any]]] | None:
    """Tifffile's maps of TIFF compression and predictor codes to imagecodecs' decoders, or None."""
    try:
        import imagecodecs  # noqa: F401  (tifffile's codecs are imagecodecs')
        from tifffile import TIFF
    except ImportError:
        return None
    return TIFF.DECOMPRESSORS, TIFF.UNPREDICTORS


def _tiles(
    layout: TileLayout, level: int, band: int, window: tuple[int, int, int, int]
) -> list[tuple[int, int, int]]:
    """(tile index, tile row, tile column) of the tiles of ``band`` that ``window`` touches."""
    image = layout.level(level)
    th, tw = layout.tile
    row0, col0, h, w = window
    row1, col1 = min(image.height, row0 + h), min(image.width, col0 + w)
    across = math.ceil(image.width / tw)
    plane = (band - 1) * math.ceil(image.height / th) * across if layout.planar == 2 else 0
    return [
        (plane + ty * across + tx, ty, tx)
        for ty in range(row0 // th, (row1 - 1) // th + 1)
        for tx in range(col0 // tw, (col1 - 1) // tw + 1)
    ]


def window_ranges(
    layout: TileLayout, level: int, band: int, window: tuple[int, int, int, int]
) -> list[Range]:
    """The byte ranges ``[start, stop)`` of the tiles of ``band`` that ``window`` of ``level`` touches."""
    image = layout.level(level)
    ranges = []
    for index, _, _ in _tiles(layout, level, band, window):
        start, size = int(image.offsets[index]), int(image.sizes[index])
        if size:
            ranges.append((start, start + size))
    return ranges


def _decode_tile(layout: TileLayout, raw: bytes) -> np.ndarray:
    """One tile's pixels, (height, width, samples in the tile), in native byte order.

    As tifffile decodes a tile: decompressed by imagecodecs into the tile's bytes, read in the file's
    byte order, then the predictor undone (imagecodecs' ``delta_decode`` or ``floatpred_decode``).
    """
    codecs = _codecs()
    if codecs is None:  # decodable() said no: the reader does not come here
        raise NotTiled("the cog extra is not installed")
    decompressors, unpredictors = codecs
    th, tw = layout.tile
    spp = layout.samples if layout.planar == 1 else 1
    stored = np.dtype(layout.dtype).newbyteorder(">" if layout.byteorder == ">" else "<")
    count = th * tw * spp
    buffer = np.empty(count * stored.itemsize, dtype=np.uint8)
    if layout.compression == NONE:
        buffer[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)[: buffer.size]
    else:
        decompressors[layout.compression](raw, out=buffer)
    pixels = buffer.view(stored).reshape(th, tw, spp).astype(layout.dtype, copy=False)
    if layout.predictor != 1:
        pixels = unpredictors[layout.predictor](pixels, axis=-2, out=pixels)
    return pixels


def assemble(
    layout: TileLayout,
    level: int,
    band: int,
    window: tuple[int, int, int, int],
    tiles: Mapping[int, bytes],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode ``window`` (row_off, col_off, height, width) of ``band`` on ``level`` from its tiles' bytes.

    ``tiles`` maps each tile's start offset to its bytes. Sparse tiles (no bytes) read as the file's
    nodata, else 0, as GDAL reads them. The result is written into ``out`` when given.
    """
    row0, col0, h, w = window
    th, tw = layout.tile
    image = layout.level(level)
    if out is None:
        out = np.empty((h, w), dtype=layout.dtype)
    sample = band - 1 if layout.planar == 1 else 0
    fill = layout.nodata if layout.nodata is not None and _fits(layout.nodata, layout.dtype) else 0
    for index, ty, tx in _tiles(layout, level, band, window):
        # the part of the tile inside the window, in window and in tile coordinates
        r0, r1 = max(row0, ty * th), min(row0 + h, (ty + 1) * th, image.height)
        c0, c1 = max(col0, tx * tw), min(col0 + w, (tx + 1) * tw, image.width)
        target = out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
        size = int(image.sizes[index])
        if not size:
            target[...] = fill
            continue
        pixels = _decode_tile(layout, tiles[int(image.offsets[index])])
        target[...] = pixels[r0 - ty * th : r1 - ty * th, c0 - tx * tw : c1 - tx * tw, sample]
    return out


def _fits(value: float, dtype: str) -> bool:
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return True
    if math.isnan(value) or value != int(value):
        return False
    info = np.iinfo(kind)
    return info.min <= value <= info.max
