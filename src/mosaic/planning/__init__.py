"""The planning stage: a request and an index in, a :class:`Plan` of frozen records out, no pixel I/O.

``planner`` makes the plan from ``grid`` (the output GeoBox and chunks), ``bands`` (the output
variables) and ``windows`` (which scenes touch which chunks, and where); ``records`` holds the plain,
picklable records the graph and the reader execute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mosaic._lazy import attach

if TYPE_CHECKING:
    from mosaic.planning.planner import Plan, make_plan

_LAZY = {
    "Plan": "mosaic.planning.planner",
    "make_plan": "mosaic.planning.planner",
}

__all__ = ["Plan", "make_plan"]

__getattr__, __dir__ = attach(__name__, _LAZY)
