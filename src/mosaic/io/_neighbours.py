"""Requests that carry a neighbour's tiles: fewer round trips for reads from recorded tile ranges.

A tiled TIFF stores its tiles row after row. A read whose window spans a few of a file's tile columns
needs one byte range per tile row; the bytes between two of them are the rest of the row, which other
reads of the same load (other chunks over the same file) need. :func:`with_neighbours` records, in each
read that has a tile layout, the windows of the other reads of the same file, band and level whose
rows meet its own (:attr:`mosaic.planning.planner.Read.neighbours`). :func:`spans` then merges a read's ranges
across gaps made of those neighbours' tiles (plus at most ``gap`` bytes nobody needs): one request
fetches the read's tiles and, between them, its neighbours', which the process keeps for them
(:class:`mosaic.io.ranged.TileBytes`). No byte outside a read's own first and last tile is fetched for
it, and no more bytes than before are fetched that no read of the load needs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mosaic.planning.planner import ChunkTask, Read

__all__ = ["MAX_NEIGHBOURS", "spans", "with_neighbours"]

Range = tuple[int, int]
"""A byte range ``[start, stop)``."""
Window = tuple[int, int, int, int]
"""(row_off, col_off, height, width)."""

MAX_NEIGHBOURS = 64
"""Most neighbour windows recorded in one read (the nearest, by column)."""


def with_neighbours(tasks: Sequence[ChunkTask]) -> list[ChunkTask]:
    """``tasks`` with each read that has a tile layout given its neighbours' windows.

    A neighbour reads the same file, band, overview and decimation in another chunk, and its window's
    rows meet the read's own.
    """
    groups: dict[tuple[str, int, int, int], set[Window]] = defaultdict(set)
    for task in tasks:
        for read in (*task.reads, *task.aux):
            if read.tiles is not None:
                groups[_key(read)].add(read.window)
    if not any(len(windows) > 1 for windows in groups.values()):
        return list(tasks)

    def fill(read: Read) -> Read:
        if read.tiles is None:
            return read
        row, col, height, _ = read.window
        near = [
            w for w in groups[_key(read)] if w != read.window and w[0] < row + height and row < w[0] + w[2]
        ]
        if not near:
            return read
        near.sort(key=lambda w: (abs(w[1] - col), w))
        return replace(read, neighbours=tuple(sorted(near[:MAX_NEIGHBOURS])))

    return [
        replace(task, reads=tuple(map(fill, task.reads)), aux=tuple(map(fill, task.aux))) for task in tasks
    ]


def _key(read: Read) -> tuple[str, int, int, int]:
    return (read.href, read.band, read.overview, read.factor)


def spans(own: Sequence[Range], useful: Sequence[Range], gap: int) -> list[Range]:
    """The requests fetching the ``own`` ranges: merged across ``useful`` ranges and gaps up to ``gap``.

    Own and useful ranges are chained where at most ``gap`` bytes separate them; each chain holding
    own ranges is fetched from its first own byte to its last, so what a request carries beyond the
    own ranges is useful bytes and gaps of at most ``gap`` bytes.
    """
    marks = sorted([(a, b, True) for a, b in own] + [(a, b, False) for a, b in useful])
    out: list[Range] = []
    stop = first = last = -1
    for a, b, mine in marks:
        if stop < 0 or a > stop + gap:  # a new chain
            if first >= 0:
                out.append((first, last))
            first = last = -1
            stop = b
        else:
            stop = max(stop, b)
        if mine:
            first = a if first < 0 else first
            last = max(last, b)
    if first >= 0:
        out.append((first, last))
    return out
