"""Tiles fetched ahead of remote reads in merged byte ranges (mosaic.io.fetch), unit by unit and at a server.

The server tests use a COG of noise (incompressible: every 128 x 128 tile is 32 KB) served by
tests/servers.py's RangeServer on 127.0.0.1 and count what it answers.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

import mosaic
from mosaic import TileIndex
from mosaic.io import runtime
from mosaic.io.fetch import FetchedRanges, align, coalesce, prefetch, tile_ranges
from servers import RangeServer, clear_gdal_http_cache

TILE = 128
ORIGIN = (500_000.0, 5_000_000.0)
RES = 10.0


@pytest.fixture(scope="module")
def noise_cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 384 x 384 uint16 COG of noise in 3 x 3 tiles of 128 px (32 KB each), no overviews."""
    path = tmp_path_factory.mktemp("noise") / "noise.tif"
    data = np.random.default_rng(0).integers(1, 60000, (384, 384), dtype=np.uint16)
    profile = dict(driver="COG", width=384, height=384, count=1, dtype="uint16", crs="EPSG:32633", nodata=0)
    profile.update(
        transform=from_origin(*ORIGIN, RES, RES), BLOCKSIZE=TILE, COMPRESS="DEFLATE", OVERVIEWS="NONE"
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


@pytest.fixture
def noise_server(noise_cog: Path):
    clear_gdal_http_cache()
    with RangeServer(noise_cog.parent) as server:
        yield server
    clear_gdal_http_cache()


# ------------------------------------------------------------------------------------ the pieces


def test_align_and_coalesce():
    assert align([(5, 10), (4096, 4097)], 4096) == [(0, 4096), (4096, 8192)]
    assert coalesce([(30, 40), (0, 10), (10, 20)], gap=0) == [(0, 20), (30, 40)]  # touching merge
    assert coalesce([(30, 40), (0, 10), (5, 25)], gap=5) == [(0, 40)]  # overlap, then a 5-byte gap
    assert coalesce([(0, 10), (16, 20)], gap=5) == [(0, 10), (16, 20)]  # 6 bytes apart: two
    assert coalesce([], gap=10) == []


def _zeroed_outside(
    src_path: Path, keep: list[tuple[int, int]], dst_path: Path, tiles: list[tuple[int, int]]
):
    """A copy of the file whose tiles' bytes are zero except within ``keep``."""
    raw = np.frombuffer(src_path.read_bytes(), dtype=np.uint8).copy()
    kept = np.zeros(raw.size, dtype=bool)
    for start, stop in keep:
        kept[start:stop] = True
    for start, stop in tiles:
        raw[start:stop][~kept[start:stop]] = 0
    dst_path.write_bytes(raw.tobytes())


@pytest.mark.parametrize(
    "level, window",
    [
        (-1, Window(0, 0, 256, 256)),
        (-1, Window(130, 10, 100, 300)),
        (-1, Window(383, 383, 1, 1)),
        (0, Window(5, 5, 60, 90)),
    ],
)
def test_tile_ranges_hold_every_byte_gdal_reads(demo_collection, noise_cog, tmp_path, level, window):
    # with every tile byte outside the ranges zeroed, the window still reads the same pixels
    if level < 0:
        path = noise_cog
    else:  # an overview of a demo scene (tiles of 256 px, DEFLATE)
        path = Path(demo_collection[0]) / "S32-seam12-20240601" / "B02.tif"
    opener = (lambda p: rasterio.open(p)) if level < 0 else (lambda p: rasterio.open(p, overview_level=level))
    with opener(path) as src:
        expected = src.read(1, window=window)
        keep = tile_ranges(src, 1, window)
        every = tile_ranges(src, 1, Window(0, 0, src.width, src.height))
    assert 0 < len(keep) < len(every)
    copy = tmp_path / "zeroed.tif"
    _zeroed_outside(path, keep, copy, every)
    with opener(copy) as src:
        assert np.array_equal(src.read(1, window=window), expected)
        with pytest.raises(rasterio.errors.RasterioIOError):  # and the zeroing hit the other tiles
            src.read(1)


def test_tile_ranges_of_a_file_that_is_not_a_tiff(tmp_path):
    path = tmp_path / "x.png"
    with rasterio.open(path, "w", driver="PNG", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.ones((8, 8), np.uint8), 1)
    with rasterio.open(path) as src:
        assert tile_ranges(src, 1, Window(0, 0, 8, 8)) == []


def test_claims_leave_out_what_is_fetched_or_being_fetched():
    registry = FetchedRanges(capacity=1000)
    mine, pending = registry.claim("f", [(0, 100), (200, 300)], budget=1000)
    assert [(s.start, s.stop) for s in mine] == [(0, 100), (200, 300)] and pending == []
    # another thread, while those are in flight: only the rest is its own, the rest it waits for
    other, waits = registry.claim("f", [(50, 250)], budget=1000)
    assert [(s.start, s.stop) for s in other] == [(100, 200)] and set(waits) == set(mine)
    registry.release("f", mine, ok=True)
    registry.release("f", other, ok=True)
    assert registry.claim("f", [(0, 300)], budget=1000) == ([], [])  # all fetched: nothing to do
    assert registry.claim("g", [(0, 300)], budget=299) == ([], [])  # over budget: GDAL reads it
    failed, _ = registry.claim("g", [(0, 10)], budget=100)
    registry.release("g", failed, ok=False)  # a failed fetch is forgotten...
    again, _ = registry.claim("g", [(0, 10)], budget=100)
    assert [(s.start, s.stop) for s in again] == [(0, 10)]  # ...and claimable again


def test_the_record_is_bounded_like_gdals_cache():
    registry = FetchedRanges(capacity=250)
    for k in range(3):
        spans, _ = registry.claim("f", [(100 * k, 100 * k + 100)], budget=1000)
        registry.release("f", spans, ok=True)
    # the oldest range was dropped (GDAL's cache would have dropped it too): claimable again
    assert [(s.start, s.stop) for s in registry.claim("f", [(0, 300)], budget=1000)[0]] == [(0, 100)]
    registry.forget("f")
    assert [(s.start, s.stop) for s in registry.claim("f", [(0, 300)], budget=1000)[0]] == [(0, 300)]


def test_threads_needing_the_same_tiles_fetch_them_once():
    registry = FetchedRanges()
    fetched: list[tuple[int, int]] = []
    lock = threading.Lock()

    def slow_fetch(path, ranges):
        time.sleep(0.05)
        with lock:
            fetched.extend(ranges)

    ready: list[bool] = []

    def one(ranges):
        prefetch("f", ranges, registry=registry, fetch=slow_fetch, gap=10, budget=10_000, chunk=1)
        with lock:  # on return, every byte it asked for is there (fetched by it or by another thread)
            have = coalesce(fetched, gap=0)
            ready.append(all(any(a <= lo and hi <= b for a, b in have) for lo, hi in ranges))

    threads = [threading.Thread(target=one, args=([(0, 100), (105, 200)],)) for _ in range(4)]
    threads.append(threading.Thread(target=one, args=([(150, 300)],)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    covered = sorted(fetched)
    assert sum(b - a for a, b in covered) == 300  # every byte once
    assert all(b <= c for (_, b), (c, _) in itertools.pairwise(covered))  # no overlap
    assert (0, 200) in covered or (0, 300) in covered  # the 5-byte gap was bridged
    assert ready == [True] * 5


# ---------------------------------------------------------------------------------- at a real server


def _data_gets(server: RangeServer) -> list[tuple[int, int]]:
    """The byte ranges GET after the file's header (GDAL reads the first 16 KB at open)."""
    out = []
    for r in server.log:
        if r.method == "GET" and r.range and r.status == 206:
            start, stop = (int(v) for v in r.range.removeprefix("bytes=").split("-"))
            if start > 0:
                out.append((start, stop + 1))
    return sorted(out)


def _load(server: RangeServer, box_px: tuple[int, int, int, int], **kwargs):
    """The COG's pixels ``(col0, row0, col1, row1)`` on its own grid, through mosaic.load (lazy).

    The index is built first; the server's log then starts afresh, with GDAL's cache of the file empty.
    """
    c0, r0, c1, r1 = box_px
    x0, y0 = ORIGIN
    bbox = (x0 + c0 * RES, y0 - r1 * RES, x0 + c1 * RES, y0 - r0 * RES)
    index = TileIndex.from_files([server.url("noise.tif")], progress=False)
    runtime.reset()
    clear_gdal_http_cache()
    server.reset_stats()
    return mosaic.load(
        bbox, "EPSG:32633", index=index, bbox_crs="EPSG:32633", resolution=RES, groupby=None, **kwargs
    )


def test_tiles_a_few_kb_apart_come_in_one_request(noise_server, noise_cog):
    # 2 x 2 tiles: two runs of contiguous tiles (tile rows 1 and 2), 32 KB apart (away from the header,
    # which GDAL would read on from: it then fetches the rest of a small file in one go)
    with rasterio.open(noise_cog) as src:
        expected = src.read(1, window=Window(0, 128, 256, 256))
    requests = {}
    for label, options in (("gdal alone", {"MOSAIC_PREFETCH_BYTES": "0"}), ("merged", {})):
        got = _load(noise_server, (0, 128, 256, 384), gdal_options=options).compute()
        assert np.array_equal(np.squeeze(got.to_array().values), expected)
        requests[label] = _data_gets(noise_server)
    assert len(requests["gdal alone"]) == 2  # one per tile row
    assert len(requests["merged"]) == 1  # the gap between them bridged
    ((start, stop),) = requests["merged"]
    assert start <= 99_017 - 4 and stop >= 230_159 + 32_779  # both rows' tiles (offsets of this file)


def test_chunks_sharing_tiles_never_fetch_a_byte_twice(noise_server, noise_cog):
    noise_server.latency = 0.005
    with rasterio.open(noise_cog) as src:
        expected = src.read(1)
    ds = _load(noise_server, (0, 0, 384, 384), chunks=48)  # 64 chunks, each tile shared by up to 9
    with dask.config.set(scheduler="threads", num_workers=8):
        got = np.squeeze(ds.to_array().values)
    assert np.array_equal(got, expected)
    ranges = _data_gets(noise_server)
    assert all(b <= c for (_, b), (c, _) in itertools.pairwise(ranges)), str(ranges)  # disjoint
    assert len(ranges) <= 9 and ranges[-1][1] >= noise_cog.stat().st_size - 4  # at most one per tile, all


def test_a_failed_fetch_ahead_is_retried_and_counted(noise_server, noise_cog):
    with rasterio.open(noise_cog) as src:
        expected = src.read(1, window=Window(0, 128, 256, 256))
    ds = _load(noise_server, (0, 128, 256, 384), max_concurrency=1)
    fault = noise_server.faults.every(2, 503, methods=["GET"], limit=1)  # GET 1: the header; 2: the tiles
    got = np.squeeze(ds.to_array().values)
    assert np.array_equal(got, expected)
    assert fault.served == 1 and mosaic.read_stats(1).retries == 1
