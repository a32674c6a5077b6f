"""The ``mosaic`` command line: index, plan, regrid, sample, gti, tree, serve, demo, login, auth.

Errors mosaic raises on purpose (:class:`mosaic.MosaicError`) and failed file-system operations are
reported as one line on stderr, ``error: <message>``, with exit code 1; ``mosaic --verbose ...`` shows
the traceback instead. Any other exception is a bug in mosaic: it is reported the same way, as
``error: unexpected <type>: ...`` with a request to report it, never as a bare traceback. Usage errors
(a malformed option) exit with code 2, as click does. Mosaic's warnings (e.g. inputs skipped under
``--on-error skip``) are printed as ``warning: <message>``.
"""

from __future__ import annotations

import re
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from mosaic.cli.auth import auth, login
from mosaic.cli.demo import demo
from mosaic.cli.gti import gti
from mosaic.cli.index import index
from mosaic.cli.plan import plan
from mosaic.cli.regrid import regrid
from mosaic.cli.sample import sample
from mosaic.cli.serve import serve
from mosaic.cli.tree import tree
from mosaic.errors import IndexFormatError, MosaicError, MosaicWarning, NoDataError
from mosaic.io.paths import redact

__all__ = ["cli", "main", "one_line"]

_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (IndexFormatError, "make an index with 'mosaic index build SOURCES -o INDEX.parquet'"),
    (NoDataError, "compare --bbox, --bbox-crs and --time with 'mosaic index info --index INDEX'"),
)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (line breaks become ``; ``, secrets ``***``), with a hint."""
    text = redact(re.sub(r"\s*\n\s*", "; ", str(exc).strip() or type(exc).__name__))
    for kind, hint in _HINTS:
        if isinstance(exc, kind) and _command(hint) not in text:  # (not when the message says it)
            return f"{text.rstrip('.')}; {hint}"
    return text


def _command(hint: str) -> str:
    """The ``mosaic`` subcommand a hint names (``index build``), to spot messages that name it already."""
    match = re.search(r"mosaic (\w+ \w+)", hint)
    return match.group(1) if match else hint


@contextmanager
def _plain_warnings() -> Iterator[None]:
    """Print mosaic's warnings as ``warning: <message>`` on stderr; leave other warnings alone."""
    original = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, MosaicWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            original(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


class MosaicGroup(click.Group):
    """A group that turns mosaic's errors into one ``error:`` line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; report MosaicError and OSError briefly unless ``--verbose``."""
        verbose = bool(ctx.params.get("verbose"))
        with _plain_warnings():
            try:
                return super().invoke(ctx)
            except BrokenPipeError:
                raise  # click handles a closed stdout (e.g. piped into head)
            except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise  # usage errors and exits are click's to report
            except (MosaicError, OSError) as exc:
                if verbose:
                    click.echo(redact(traceback.format_exc().rstrip()), err=True)
                else:
                    click.echo(f"error: {one_line(exc)}", err=True)
                ctx.exit(1)
            except MemoryError:
                if verbose:
                    click.echo(traceback.format_exc().rstrip(), err=True)
                else:
                    click.echo(
                        "error: out of memory; ask for a smaller area, a coarser resolution or smaller "
                        "--chunks",
                        err=True,
                    )
                ctx.exit(1)
            except Exception as exc:  # a bug: still one line, and how to report it
                if verbose:
                    click.echo(traceback.format_exc().rstrip(), err=True)
                else:
                    click.echo(
                        f"error: unexpected {type(exc).__name__}: {one_line(exc)} (a bug in mosaic: "
                        "rerun with --verbose for the traceback, and report it)",
                        err=True,
                    )
                ctx.exit(1)


def _version() -> str:
    from mosaic import __version__

    return __version__


@click.group(cls=MosaicGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--verbose", "-v", is_flag=True, help="Show the full traceback of an error instead of one line."
)
@click.version_option(_version(), "--version", prog_name="mosaic")
def cli(verbose: bool) -> None:
    """Multi-CRS virtual mosaics: index scenes where they are, plan the reads, load lazily.

    \b
    Examples:
      mosaic index build 'scenes/**/*.tif' -o index.parquet
      mosaic index build items.json -o index.parquet
      mosaic index info --index index.parquet
      mosaic plan --index index.parquet --bbox -10,40,5,50 --crs EPSG:3035 --resolution 100 --time 2024-06
      mosaic regrid --index index.parquet --bbox -10,40,5,50 --crs EPSG:3035 --resolution 100 -o m.zarr
      mosaic gti export --index index.parquet -o m.gti.gpkg --crs EPSG:3035 --resolution 100
      mosaic tree export --index index.parquet -o scenes.json
      mosaic sample --index index.parquet --points sites.csv --time 2024 -o series.csv
      mosaic demo --out demo_output
      mosaic login
      mosaic auth check s3://lp-prod-protected/HLSS30.020/T32TQR/B02.tif
    """  # noqa: D301 (\b keeps click from rewrapping the examples)


cli.add_command(auth)
cli.add_command(login)
cli.add_command(index)
cli.add_command(plan)
cli.add_command(regrid)
cli.add_command(demo)
cli.add_command(gti)
cli.add_command(serve)
cli.add_command(tree)
cli.add_command(sample)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mosaic`` console script; returns the exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="mosaic", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
