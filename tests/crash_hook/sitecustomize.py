"""Stops a ``mosaic`` process at a chosen write to its output store, so a test can SIGKILL it right there.

tests/test_crash.py puts this folder on ``PYTHONPATH`` of the ``mosaic regrid`` processes it starts
(Python imports ``sitecustomize`` at start-up) and sets ``MOSAIC_CRASH_HOOK`` to a JSON object:

- ``store``: the output store's absolute path; only operations under it count: files opened for
  writing, renames, links, deletions, folders made or removed (Python's audit events, raised just
  *before* each operation, in whichever thread does it);
- ``after_markers``: count operations only after this many region markers were renamed into
  ``.mosaic-regrid/done/`` by this process (0: from the start);
- ``stop_at``: before the ``stop_at``-th counted operation the process stops itself (SIGSTOP, all its
  threads at once); the test, waiting with ``waitpid(..., WUNTRACED)``, then kills it with SIGKILL;
- ``trace``: a file to append every counted operation to (``<marker count> <event> <path>``), for
  the uninterrupted reference run.

Only the process running the ``mosaic`` console script is hooked, not the dask workers it spawns.
Nothing here changes what the process does: it only chooses the instant the test kills it at. A
``sitecustomize`` this one shadows (a distribution's) still runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading


def _install() -> None:
    spec = os.environ.get("MOSAIC_CRASH_HOOK")
    if not spec or os.path.basename(sys.argv[0] if sys.argv else "") != "mosaic":
        return
    config = json.loads(spec)
    store = config["store"].rstrip("/") + "/"
    done = store + ".mosaic-regrid/done/"
    after = int(config.get("after_markers", 0))
    stop_at = config.get("stop_at")
    trace = os.open(config["trace"], os.O_WRONLY | os.O_CREAT | os.O_APPEND) if config.get("trace") else None
    lock = threading.Lock()
    state = {"markers": 0, "counted": 0}
    writing = os.O_WRONLY | os.O_RDWR

    def path_of(value: object) -> str | None:
        if isinstance(value, str | bytes | os.PathLike):
            try:
                return os.fsdecode(os.fspath(value))
            except (TypeError, ValueError):
                return None
        return None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            if not (isinstance(args[2], int) and args[2] & writing):
                return
        elif event not in ("os.rename", "os.link", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree"):
            return
        path = path_of(args[0])
        if path is None or not path.startswith(store):
            return
        target = path_of(args[1]) if event in ("os.rename", "os.link") else None
        with lock:
            if event == "os.rename" and target and target.startswith(done) and ".tmp-" not in target:
                state["markers"] += 1
                marker = True
            else:
                marker = False
            if state["markers"] - marker < after:
                return
            state["counted"] += 1
            if trace is not None:
                os.write(trace, f"{state['markers'] - marker} {event} {target or path}\n".encode())
            stop = stop_at is not None and state["counted"] == stop_at
        if stop:
            os.kill(os.getpid(), signal.SIGSTOP)

    sys.addaudithook(hook)


def _run_shadowed() -> None:
    """Run the next ``sitecustomize.py`` on ``sys.path``, which Python would have imported instead."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        candidate = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.abspath(entry or ".") != here and os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", candidate)
            if spec is not None and spec.loader is not None:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_run_shadowed()
_install()
