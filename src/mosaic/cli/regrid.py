"""``mosaic regrid``: write a mosaic to Zarr (resumable, region by region) or to a COG."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from mosaic.cli.options import json_opt, parse_layout, plan_options, quiet_opt

__all__ = ["regrid"]


@contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A dask.distributed client for ``--scheduler`` or ``--workers``; None for the threaded scheduler."""
    if scheduler is None and workers is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise OSError(
                f"cannot reach the dask scheduler at {scheduler} ({exc}); check the address, and that "
                "'dask scheduler' runs there and this machine can reach its port"
            ) from exc
        with client:
            yield client
        return
    import dask

    with (
        # Python 3.11's sys._current_frames() can deadlock with the garbage collector (CPython
        # gh-106883, dask/distributed#8616), and the workers' statistical profiler calls it every 10 ms
        dask.config.set({"distributed.worker.profile.enabled": False}),
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (``kill``, a batch scheduler stopping the job) ends the run as an error does.

    Python's default for SIGTERM is to die on the spot; raising ``SystemExit`` instead unwinds the
    run: its threads finish the regions they write, the output's lease is released (so a rerun need
    not take it over) and a local cluster is shut down. The exit code is 143 (128 + SIGTERM).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command()
@plan_options
@click.option(
    "--chunks",
    "layout",
    default="time=1,y=2048,x=2048",
    show_default=True,
    metavar="time=T,y=Y,x=X",
    callback=lambda ctx, param, value: parse_layout(value),
    help="Output chunks, one region each: time=1,y=2048,x=2048 for maps ('pancakes'), "
    "time=64,y=256,x=256 for time series ('churros'). The reads are planned per region either way.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="PATH",
    help="Zarr store to write (a path or an fsspec URL), or a .tif for a COG of a single time step.",
)
@click.option(
    "--zarr-format",
    type=click.Choice(["2", "3"]),
    default="3",
    show_default=True,
    help="Zarr format version.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing output (deleted only once this run holds its lease). Without it, rerunning "
    "the same command resumes an interrupted Zarr regrid, and an output of another request is an error.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run on a local dask.distributed cluster of N worker processes. [default: threads in this process]",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run on an existing dask.distributed cluster (e.g. tcp://10.0.0.5:8786); the index and the "
    "output must be reachable from its workers.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="Regions in flight at once; bounds memory. [default: 4 per thread, at least 8]",
)
@quiet_opt
@json_opt
def regrid(
    request: dict[str, Any],
    layout: dict[str, int],
    output: str,
    zarr_format: str,
    overwrite: bool,
    workers: int | None,
    scheduler: str | None,
    batch_size: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Write a mosaic to a Zarr store, region by region, or to a COG (-o OUT.tif, one time step).

    Rerunning an interrupted command resumes it: regions already written are not computed again, and
    the result is the same as an uninterrupted run. One run writes an output at a time: it holds a
    lease, OUT.mosaic-lock beside the output, and a second run on the output fails naming the first;
    the lease of a run that died is taken over. A progress bar shows on a terminal.

    \b
    Examples:
      mosaic regrid --index index.parquet --bbox 11.88,45.4,12.12,45.58 --crs EPSG:4326
          --resolution 0.0002 --time 2024-06 --bands B02,B8A -o mosaic.zarr
      mosaic regrid --index index.parquet --bbox -10,40,5,50 --crs EPSG:3035 --resolution 100
          --time 2024 --chunks time=64,y=256,x=256 --workers 4 -o series.zarr
      mosaic regrid --index index.parquet --bbox 11.88,45.4,12.12,45.58 --crs utm --resolution 20
          --time 2024-06-01 --bands visual -o visual.tif
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    from mosaic.outputs.batch import regrid as run_regrid

    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    with _terminate_as_exit(), _client(workers, scheduler) as client:
        report = run_regrid(
            output,
            **request,
            chunks=layout,
            zarr_format=int(zarr_format),
            overwrite=overwrite,
            client=client,
            batch_size=batch_size,
            progress=False if quiet else None,
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif not quiet:
        click.echo(report.format())
