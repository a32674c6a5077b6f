"""Running a regrid's regions: per-region graphs cut from a lazy mosaic, run in bounded batches.

:class:`Blocks` cuts the dask graph of :func:`mosaic.api.to_dataset` per output region (the region's
read tasks and the constant blocks they alias); :func:`execute` runs one small graph per region, a
bounded batch at a time on dask's threaded scheduler or as a sliding window on a
``dask.distributed`` client, calling back in the calling thread as each region finishes. Nothing
here knows about Zarr or GeoTIFF: :mod:`mosaic.outputs.batch` adds each region's final task.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dask.core import get_dependencies

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Blocks", "RegionLike", "execute", "progress_bar"]


class RegionLike(Protocol):
    """What the runner needs of a region: its chunk (iy, ix) and its time steps [t0, t1)."""

    @property
    def iy(self) -> int: ...
    @property
    def ix(self) -> int: ...
    @property
    def t0(self) -> int: ...
    @property
    def t1(self) -> int: ...


R = TypeVar("R", bound=RegionLike)


class Blocks:
    """The read graphs of a lazy mosaic's bands, cut per region.

    Built once from the dataset's dask arrays (the collection protocol: ``__dask_graph__`` and
    ``__dask_keys__``); :meth:`subgraph` returns only the tasks one region needs, so each batch
    submits a graph the size of its regions, not of the whole output.
    """

    def __init__(self, ds: xr.Dataset, names: Sequence[str]):
        self._names = list(names)
        self._graph: dict[Any, Any] = {}
        self._keys: dict[str, Any] = {}
        for name in self._names:
            array = ds[name].data
            self._graph.update(dict(array.__dask_graph__()))
            self._keys[name] = array.__dask_keys__()  # nested lists [time][y][x]

    def keys(self, region: R) -> list[list[Any]]:
        """Per band, the keys of the region's (1, y, x) blocks in time order."""
        return [
            [self._keys[name][t][region.iy][region.ix] for t in range(region.t0, region.t1)]
            for name in self._names
        ]

    def subgraph(self, region: R) -> dict[Any, Any]:
        """The tasks computing the region's blocks, with no key shared with another region's graph.

        The graph aliases every empty block of one shape to one shared constant task; here an alias
        gets a copy of that task instead, so graphs of regions in flight at once never share a key
        (dask.distributed can wait forever on a shared key released by one graph as another arrives).
        """
        out: dict[Any, Any] = {}
        stack = [key for band in self.keys(region) for key in band]
        while stack:
            key = stack.pop()
            if key in out:
                continue
            task = self._graph[key]
            target = self._graph.get(task) if _is_key(task) else None
            if target is not None and not get_dependencies(self._graph, task=target):
                out[key] = target  # the constant block's own task, under this block's key
                continue
            out[key] = task
            stack.extend(get_dependencies(self._graph, key))
        return out


def _is_key(value: Any) -> bool:
    """A dask key of a chunk (a tuple starting with the array's name) rather than a task tuple."""
    return isinstance(value, tuple) and bool(value) and isinstance(value[0], str)


# ============================================================================================ running


def execute(
    todo: Iterable[R],
    graph: Callable[[R], tuple[dict[Any, Any], Any]],
    client: Any,
    batch_size: int | None,
    on_done: Callable[[R, Any], None],
) -> int:
    """Compute each region's graph, ``batch_size`` regions at a time; ``on_done`` per region; the count."""
    client = client if client is not None else _current_client()
    if client is None:
        size = batch_size or max(8, 4 * (os.cpu_count() or 2))
        return _execute_threads(iter(todo), graph, size, on_done)
    threads = sum(client.nthreads().values()) or 1
    return _execute_distributed(iter(todo), graph, client, batch_size or max(8, 4 * threads), on_done)


def _execute_threads(
    todo: Iterator[R],
    graph: Callable[[R], tuple[dict[Any, Any], Any]],
    batch_size: int,
    on_done: Callable[[R, Any], None],
) -> int:
    """Dask's threaded scheduler, one bounded batch of regions at a time.

    The threads are this call's own, and it returns (or raises) only once none of them runs a task:
    when a region fails, tasks already running finish before the error reaches the caller, so
    nothing of this run writes after the caller released the output (dask's shared pool would let
    them run on).
    """
    import dask
    import dask.threaded
    from dask.system import CPU_COUNT

    configured = dask.config.get("pool", None)
    threads = getattr(configured, "_max_workers", None) or dask.config.get("num_workers", None) or CPU_COUNT
    pool = ThreadPoolExecutor(int(threads), thread_name_prefix="mosaic-regrid")
    count = 0
    try:
        while batch := list(islice(todo, batch_size)):
            dsk: dict[Any, Any] = {}
            finals: dict[Any, R] = {}
            for region in batch:
                sub, key = graph(region)
                dsk.update(sub)
                finals[key] = region

            # dask's callback tuple: (start, start_state, pretask, posttask, finish); posttask runs here
            callback = (None, None, None, _posttask(finals, on_done), None)
            dask.threaded.get(dsk, list(finals), callbacks=[callback], pool=pool)
            count += len(batch)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return count


def _posttask(finals: Mapping[Any, R], on_done: Callable[[R, Any], None]) -> Callable[..., None]:
    """A dask posttask callback calling ``on_done`` when a region's final task is done."""

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        region = finals.get(key)
        if region is not None:
            on_done(region, result)

    return posttask


def _execute_distributed(
    todo: Iterator[R],
    graph: Callable[[R], tuple[dict[Any, Any], Any]],
    client: Any,
    window: int,
    on_done: Callable[[R, Any], None],
) -> int:
    """A dask.distributed client: a sliding window of ``window`` regions in flight."""
    from distributed import as_completed

    pending: dict[Any, R] = {}
    count = 0

    def submit(region: R) -> Any:
        dsk, key = graph(region)
        future = client.get(dsk, [key], sync=False)[0]
        pending[future] = region
        return future

    running = as_completed([submit(r) for r in islice(todo, window)])  # type: ignore[no-untyped-call]
    try:
        for future in running:
            region = pending.pop(future)
            on_done(region, future.result())  # raises the task's error, if any
            count += 1
            following = next(todo, None)
            if following is not None:
                running.add(submit(following))  # type: ignore[no-untyped-call]
    except BaseException:
        client.cancel(list(pending))
        raise
    return count


def _current_client() -> Any:
    """The current dask.distributed client, if this process has one (without importing distributed)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()  # type: ignore[no-untyped-call]
    except ValueError:
        return None


@contextlib.contextmanager
def progress_bar(total: int, initial: int, name: str, show: bool | None) -> Iterator[Any]:
    """A tqdm bar of regions on stderr (shown by default only when stderr is a terminal)."""
    from mosaic._progress import tqdm_class

    tqdm = tqdm_class()

    if show is None:
        show = sys.stderr.isatty()
    with tqdm(
        total=total, initial=initial, unit="region", desc=name, disable=not show, file=sys.stderr
    ) as bar:
        yield bar
