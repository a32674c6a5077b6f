"""The base of mosaic's lazy dask graph layers: one task per chunk, made when dask asks for its key.

A band's layer has keys ``(name, t, iy, ix)`` over a grid of time steps and chunks. Storing every key
would cost memory for chunks no scene touches; :class:`LazyBlocks` leaves that to the subclass's
``__getitem__`` and gives it the two things every such layer needs: checking that a key is one of the
grid's (:meth:`LazyBlocks._chunk`), and ``in`` answering from ``__getitem__`` without raising (dask
probes foreign keys, some not even tuples). The load's graph (:mod:`mosaic.graph`) and the tree's
(:mod:`mosaic.outputs.tree`) build on it; it imports nothing heavy, so a tree is planned without dask.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["LazyBlocks"]


class LazyBlocks(Mapping[Any, Any]):
    """A mapping of a band's chunk keys ``(name, t, iy, ix)`` to tasks, made by ``__getitem__``."""

    def __init__(self, name: str, times: int, ny: int, nx: int):
        self._name, self._times, self._ny, self._nx = name, times, ny, nx

    def _chunk(self, key: Any) -> tuple[int, int, int]:
        """``(t, iy, ix)`` of a key of this band's grid; KeyError for any other key."""
        if isinstance(key, tuple) and len(key) == 4 and key[0] == self._name:
            _, t, iy, ix = key
            if (
                all(isinstance(v, int) for v in (t, iy, ix))
                and 0 <= t < self._times
                and 0 <= iy < self._ny
                and 0 <= ix < self._nx
            ):
                return t, iy, ix
        raise KeyError(key)

    def _grid_keys(self) -> Iterator[tuple[str, int, int, int]]:
        """Every key of the grid, time step by time step, row by row."""
        for t in range(self._times):
            for iy in range(self._ny):
                for ix in range(self._nx):
                    yield (self._name, t, iy, ix)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]
        except (KeyError, TypeError):
            return False
        return True
