"""Reads started ahead on an idle core, including a core that becomes idle while a chunk reads."""

from __future__ import annotations

import time
from contextlib import ExitStack

import numpy as np
import pytest

import mosaic
from mosaic import TileIndex, graph
from mosaic.io.limits import get_limiter
from mosaic.io.read import warp_read

SEAM12 = (11.88, 45.40, 12.12, 45.58)
KW = dict(resolution=0.0004, bands="B02", groupby=None, chunks=4096)


def _settled() -> None:
    """Wait for reads other tests started ahead to end (they count as running)."""
    deadline = time.monotonic() + 30
    while graph._BUSY._running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert graph._BUSY._running == 0


def _one_chunk(demo_index):
    plan = mosaic.plan(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, **KW)
    assert len(plan.tasks) == 1 and len(plan.tasks[0].reads) == 2
    task = plan.tasks[0]
    ds = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, **KW)
    ctx = ds.B02.data.dask[(ds.B02.data.name, 0, 0, 0)][2]
    gbox = plan.chunk_geobox(task.iy, task.ix)
    kwargs = dict(
        dst_affine=gbox.affine,
        dst_shape=tuple(gbox.shape),
        dst_crs=ctx.crs,
        resampling=ctx.resampling,
        limiter=get_limiter(ctx.max_concurrency),
        native=(ctx.band.dtype, ctx.band.nodata),
    )
    whole = (slice(0, gbox.shape[0]), slice(0, gbox.shape[1]))
    return task, ctx, kwargs, whole


def test_a_read_waiting_for_a_core_starts_when_one_becomes_idle(demo_index):
    # every core busy: the chunk's next read cannot start ahead; when a core frees (another chunk
    # ends) before the chunk reaches that read, it starts then, with the pixels of reading in turn
    task, ctx, kwargs, whole = _one_chunk(demo_index)
    _settled()
    ahead = graph._ReadAhead(task, ctx, kwargs, idle_only=True)
    with ExitStack() as others:
        for _ in range(graph._cores()):
            others.enter_context(graph._BUSY.running())
        ahead.reach(0)
        ahead.start(1, whole)
        assert not ahead.has(1)  # no idle core: it waits
        others.close()  # a chunk task ends: its core is idle
    assert ahead.has(1)
    layer = ahead.take(1)
    want = warp_read(task.reads[1], area=whole, **kwargs)
    assert layer.region == want.region and np.array_equal(layer.data, want.data)
    assert (want.data != ctx.band.nodata).any()
    ahead.close()
    _settled()  # the started read released its core


def test_a_waiting_read_the_chunk_has_reached_is_not_started(demo_index):
    task, ctx, kwargs, whole = _one_chunk(demo_index)
    _settled()
    for finish in ("reach", "close"):
        ahead = graph._ReadAhead(task, ctx, kwargs, idle_only=True)
        with ExitStack() as others:
            for _ in range(graph._cores()):
                others.enter_context(graph._BUSY.running())
            ahead.reach(0)
            ahead.start(1, whole)
            if finish == "reach":
                ahead.reach(1)  # the chunk reads it in turn
            else:
                ahead.close()  # the chunk ended (every pixel filled, or an error)
        assert not ahead.has(1)
        assert graph._BUSY._running == 0 and not graph._BUSY._waiting


def test_a_load_whose_chunks_end_unevenly_reads_ahead_late_with_the_same_pixels(demo_index):
    # two chunks on two dask threads: the small one ends first, then the big one's second scene is
    # read on the idle core; the pixels are those of each scene loaded alone, first on top
    import dask

    if graph._cores() < 2:
        pytest.skip("needs two cores")
    kw = dict(resolution=0.0004, bands="B02", groupby=None, chunks=(600, 560))
    ds = mosaic.load(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, **kw)
    with dask.config.set(scheduler="threads", num_workers=2):
        got = ds.B02.isel(time=0).values
    plan = mosaic.plan(SEAM12, "EPSG:4326", "2024-06-01", index=demo_index, **kw)
    layers = []
    for scene in [r.scene for r in plan.tasks[0].reads]:
        single = TileIndex.from_records([r for r in demo_index if r.id == scene])
        layers.append(mosaic.load(index=single, geobox=ds.odc.geobox, **kw).B02.isel(time=0).values)
    want = np.where(layers[0] != 0, layers[0], layers[1])
    assert np.array_equal(got, want)
    _settled()
