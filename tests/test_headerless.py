"""Reads without headers: tile layouts recorded at index time (mosaic.io.cog), tiles
fetched from their ranges.

Real COGs written with rasterio, the demo collection, the suite's HTTP range server and SeaweedFS S3 on
127.0.0.1. Every load is compared with the same load through GDAL (an index without tile ranges): the
pixels must be identical. The server's request log shows what a load asked for.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import dask
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin
from rasterio.windows import Window

import mosaic
from mosaic import TileIndex
from mosaic.cli import cli
from mosaic.errors import ChangedSourceWarning
from mosaic.io import runtime
from mosaic.io.cog import assemble as assemble_window
from mosaic.io.cog import decodable, decode_layout, encode, parse_tiff, window_ranges
from seam_cases import SCENES, SEAM12, s3_profile
from servers import RangeServer, clear_gdal_http_cache

PATTERN = r"(?P<id>[^/]+)/(?P<asset>[^/.]+)\.tif$"
FINE = dict(resolution=0.0008, bands="B02", groupby=None)  # ~native: full-resolution tiles
COARSE = dict(resolution=0.004, bands="B02", groupby=None)  # 5x coarser: the overviews


def _cog(path: Path, data: np.ndarray, crs: str, origin: tuple[float, float], **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="COG",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=crs,
        transform=from_origin(*origin, 20.0, 20.0),
        BLOCKSIZE=128,
    )
    profile.update(options)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _noise(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(3000, 400, shape).clip(1, 60000)
    return values.astype(dtype)


def _reader(path: Path) -> io.BytesIO:
    return io.BytesIO(path.read_bytes())


def _seam_files(root: Path) -> list[str]:
    return [str(p) for p in sorted(root.glob("S3*-seam12-20240601/B02.tif"))]


def _copied_seam_files(collection: Path, root: Path) -> list[str]:
    """The seam scenes' B02 files copied under ``root`` (times kept), to be changed by a test."""
    for path in _seam_files(collection):
        rel = Path(path).relative_to(collection)
        (root / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / rel)
    return _seam_files(root)


def _load(index: TileIndex, grid: dict, **kw) -> np.ndarray:
    return mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=128, **grid, **kw)["B02"].values


# ------------------------------------------------------------------------- layouts decode like GDAL


@pytest.mark.parametrize(
    "dtype, options",
    [
        ("uint16", dict(COMPRESS="DEFLATE", PREDICTOR=2)),
        ("uint16", dict(COMPRESS="DEFLATE", PREDICTOR=1)),
        ("uint16", dict(COMPRESS="LZW", PREDICTOR=2)),
        ("float32", dict(COMPRESS="LZMA", PREDICTOR=3)),
        ("float32", dict(COMPRESS="DEFLATE", PREDICTOR=3, nodata=float("nan"))),
        ("float32", dict(COMPRESS="NONE")),
        ("int16", dict(COMPRESS="ZSTD", PREDICTOR=2, nodata=-9999)),
        ("float64", dict(COMPRESS="ZSTD", PREDICTOR=3)),
        ("uint8", dict(COMPRESS="DEFLATE", PREDICTOR=2, count=3)),  # pixel-interleaved bands
        ("uint16", dict(driver="GTiff", tiled=True, blockxsize=128, blockysize=128, COMPRESS="DEFLATE",
                        PREDICTOR=2, INTERLEAVE="BAND", count=2, ENDIANNESS="BIG")),
    ],
)  # fmt: skip
def test_a_recorded_layout_decodes_every_level_as_gdal_reads_it(tmp_path, dtype, options):
    count = options.pop("count", 1)
    data = _noise((count, 700, 650), dtype)
    path = _cog(tmp_path / "f.tif", data, "EPSG:32633", (500_000.0, 5_000_000.0), **options)
    if options.get("driver") == "GTiff":
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews([2, 4])
    with rasterio.open(path) as src:
        layout = parse_tiff(_reader(path), tuple(src.transform)[:6])
        overviews = len(src.overviews(1))
    layout = decode_layout(encode(layout))
    assert layout is not None and decodable(layout)
    assert len(layout.levels) == overviews + 1 >= 3
    raw = path.read_bytes()
    for level in range(-1, overviews):
        with rasterio.open(path, overview_level=level) if level >= 0 else rasterio.open(path) as src:
            assert layout.level_transform(level) == src.transform  # bit for bit, as GDAL derives it
            window = (37, 61, min(300, src.height - 37), src.width - 61)  # across tiles, to the edge
            for band in range(1, count + 1):
                ranges = window_ranges(layout, level, band, window)
                got = assemble_window(layout, level, band, window, {a: raw[a:b] for a, b in ranges})
                want = src.read(band, window=Window(window[1], window[0], window[3], window[2]))
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)


def test_a_lossy_codec_is_recorded_but_left_to_gdal(tmp_path):
    path = _cog(
        tmp_path / "lerc.tif", _noise((1, 300, 300), "uint16"), "EPSG:32633", (5e5, 5e6), COMPRESS="LERC"
    )
    with rasterio.open(path) as src:
        layout = parse_tiff(_reader(path), tuple(src.transform)[:6])
    assert layout.compression == 34887 and not decodable(layout)


def test_the_layout_column_is_small_and_survives_a_round_trip(demo_collection, tmp_path):
    index = TileIndex.from_stac(demo_collection[1], tile_ranges=True)
    sizes = [len(r.tiles) for r in index]
    assert all(sizes) and max(sizes) < 1024  # 1024 px files, 256 px tiles, 3 levels: ~120 bytes
    written = TileIndex.read(index.write(tmp_path / "i.parquet"))
    assert [r.tiles for r in written] == [r.tiles for r in index]
    plain = TileIndex.read(TileIndex.from_stac(demo_collection[1]).write(tmp_path / "p.parquet"))
    assert all(r.tiles is None for r in plain)
    # an index written before tile layouts (format 3) reads with none: GDAL opens the files
    table = pq.read_table(tmp_path / "i.parquet")
    meta = dict(table.schema.metadata)
    meta[b"mosaic"] = json.dumps({"format_version": 3, "skipped": []}).encode()
    pq.write_table(table.drop_columns(["tiles"]).replace_schema_metadata(meta), tmp_path / "v3.parquet")
    assert [r.tiles for r in TileIndex.read(tmp_path / "v3.parquet")] == [None] * len(index)


_WITHOUT_EXTRA = """
import sys, json
sys.modules[sys.argv[1]] = None  # the package is not installed, as far as imports go
import numpy as np
import mosaic
from mosaic import TileIndex
from mosaic.errors import MissingExtraError
try:
    TileIndex.from_files([sys.argv[2]], pattern=sys.argv[4], progress=False, tile_ranges=True)
    refused = None
except MissingExtraError as exc:
    refused = str(exc)
index = TileIndex.read(sys.argv[3])  # recorded where the extra is installed
got = mosaic.load(
    tuple(json.loads(sys.argv[6])), "EPSG:4326", index=index, chunks=128, resolution=0.0008, bands="B02",
    groupby=None,
)["B02"].values
np.save(sys.argv[5], got)
print(json.dumps({"refused": refused, "ranged": mosaic.read_stats().tile_range_reads}))
"""


@pytest.mark.parametrize("package", ["tifffile", "imagecodecs", "obstore"])
def test_without_the_cog_extra_tile_ranges_is_refused_and_recorded_layouts_read_with_gdal(
    demo_collection, tmp_path, package
):
    import subprocess
    import sys

    files = _seam_files(demo_collection[0])
    index = TileIndex.from_files(files, pattern=PATTERN, progress=False, tile_ranges=True)
    path = index.write(tmp_path / "i.parquet")
    want = _load(TileIndex.from_files(files, pattern=PATTERN, progress=False), FINE)
    out = tmp_path / "got.npy"
    args = [package, files[0], str(path), PATTERN, str(out), json.dumps(SEAM12)]
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRA, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    assert said["refused"] == f"tile_ranges=True needs {package}: pip install 'virtual-mosaic[cog]'"
    assert said["ranged"] == 0  # GDAL read every file
    np.testing.assert_array_equal(np.load(out), want)


# ------------------------------------------------------------------------------------- local files


@pytest.mark.parametrize("grid", [FINE, COARSE], ids=["full-resolution", "overviews"])
def test_local_loads_from_ranges_are_identical_to_gdal(demo_collection, grid):
    files = _seam_files(demo_collection[0])
    gdal = _load(TileIndex.from_files(files, pattern=PATTERN, progress=False), grid)
    assert mosaic.read_stats().tile_range_reads == 0
    index = TileIndex.from_files(files, pattern=PATTERN, progress=False, tile_ranges=True)
    runtime.reset()  # (the read counters start again)
    got = _load(index, grid)
    np.testing.assert_array_equal(got, gdal)
    assert np.isfinite(got).mean() > 0.5
    stats = mosaic.read_stats()
    assert stats.tile_range_reads == stats.reads > 0


def test_local_reads_from_ranges_never_read_the_header(demo_collection, tmp_path):
    """The files' headers are zeroed after indexing (same size and time): GDAL could not open them."""
    files = _copied_seam_files(demo_collection[0], tmp_path / "copy")
    want = _load(TileIndex.from_files(files, pattern=PATTERN, progress=False), FINE)
    index = TileIndex.from_files(files, pattern=PATTERN, progress=False, tile_ranges=True)
    for path in files:
        stat = os.stat(path)
        with open(path, "r+b") as f:
            f.write(b"\0" * 4096)  # the TIFF header and its IFDs
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(files[0])
    np.testing.assert_array_equal(_load(index, FINE), want)


def test_float_scenes_with_nan_nodata_and_the_float_predictor(tmp_path):
    nan = float("nan")
    shape = (1, 900, 800)
    a = _cog(tmp_path / "a" / "B02.tif", _noise(shape, "float32", 1), "EPSG:32632", (710_000, 5_050_000),
             COMPRESS="DEFLATE", PREDICTOR=3, nodata=nan)  # fmt: skip
    b = _cog(tmp_path / "b" / "B02.tif", _noise(shape, "float32", 2), "EPSG:32633", (225_000, 5_050_000),
             COMPRESS="ZSTD", PREDICTOR=3, nodata=nan)  # fmt: skip
    files = [str(a), str(b)]
    kw = dict(pattern=PATTERN, datetime="2024-06-01", progress=False)
    grid = dict(resolution=0.0005, bands="B02", groupby=None)
    bbox = (11.8, 45.45, 12.3, 45.6)
    want = mosaic.load(bbox, "EPSG:4326", index=TileIndex.from_files(files, **kw), chunks=128, **grid)
    index = TileIndex.from_files(files, tile_ranges=True, **kw)
    got = mosaic.load(bbox, "EPSG:4326", index=index, chunks=128, **grid)
    np.testing.assert_array_equal(got["B02"].values, want["B02"].values)
    assert np.isfinite(got["B02"].values).mean() > 0.1
    assert mosaic.read_stats().tile_range_reads > 0


# ------------------------------------------------------------------------------------------ HTTP


def _http_index(server: RangeServer, root: Path, **kw) -> TileIndex:
    urls = [server.url(Path(f).relative_to(root).as_posix()) for f in _seam_files(root)]
    index = TileIndex.from_files(urls, pattern=PATTERN, progress=False, tile_ranges=True, **kw)
    clear_gdal_http_cache()  # (what GDAL fetched indexing them would hide its requests)
    server.reset_stats()
    runtime.reset()  # (the read counters start again)
    return index


@pytest.mark.parametrize("grid", [FINE, COARSE], ids=["full-resolution", "overviews"])
def test_http_loads_make_no_head_and_no_header_request(http_server, demo_collection, grid):
    root = demo_collection[0]
    want = _load(TileIndex.from_files(_seam_files(root), pattern=PATTERN, progress=False), grid)
    index = _http_index(http_server, root)
    got = _load(index, grid)
    np.testing.assert_array_equal(got, want)
    log = http_server.log
    assert log and {r.method for r in log} == {"GET"}
    first_tile = {}
    for row in index:
        layout = decode_layout(row.tiles)
        first_tile["/" + row.href.split("/", 3)[3]] = min(int(lv.offsets.min()) for lv in layout.levels)
    for record in log:  # every byte asked for is tile data: nothing below the first tile
        start = int(record.range.removeprefix("bytes=").split("-")[0])
        assert start >= first_tile[record.path], record
    assert len(log) <= 2 * len(index)  # the windows' tiles are close: about one range per file
    assert mosaic.read_stats().tile_range_reads == mosaic.read_stats().reads


def test_requests_carry_the_neighbour_reads_tiles_between_their_own(tmp_path):
    """Chunks splitting a file's tile rows: a request carries the neighbours' tiles between its own rows."""
    import dataclasses

    from rasterio.warp import transform_bounds

    from mosaic.api import to_dataset

    path = _cog(tmp_path / "S33-x" / "B02.tif", _noise((1, 1000, 1000), "uint16"), "EPSG:32633",
                (500_000.0, 5_000_000.0), COMPRESS="DEFLATE", PREDICTOR=2, nodata=0)  # fmt: skip
    with rasterio.open(path) as src:
        bbox = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    kw = dict(pattern=PATTERN, datetime="2024-06-01", progress=False)
    # 128 px tiles, 300 px chunks: a read spans 3 of the 8 tile columns; no gap bridged for nothing
    # but the 8 bytes around each tile of a COG (its size before it, its last 4 bytes again after it)
    grid = dict(
        resolution=20.0, bands="B02", groupby=None, chunks=300, gdal_options={"MOSAIC_RANGE_GAP": "8"}
    )
    want = mosaic.load(bbox, "EPSG:32633", index=TileIndex.from_files([str(path)], **kw), **grid)[
        "B02"
    ].values
    with RangeServer(tmp_path) as server:
        index = TileIndex.from_files([server.url("S33-x/B02.tif")], tile_ranges=True, **kw)
        planned = mosaic.plan(bbox, "EPSG:32633", index=index, **grid)
        assert any(r.neighbours for t in planned.tasks for r in t.reads)

        def alone(read):
            return dataclasses.replace(read, neighbours=())

        tasks = tuple(dataclasses.replace(t, reads=tuple(map(alone, t.reads))) for t in planned.tasks)
        counts = {}
        for name, the_plan in (("without", dataclasses.replace(planned, tasks=tasks)), ("with", planned)):
            runtime.reset()  # (no tile fetched before is kept)
            clear_gdal_http_cache()
            server.reset_stats()
            got = to_dataset(the_plan)["B02"].values
            np.testing.assert_array_equal(got, want)
            counts[name] = (len(server.log), server.stats().bytes_sent)
            assert mosaic.read_stats().tile_range_reads == mosaic.read_stats().reads > 0
    assert counts["with"][0] <= 0.6 * counts["without"][0], counts  # 15 against 27
    # the tiles carried are needed: no byte more but the 8-byte separators between them
    assert 0 <= counts["with"][1] - counts["without"][1] < 1024, counts


def test_spans_merge_across_useful_ranges_and_small_gaps_only():
    from mosaic.io._neighbours import spans

    own = [(0, 10), (100, 110)]
    assert spans(own, [], 5) == [(0, 10), (100, 110)]
    assert spans(own, [], 90) == [(0, 110)]
    assert spans(own, [(10, 60), (62, 100)], 5) == [(0, 110)]  # a neighbour's tiles fill the gap
    assert spans(own, [(10, 60)], 5) == [(0, 10), (100, 110)]  # 40 bytes nobody needs: not fetched
    assert spans(own, [(110, 500)], 5) == [(0, 10), (100, 110)]  # nothing past the last own byte
    assert spans([(50, 60)], [(0, 50), (60, 70)], 0) == [(50, 60)]
    assert spans([], [(0, 10)], 5) == []


def test_http_reads_respect_the_limit_and_retry_transient_faults(http_server, demo_collection):
    root = demo_collection[0]
    local = TileIndex.from_files(_seam_files(root), pattern=PATTERN, progress=False)
    want = mosaic.load(SEAM12, "EPSG:4326", index=local, chunks=64, **FINE)["B02"].values  # same chunks
    index = _http_index(http_server, root)
    # GETs only: a HEAD asking for Retry-After after the first 503 must not take the second fault
    http_server.faults.add(kind=503, path_glob="*.tif", times=2, methods=("GET",))
    with dask.config.set(scheduler="threads", num_workers=16):
        got = mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=64, max_concurrency=2, **FINE)
        got = got["B02"].values
    np.testing.assert_array_equal(got, want)
    assert http_server.peak_in_flight <= 2
    assert mosaic.read_stats(2).retries >= 2
    assert "HEAD" not in http_server.by_method or http_server.by_method["HEAD"] <= 2  # Retry-After probes


def test_a_server_gone_is_a_read_error_after_retries(demo_collection):
    root = demo_collection[0]
    with RangeServer(root) as server:
        index = _http_index(server, root)
    with pytest.raises(mosaic.errors.ReadError, match=r"Read failed: .*error sending request"):
        _load(index, FINE)
    assert mosaic.read_stats().retries >= 4  # transient (a refused connection): retried, then failed


def test_http_bearer_token_of_a_profile_is_sent(http_server, demo_collection):
    from mosaic.auth import HTTPProfile, Secret

    root = demo_collection[0]
    want = _load(TileIndex.from_files(_seam_files(root), pattern=PATTERN, progress=False), FINE)
    http_server.require("/", bearer="t0ken")
    auth = HTTPProfile(http_server.base_url, bearer=Secret("t0ken"))
    index = _http_index(http_server, root, auth=auth)
    np.testing.assert_array_equal(_load(index, FINE, auth=auth), want)
    assert {r.auth_scheme for r in http_server.log} == {"Bearer"}
    assert mosaic.read_stats().tile_range_reads == mosaic.read_stats().reads > 0


def test_a_changed_remote_file_is_not_decoded_with_its_old_ranges(http_server, demo_collection, tmp_path):
    src_root = demo_collection[0]
    root = tmp_path / "served"
    for path in _seam_files(src_root):
        rel = Path(path).relative_to(src_root)
        (root / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / rel)
    with RangeServer(root) as server:
        index = _http_index(server, root)
        # the scenes rewritten after indexing: other pixels, other tile offsets
        for i, path in enumerate(_seam_files(root)):
            with rasterio.open(path) as src:
                data, crs, transform, nodata = src.read(), src.crs, src.transform, src.nodata
            _cog(Path(path), (data // (2 + i)).astype(data.dtype), crs, (0, 0), transform=transform,
                 COMPRESS="DEFLATE", PREDICTOR=1, nodata=nodata, BLOCKSIZE=256)  # fmt: skip
        want = _load(TileIndex.from_files(_seam_files(root), pattern=PATTERN, progress=False), FINE)
        runtime.reset()
        with pytest.warns(ChangedSourceWarning):
            got = _load(index, FINE)
    np.testing.assert_array_equal(got, want)  # the new files' pixels, read by GDAL
    assert mosaic.read_stats().tile_range_reads == 0


def test_a_touched_local_file_is_read_by_gdal(demo_collection, tmp_path):
    """Same bytes, another modification time: the ranges cannot be trusted, so GDAL reads it."""
    files = _copied_seam_files(demo_collection[0], tmp_path / "copy")
    index = TileIndex.from_files(files, pattern=PATTERN, progress=False, tile_ranges=True)
    want = _load(TileIndex.from_files(files, pattern=PATTERN, progress=False), FINE)
    os.utime(files[0], (1e9, 1e9))
    runtime.reset()
    with pytest.warns(ChangedSourceWarning):
        got = _load(index, FINE)
    np.testing.assert_array_equal(got, want)
    stats = mosaic.read_stats()
    assert 0 < stats.tile_range_reads < stats.reads  # the untouched file still from its ranges


def test_a_lerc_file_falls_back_to_gdal_over_http(tmp_path):
    folder = tmp_path / "S33-x"
    folder.mkdir()
    data = _noise((1, 600, 600), "uint16")
    _cog(folder / "B02.tif", data, "EPSG:32633", (250_000, 5_050_000), COMPRESS="LERC", nodata=0)
    bbox = (11.8, 45.45, 12.0, 45.55)
    grid = dict(resolution=0.0005, bands="B02", groupby=None)
    local = TileIndex.from_files(
        [str(folder / "B02.tif")], pattern=PATTERN, datetime="2024-06-01", progress=False
    )
    want = mosaic.load(bbox, "EPSG:4326", index=local, **grid)["B02"].values
    clear_gdal_http_cache()
    with RangeServer(tmp_path) as server:
        index = TileIndex.from_files(
            [server.url("S33-x/B02.tif")],
            pattern=PATTERN,
            datetime="2024-06-01",
            progress=False,
            tile_ranges=True,
        )
        assert index.records()[0].tiles is not None
        clear_gdal_http_cache()
        server.reset_stats()
        got = mosaic.load(bbox, "EPSG:4326", index=index, **grid)["B02"].values
        assert server.by_method.get("HEAD") == 1  # GDAL opened it
    clear_gdal_http_cache()
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).any()
    assert mosaic.read_stats().tile_range_reads == 0


# -------------------------------------------------------------------------------------------- S3


def test_s3_signed_and_unsigned_loads_from_ranges(seaweedfs, demo_collection):
    root = demo_collection[0]
    rel = [Path(f).relative_to(root).as_posix() for f in _seam_files(root)]
    want = _load(TileIndex.from_files(_seam_files(root), pattern=PATTERN, progress=False), FINE)
    for bucket, user in (("bucket-a", "alice"), ("public", None)):
        auth = s3_profile(seaweedfs, bucket, user)
        hrefs = [seaweedfs.url(bucket, p) for p in rel]
        index = TileIndex.from_files(hrefs, pattern=PATTERN, auth=auth, progress=False, tile_ranges=True)
        assert all(r.tiles for r in index)
        clear_gdal_http_cache()
        runtime.reset()
        np.testing.assert_array_equal(_load(index, FINE, auth=auth), want)
        stats = mosaic.read_stats()
        assert stats.tile_range_reads == stats.reads > 0
    # wrong keys: refused by the server, an authentication error naming the href
    hrefs = [seaweedfs.url("bucket-a", p) for p in rel]
    index = TileIndex.from_files(
        hrefs,
        pattern=PATTERN,
        auth=s3_profile(seaweedfs, "bucket-a", "alice"),
        progress=False,
        tile_ranges=True,
    )
    with pytest.raises(mosaic.AuthenticationError):
        _load(index, FINE, auth=s3_profile(seaweedfs, "bucket-a", "bob"))


# ------------------------------------------------------------------------------------------ CLI


def test_index_build_tile_ranges_and_stac(demo_collection, tmp_path):
    out = tmp_path / "i.parquet"
    files = _seam_files(demo_collection[0])
    result = CliRunner().invoke(cli, ["index", "build", *files, "--pattern", PATTERN, "--tile-ranges",
                                           "-o", str(out), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = TileIndex.read(out).records()
    assert len(rows) == 2 and all(decode_layout(r.tiles) is not None for r in rows)
    stac = TileIndex.from_stac(demo_collection[1], tile_ranges=True)
    seam = sorted((r for r in stac if r.id in SCENES and r.asset == "B02"), key=lambda r: r.id)
    assert [r.tiles for r in seam] == [r.tiles for r in sorted(rows, key=lambda r: r.id)]


# ------------------------------------------------------------------- what only GDAL does, GDAL does


def test_transport_takes_what_it_can_do_as_gdal_and_leaves_the_rest():
    """GDAL's settings of a read become an obstore store's; what obstore cannot do as GDAL is left to it."""
    import certifi

    from mosaic.io.ranged import transport

    def config(**values):
        return lambda key: values.get(key)

    url = "/vsicurl/https://h.example/a%20b.tif"
    how = transport(
        url, config(GDAL_HTTP_HEADERS="Authorization: Bearer abc", CURL_CA_BUNDLE=certifi.where())
    )
    assert how is not None and how.kind == "http" and how.target == "a b.tif"
    assert how.store.url == "https://h.example/"
    assert how.store.client_options["default_headers"] == {"authorization": b"Bearer abc"}
    assert b"BEGIN CERTIFICATE" in how.store.client_options["root_certificate"]
    assert "max_retries" in how.store.retry_config and how.store.retry_config["max_retries"] == 0
    how = transport(url, config(GDAL_HTTP_USERPWD="ada:pw"))
    assert how.store.client_options["default_headers"] == {"authorization": b"Basic YWRhOnB3"}
    assert (
        transport(url, config()).store is transport(url, config()).store
    )  # one store, its connections reused
    for left in (
        dict(GDAL_HTTP_PROXY="http://proxy:3128"),
        dict(GDAL_HTTP_NETRC_FILE="/tmp/netrc"),
        dict(GDAL_HTTP_COOKIE="a=b"),
        dict(GDAL_HTTP_USERPWD="ada:pw", GDAL_HTTP_AUTH="NTLM"),
        dict(CURL_CA_BUNDLE="/no/such/ca.pem"),
    ):
        assert transport(url, config(**left)) is None, left
    assert transport("/vsigs/bucket/x.tif", config()) is None
    assert transport("/vsicurl/https://user:pw@h.example/x.tif", config()) is None
    assert transport("/vsicurl/https://h.example/x.tif?X-Amz-Signature=abc", config()) is None
    assert transport("relative/x.tif", config()) is None
    assert transport("/vsis3/bucket/x.tif", config()) is None  # GDAL's own credential chain: GDAL reads
    s3 = dict(AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="eu-west-1")
    how = transport(
        "/vsis3/bucket/a b.tif", config(**s3, AWS_SESSION_TOKEN="tok", AWS_REQUEST_PAYER="requester")
    )
    assert how.kind == "s3" and how.target == "a b.tif"
    assert {k: how.store.config[k] for k in ("bucket", "region", "access_key_id", "session_token")} == {
        "bucket": "bucket", "region": "eu-west-1", "access_key_id": "AKIA", "session_token": "tok"
    }  # fmt: skip
    assert how.store.config["request_payer"] == "true" and "skip_signature" not in how.store.config
    how = transport("/vsis3/bucket/k.tif", config(**s3, AWS_S3_ENDPOINT="127.0.0.1:9000", AWS_HTTPS="NO"))
    assert how.store.config["endpoint"] == "http://127.0.0.1:9000"
    assert how.store.config["virtual_hosted_style_request"] == "false"  # path-style, as GDAL
    unsigned = transport("/vsis3/bucket/k.tif", config(AWS_NO_SIGN_REQUEST="YES"))
    assert unsigned.store.config["skip_signature"] == "true" and "access_key_id" not in unsigned.store.config
