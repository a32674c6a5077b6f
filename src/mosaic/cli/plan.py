"""``mosaic plan``: what a load would read, without reading pixels."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import click

from mosaic.cli.options import chunks_opt, json_opt, plan_options
from mosaic.io.paths import redact

if TYPE_CHECKING:
    from mosaic.planning.planner import Plan

__all__ = ["format_plan", "plan", "plan_facts"]


def _nodata(value: float | None) -> float | str | None:
    """A nodata value for JSON: a number, ``"nan"``, or None (no nodata)."""
    return "nan" if value is not None and math.isnan(value) else value


def _g(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def plan_facts(the_plan: Plan) -> dict[str, Any]:
    """The plan summary plus what identifies the request: scene ids, groups, bounds, chunks, band types."""
    facts = dict(the_plan.summary())
    facts.update(
        scene_ids=list(the_plan.scenes),
        groups=list(the_plan.groups),
        bounds=[float(v) for v in the_plan.geobox.boundingbox],
        chunk_shape=list(the_plan.chunks),
        index=None if the_plan.index_source is None else redact(the_plan.index_source),
        band_types={b.name: {"dtype": b.dtype, "nodata": _nodata(b.nodata)} for b in the_plan.bands},
    )
    return facts


def format_plan(facts: dict[str, Any]) -> str:
    """The human-readable ``mosaic plan`` text."""
    from mosaic._repr import human_bytes, short_crs

    t, ny, nx = facts["shape"]
    rx, ry = facts["resolution"]
    overviews = ", ".join(f"x{k}: {v}" for k, v in facts["overview_factors"].items()) or "-"
    bands = ", ".join(
        f"{name} ({b['dtype']}, nodata {'none' if b['nodata'] is None else _g(b['nodata'])})"
        for name, b in facts["band_types"].items()
    )
    lines = [
        f"scenes:      {facts['scenes']} from {', '.join(map(short_crs, facts['source_crs'])) or 'no CRS'}",
        *(f"  {s}" for s in facts["scene_ids"]),
        f"output:      {t} x {ny} x {nx} (time, y, x) in {short_crs(facts['crs'])}, "
        f"pixel {abs(rx):g} x {abs(ry):g}",
        f"bounds:      {', '.join(f'{v:.10g}' for v in facts['bounds'])}",
        f"times:       {', '.join(facts['groups']) or '-'}",
        f"bands:       {bands or '-'}",
        f"chunks:      {facts['nonempty_chunks']} of {facts['chunks']} need reads "
        f"({facts['chunk_shape'][0]} x {facts['chunk_shape'][1]} px; {facts['empty_chunks']} constant fill)",
        f"reads:       {facts['reads']} windows of {facts['assets_read']} assets; "
        f"overview factors {overviews}",
        f"bytes:       ~{human_bytes(facts['estimated_read_bytes'])} read, "
        f"{human_bytes(facts['output_bytes'])} output",
        f"method:      {facts['method']}, resampling {facts['resampling']}",
    ]
    if facts.get("mask"):
        lines.append(f"mask:        {facts['mask']}; {facts['mask_reads']} mask band reads")
    if facts.get("png"):
        lines.append(f"picture:     {facts['png']}")
    return "\n".join(lines)


def _chunk_id(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise click.BadParameter(f"{value!r}: give a chunk as IY,IX (e.g. 0,1)")
    return int(parts[0]), int(parts[1])


@click.command()
@plan_options
@chunks_opt
@click.option(
    "--png",
    type=click.Path(dir_okay=False, writable=True),
    help="Also draw the plan (footprints coloured by CRS over the chunk grid) into this PNG.",
)
@click.option(
    "--explain",
    metavar="IY,IX",
    callback=_chunk_id,
    help="Also say which scenes feed chunk (IY, IX) and why, and which nearby scenes do not.",
)
@json_opt
def plan(
    request: dict[str, Any],
    chunks: int | tuple[int, int],
    png: str | None,
    explain: tuple[int, int] | None,
    as_json: bool,
) -> None:
    """Plan a mosaic without reading pixels: scenes, reads, chunks and bytes a load would need.

    \b
    Examples:
      mosaic plan --index index.parquet --bbox 11.88,45.4,12.12,45.58 --crs EPSG:4326
          --resolution 0.0002 --time 2024-06-01 --bands B02,B8A
      mosaic plan --index index.parquet --bbox -10,40,5,50 --crs utm --resolution 100 --json
    """  # noqa: D301 (\b keeps click from rewrapping the examples)
    import mosaic

    the_plan = mosaic.plan(**request, chunks=chunks)
    facts = plan_facts(the_plan)
    if png:
        import matplotlib

        from mosaic.errors import OutputError

        matplotlib.use("Agg")
        try:
            the_plan.plot(png)
        except OSError as exc:
            raise OutputError.at(png, "the picture", exc) from exc
        facts["png"] = png
    if explain is not None:
        facts["explain"] = the_plan.explain(*explain)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(format_plan(facts))
    if explain is not None:
        click.echo(facts["explain"])
