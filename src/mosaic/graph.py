"""The graph: a dask array per output band, one task per non-empty (time, chunk).

Chunks no scene touches get no task of their own: their keys alias one shared constant block per
chunk shape, made when dask asks for them, so the graph holds what the chunks the data touch need,
not something per chunk of the output. Keys are deterministic (``dask.base.tokenize`` of the plan).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from mosaic._blocks import LazyBlocks
from mosaic.auth import Profile
from mosaic.errors import ReadError, ReadFailedWarning
from mosaic.fuse import FirstNative, Fuser, as_chunk, make_fuser
from mosaic.io._mask_read import SceneMasker
from mosaic.io.limits import get_limiter
from mosaic.io.paths import is_network, redact
from mosaic.io.read import Layer, gdal_env, warp_read
from mosaic.io.runtime import default_concurrency, failed_reads
from mosaic.masks import MaskSpec
from mosaic.planning.planner import BandSpec, ChunkTask, PixelBox, Plan, Read

if TYPE_CHECKING:
    from odc.geo.crs import CRS

__all__ = ["ChunkContext", "band_array", "load_chunk"]


@dataclass(frozen=True, slots=True)
class ChunkContext:
    """What every task of one band shares: target CRS, method, band spec, limits, GDAL options."""

    crs: str
    method: Any
    resampling: str
    band: BandSpec
    on_error: str
    max_concurrency: int | None
    gdal_options: tuple[tuple[str, Any], ...]
    native: bool = False
    """Fuse in the band's own dtype (``first``/``last``, nearest, consistent integer sources)."""
    auth: tuple[Profile, ...] = ()
    """Credential profiles, matched per read by href prefix."""
    failures: str = ""
    """Key of the load's :class:`~mosaic.io.runtime.FailedReads` log."""
    clip: bytes | None = None
    """The plan's clip polygon (WKB, grid CRS): pixels of clipped chunks outside it become nodata."""
    mask: MaskSpec | None = None
    """The plan's quality mask: each read's dropped pixels become nodata before fusion."""
    mask_as: str = "nodata"
    """``"nodata"``: drop the masked pixels; ``"fraction"``: turn each layer into 1 (dropped) / 0 (kept)."""


def _cast(values: np.ndarray, band: BandSpec) -> np.ndarray:
    """Float result (NaN = no data) to the band's dtype and nodata, reusing ``values`` as scratch."""
    dtype = np.dtype(band.dtype)
    missing = np.isnan(values)
    if dtype.kind == "f":
        out = values.astype(dtype, copy=False)
        if band.nodata is not None and not math.isnan(band.nodata):
            out[missing] = band.nodata
        return out
    info = np.iinfo(dtype)
    np.rint(values, out=values)
    values[missing] = band.nodata if band.nodata is not None else 0
    np.clip(values, info.min, info.max, out=values)
    return values.astype(dtype)


def load_chunk(
    task: ChunkTask, ctx: ChunkContext, affine: tuple[float, ...], shape: tuple[int, int]
) -> np.ndarray:
    """Read, warp and fuse the reads of one chunk; returns a (1, y, x) block of the band's dtype."""
    from affine import Affine

    limiter = get_limiter(ctx.max_concurrency)
    dst = Affine(*affine)
    kwargs: dict[str, Any] = dict(
        dst_affine=dst,
        dst_shape=shape,
        dst_crs=ctx.crs,
        resampling=ctx.resampling,
        limiter=limiter,
        auth=ctx.auth,
    )
    if ctx.mask is not None:
        kwargs["masker"] = SceneMasker(ctx.mask, limiter, ctx.auth, fraction=ctx.mask_as == "fraction")
    fuser: Fuser
    if ctx.native:
        fuser = FirstNative(shape, ctx.band.dtype, cast(float, ctx.band.nodata))  # native implies a nodata
        kwargs["native"] = (ctx.band.dtype, ctx.band.nodata)
    else:
        fuser = make_fuser(ctx.method, shape)
    failed: list[ReadError] = []
    mode = _reads_ahead(task, fuser)
    ahead = _ReadAhead(task, ctx, kwargs, idle_only=mode == "idle") if mode else None
    with _BUSY.running(), gdal_env(ctx.gdal_options):
        try:
            for i, read in enumerate(task.reads):
                area = fuser.pending()
                if area is None:
                    break  # first/last: every pixel has its value, later scenes cannot change it
                if ahead is not None:
                    ahead.reach(i)
                    ahead.start(i + 1, area)  # the next scene's round trips overlap this one's
                try:
                    if ahead is not None and ahead.has(i):
                        layer, aux = ahead.take(i), None
                    else:
                        # (a read converted to physical units is scaled after reading: not into the
                        # accumulator)
                        into = None if read.to_physical else fuser.scratch()
                        layer = warp_read(read, area=area, into=into, **kwargs)
                        aux = warp_read(task.aux[i], **kwargs) if fuser.needs_aux else None
                except ReadError as exc:
                    if ctx.on_error == "raise":
                        raise
                    fuser.discard_scratch()  # the failed read may have written part of its pixels
                    failed.append(exc)
                    continue
                data = _physical(layer.data, read.to_physical)
                ranks = (
                    None
                    if aux is None
                    else as_chunk(_physical(aux.data, task.aux[i].to_physical), aux.region, shape)
                )
                fuser.feed(data, ranks, layer.region)
        finally:
            if ahead is not None:
                ahead.close()  # before this task counts as ended: a core it frees is not for itself
    if failed:
        lines = [f"{e.scene_id} ({redact(e.href)}): {e.reason}" for e in failed]  # kept in attrs: no secrets
        failed_reads(ctx.failures).extend(lines)
        _report_to_cluster(lines)
        listing = "; ".join(lines)
        warnings.warn(
            f"{len(failed)} read(s) failed and were skipped (on_error='skip'): {listing}",
            ReadFailedWarning,
            stacklevel=2,
        )
    block = fuser.result() if ctx.native else _cast(fuser.result(), ctx.band)
    if task.clipped and ctx.clip is not None:
        block[_outside(ctx.clip, affine, shape)] = ctx.band.nodata if ctx.band.nodata is not None else 0
    return block[None]


@lru_cache(maxsize=64)
def _outside(clip: bytes, affine: tuple[float, ...], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a chunk whose centres lie outside the clip polygon (as rioxarray's ``clip``)."""
    from affine import Affine
    from rasterio.features import geometry_mask

    mask: np.ndarray = geometry_mask([_geometry(clip)], out_shape=shape, transform=Affine(*affine[:6]))
    mask.flags.writeable = False  # shared by every band and time step of the chunk
    return mask


@lru_cache(maxsize=8)
def _geometry(wkb: bytes) -> Any:
    import shapely

    return shapely.from_wkb(wkb)


def _reads_ahead(task: ChunkTask, fuser: Fuser) -> str | None:
    """Whether the chunk's next read starts while the current one is read, and when.

    ``"always"`` for remote scenes (they wait on round trips, which overlap); ``"idle"`` for local ones,
    which are bound by the CPU: a read is started ahead only while a core is idle (fewer chunks
    running than cores, as at the end of a load or with few, unequal chunks), else the other dask
    threads already keep the cores busy. None for a single read and for ranking methods (each read
    has a ranking read too).
    """
    if len(task.reads) < 2 or fuser.needs_aux:
        return None
    return "always" if any(is_network(r.href) for r in task.reads) else "idle"


class _Busy:
    """How many chunk tasks and reads started ahead this process is running, to spot an idle core.

    A read that found no idle core may wait for one (:meth:`when_idle`): it is started as soon as a
    chunk task or another read started ahead ends, if it is still wanted then.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: list[Callable[[], bool]] = []

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            self.release()

    def claim_idle(self) -> bool:
        """Count one more running read if a core is idle (True), else nothing (False)."""
        with self._lock:
            if self._running >= _cores():
                return False
            self._running += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._running -= 1
        self._wake()

    def when_idle(self, start: Callable[[], bool]) -> None:
        """Call ``start`` once a core is idle, with that core counted as running.

        ``start`` answers whether it used the core (then it calls :meth:`release` when done) or not.
        """
        with self._lock:
            self._waiting.append(start)
        self._wake()

    def forget(self, start: Callable[[], bool]) -> None:
        """Do not call ``start`` (if it is still waiting)."""
        with self._lock:
            if start in self._waiting:
                self._waiting.remove(start)

    def _wake(self) -> None:
        while True:
            with self._lock:
                if self._running >= _cores() or not self._waiting:
                    return
                start = self._waiting.pop(0)
                self._running += 1
            used = False
            try:
                used = start()
            finally:
                if not used:
                    with self._lock:
                        self._running -= 1


_BUSY = _Busy()


@lru_cache(maxsize=1)
def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _ReadAhead:
    """The next read of a chunk, started in a helper thread while the chunk's current read runs.

    It reads for the chunk's part still empty *before* the current read, a superset of what it will
    need; fusion takes only the pixels still missing, so the result is the same as reading in turn.
    For ``first``/``last`` a read is started ahead only where its scene's box of the chunk reaches
    beyond the current scene's, so a stack of scenes over the same area is not fetched for nothing.
    Reads still pass the limiter: the server sees no more requests than without reading ahead.
    """

    def __init__(
        self, task: ChunkTask, ctx: ChunkContext, kwargs: dict[str, Any], *, idle_only: bool = False
    ):
        self.task, self.ctx, self.kwargs = task, ctx, kwargs
        self.stop_early = ctx.native or ctx.method in ("first", "last")
        self.idle_only = idle_only
        self.futures: dict[int, Future[Layer]] = {}
        self._lock = threading.Lock()
        self._turn = -1  # the read the chunk's loop is at: it and those before are not started ahead
        self._waiter: Callable[[], bool] | None = None

    def start(self, i: int, area: tuple[slice, slice]) -> None:
        """Start read ``i`` ahead, for ``area`` (the part of the chunk still empty).

        With ``idle_only``, on an idle core: now if one is idle, else when one becomes idle while the
        chunk has not reached read ``i``.
        """
        reads = self.task.reads
        if i >= len(reads) or i in self.futures:
            return
        if self.stop_early and _within(reads[i].target, reads[i - 1].target):
            return
        if not self.idle_only:
            self.futures[i] = _read_pool().submit(self._read, reads[i], area)
            return
        if not _BUSY.claim_idle():
            self._wait(i, area)
            return
        try:
            self.futures[i] = _read_pool().submit(self._read_claimed, reads[i], area)
        except BaseException:
            _BUSY.release()
            raise

    def _wait(self, i: int, area: tuple[slice, slice]) -> None:
        """Start read ``i`` when a core becomes idle, unless the chunk has reached it by then."""

        def later() -> bool:
            with self._lock:
                if self._turn >= i or i in self.futures:
                    return False
                self.futures[i] = _read_pool().submit(self._read_claimed, self.task.reads[i], area)
                return True

        self._forget()
        self._waiter = later
        _BUSY.when_idle(later)

    def reach(self, i: int) -> None:
        """The chunk's loop is at read ``i``: from now on it is read in turn unless already started."""
        with self._lock:
            self._turn = i
        self._forget()

    def close(self) -> None:
        """The chunk is done: nothing more is started ahead for it."""
        self.reach(len(self.task.reads))

    def _forget(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _BUSY.forget(waiter)

    def _read(self, read: Read, area: tuple[slice, slice]) -> Layer:
        with gdal_env(self.ctx.gdal_options):  # GDAL's settings are per thread
            return warp_read(read, area=area, into=None, **self.kwargs)

    def _read_claimed(self, read: Read, area: tuple[slice, slice]) -> Layer:
        try:
            return self._read(read, area)
        finally:
            _BUSY.release()

    def has(self, i: int) -> bool:
        return i in self.futures

    def take(self, i: int) -> Layer:
        return self.futures.pop(i).result()


def _within(inner: PixelBox | None, outer: PixelBox | None) -> bool:
    """Whether box ``inner`` lies inside box ``outer`` (unknown boxes: the whole chunk)."""
    if outer is None:
        return True
    if inner is None:
        return False
    r, c, h, w = inner
    ro, co, ho, wo = outer
    return ro <= r and co <= c and r + h <= ro + ho and c + w <= co + wo


@lru_cache(maxsize=1)
def _read_pool() -> ThreadPoolExecutor:
    """The process's threads for reads started ahead (they wait on the network, not the CPU)."""
    return ThreadPoolExecutor(max_workers=default_concurrency(), thread_name_prefix="mosaic-read-ahead")


def _physical(values: np.ndarray, to_physical: tuple[float, float] | None) -> np.ndarray:
    """Stored values (float, NaN for no data) in physical units, when the read says how."""
    if to_physical is None:
        return values
    scale, offset = to_physical
    return values * scale + offset


def _report_to_cluster(lines: list[str]) -> None:
    """On a dask.distributed worker, also log failed reads as cluster events.

    A worker's warnings do not reach the client; ``Client.get_events("mosaic-failed-reads")`` does.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    for line in lines:
        worker.log_event("mosaic-failed-reads", line)


class _Blocks(LazyBlocks):
    """The graph of one band: a task per chunk with reads, an alias of a shared constant for the rest.

    The aliases are made when asked for, not stored: the graph holds what the plan's tasks hold, so
    a vast lazy grid that few scenes touch costs memory for those tasks only. (A computation that needs
    every key still lists them all.) One constant task per chunk shape, ``(<name>-fill, h, w)``, exists
    where some chunk of that shape has no task; its value is ``np.full((1, h, w), fill, dtype)``.
    """

    def __init__(
        self,
        name: str,
        tasks: dict[Any, Any],
        times: int,
        ychunks: tuple[int, ...],
        xchunks: tuple[int, ...],
        fill: tuple[Any, Any, Any],
    ):
        super().__init__(name, times, len(ychunks), len(xchunks))
        self._tasks, self._ychunks, self._xchunks = tasks, ychunks, xchunks
        full, value, dtype = fill
        rows, cols = Counter(ychunks), Counter(xchunks)  # chunk sizes: at most two values each
        counts = {(h, w): times * nh * nw for h, nh in rows.items() for w, nw in cols.items()}
        for _, _, iy, ix in tasks:
            counts[(ychunks[iy], xchunks[ix])] -= 1
        self._fills = {
            (f"{name}-fill", h, w): (full, (1, h, w), value, dtype) for (h, w), n in counts.items() if n > 0
        }

    def __getitem__(self, key: Any) -> Any:
        task = self._tasks.get(key)
        if task is not None:
            return task
        fill = self._fills.get(key)
        if fill is not None:
            return fill
        _, iy, ix = self._chunk(key)  # an empty chunk: an alias of its shape's constant block
        return (f"{self._name}-fill", self._ychunks[iy], self._xchunks[ix])

    def __iter__(self) -> Iterator[Any]:
        yield from self._tasks
        yield from self._fills
        yield from (key for key in self._grid_keys() if key not in self._tasks)

    def __len__(self) -> int:
        return self._times * self._ny * self._nx + len(self._fills)


def band_array(
    plan: Plan, band: BandSpec, failures: str = "", *, plan_token: str | None = None, mask_as: str = "nodata"
) -> da.Array:
    """The lazy (time, y, x) dask array of one output band (failed reads logged under ``failures``).

    ``plan_token`` is ``dask.base.tokenize(plan)`` when the caller has it: a plan of many bands is then
    hashed once, not once per band.
    """
    name = f"mosaic-{band.name}-{tokenize(plan_token or plan, band.name)}"
    ctx = ChunkContext(
        crs=cast("CRS", plan.geobox.crs).to_wkt(),
        method=plan.method,
        resampling=band.resampling,
        band=band,
        on_error=plan.on_error,
        max_concurrency=plan.max_concurrency,
        gdal_options=plan.gdal_options,
        native=band.native and plan.method in ("first", "last") and band.resampling == "nearest",
        auth=plan.auth,
        failures=failures,
        clip=plan.clip,
        mask=plan.mask,
        mask_as=mask_as,
    )
    ny, nx = plan.geobox.shape
    cy, cx = plan.chunks
    gy, gx = plan.chunk_grid
    ychunks = tuple(min(cy, ny - i * cy) for i in range(gy))
    xchunks = tuple(min(cx, nx - i * cx) for i in range(gx))
    tasks: dict[Any, Any] = {}
    for task in plan.tasks:
        if task.band != band.name:
            continue
        gbox = plan.chunk_geobox(task.iy, task.ix)
        shape = (ychunks[task.iy], xchunks[task.ix])
        tasks[(name, task.time, task.iy, task.ix)] = (load_chunk, task, ctx, tuple(gbox.affine)[:6], shape)
    fill_value = band.nodata if band.nodata is not None else 0
    dsk = _Blocks(name, tasks, len(plan.times), ychunks, xchunks, (np.full, fill_value, band.dtype))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(  # type: ignore[no-untyped-call]  # dask's Array.__new__ is unannotated
        graph, name, chunks=((1,) * len(plan.times), ychunks, xchunks), dtype=band.dtype
    )
