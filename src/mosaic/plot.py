"""Pictures of a plan: scene footprints, coloured by CRS, over the output chunk grid."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from shapely.geometry import box

from mosaic.geom import lonlat_to_crs

if TYPE_CHECKING:
    from odc.geo.crs import CRS

    from mosaic.planner import Plan

__all__ = ["plot_plan"]


def _draw(ax: Any, geom: Any, **style: Any) -> None:
    for part in getattr(geom, "geoms", [geom]):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        x, y = part.exterior.xy
        ax.fill(x, y, **style)


def plot_plan(plan: Plan, path: str | os.PathLike[str] | None = None, *, ax: Any = None) -> Any:
    """Draw ``plan``: footprints in the target CRS coloured by source CRS, chunks with their read counts.

    Non-empty chunks are outlined and labelled with their number of reads; empty chunks (constant
    fill, no reads) are greyed. Returns the matplotlib Axes; writes a PNG when ``path`` is given.
    """
    import matplotlib

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
    area = box(*gbox.boundingbox)
    crss = sorted({r.crs for t in plan.tasks for r in t.reads})
    palette = matplotlib.colormaps["tab10"](np.linspace(0, 1, 10))
    colours = dict(zip(crss, palette[: len(crss)], strict=False))
    fed = {(r.scene, r.asset) for t in plan.tasks for r in t.reads}
    seen: set[str] = set()
    for rec in plan.considered:
        if (rec.id, rec.asset) not in fed or rec.id in seen:
            continue
        seen.add(rec.id)
        try:
            fp = lonlat_to_crs(rec.footprint, cast("CRS", gbox.crs).to_wkt()).intersection(
                area.buffer(area.length)
            )
        except Exception:
            continue
        label = rec.crs if rec.crs not in {t.get_label() for t in ax.patches} else None
        _draw(
            ax,
            fp,
            facecolor=colours.get(rec.crs, "grey"),
            alpha=0.25,
            edgecolor=colours.get(rec.crs, "grey"),
            linewidth=1.2,
            label=label,
        )
    counts: dict[tuple[int, int], int] = {}
    for task in plan.tasks:
        counts[(task.iy, task.ix)] = max(counts.get((task.iy, task.ix), 0), len(task.reads))
    gy, gx = plan.chunk_grid
    for iy in range(gy):
        for ix in range(gx):
            cb = box(*plan.chunk_geobox(iy, ix).boundingbox)
            x, y = cb.exterior.xy
            n = counts.get((iy, ix), 0)
            if n:
                ax.plot(x, y, color="black", linewidth=0.6)
                if gy * gx <= 400:
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
    summary = plan.summary()
    ax.set_title(
        f"{summary['scenes']} scenes, {summary['reads']} reads, "
        f"{summary['nonempty_chunks']}/{summary['chunks']} chunks read ({gbox.crs})",
        fontsize=9,
    )
    handles = [h for h in ax.patches if h.get_label() and not h.get_label().startswith("_")]
    if handles:
        ax.legend(handles=handles, title="scene CRS", fontsize=7, loc="upper right")
    if path is not None:
        ax.figure.savefig(path, bbox_inches="tight")
    return ax
