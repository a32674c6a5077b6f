"""Real ``mosaic`` processes for the tests: run a regrid and SIGKILL it (its own pid) mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mosaic.outputs.batch import STATE_DIR


def marked_regions(out: Path) -> set[str]:
    """The regions a regrid store has marked done (a marker half-written when killed is none)."""
    done = out / STATE_DIR / "done"
    return {n for n in os.listdir(done) if ".tmp-" not in n} if done.is_dir() else set()


def kill_regrid_after(
    command: Sequence[str], out: Path, regions: int, env: Mapping[str, str] | None = None
) -> set[str]:
    """Start ``command`` (a ``mosaic regrid`` writing ``out``), SIGKILL it once ``regions`` regions are
    marked done, and return the regions marked when it died."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(marked_regions(out)) < regions:
            assert proc.poll() is None, f"regrid ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return marked_regions(out)
