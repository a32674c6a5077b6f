"""Batch regridding: write a mosaic to Zarr region by region (resumable), or to a Cloud-Optimized GeoTIFF.

A *region* is one Zarr chunk of every band: ``time`` chunk steps by one chunk of the plan. The plan's
spatial chunks are the Zarr chunks, so each region is written by exactly one task and no two tasks
write one Zarr chunk. With a time chunk above 1 a region spans several time groups; each group is
still planned and read per region (one read task per band, time step and chunk, as :func:`mosaic.load`).

A Zarr regrid (:func:`write_zarr`):

1. fingerprints the plan and the store layout (time chunk, Zarr format, mosaic version);
2. takes the output's lease (``<store>.mosaic-lock`` beside the store, :mod:`mosaic.outputs._lease`): one
   writer per store; a live holder makes this run fail, a dead one's lease is taken over;
3. creates the store (xarray ``to_zarr(compute=False)``: metadata, coordinates, the ``spatial_ref``
   grid mapping and a record of the request in the attributes, ``regrid_status`` "incomplete"),
   flushes it to the disk, then writes ``.mosaic-regrid/sources.json`` (the identity of each file the
   plan reads) and ``.mosaic-regrid/request.json``; an existing store must carry the same fingerprint
   (:func:`_check_same_request`), and its files the identities recorded (:mod:`mosaic.io.identity`);
4. skips regions already marked done (``.mosaic-regrid/done/<t>.<y>.<x>``) and regions no scene
   touches (Zarr reads a chunk never written as its fill value, which is the band's nodata);
5. runs the rest in bounded batches, each region a small graph: its read tasks and one write task
   that writes the region's chunk of every band, flushes them to the disk and *then* writes the
   region's marker, so a region killed (or cut by a power loss) half-way has no marker and is
   written again on resume (chunk files are replaced atomically);
6. sets ``regrid_status`` to "complete" (flushed), removes ``.mosaic-regrid/`` and consolidates the
   metadata; then releases the lease.

A COG (:func:`write_cog`) is one time step: regions are written into a tiled GeoTIFF beside the
output, which GDAL's COG driver then copies (with overviews) to a temporary name, flushed to the
disk and renamed over the output; under the output's lease too.

Cutting the graph per region and running the regions is :mod:`mosaic.outputs._batch_exec`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time as _time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from dask.base import tokenize

from mosaic.api import to_dataset
from mosaic.auth import with_signer
from mosaic.errors import InvalidInputError, OutputError, RegridRecoveryWarning
from mosaic.index.geom import as_geometry
from mosaic.io import _durable
from mosaic.io.identity import check_sources, source_record
from mosaic.io.paths import redact
from mosaic.io.runtime import WARNINGS_LOCK
from mosaic.masks import MaskSpec
from mosaic.outputs._batch_exec import Blocks, execute, progress_bar
from mosaic.outputs._lease import Lease, confirm
from mosaic.planning.grid import DEFAULT_MAX_PIXELS, whole_number
from mosaic.planning.planner import Plan, make_plan

if TYPE_CHECKING:
    import xarray as xr

    from mosaic.auth import Profile
    from mosaic.types import BBox, TimeLike

__all__ = [
    "DEFAULT_CHUNKS",
    "STATE_DIR",
    "Region",
    "RegridReport",
    "output_kind",
    "regions",
    "regrid",
    "write_cog",
    "write_zarr",
]

DEFAULT_CHUNKS: Mapping[str, int] = {"time": 1, "y": 2048, "x": 2048}
"""Default output chunks ("pancakes": one time step, 2048 x 2048 pixels)."""
STATE_DIR = ".mosaic-regrid"
"""Folder inside a Zarr store holding the request (``request.json``) and one marker per finished region."""
_SOURCES = "sources.json"
"""File of the state folder recording the identities of the files the plan reads, at creation."""
_COG_SUFFIXES = (".tif", ".tiff")
_OVERVIEW_RESAMPLING = {"nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"}


# ============================================================================================ records


@dataclass(frozen=True, slots=True)
class Region:
    """One output region: time steps ``[t0, t1)`` of plan chunk ``(iy, ix)``; one Zarr chunk per band.

    Attributes:
        it: index of the time chunk.
        iy: chunk row.
        ix: chunk column.
        t0: first time step.
        t1: one past the last time step.
        rows: (start, stop) pixel rows in the output grid.
        cols: (start, stop) pixel columns in the output grid.
    """

    it: int
    iy: int
    ix: int
    t0: int
    t1: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def key(self) -> str:
        """The region's name, ``"<it>.<iy>.<ix>"`` (as the Zarr chunk key of a ``(time, y, x)`` array)."""
        return f"{self.it}.{self.iy}.{self.ix}"

    @property
    def selection(self) -> tuple[slice, slice, slice]:
        """The (time, y, x) slices of the region in the output arrays."""
        return slice(self.t0, self.t1), slice(*self.rows), slice(*self.cols)


@dataclass(frozen=True, slots=True)
class RegridReport:
    """What a regrid did.

    Attributes:
        path: the output (Zarr store or COG).
        kind: ``"zarr"`` or ``"cog"``.
        shape: output (time, y, x).
        chunks: output chunks (time, y, x): the size of one region.
        regions: regions of the output.
        empty: regions no scene touches: nothing to read (nor, in Zarr, to write).
        skipped: regions an earlier, interrupted run had finished (not computed again).
        written: regions this run read and wrote.
        seconds: wall time of the run.
        peak_rss_bytes: peak resident memory of this process so far (dask.distributed workers not
            included).
        fingerprint: identifies the plan and the store layout; a resumed run must have the same.
        zarr_format: 2 or 3 for Zarr, None for a COG.
    """

    path: str
    kind: Literal["zarr", "cog"]
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]
    regions: int
    empty: int
    skipped: int
    written: int
    seconds: float
    peak_rss_bytes: int
    fingerprint: str
    zarr_format: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "path": self.path,
            "kind": self.kind,
            "zarr_format": self.zarr_format,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "regions": self.regions,
            "empty": self.empty,
            "skipped": self.skipped,
            "written": self.written,
            "seconds": round(self.seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "fingerprint": self.fingerprint,
        }

    def format(self) -> str:
        """One line for people: what was written, how many regions, how long, how much memory."""
        what = f"Zarr v{self.zarr_format}" if self.kind == "zarr" else "COG"
        t, y, x = self.shape
        ct, cy, cx = self.chunks
        return (
            f"wrote {self.path} ({what}, {t} x {y} x {x} in regions of {ct} x {cy} x {cx}): "
            f"{self.regions} regions, {self.written} written, {self.skipped} already done, "
            f"{self.empty} empty; {self.seconds:.1f} s, peak memory {self.peak_rss_bytes / 2**20:.0f} MiB"
        )


@dataclass(frozen=True, slots=True)
class _ZarrTarget:
    """What a write task needs to find the store: picklable, so it reaches dask.distributed workers.

    ``lease_url`` and ``lease_token`` name the lease of the run that made the task: the task writes
    only while that run still holds it (:func:`mosaic.outputs._lease.confirm`).
    """

    url: str
    zarr_format: Literal[2, 3]
    names: tuple[str, ...]
    fingerprint: str
    lease_url: str | None = None
    lease_token: str | None = None


# ============================================================================================ public API


def output_kind(path: str | os.PathLike[str]) -> Literal["zarr", "cog"]:
    """``"cog"`` for a ``.tif``/``.tiff`` path, else ``"zarr"``."""
    return "cog" if str(path).lower().endswith(_COG_SUFFIXES) else "zarr"


def regrid(
    path: str | os.PathLike[str],
    bbox: BBox | Sequence[float] | None = None,
    crs: Any = None,
    time: TimeLike = None,
    *,
    index: Any = None,
    resolution: float | tuple[float, float] | None = None,
    bbox_crs: Any = "EPSG:4326",
    geopolygon: Any = None,
    clip: bool = False,
    anchor: Any = None,
    bands: Sequence[str] | str | None = None,
    groupby: str | None = "solar_day",
    method: str = "first",
    resampling: str | Any | Mapping[str, Any] = "nearest",
    dtype: Any = None,
    nodata: Any = None,
    src_nodata: float | Mapping[str, float] | None = None,
    chunks: int | tuple[int, int] | Mapping[str, int] | None = None,
    zarr_format: int = 3,
    overwrite: bool = False,
    client: Any = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    max_concurrency: int | None = None,
    gdal_options: Mapping[str, Any] | None = None,
    auth: Profile | Sequence[Profile] | None = None,
    max_pixels: float | None = DEFAULT_MAX_PIXELS,
    mask: MaskSpec | str | None = None,
    sign: Callable[[str], str] | None = None,
    filter: Any = None,
    sortby: Any = None,
) -> RegridReport:
    """Plan a mosaic and write it to a Zarr store (resumable) or, for a ``.tif`` path, a COG.

    Running the same call again after an interruption finishes the job without recomputing the
    regions already written; the result is the same as an uninterrupted run. One process writes an
    output at a time: the run holds a lease (``<path>.mosaic-lock``, beside the output), and another
    run on the same output raises :class:`~mosaic.errors.OutputLockedError` naming it; the lease of
    a process that died is taken over, with a :class:`~mosaic.errors.RegridRecoveryWarning`.

    Args:
        path: the output: a Zarr store (a local path or an fsspec URL), or a ``.tif``/``.tiff`` file
            for a Cloud-Optimized GeoTIFF of a single time step.
        bbox: (minx, miny, maxx, maxy) in ``bbox_crs``, as :func:`mosaic.load`.
        crs: target CRS, or ``"utm"``.
        time: a date, partial date, ``"start/end"`` or a pair.
        index: a TileIndex, or the path of a saved index (recorded as an absolute path).
        resolution: pixel size in target CRS units.
        bbox_crs: CRS of ``bbox``.
        geopolygon: the area as a polygon instead of a bbox, as :func:`mosaic.load`.
        clip: set pixels outside ``geopolygon`` to nodata, as :func:`mosaic.load`.
        anchor: pixel alignment of the grid, as :func:`mosaic.load`.
        bands: variables to write (default: all).
        groupby: time grouping, as :func:`mosaic.load` (None: one layer for the whole period).
        method: fusion method name.
        resampling: warp kernel, or a mapping per band, as :func:`mosaic.load`.
        dtype: output dtype (one, or per band).
        nodata: output nodata (one, or per band).
        src_nodata: the source files' nodata where they do not declare it, as :func:`mosaic.load`.
        chunks: output chunks: an int or (y, x) in pixels, or a mapping with ``time``, ``y``, ``x``
            (default ``{"time": 1, "y": 2048, "x": 2048}``); the plan's chunks are the Zarr chunks.
        zarr_format: 3 (default) or 2.
        overwrite: replace an existing output instead of resuming it (Zarr) or refusing (COG).
        client: a ``dask.distributed.Client`` to run on; default: the current client if there is
            one, else dask's threaded scheduler in this process.
        batch_size: regions in flight at once (default: a few per thread); bounds memory and graph size.
        progress: show a progress bar on stderr (default: when stderr is a terminal).
        max_concurrency: bound on simultaneous reads per process.
        gdal_options: GDAL configuration options entered inside every read task.
        auth: credential profiles matched by href prefix.
        sign: a callable from href to signed href, called at read time (as in :func:`mosaic.load`).
        max_pixels: the largest output grid (height x width), as :func:`mosaic.load`; None: no check.
        mask: a quality mask applied to each scene before fusion, as :func:`mosaic.load` (a spec, a
            preset name or an expression; recorded in the request, so a resume must give the same).
        filter: only the scenes for which this CQL2 filter is true, as :func:`mosaic.load`.
        sortby: the order ``first``/``last`` take scenes in, as :func:`mosaic.load`.

    Returns:
        A :class:`RegridReport`.

    Raises:
        InvalidInputError: bad arguments; an existing store written by another request (pass
            ``overwrite=True``); several time steps for a COG.
        ChangedSourcesError: resuming a store whose source files changed since they were indexed or
            the store was created (pass ``overwrite=True``, after rebuilding the index).
        OutputLockedError: another live process writes the same output.
    """
    layout = _chunk_layout(chunks)
    if zarr_format not in (2, 3):
        raise InvalidInputError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    _check_batch_size(batch_size)  # before planning; write_zarr and write_cog check it too
    index = _absolute_index(index)
    the_plan = make_plan(
        bbox,
        crs,
        time,
        index=index,
        resolution=resolution,
        bbox_crs=bbox_crs,
        geopolygon=geopolygon,
        clip=clip,
        anchor=anchor,
        bands=bands,
        groupby=groupby,
        method=method,
        resampling=resampling,
        dtype=dtype,
        nodata=nodata,
        src_nodata=src_nodata,
        chunks=(layout["y"], layout["x"]),
        max_concurrency=max_concurrency,
        gdal_options=gdal_options,
        auth=with_signer(auth, sign),
        max_pixels=max_pixels,
        mask=mask,
        filter=filter,
        sortby=sortby,
    )
    request = {
        "index": redact(the_plan.index_source) if the_plan.index_source else "in-memory TileIndex",
        "bbox": None if bbox is None else [float(v) for v in bbox],
        "bbox_crs": str(bbox_crs),
        "geopolygon": None if geopolygon is None else as_geometry(geopolygon, bbox_crs)[0].wkt,
        "clip": clip,
        "anchor": anchor if anchor is None or isinstance(anchor, str) else [float(v) for v in anchor],
        "crs": str(crs),
        "resolution": resolution if not isinstance(resolution, tuple) else list(resolution),
        "time": time,
        "bands": [bands] if isinstance(bands, str) else (None if bands is None else list(bands)),
        "groupby": groupby,
        "method": method,
        "resampling": resampling,
        "dtype": dtype,
        "nodata": nodata,
        "src_nodata": src_nodata,
        "chunks": dict(layout),
    }
    if the_plan.mask is not None:  # (only then: requests recorded before masks existed stay the same)
        request["mask"] = repr(the_plan.mask)
    if the_plan.filter is not None:  # recorded only when given: stores of earlier requests resume as before
        request["filter"] = the_plan.filter
    if the_plan.sortby:
        request["sortby"] = [f"{'-' if desc else ''}{name}" for name, desc in the_plan.sortby]
    common = dict(request=request, client=client, batch_size=batch_size, progress=progress)
    if output_kind(path) == "cog":
        return write_cog(the_plan, path, overwrite=overwrite, **common)
    request["zarr_format"] = zarr_format
    return write_zarr(
        the_plan, path, time_chunk=layout["time"], zarr_format=zarr_format, overwrite=overwrite, **common
    )


def regions(plan: Plan, time_chunk: int = 1) -> Iterator[Region]:
    """The output regions of ``plan`` in (time, y, x) order, ``time_chunk`` time steps each."""
    nt = len(plan.times)
    gy, gx = plan.chunk_grid
    for it in range(math.ceil(nt / time_chunk) if nt else 0):
        t0, t1 = it * time_chunk, min((it + 1) * time_chunk, nt)
        for iy in range(gy):
            for ix in range(gx):
                rows, cols = plan.chunk_slices(iy, ix)
                yield Region(it, iy, ix, t0, t1, (rows.start, rows.stop), (cols.start, cols.stop))


def _check_batch_size(batch_size: int | None) -> None:
    """Refuse a ``batch_size`` that is not a whole number of regions, 1 or more (``None``: the default)."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidInputError(
            f"batch_size must be a whole number of regions, 1 or more, got {batch_size!r}"
        )


def write_zarr(
    plan: Plan,
    path: str | os.PathLike[str],
    *,
    time_chunk: int = 1,
    zarr_format: int = 3,
    overwrite: bool = False,
    request: Mapping[str, Any] | None = None,
    client: Any = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> RegridReport:
    """Execute ``plan`` into a Zarr store, region by region, resuming a store this plan began.

    Args:
        plan: the plan (:func:`mosaic.plan`); its chunks become the Zarr y/x chunks.
        path: the store: a local path or an fsspec URL the workers can reach.
        time_chunk: time steps per Zarr chunk (capped at the number of time steps).
        zarr_format: 3 (default) or 2.
        overwrite: delete an existing store first instead of resuming it.
        request: the inputs to record in the store's attributes (``regrid_request``).
        client: a ``dask.distributed.Client``; default: the current one, else threads.
        batch_size: regions in flight at once.
        progress: progress bar on stderr (default: when stderr is a terminal).

    Returns:
        A :class:`RegridReport`.

    Raises:
        InvalidInputError: the store exists and was written by a different plan or layout (pass
            ``overwrite=True``), or exists and is not a Zarr store this function wrote.
        ChangedSourcesError: the store is being resumed and a file the plan reads changed since it
            was indexed or the store was created.
        OutputLockedError: another live process writes this store (it holds the store's lease), or
            took the lease over while this one ran.
    """
    started = _time.perf_counter()
    if zarr_format not in (2, 3):
        raise InvalidInputError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if time_chunk < 1:
        raise InvalidInputError(f"the time chunk must be at least 1, got {time_chunk}")
    _check_batch_size(batch_size)
    nt = len(plan.times)
    if not plan.bands or nt == 0:
        raise InvalidInputError("the plan has no band or no time step: there is nothing to write")
    time_chunk = min(time_chunk, nt)
    url = _store_url(path)
    from mosaic import __version__

    fingerprint = _fingerprint(plan, "zarr", time_chunk, zarr_format, __version__)
    record = {**(request or {}), "mosaic_version": __version__}
    ds = to_dataset(plan)
    fmt: Literal[2, 3] = 3 if zarr_format == 3 else 2
    with Lease(url) as lease:  # before anything is read or deleted; released at the end and on errors
        target = _ZarrTarget(url, fmt, tuple(b.name for b in plan.bands), fingerprint, lease.url, lease.token)
        done = _open_store(ds, plan, target, time_chunk, record, overwrite)

        # a region no scene touches reads as the fill value (= nodata) without being written, unless
        # a Zarr v2 band has no nodata (its fill value would be null)
        skip_empty = zarr_format == 3 or all(b.nodata is not None for b in plan.bands)
        occupied = {(task.time // time_chunk, task.iy, task.ix) for task in plan.tasks}
        gy, gx = plan.chunk_grid
        total = math.ceil(nt / time_chunk) * gy * gx
        empty = total - len(occupied) if skip_empty else 0
        skipped = total - empty if done is None else len(done)

        finished = done or set()

        def todo() -> Iterator[Region]:
            for region in regions(plan, time_chunk) if done is not None else ():
                nothing = skip_empty and (region.it, region.iy, region.ix) not in occupied
                if not nothing and region.key not in finished:
                    yield region

        blocks = Blocks(ds, target.names)
        prefix = f"mosaic-regrid-{fingerprint[:16]}"

        def graph(region: Region) -> tuple[dict[Any, Any], Any]:
            key = (prefix, region.it, region.iy, region.ix)
            dsk = blocks.subgraph(region)
            dsk[key] = (_write_region, target, region, blocks.keys(region))
            return dsk, key

        def on_done(region: Region, result: Any) -> None:
            lease.check()  # stop at once if another writer took the store over
            bar.update(1)

        with progress_bar(total - empty, skipped, Path(url).name, progress) as bar:
            written = execute(todo(), graph, client, batch_size, on_done)
        lease.verify()  # the finish step deletes the resume state: only the store's writer may
        _finish_store(target)
    return RegridReport(
        path=str(path),
        kind="zarr",
        shape=(nt, *plan.geobox.shape),
        chunks=(time_chunk, *plan.chunks),
        regions=total,
        empty=empty,
        skipped=skipped,
        written=written,
        seconds=_time.perf_counter() - started,
        peak_rss_bytes=_peak_rss(),
        fingerprint=fingerprint,
        zarr_format=zarr_format,
    )


def write_cog(
    plan: Plan,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    request: Mapping[str, Any] | None = None,
    client: Any = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    blocksize: int = 512,
) -> RegridReport:
    """Execute a single-time-step ``plan`` into a Cloud-Optimized GeoTIFF (one band per variable).

    Regions are computed in bounded batches and written into a tiled GeoTIFF beside ``path``; GDAL's
    COG driver then copies it, with overviews, to a temporary name that replaces ``path`` at the end,
    so ``path`` never holds a partial file.

    Args:
        plan: the plan; it must have exactly one time step.
        path: the ``.tif`` to write (local).
        overwrite: replace an existing file.
        request: the inputs to record in the file's metadata (``regrid_request``).
        client: a ``dask.distributed.Client``; default: the current one, else threads.
        batch_size: regions in flight at once.
        progress: progress bar on stderr (default: when stderr is a terminal).
        blocksize: COG tile size in pixels.

    Returns:
        A :class:`RegridReport`.

    Raises:
        InvalidInputError: several time steps; bands whose nodata differ (a GeoTIFF has one); an
            existing file without ``overwrite``.
        OutputLockedError: another live process writes the same file (it holds its lease).
    """
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    started = _time.perf_counter()
    out = Path(path)
    if len(plan.times) != 1:
        raise InvalidInputError(
            f"a COG holds one time step, but the request has {len(plan.times)} "
            f"({', '.join(plan.groups[:5])}{', ...' if len(plan.groups) > 5 else ''}); narrow --time, "
            "fuse them with --groupby none, or write Zarr (-o OUT.zarr)"
        )
    if not plan.bands:
        raise InvalidInputError("the plan has no band: there is nothing to write")
    _check_batch_size(batch_size)
    if out.exists() and not overwrite:
        raise InvalidInputError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    dtype = np.result_type(*(np.dtype(b.dtype) for b in plan.bands))
    nodatas = {"nan" if b.nodata is not None and math.isnan(b.nodata) else b.nodata for b in plan.bands}
    if len(nodatas) > 1:
        listing = ", ".join(f"{b.name}: {b.nodata}" for b in plan.bands)
        raise InvalidInputError(
            f"a GeoTIFF has one nodata value for all bands, but these differ ({listing}); write the "
            "bands one at a time (--bands), give them one with --nodata and --dtype, or write Zarr"
        )
    nodata = plan.bands[0].nodata
    from mosaic import __version__

    fingerprint = _fingerprint(plan, "cog", 1, 0, __version__)
    record = {**(request or {}), "mosaic_version": __version__}
    blocks = Blocks(to_dataset(plan), [b.name for b in plan.bands])
    occupied = {(task.iy, task.ix) for task in plan.tasks}
    gy, gx = plan.chunk_grid
    ny, nx = plan.geobox.shape
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError.at(out, "the COG", exc) from exc
    staging = out.with_name(f"{out.name}.partial.tif")
    final = out.with_name(f"{out.name}.cog-tmp.tif")
    profile: dict[str, Any] = dict(
        driver="GTiff",
        width=nx,
        height=ny,
        count=len(plan.bands),
        dtype=dtype.name,
        crs=_crs_wkt(plan),
        transform=plan.geobox.affine,
        nodata=nodata,
        tiled=True,
        blockxsize=blocksize,
        blockysize=blocksize,
        BIGTIFF="IF_SAFER",
    )

    def graph(region: Region) -> tuple[dict[Any, Any], Any]:
        key = (f"mosaic-cog-{fingerprint[:16]}", region.iy, region.ix)
        dsk = blocks.subgraph(region)
        dsk[key] = (_stack_region, blocks.keys(region))
        return dsk, key

    # one writer per file (so the staging names can be fixed: a rerun replaces what a killed run left)
    lease = Lease(str(out.resolve())).acquire()
    try:
        if out.exists() and not overwrite:  # written by a run that ended since the check above
            raise InvalidInputError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
        with (
            rasterio.open(staging, "w", **profile) as dst,
            progress_bar(len(occupied), 0, out.name, progress) as bar,
        ):

            def put(region: Region, result: Sequence[np.ndarray]) -> None:
                window = Window.from_slices(slice(*region.rows), slice(*region.cols))
                for i, block in enumerate(result, start=1):
                    dst.write(block[0].astype(dtype, copy=False), i, window=window)
                bar.update(1)

            # blocks never written (regions no scene touches) get the nodata value (or 0) when GDAL
            # closes the file
            touched = (r for r in regions(plan) if (r.iy, r.ix) in occupied)
            execute(touched, graph, client, batch_size, put)
            dst.descriptions = tuple(b.name for b in plan.bands)
            dst.update_tags(
                regrid_request=json.dumps(record, default=str),
                regrid_fingerprint=fingerprint,
                mosaic_version=__version__,
                time=str(plan.times[0]),
            )
        kernel = plan.bands[0].resampling if plan.bands else "nearest"
        resampling = kernel if kernel in _OVERVIEW_RESAMPLING else "nearest"
        rasterio.shutil.copy(
            staging,
            final,
            driver="COG",
            COMPRESS="DEFLATE",
            PREDICTOR="YES",
            BLOCKSIZE=blocksize,
            OVERVIEW_RESAMPLING=resampling.upper(),
            BIGTIFF="IF_SAFER",
        )
        lease.verify()
        _durable.replace(final, out)  # flushed, renamed: the output is the old file or the whole new one
    finally:
        for leftover in (staging, final):
            leftover.unlink(missing_ok=True)
        lease.release(quiet=sys.exc_info()[1] is not None)
    return RegridReport(
        path=str(path),
        kind="cog",
        shape=(1, ny, nx),
        chunks=(1, *plan.chunks),
        regions=gy * gx,
        empty=gy * gx - len(occupied),
        skipped=0,
        written=len(occupied),
        seconds=_time.perf_counter() - started,
        peak_rss_bytes=_peak_rss(),
        fingerprint=fingerprint,
    )


# ============================================================================================ tasks


def _write_region(target: _ZarrTarget, region: Region, blocks: list[list[np.ndarray]]) -> str:
    """Write one region's chunk of every band, flush them, then its marker (the order resuming relies on).

    Only while the run that made the task holds the store's lease: a task of a run that lost it (or
    whose client died, on a cluster) stops before writing chunks or the marker.
    """
    import zarr

    _confirm_lease(target)
    group = zarr.open_group(target.url, mode="r+", zarr_format=target.zarr_format, use_consolidated=False)
    fs, root = _filesystem(target.url)
    chunks = []
    for name, parts in zip(target.names, blocks, strict=True):
        array = group[name]
        if not isinstance(array, zarr.Array):
            raise InvalidInputError(f"{target.url}: {name!r} is not an array")
        array[region.selection] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        key = array.metadata.encode_chunk_key((region.it, region.iy, region.ix))
        chunks.append(f"{root}/{name}/{key}")
    if _is_local(fs):  # the chunks on the disk before the marker says they are (a PUT is durable)
        _durable.fsync_paths(chunks, root)
    _confirm_lease(target)
    marker = json.dumps({"region": region.key, "fingerprint": target.fingerprint}).encode()
    _atomic_put(fs, f"{root}/{STATE_DIR}/done/{region.key}", marker)
    return region.key


def _confirm_lease(target: _ZarrTarget) -> None:
    if target.lease_url is not None and target.lease_token is not None:
        confirm(target.lease_url, target.lease_token, target.url)


def _stack_region(blocks: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The (time, y, x) block of every band of one region (for the COG writer)."""
    return [parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0) for parts in blocks]


# ============================================================================================ store


@dataclass(frozen=True, slots=True)
class _Recorded:
    """What an existing store records about the runs that wrote it.

    Attributes:
        attrs: the root group's attributes (``regrid_fingerprint``, ``regrid_request``,
            ``regrid_status``...); None if the folder holds no Zarr group (yet, or any more).
        state: whether the folder has a ``.mosaic-regrid/`` folder (made before anything else of a
            store is created or deleted, removed once it is complete).
        started: the fingerprint in ``.mosaic-regrid/started.json``: present while a run creates or
            replaces the store (written first, deleted once ``request.json`` is written); None if not.
        request: ``.mosaic-regrid/request.json`` (``fingerprint``, ``request``), written once the
            store is created; None if missing or unreadable.
        done: the regions with a marker in ``.mosaic-regrid/done/``; None if that folder is missing.
    """

    attrs: dict[str, Any] | None
    state: bool
    started: str | None
    request: dict[str, Any] | None
    done: frozenset[str] | None

    @property
    def ours(self) -> bool:
        """Whether a regrid wrote this folder (its attributes say so, or it has a resume state)."""
        return bool(self.attrs and "regrid_fingerprint" in self.attrs) or self.state

    def created_by(self, fingerprint: str) -> bool:
        """Whether the run of ``fingerprint`` created this store completely (and it can be resumed)."""
        return (
            self.attrs is not None
            and self.attrs.get("regrid_fingerprint") == fingerprint
            and self.request is not None
            and self.request.get("fingerprint") == fingerprint
        )


def _read_recorded(fs: Any, root: str, url: str) -> _Recorded:
    """The attributes and resume state of the store at ``root``."""
    state = f"{root}/{STATE_DIR}"

    def read(name: str) -> dict[str, Any] | None:
        try:
            return _json_object(fs.cat_file(f"{state}/{name}").decode()) or None
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    started = read("started.json")
    done: frozenset[str] | None = None
    if fs.isdir(f"{state}/done"):
        names = (str(name).rsplit("/", 1)[-1] for name in fs.ls(f"{state}/done", detail=False))
        done = frozenset(name for name in names if not _is_temporary(name))
    fingerprint = None if started is None else str(started.get("fingerprint"))
    return _Recorded(_stored_attrs(url), fs.isdir(state), fingerprint, read("request.json"), done)


def _check_same_request(target: _ZarrTarget, recorded: _Recorded, record: Mapping[str, Any]) -> None:
    """The one place a store's record is compared with this request; raise if it is another request's.

    Args:
        target: this run's store, fingerprint included.
        recorded: what the store holds (:func:`_read_recorded`).
        record: this run's request, as it would be recorded.

    Raises:
        InvalidInputError: the store holds (or was being created or replaced for) a regrid of a
            different request: plan, layout or mosaic version.
    """
    attrs = recorded.attrs or {}
    fingerprint = attrs.get("regrid_fingerprint")
    creating = fingerprint is None and recorded.state  # the root group made, its attributes not yet
    if recorded.attrs is not None and fingerprint != target.fingerprint and not creating:
        raise InvalidInputError(_mismatch(target.url, _json_object(attrs.get("regrid_request")), record))
    if recorded.started is not None and recorded.started != target.fingerprint:
        raise InvalidInputError(
            f"{target.url}: a run of another request began creating or replacing this store and did not "
            "finish; rerun that command to finish it, or pass --overwrite (overwrite=True) to write this "
            "request instead"
        )


def _open_store(
    ds: xr.Dataset,
    plan: Plan,
    target: _ZarrTarget,
    time_chunk: int,
    record: Mapping[str, Any],
    overwrite: bool,
) -> set[str] | None:
    """Create the store, or check it holds this request; the regions already done (None: all of them).

    Called under the store's lease. Whatever a killed run left, this run can go on from it:

    - a store whose creation (or replacement) this request began but did not finish
      (``started.json`` is there) is cleared and created again, whatever else it holds;
    - a store marked complete is finished (the finish step is idempotent);
    - a store this request created (attributes and ``request.json`` with its fingerprint) is
      resumed: the regions with a marker are skipped; if the markers were lost
      (``.mosaic-regrid/done`` deleted), every region is written again, with a warning;
    - anything else of this request (its state deleted, say) is cleared and created again.
    """
    fs, root = _filesystem(target.url)
    if fs.exists(root):
        if not fs.isdir(root):
            raise InvalidInputError(f"{target.url} exists and is a file, not a Zarr store")
        if fs.ls(root):
            recorded = _read_recorded(fs, root, target.url)
            unknown = recorded.attrs is None and not recorded.ours  # no Zarr group, no regrid state
            if unknown and not (overwrite and _looks_like_zarr(fs, root)):
                raise InvalidInputError(
                    f"{target.url} exists and is not a Zarr store; remove it or choose another output path"
                )
            if not overwrite:
                _check_same_request(target, recorded, record)
            if not overwrite and recorded.started is None:  # no creation or replacement under way
                if (recorded.attrs or {}).get("regrid_status") == "complete":
                    return None
                if recorded.created_by(target.fingerprint) and recorded.done is not None:
                    _check_sources(fs, f"{root}/{STATE_DIR}", plan, target.url)
                    return set(recorded.done)
                if recorded.created_by(target.fingerprint):  # the markers were lost: none can be trusted
                    _warn(
                        f"{target.url}: its resume state has no region markers ({STATE_DIR}/done is "
                        "missing): every region is written again"
                    )
                    fs.makedirs(f"{root}/{STATE_DIR}/done", exist_ok=True)
                    _record_sources(fs, f"{root}/{STATE_DIR}", plan)  # what every region is written from
                    return set()
            # else: this request's store, whose creation or replacement was interrupted: again
            _clear_store(fs, root, target.fingerprint)
    _create_store(ds, plan, target, time_chunk, record)
    return set()


def _clear_store(fs: Any, root: str, fingerprint: str) -> None:
    """Delete a store's content in an order that leaves it recognisable if the deletion is killed.

    ``started.json`` (this run's fingerprint) goes first, so the folder stays a regrid's whatever is
    deleted next; then ``request.json`` and the markers (so no rerun resumes the old content); then
    everything else. A run killed here leaves a store a rerun of the same request clears again.
    """
    state = f"{root}/{STATE_DIR}"
    fs.makedirs(state, exist_ok=True)
    _atomic_put(fs, f"{state}/started.json", json.dumps({"fingerprint": fingerprint}).encode(), durable=True)
    for path in (f"{state}/request.json", f"{state}/done"):
        if fs.exists(path):
            fs.rm(path, recursive=True)
    for child in fs.ls(root, detail=False):
        if str(child).rstrip("/") != state:
            fs.rm(child, recursive=True)


def _warn(message: str) -> None:
    warnings.warn(message, RegridRecoveryWarning, stacklevel=4)


def _record_sources(fs: Any, state: str, plan: Plan) -> None:
    """Record the identity of every file the plan reads (``sources.json``), for resumes to check."""
    _atomic_put(fs, f"{state}/{_SOURCES}", source_record(plan), durable=True)


def _check_sources(fs: Any, state: str, plan: Plan, url: str) -> None:
    """Refuse to resume when a file the plan reads changed since it was indexed or the store was created.

    Each file is stat'ed once, remote ones in parallel, before any region runs; a state written by
    an older mosaic (no ``sources.json``) is not checked.

    Raises:
        ChangedSourcesError: naming the changed scenes.
    """
    if fs.exists(f"{state}/{_SOURCES}"):
        check_sources(plan, fs.cat_file(f"{state}/{_SOURCES}"), url)


def _create_store(
    ds: xr.Dataset, plan: Plan, target: _ZarrTarget, time_chunk: int, record: Mapping[str, Any]
) -> None:
    """Metadata, coordinates and attributes; the bands' chunks are written later, region by region.

    ``.mosaic-regrid/started.json`` comes first (the folder is a regrid's, being created, from then
    on) and ``.mosaic-regrid/request.json`` last, once everything else is on the disk; then
    ``started.json`` goes: the store is created.
    """
    import dask.array as da

    fs, root = _filesystem(target.url)
    state = f"{root}/{STATE_DIR}"
    fs.makedirs(state, exist_ok=True)
    started = json.dumps({"fingerprint": target.fingerprint}).encode()
    _atomic_put(fs, f"{state}/started.json", started, durable=True)
    template = ds.copy()
    shape = (len(plan.times), *plan.geobox.shape)
    chunks = (time_chunk, *plan.chunks)
    for band in plan.bands:
        var = template[band.name]
        var = var.copy(data=da.zeros(shape, chunks=chunks, dtype=band.dtype))
        var.encoding = {**ds[band.name].encoding, "chunks": chunks}
        if target.zarr_format == 3:
            var.encoding["fill_value"] = band.nodata if band.nodata is not None else 0
        template[band.name] = var
    template.attrs = _plain_attrs(
        {
            **ds.attrs,
            **{k: v for k, v in record.items() if k in ("bbox", "bbox_crs", "crs", "resolution", "time")},
            "mosaic_version": record.get("mosaic_version"),
            "regrid_request": json.dumps(record, default=str),
            "regrid_fingerprint": target.fingerprint,
            "regrid_status": "incomplete",
        }
    )
    with WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata", category=UserWarning)
        # (zarr lists the folder's members and finds the state folder no Zarr node)
        warnings.filterwarnings("ignore", message=f"Object at {STATE_DIR} is not", category=UserWarning)
        # mode "a": into the folder as it is (cleared, with the state), where "w" would delete the state
        template.to_zarr(
            target.url, mode="a", compute=False, zarr_format=target.zarr_format, consolidated=True
        )
    fs.makedirs(f"{state}/done", exist_ok=True)
    _record_sources(fs, state, plan)  # before request.json marks the state complete
    if _is_local(fs):  # metadata and coordinates on the disk before the state says the store exists
        _durable.fsync_tree(root)
    request = json.dumps({"fingerprint": target.fingerprint, "request": record}, default=str, indent=1)
    _atomic_put(fs, f"{state}/request.json", request.encode(), durable=True)
    fs.rm_file(f"{state}/started.json")


def _finish_store(target: _ZarrTarget) -> None:
    """Mark the store complete, drop the resume state, consolidate the metadata (each step idempotent).

    Every region's chunks were flushed before its marker, and the metadata at creation, so the store
    is on the disk when "complete" is written; that attribute is flushed before the resume state goes.
    A run killed between these steps leaves a store marked complete, which a rerun finishes here.
    """
    import zarr

    fs, root = _filesystem(target.url)
    local = _is_local(fs)
    with WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata", category=UserWarning)
        group = zarr.open_group(target.url, mode="r+", zarr_format=target.zarr_format, use_consolidated=False)
        if group.attrs.get("regrid_status") != "complete":
            group.attrs["regrid_status"] = "complete"
        if local:
            _durable.fsync_paths([f"{root}/{name}" for name in _ROOT_METADATA], root)
        if fs.exists(f"{root}/{STATE_DIR}"):
            fs.rm(f"{root}/{STATE_DIR}", recursive=True)
        _remove_partial_writes(fs, root)
        zarr.consolidate_metadata(target.url, zarr_format=target.zarr_format)
        if local:
            _durable.fsync_paths([f"{root}/{name}" for name in _ROOT_METADATA], root)


_ROOT_METADATA = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")
"""The files of a Zarr store's root group (v3; v2) where its attributes and consolidated metadata live."""


_ZARR_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")
"""Name of the temporary file zarr's ``LocalStore`` writes a chunk to before renaming it."""


def _remove_partial_writes(fs: Any, root: str) -> int:
    """Delete the temporary files of chunk writes a killed run left (local stores); their number.

    zarr's ``LocalStore`` writes ``<chunk>.<uuid>.partial`` and renames it over the chunk, so a killed
    write leaves the old chunk (or none) plus this file, which no reader opens.
    """
    if not _is_local(fs):
        return 0  # object stores write each object whole
    removed = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if _ZARR_PARTIAL.search(name):
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


def _stored_attrs(url: str) -> dict[str, Any] | None:
    """The attributes of the Zarr group at ``url`` (not its consolidated copy), or None if it is none."""
    import zarr

    try:
        group = zarr.open_group(url, mode="r", use_consolidated=False)
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.BaseZarrError):
        return None
    return dict(group.attrs)


def _json_object(text: Any) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or an empty dict."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _mismatch(url: str, stored: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The error message for a store written by a different request."""
    differ = sorted(k for k in set(stored) | set(new) if stored.get(k) != _jsonable(new.get(k)))
    verb = "differs" if len(differ) == 1 else "differ"
    what = f"{', '.join(differ)} {verb}" if differ else "the index's scenes or the plan differ"
    return (
        f"{url} holds a regrid of a different request ({what}); rerun the command that made it to "
        "resume it, pass --overwrite (overwrite=True) to replace it, or choose another output path"
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _plain_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as strings, numbers and lists of them (anything else becomes JSON); no None."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, str | int | float | bool | np.number):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            out[key] = list(value)
        else:
            out[key] = json.dumps(value, default=str)
    return out


def _fingerprint(plan: Plan, kind: str, time_chunk: int, zarr_format: int, version: str) -> str:
    """Identifies what an output holds: the plan (grid, chunks, bands, reads, method), layout, version."""
    text = json.dumps([tokenize(plan), kind, time_chunk, zarr_format, version])
    return hashlib.sha256(text.encode()).hexdigest()


def _chunk_layout(chunks: int | tuple[int, int] | Mapping[str, int] | None) -> dict[str, int]:
    """``{"time", "y", "x"}`` chunk sizes from an int, a (y, x) pair or a mapping."""
    layout = dict(DEFAULT_CHUNKS)
    try:
        if chunks is None:
            pass
        elif isinstance(chunks, Mapping):
            unknown = set(chunks) - set(layout)
            if unknown:
                raise InvalidInputError(f"chunks: unknown dimension(s) {sorted(unknown)}; use time, y and x")
            layout.update({k: whole_number(v) for k, v in chunks.items()})
        elif isinstance(chunks, (str, bytes)) or not isinstance(chunks, Sequence):
            layout.update(y=whole_number(chunks), x=whole_number(chunks))
        else:
            cy, cx = chunks
            layout.update(y=whole_number(cy), x=whole_number(cx))
    except (TypeError, ValueError):
        raise InvalidInputError(
            "chunks must be a whole number of pixels, a (y, x) pair or a mapping of time, y and x; "
            f"got {chunks!r}"
        ) from None
    if any(v < 1 for v in layout.values()):
        raise InvalidInputError(f"chunks must be positive, got {layout}")
    return layout


def _absolute_index(index: Any) -> Any:
    """A local index path made absolute (so the record and the workers see the same file)."""
    if isinstance(index, str | os.PathLike) and "://" not in str(index) and Path(index).exists():
        return str(Path(index).resolve())
    return index


def _store_url(path: str | os.PathLike[str]) -> str:
    """A local path made absolute; URLs as given."""
    text = os.fspath(path)
    return text if "://" in text else str(Path(text).resolve())


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system and root path of ``url``."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url)
    return fs, str(root).rstrip("/")


def _atomic_put(fs: Any, path: str, data: bytes, *, durable: bool = False) -> None:
    """Write a small object so readers see all of it or nothing (a temporary file renamed, on local disks).

    ``durable``: flush the file before the rename and its folder after it, so the object and its
    name survive a power cut (``request.json``). A region's marker is not flushed: only its name is
    read, and the chunks it vouches for were flushed before it was written, so after a power cut a
    marker is lost (its region is written again) or present over chunks on the disk.
    """
    if _is_local(fs):
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with open(tmp, "wb") as f:
            f.write(data)
        if durable:
            _durable.replace(tmp, path)
        else:
            os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)  # object stores: a PUT is atomic, and durable when it returns


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _is_temporary(name: str) -> bool:
    return ".tmp-" in name.rsplit("/", 1)[-1]


def _looks_like_zarr(fs: Any, root: str) -> bool:
    return bool(fs.exists(f"{root}/zarr.json") or fs.exists(f"{root}/.zgroup"))


def _crs_wkt(plan: Plan) -> str:
    crs = plan.geobox.crs
    if crs is None:
        raise InvalidInputError("the plan's output grid has no CRS")
    return str(crs.to_wkt())


def _peak_rss() -> int:
    """Peak resident memory of this process, in bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
