"""Tile layouts of tiled GeoTIFFs: recorded at index time, so that a load reads tiles with no header request.

Opening a remote TIFF costs GDAL a ``HEAD`` and a header request before any pixel. A
:class:`TileLayout` records, once, at index time (``TileIndex.from_files(..., tile_ranges=True)``),
what a reader needs to fetch and decode any tile of the file without its header: the byte offset and
size of every tile of every level (full resolution, then the overviews in GDAL's order), the
compression, predictor, tile size, data type, byte order, band layout, the file's own geotransform and
nodata. :func:`encode` packs it into a few hundred bytes (the index's ``tiles`` column);
:func:`decode_layout` reads it back.

:func:`window_ranges` gives the byte ranges of a window's tiles, and :func:`assemble` decodes the
fetched tiles into the window, bit for bit what GDAL reads: DEFLATE (``zlib``), ZSTD (numcodecs, a
dependency of zarr) and uncompressed tiles, with no predictor, horizontal differencing (predictor 2)
or the floating-point predictor (3). Other compressions (LZW, JPEG, WebP, LERC...) are recorded but
:func:`decodable` says no, and the reader uses GDAL.
"""

from __future__ import annotations

import ctypes
import math
import struct
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

__all__ = [
    "LAYOUT_VERSION",
    "Level",
    "TileLayout",
    "assemble",
    "decodable",
    "decode_layout",
    "encode",
    "parse_tiff",
    "window_ranges",
]

LAYOUT_VERSION = 1
"""First byte of an encoded layout; a reader meeting another version ignores the layout (GDAL reads)."""

NONE, LZW, JPEG, DEFLATE, ADOBE_DEFLATE, ZSTD = 1, 5, 7, 8, 32946, 50000
_DECODERS = {NONE, DEFLATE, ADOBE_DEFLATE, ZSTD}

_DTYPES = {  # (SampleFormat, BitsPerSample) -> numpy kind and size
    (1, 8): "u1",
    (1, 16): "u2",
    (1, 32): "u4",
    (1, 64): "u8",
    (2, 8): "i1",
    (2, 16): "i2",
    (2, 32): "i4",
    (2, 64): "i8",
    (3, 32): "f4",
    (3, 64): "f8",
}
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

_TAGS = {
    254: "subfile",
    256: "width",
    257: "height",
    258: "bits",
    259: "compression",
    277: "samples",
    284: "planar",
    317: "predictor",
    322: "tile_width",
    323: "tile_height",
    324: "offsets",
    325: "sizes",
    339: "sample_format",
    347: "jpeg_tables",
    42113: "nodata",
}
_TYPES = {1: "B", 2: "s", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 11: "f", 12: "d", 16: "Q", 17: "q"}


class NotTiled(ValueError):
    """The file is not a tiled TIFF whose tiles can be read without GDAL (no layout is recorded)."""


def parse_tiff(read: Callable[[int, int], bytes], transform: Sequence[float]) -> TileLayout:
    """The layout of the tiled TIFF whose bytes ``read(offset, size)`` gives.

    ``transform`` is the full resolution's geotransform as GDAL reads it (GDAL derives it from tags of
    its own; the overviews' transforms are derived from it as GDAL does).

    Raises:
        NotTiled: not a tiled TIFF, a layout this module does not describe (several images that are not
            overviews, masks, JPEG tables), or overviews not in decreasing size.
    """
    head = read(0, 16)
    if head[:2] == b"II":
        bo = "<"
    elif head[:2] == b"MM":
        bo = ">"
    else:
        raise NotTiled("not a TIFF")
    (magic,) = struct.unpack(bo + "H", head[2:4])
    if magic == 42:
        big = False
        (offset,) = struct.unpack(bo + "I", head[4:8])
    elif magic == 43:
        big = True
        (offset,) = struct.unpack(bo + "Q", head[8:16])
    else:
        raise NotTiled("not a TIFF")
    ifds: list[dict[str, Any]] = []
    seen: set[int] = set()
    while offset and offset not in seen and len(ifds) < 64:
        seen.add(offset)
        tags, offset = _read_ifd(read, offset, bo, big)
        ifds.append(tags)
    if not ifds:
        raise NotTiled("no image")
    main = ifds[0]
    images = [main]
    for tags in ifds[1:]:
        kind = int(tags.get("subfile", (0,))[0])
        if kind & 4:
            raise NotTiled("has a mask")
        if not kind & 1:
            raise NotTiled("holds several images")
        images.append(tags)
    common = _facts(main)
    levels: list[Level] = []
    for tags in images:
        if _facts(tags) != common:
            raise NotTiled("overviews differ from the full resolution in encoding")
        height, width = int(tags["height"][0]), int(tags["width"][0])
        if levels and (width >= levels[-1].width or height > levels[-1].height):
            raise NotTiled("overviews not in decreasing size")
        offsets = np.asarray(tags["offsets"], dtype=np.uint64)
        sizes = np.asarray(tags["sizes"], dtype=np.uint64)
        th, tw = common["tile"]
        expected = (
            math.ceil(height / th)
            * math.ceil(width / tw)
            * (common["samples"] if common["planar"] == 2 else 1)
        )
        if offsets.size != expected or sizes.size != expected:
            raise NotTiled("tile offsets do not match the image size")
        levels.append(Level(height, width, offsets, sizes))
    nodata_text = main.get("nodata")
    nodata = _parse_nodata(nodata_text) if nodata_text else None
    return TileLayout(
        byteorder=bo,
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


def _facts(tags: Mapping[str, Any]) -> dict[str, Any]:
    if "tile_width" not in tags or "offsets" not in tags or "sizes" not in tags:
        raise NotTiled("not tiled")
    if "jpeg_tables" in tags:
        raise NotTiled("JPEG tables")
    samples = int(tags.get("samples", (1,))[0])
    bits = {int(b) for b in tags.get("bits", (1,))}
    formats = {int(f) for f in tags.get("sample_format", (1,))}
    if len(bits) != 1 or len(formats) != 1:
        raise NotTiled("bands of different types")
    kind = _DTYPES.get((formats.pop(), bits.pop()))
    if kind is None:
        raise NotTiled("sample type")
    return {
        "dtype": np.dtype(kind).name,
        "compression": int(tags.get("compression", (1,))[0]),
        "predictor": int(tags.get("predictor", (1,))[0]),
        "tile": (int(tags["tile_height"][0]), int(tags["tile_width"][0])),
        "samples": samples,
        "planar": int(tags.get("planar", (1,))[0]),
    }


def _parse_nodata(text: Any) -> float | None:
    value = text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
    value = value.strip("\x00 ").strip()
    try:
        return float(value)
    except ValueError:
        return None


def _read_ifd(
    read: Callable[[int, int], bytes], offset: int, bo: str, big: bool
) -> tuple[dict[str, Any], int]:
    count_fmt, entry_size, value_size = ("Q", 20, 8) if big else ("H", 12, 4)
    count_size = 8 if big else 2
    (count,) = struct.unpack(bo + count_fmt, read(offset, count_size))
    raw = read(offset + count_size, count * entry_size + value_size)
    tags: dict[str, Any] = {}
    for i in range(count):
        entry = raw[i * entry_size : (i + 1) * entry_size]
        code, kind = struct.unpack(bo + "HH", entry[:4])
        name = _TAGS.get(code)
        if name is None or kind not in _TYPES:
            continue
        n = struct.unpack(bo + ("Q" if big else "I"), entry[4 : 4 + (8 if big else 4)])[0]
        fmt = _TYPES[kind]
        size = struct.calcsize(fmt) * n
        inline = entry[(12 if big else 8) :]
        data = (
            inline[:size]
            if size <= value_size
            else read(struct.unpack(bo + ("Q" if big else "I"), inline)[0], size)
        )
        if kind == 2:
            tags[name] = bytes(data)
        else:
            tags[name] = np.frombuffer(
                data,
                dtype=np.dtype(
                    bo
                    + {
                        "B": "u1",
                        "b": "i1",
                        "H": "u2",
                        "h": "i2",
                        "I": "u4",
                        "i": "i4",
                        "Q": "u8",
                        "q": "i8",
                        "f": "f4",
                        "d": "f8",
                    }[fmt]
                ),
                count=n,
            )
    (following,) = struct.unpack(
        bo + ("Q" if big else "I"), raw[count * entry_size : count * entry_size + value_size]
    )
    return tags, int(following)


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
    """Whether :func:`assemble` decodes this layout's tiles (else GDAL reads the file)."""
    if layout.compression not in _DECODERS or layout.predictor not in (1, 2, 3):
        return False
    if layout.predictor == 3 and np.dtype(layout.dtype).kind != "f":
        return False
    return layout.compression != ZSTD or _libzstd() is not None or _zstd() is not None


class _Codecs(threading.local):
    """GDAL's own decoders (the libdeflate and libzstd of rasterio's wheel), one state per thread."""

    def __init__(self) -> None:
        self.inflater: int | None = None


_CODECS = _Codecs()


@cache
def _library(stem: str) -> ctypes.CDLL | None:
    """A library rasterio's wheel ships (``libdeflate``, ``libzstd``), or None (then Python's own)."""
    import rasterio

    here = Path(rasterio.__file__).parent
    for folder in (here.parent / "rasterio.libs", here / ".dylibs"):
        for candidate in sorted(folder.glob(f"{stem}*")) if folder.is_dir() else []:
            try:
                return ctypes.CDLL(str(candidate))
            except OSError:
                continue
    return None


@lru_cache(maxsize=1)
def _libdeflate() -> ctypes.CDLL | None:
    lib = _library("libdeflate")
    if lib is None:
        return None
    lib.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
    lib.libdeflate_zlib_decompress.restype = ctypes.c_int
    lib.libdeflate_zlib_decompress.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    return lib


def _inflate(raw: bytes, nbytes: int) -> bytes | np.ndarray:
    """A zlib stream's ``nbytes`` decoded bytes (libdeflate, as GDAL decodes, else Python's zlib)."""
    lib = _libdeflate()
    if lib is not None:
        if _CODECS.inflater is None:
            _CODECS.inflater = lib.libdeflate_alloc_decompressor()
        out = np.empty(nbytes, dtype=np.uint8)
        got = ctypes.c_size_t(0)
        code = lib.libdeflate_zlib_decompress(_CODECS.inflater, raw, len(raw), out.ctypes.data, nbytes, got)
        if code == 0 and got.value == nbytes:
            return out
    return zlib.decompress(raw)


@lru_cache(maxsize=1)
def _libzstd() -> ctypes.CDLL | None:
    lib = _library("libzstd")
    if lib is None:
        return None
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    return lib


def _unzstd(raw: bytes, nbytes: int) -> bytes | np.ndarray:
    """A zstd frame's ``nbytes`` decoded bytes (libzstd, as GDAL decodes, else numcodecs)."""
    lib = _libzstd()
    if lib is not None:
        out = np.empty(nbytes, dtype=np.uint8)
        got = lib.ZSTD_decompress(out.ctypes.data, nbytes, raw, len(raw))
        if not lib.ZSTD_isError(got) and got == nbytes:
            return out
    return bytes(_zstd().decode(raw))


@lru_cache(maxsize=1)
def _zstd() -> Any:
    try:
        from numcodecs import Zstd
    except ImportError:  # pragma: no cover - numcodecs comes with zarr
        return None
    return Zstd()


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
    """One tile's pixels, (height, width, samples in the tile), in native byte order."""
    th, tw = layout.tile
    spp = layout.samples if layout.planar == 1 else 1
    dtype = np.dtype(layout.dtype).newbyteorder(">" if layout.byteorder == ">" else "<")
    count = th * tw * spp
    data: bytes | np.ndarray
    if layout.compression in (DEFLATE, ADOBE_DEFLATE):
        data = _inflate(raw, count * dtype.itemsize)
    elif layout.compression == ZSTD:
        data = _unzstd(raw, count * dtype.itemsize)
    else:
        data = raw
    if layout.predictor == 3:
        size = dtype.itemsize
        coded = np.frombuffer(data, dtype=np.uint8, count=count * size).reshape(th, size * tw, spp)
        # libtiff's fpAcc: bytes accumulated along the row, ``spp`` apart; then, in each row, the
        # values' bytes most significant first, one plane of tw * spp bytes after another
        planes = np.cumsum(coded, axis=1, dtype=np.uint8)
        ordered = planes.reshape(th, size, tw * spp).transpose(0, 2, 1)
        big = np.dtype(layout.dtype).newbyteorder(">")
        return np.ascontiguousarray(ordered).view(big).reshape(th, tw, spp).astype(layout.dtype)
    pixels = (
        np.frombuffer(data, dtype=dtype, count=count).reshape(th, tw, spp).astype(layout.dtype, copy=False)
    )
    if layout.predictor == 2:
        if pixels.flags.writeable:  # the decoder's own buffer: undone in place
            np.add.accumulate(pixels, axis=1, dtype=pixels.dtype, out=pixels)
        else:
            pixels = np.cumsum(pixels, axis=1, dtype=pixels.dtype)
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
