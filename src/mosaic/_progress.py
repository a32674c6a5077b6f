"""Progress bars that work in a terminal and in a Jupyter notebook, with or without ipywidgets.

``tqdm.auto`` picks tqdm's notebook widget inside a Jupyter kernel, and that widget needs ipywidgets:
without it the kernel prints "IProgress not found. Please update jupyter and ipywidgets." (on import
of ``tqdm.auto``) and no bar. Here the widget is used only when ipywidgets is importable; otherwise
the text bar of ``tqdm.std``, which Jupyter renders in place (it rewrites its line on stderr with a
carriage return), as a terminal does. ipywidgets stays optional: installing it turns the bar into a
widget.
"""

from __future__ import annotations

import sys
from typing import Any

from dask.callbacks import Callback

__all__ = ["DaskTaskBar", "tqdm_class"]


def tqdm_class() -> Any:
    """The tqdm class for this process: the notebook widget in a Jupyter kernel with ipywidgets, else text."""
    if "ipykernel" in sys.modules and _has_widgets():
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def _has_widgets() -> bool:
    """Whether tqdm's notebook bar can draw (it needs ipywidgets' ``FloatProgress``)."""
    try:
        from ipywidgets import FloatProgress  # noqa: F401
    except ImportError:
        return False
    return True


class DaskTaskBar(Callback):
    """A bar of the dask tasks computed by a local scheduler while it is active (``with DaskTaskBar():``).

    Local schedulers (threads, processes, synchronous) only: a ``dask.distributed`` cluster reports
    progress on its dashboard (or with ``distributed.progress``).
    """

    def __init__(self, **tqdm_kwargs: Any):
        super().__init__()  # type: ignore[no-untyped-call]
        self._kwargs = tqdm_kwargs
        self._bar: Any = None

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self._bar = tqdm_class()(total=total, **self._kwargs)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
