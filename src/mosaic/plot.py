"""Pictures of a plan: scene footprints, coloured by CRS, over the output chunk grid."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from shapely.geometry import box

from mosaic._repr import plural, short_crs
from mosaic.index.geom import lonlat_to_crs

if TYPE_CHECKING:
    from odc.geo.crs import CRS

    from mosaic.planning.planner import Plan

__all__ = ["axis_labels", "plot_plan", "reads_per_chunk"]

_MAX_LABELLED = 400
"""Chunk grids larger than this are drawn without a number in each chunk (they would not be legible)."""


def _draw(ax: Any, geom: Any, **style: Any) -> None:
    for part in getattr(geom, "geoms", [geom]):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        x, y = part.exterior.xy
        ax.fill(x, y, **style)
        style.pop("label", None)  # one legend entry per call


def axis_labels(crs: Any) -> tuple[str, str]:
    """Labels of the x and y axes of a map in ``crs``: the CRS's axis names and units.

    ``("x: Easting (metre)", "y: Northing (metre)")`` for UTM, ``("x: Geodetic longitude (degree)",
    "y: Geodetic latitude (degree)")`` for EPSG:4326, whatever order the CRS lists its axes in (maps
    are drawn x = east).
    """
    from pyproj import CRS as ProjCRS

    parsed = ProjCRS.from_user_input(crs)
    axes = list(parsed.axis_info)

    def kind(axis: Any) -> str | None:
        name = axis.name.lower()
        if "east" in name or "long" in name:
            return "x"
        if "north" in name or "lat" in name:
            return "y"
        return {"east": "x", "west": "x", "north": "y", "south": "y"}.get(axis.direction.lower())

    by_kind = {kind(a): a for a in axes}
    if "x" in by_kind and "y" in by_kind:
        x, y = by_kind["x"], by_kind["y"]
    elif len(axes) >= 2:
        x, y = (axes[1], axes[0]) if parsed.is_geographic else (axes[0], axes[1])
    else:
        return "x", "y"
    return f"x: {x.name} ({x.unit_name})", f"y: {y.name} ({y.unit_name})"


def reads_per_chunk(plan: Plan) -> dict[tuple[int, int], int]:
    """Reads of each chunk (iy, ix) that has any: all bands and time steps, ranking reads included.

    They add up to ``plan.summary()["reads"]``.
    """
    counts: dict[tuple[int, int], int] = {}
    for task in plan.tasks:
        key = (task.iy, task.ix)
        counts[key] = counts.get(key, 0) + len(task.reads) + len(task.aux)
    return counts


def plot_plan(plan: Plan, path: str | os.PathLike[str] | None = None, *, ax: Any = None) -> Any:
    """Draw ``plan``: footprints in the target CRS coloured by source CRS, chunks with their read counts.

    Each chunk with reads is outlined and labelled with its number of reads (all bands and time steps;
    the numbers add up to the reads in the title); chunks without reads (constant fill) are hatched.
    The axes carry the output CRS's axis names and units. Returns the matplotlib Axes; writes a PNG
    when ``path`` is given.
    """
    import matplotlib
    from matplotlib.patches import Patch

    own = ax is None
    if own and path is not None:
        # a figure of our own, drawn by Agg directly: pyplot's backend (a notebook's inline one) and
        # its list of open figures stay as they were
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 8), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    elif own:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(9, 8), dpi=110)
    gbox = plan.geobox
    wkt = cast("CRS", gbox.crs).to_wkt()
    area = box(*gbox.boundingbox)
    crss = sorted({r.crs for t in plan.tasks for r in (*t.reads, *t.aux)})
    palette = matplotlib.colormaps["tab10"](np.linspace(0, 1, 10))
    colours = dict(zip(crss, palette[: len(crss)], strict=False))
    fed = {(r.scene, r.asset) for t in plan.tasks for r in (*t.reads, *t.aux)}
    seen: set[str] = set()
    labelled: set[str] = set()
    for rec in plan.considered:
        if (rec.id, rec.asset) not in fed or rec.id in seen:
            continue
        seen.add(rec.id)
        try:
            fp = lonlat_to_crs(rec.footprint, wkt).intersection(area.buffer(area.length))
        except Exception:  # a footprint the target CRS cannot hold is left out of the picture
            continue
        colour = colours.get(rec.crs, "grey")
        label = None if rec.crs in labelled else short_crs(rec.crs)
        labelled.add(rec.crs)
        _draw(ax, fp, facecolor=colour, alpha=0.25, edgecolor=colour, linewidth=1.2, label=label)

    counts = reads_per_chunk(plan)
    gy, gx = plan.chunk_grid
    numbered = gy * gx <= _MAX_LABELLED
    for iy in range(gy):
        for ix in range(gx):
            cb = box(*plan.chunk_geobox(iy, ix).boundingbox)
            x, y = cb.exterior.xy
            n = counts.get((iy, ix), 0)
            if n:
                ax.plot(x, y, color="black", linewidth=0.6)
                if numbered:
                    ax.text(cb.centroid.x, cb.centroid.y, str(n), ha="center", va="center", fontsize=7)
            else:
                ax.fill(x, y, facecolor="none", edgecolor="0.7", hatch="//", linewidth=0.4)
    minx, miny, maxx, maxy = gbox.boundingbox
    ax.set_xlim(minx, maxx)
    ax.set_ylim(miny, maxy)
    # in lon/lat, a degree of longitude is cos(latitude) as long as one of latitude
    ax.set_aspect(
        1 / max(np.cos(np.radians((miny + maxy) / 2)), 0.01) if cast("CRS", gbox.crs).geographic else "equal"
    )
    xlabel, ylabel = axis_labels(wkt)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    reads = sum(counts.values())
    times, bands = len(plan.times), len(plan.bands)
    what = (
        f"number in a chunk: its reads (all {plural(bands, 'band')} x {plural(times, 'time step')})"
        if numbered
        else f"reads per chunk not written: {gy * gx} chunks"
    )
    ax.set_title(
        f"{len(plan.scenes)} scenes, {reads} reads in {len(counts)} of {gy * gx} chunks "
        f"({plan.chunks[0]} x {plan.chunks[1]} px) in {short_crs(str(gbox.crs))}\n{what}",
        fontsize=9,
    )
    handles = [h for h in ax.patches if h.get_label() and not h.get_label().startswith("_")]
    if len(counts) < gy * gx:
        handles.append(Patch(facecolor="none", edgecolor="0.7", hatch="//", label="chunk without reads"))
    if handles:
        ax.legend(handles=handles, title="scene CRS", fontsize=7, loc="upper right")
    if path is not None:
        ax.figure.savefig(path, bbox_inches="tight")
    return ax
