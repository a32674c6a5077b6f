"""Crash safety and one writer per store, the hard way: real ``mosaic regrid`` processes, killed.

The tests start the installed ``mosaic`` console script (the process that writes, not a wrapper shell)
and kill *that* pid with SIGKILL. To kill it at a chosen moment whatever the machine's load, the
processes load ``tests/crash_hook/sitecustomize.py``: it counts the process's writes to the store
(Python audit events, raised before each operation) and stops the process (SIGSTOP) before the n-th
one; the test, waiting for that stop, sends SIGKILL. The moments are drawn from a seeded generator
(``MOSAIC_CRASH_SEED``, default 14), so a run is repeatable; nothing waits on the clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

import mosaic
from mosaic.outputs.batch import STATE_DIR

MOSAIC = Path(sys.executable).parent / "mosaic"
HOOK = Path(__file__).parent / "crash_hook"
SEED = int(os.environ.get("MOSAIC_CRASH_SEED", "14"))
SEAM = (11.88, 45.40, 12.12, 45.58)
JOB = [
    *("--bbox", ",".join(map(str, SEAM)), "--crs", "EPSG:4326", "--resolution", "0.0008"),
    *("--time", "2024-06", "--bands", "B02", "--chunks", "y=48,x=48", "--json"),
]
"""3 x 225 x 300 pixels in regions of 48 x 48: 105 regions, small and many."""
LOCK = ".mosaic-lock"
HANG = 300.0
"""Seconds after which a process that neither stops nor exits is a hang (never reached normally)."""


# ============================================================================================ helpers


def start(index: Path, out: Path, *extra: str, hook: dict | None = None) -> subprocess.Popen[str]:
    """``mosaic regrid`` of JOB into ``out``, the real console script, with the crash hook loaded."""
    env = {k: v for k, v in os.environ.items() if k not in ("MOSAIC_INDEX", "MOSAIC_CRASH_HOOK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")]))
    if hook is not None:
        env["MOSAIC_CRASH_HOOK"] = json.dumps({"store": str(out), **hook})
    command = [str(MOSAIC), "regrid", "--index", str(index), *JOB, *extra, "-o", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _STARTED.append(proc)
    return proc


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> object:
    """A failed test leaves no stopped ``mosaic`` behind: each process it started is killed and reaped."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.returncode is None:
            proc.kill()
            proc.communicate()


def stops(proc: subprocess.Popen[str]) -> bool:
    """Wait until ``proc`` stops itself (True) or exits (False, its return code set)."""
    deadline = time.monotonic() + HANG
    while True:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            if os.WIFSTOPPED(status):
                return True
            proc.returncode = os.waitstatus_to_exitcode(status)
            return False
        assert time.monotonic() < deadline, f"mosaic (pid {proc.pid}) neither stopped nor ended"
        time.sleep(0.005)


def kill(proc: subprocess.Popen[str]) -> tuple[list[psutil.Process], str]:
    """SIGKILL ``proc``; its descendants at that moment and its stderr."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == -signal.SIGKILL
    return family, err


def no_survivors(family: list[psutil.Process]) -> None:
    """Every process the killed one had started ends (dask workers notice their parent died)."""
    deadline = time.monotonic() + 60
    while alive := [p for p in family if _alive(p)]:
        assert time.monotonic() < deadline, f"left running after the kill: {alive}"
        time.sleep(0.05)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def finish(proc: subprocess.Popen[str]) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, f"mosaic failed ({proc.returncode}):\n{err}"
    return json.loads(out), err


def tree(root: Path) -> dict[str, str]:
    """Every file of a store, by relative path, with the SHA-256 of its bytes."""
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def markers(out: Path) -> list[str]:
    done = out / STATE_DIR / "done"
    return [n for n in os.listdir(done) if ".tmp-" not in n] if done.is_dir() else []


def check_marked_regions(out: Path, ref: Path) -> int:
    """Every region with a marker holds the reference's bytes (a marker never stands over missing data)."""
    keys = markers(out)
    for key in keys:
        chunk = Path("B02", "c", *key.split("."))
        assert (out / chunk).exists() == (ref / chunk).exists(), f"region {key}: chunk file missing"
        if (ref / chunk).exists():
            assert (out / chunk).read_bytes() == (ref / chunk).read_bytes(), f"region {key}: wrong bytes"
    return len(keys)


def phase(out: Path, regions: int) -> str:
    """Where a killed run was, judged from what it left: creation, regions or finish (all regions marked)."""
    meta = out / "zarr.json"
    status = json.loads(meta.read_text())["attributes"].get("regrid_status") if meta.exists() else None
    if status == "complete" or len(markers(out)) == regions:
        return "finish"
    state = out / STATE_DIR
    created = (state / "request.json").exists() and not (state / "started.json").exists()
    return "regions" if created else "creation"


@pytest.fixture(scope="module")
def index_path(demo_index: mosaic.TileIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "index.parquet"
    demo_index.write(path)
    return path


@pytest.fixture(scope="module")
def reference(index_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The job uninterrupted (threads), with the trace of its writes to the store."""
    folder = tmp_path_factory.mktemp("reference")
    out, trace = folder / "ref.zarr", folder / "trace.txt"
    report, _ = finish(start(index_path, out, hook={"trace": str(trace)}))
    events = [line.split(" ", 2) for line in trace.read_text().splitlines()]
    created = 1 + max(i for i, (_, _, path) in enumerate(events) if path.endswith("/started.json"))
    last_marker = max(i for i, (_, event, path) in enumerate(events) if f"{STATE_DIR}/done/" in path)
    assert report["written"] == len(markers(out)) or not (out / STATE_DIR).exists()
    return {
        "path": out,
        "report": report,
        "regions": report["written"],
        "creation": created,  # store operations of the creation step
        "finish": len(events) - last_marker - 1,  # after the last marker
        "events": len(events),
    }


# ============================================================================================ kills


@pytest.mark.slow
def test_kill_at_random_moments_then_resume_equals_uninterrupted_run(index_path, reference, tmp_path):
    """21 SIGKILLs of the real process across creation, regions and finish, threads and --workers 2.

    Each chain starts a store, kills the run at a drawn moment of each phase in turn, resumes each
    time, and ends with an uninterrupted resume whose store must equal the reference byte for byte.
    After every kill: each marked region holds the reference's bytes, the lease names the dead
    process, the kill left no process behind, and the next run takes the lease over.
    """
    rng = random.Random(SEED)
    ref = reference["path"]
    regions = reference["regions"]
    chains = [
        ("threads", ["creation", *["regions"] * 6, "finish"]),
        ("threads", ["creation", *["regions"] * 6, "finish"]),
        ("workers", ["creation", "regions", "regions", "regions", "finish"]),
    ]
    landed: Counter[tuple[str, str]] = Counter()
    moments: list[str] = []
    started = time.monotonic()
    for number, (mode, plan) in enumerate(chains):
        out = tmp_path / f"chain{number}.zarr"
        extra = ("--workers", "2") if mode == "workers" else ()
        taken_over = False
        for target in plan:
            done = len(markers(out))
            remaining = regions - done
            polled = mode == "workers" and target == "regions"  # region writes happen in the workers
            if target == "creation":
                hook = {"stop_at": rng.randint(1, reference["creation"])}
            elif target == "finish":  # the client sees the workers' markers as no writes of its own
                hook = {"after_markers": 0 if mode == "workers" else remaining}
                hook["stop_at"] = rng.randint(1, reference["finish"])
            elif remaining < 2:
                continue  # no region left to be killed in
            elif not polled:  # after a few more regions (up to a quarter of those left), mid-write
                after = rng.randint(1, max(1, remaining // 4))
                hook = {"after_markers": after, "stop_at": rng.randint(1, 5)}
            else:
                hook = {}
            proc = start(index_path, out, *extra, hook=hook)
            if polled:  # kill it from outside once the workers have written a drawn number of regions
                goal = done + rng.randint(1, max(1, remaining // 3))
                while len(markers(out)) < goal and proc.poll() is None:
                    time.sleep(0.002)
                alive = proc.poll() is None
            else:
                alive = stops(proc)
            if not alive:  # it ended before the moment drawn (the rest of the chain is moot)
                finish(proc)
                break
            family, err = kill(proc)
            assert not taken_over or "taking over the lease" in err, err
            no_survivors(family)
            where = phase(out, regions)
            landed[(mode, where)] += 1
            state = f"{len(markers(out))}/{regions} marked" if (out / STATE_DIR).exists() else "state deleted"
            moments.append(f"{mode} {where} ({state})")
            check_marked_regions(out, ref)
            lease = json.loads((tmp_path / f"chain{number}.zarr{LOCK}").read_text())
            assert lease["pid"] == proc.pid and lease["host"] == socket.gethostname()
            taken_over = True
        report, err = finish(start(index_path, out, *extra))
        assert "taking over the lease" in err and f"pid {proc.pid}" in err, err
        assert report["written"] + report["skipped"] == regions
        assert tree(out) == tree(ref), f"chain {number} ({mode}) differs from the uninterrupted run"
        assert not (tmp_path / f"chain{number}.zarr{LOCK}").exists()

    kills = sum(landed.values())
    summary = ", ".join(f"{mode} {where}: {n}" for (mode, where), n in sorted(landed.items()))
    print(f"\n{kills} kills in {time.monotonic() - started:.0f} s (seed {SEED}): {summary}")
    print("\n".join(moments))
    assert kills >= 20, summary
    for where in ("creation", "regions", "finish"):
        assert landed[("threads", where)] >= 1 and landed[("workers", where)] >= 1, summary


# ============================================================================================ writers


@pytest.mark.parametrize("overwrite", [False, True], ids=["resume", "overwrite"])
def test_two_writers_at_once_one_writes_the_other_fails(index_path, reference, tmp_path, overwrite):
    """Two real processes started together on one store: one holds the lease, the other gets one line.

    The holder stops itself half-way (so the two overlap whatever the load) until the other has
    failed; then it goes on and the store equals the uninterrupted run. With ``--overwrite`` the
    store exists (a finished copy) and the loser deletes nothing.
    """
    out = tmp_path / "two.zarr"
    extra = ("--overwrite",) if overwrite else ()
    if overwrite:
        shutil.copytree(reference["path"], out)
    hook = {"after_markers": reference["regions"] // 2, "stop_at": 1}
    first, second = start(index_path, out, *extra, hook=hook), start(index_path, out, *extra, hook=hook)
    state = {proc: stops(proc) for proc in (first, second)}
    assert sorted(state.values()) == [False, True], "exactly one of the two must be writing"
    holder, loser = (first, second) if state[first] else (second, first)
    _, err = loser.communicate(timeout=HANG)
    lines = err.strip().splitlines()
    assert loser.returncode == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {out} is being written by another mosaic process: ")
    assert f"pid {holder.pid} on host {socket.gethostname()}" in lines[0]
    assert "lease taken" in lines[0] and "last heartbeat" in lines[0] and f"{out}{LOCK}" in lines[0]

    holder.send_signal(signal.SIGCONT)
    report, err = finish(holder)
    assert "warning" not in err
    assert report["written"] == reference["regions"] and report["skipped"] == 0
    assert tree(out) == tree(reference["path"])
    assert not Path(f"{out}{LOCK}").exists()


def test_sigterm_releases_the_lease(index_path, reference, tmp_path):
    """SIGTERM (a scheduler stopping a job) unwinds: exit code 143, the lease released, resumable."""
    out = tmp_path / "term.zarr"
    proc = start(index_path, out, hook={"after_markers": reference["regions"] // 3, "stop_at": 1})
    assert stops(proc)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not Path(f"{out}{LOCK}").exists()
    marked = check_marked_regions(out, reference["path"])
    assert 0 < marked < reference["regions"]
    report, err = finish(start(index_path, out))
    assert "warning" not in err  # nothing to take over
    assert report["skipped"] == marked and tree(out) == tree(reference["path"])


def test_lost_region_markers_rewrite_every_region(index_path, reference, tmp_path):
    """A store that lost ``.mosaic-regrid/done`` is finished by rewriting every region, with a warning."""
    out = tmp_path / "lost.zarr"
    proc = start(index_path, out, hook={"after_markers": reference["regions"] // 2, "stop_at": 1})
    assert stops(proc)
    kill(proc)
    shutil.rmtree(out / STATE_DIR / "done")
    report, err = finish(start(index_path, out))
    assert "region markers" in err and "every region is written again" in err, err
    assert report["written"] == reference["regions"] and report["skipped"] == 0
    assert tree(out) == tree(reference["path"])


# ============================================================================================ lease

SMALL = dict(resolution=0.002, bands="B02", chunks=64)
"""A small in-process regrid (one date, 90 x 120 pixels) for the lease rules."""


def write_lease(path: Path, **fields: object) -> None:
    """A lease file as another process would have left it (this host's identity by default).

    On a local disk the heartbeat is the file's modification time (the holder touches it).
    """
    path.write_text(lease_record(**fields))
    heartbeat = float(json.loads(path.read_text())["heartbeat"])
    os.utime(path, (heartbeat, heartbeat))


def lease_record(**fields: object) -> str:
    """A lease record (this host's identity and this process by default)."""
    now = time.time()
    record = {
        "host": socket.gethostname(),
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "pid_namespace": os.readlink("/proc/self/ns/pid"),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "since": now - 30,
        "heartbeat": now - 5,
        "token": "0123456789abcdef",
        **fields,
    }
    return json.dumps(record)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_stale_lease_of_a_dead_process_is_taken_over(index_path, tmp_path):
    """A lease left by a process that died on this host (the file written here by hand) is taken over."""
    out = tmp_path / "stale.zarr"
    pid = dead_pid()
    write_lease(Path(f"{out}{LOCK}"), pid=pid, started=time.time() - 60, heartbeat=time.time())
    args = ["--index", index_path, *JOB[:6], "--time", "2024-06-01", "--bands", "B02", "--chunks", "64"]
    proc = subprocess.run(
        [str(MOSAIC), "regrid", *map(str, args), "-o", str(out)], capture_output=True, text=True, timeout=HANG
    )
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith("warning:"))
    assert f"taking over the lease of pid {pid} on host {socket.gethostname()}" in line
    assert f"its process (pid {pid}) no longer runs on this host" in line
    assert not Path(f"{out}{LOCK}").exists()
    assert json.loads((out / "zarr.json").read_text())["attributes"]["regrid_status"] == "complete"


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({}, "held"),  # this very process: alive, same start time
        ({"started": 1_000_000.0}, "taken over"),  # its pid, but another process's start: pid reused
        ({"host": "elsewhere", "boot_id": "x"}, "held"),  # another host, fresh heartbeat
        ({"host": "elsewhere", "boot_id": "x", "heartbeat": time.time() - 3600}, "taken over"),
        ({"pid_namespace": "pid:[1]", "heartbeat": time.time() - 3600}, "taken over"),  # a container
        (None, "held"),  # a lease file that cannot be read, just written
        (None, "taken over"),  # ... written an hour ago
    ],
    ids=[
        "alive",
        "pid-reused",
        "other-host",
        "other-host-stale",
        "other-pid-namespace",
        "garbage",
        "old-garbage",
    ],
)
def test_lease_rules(index_path, tmp_path, fields, outcome):
    """Who holds an output, who is provably gone: pid and start time here, heartbeat elsewhere."""
    out = tmp_path / "x.zarr"
    lock = Path(f"{out}{LOCK}")
    if fields is None:
        lock.write_text("{not json")
    else:
        write_lease(lock, **fields)
    if fields is None and outcome == "taken over":
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
    before = lock.read_bytes()
    run = lambda: mosaic.regrid(out, SEAM, "EPSG:4326", "2024-06-01", index=index_path, **SMALL)  # noqa: E731
    if outcome == "held":
        with pytest.raises(mosaic.OutputLockedError) as caught:
            run()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{out} is being written by another mosaic")
        if fields is not None:
            host = fields.get("host", socket.gethostname())
            assert f"pid {os.getpid()} on host {host} (process started " in message
            assert "lease taken" in message and re.search(r"last heartbeat \d+ s ago", message)
        else:
            assert "an unreadable lease record" in message
        assert lock.read_bytes() == before and not out.exists()  # nothing touched
    else:
        with pytest.warns(mosaic.RegridRecoveryWarning, match="taking over the lease of"):
            report = run()
        assert report.written > 0 and not lock.exists()


def test_heartbeat_and_a_lost_lease(tmp_path):
    """The holder's thread beats (touches its lease file); a lease taken over is noticed and not deleted."""
    from mosaic.outputs._lease import Lease, confirm

    out = str(tmp_path / "out.zarr")
    lease = Lease(out, heartbeat_seconds=0.01).acquire()
    lock = Path(f"{out}{LOCK}")
    first = json.loads(lock.read_text())
    assert first["pid"] == os.getpid() and first["token"] == lease.token and first["output"] == out
    os.utime(lock, (first["heartbeat"] - 60, first["heartbeat"] - 60))
    deadline = time.monotonic() + 60
    while lock.stat().st_mtime < first["heartbeat"]:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.01)
    confirm(lease.url, lease.token, out)  # a write task of the holder may write
    with pytest.raises(mosaic.OutputLockedError):
        Lease(out).acquire()  # held by a live process (this one)

    taker = tmp_path / "taker"  # another host's writer takes the lease over (an atomic rename)
    taker.write_text(lease_record(host="elsewhere", token="f" * 32, heartbeat=time.time()))
    os.replace(taker, lock)
    while True:
        try:
            lease.check()
        except mosaic.OutputLockedError as exc:
            assert "its lease was taken over by pid" in str(exc) and "on host elsewhere" in str(exc)
            break
        assert time.monotonic() < deadline, "the lost lease went unnoticed"
        time.sleep(0.01)
    with pytest.raises(mosaic.OutputLockedError, match="no longer holds the output's lease"):
        confirm(lease.url, lease.token, out)  # its write tasks stop
    lease.release()
    assert json.loads(lock.read_text())["host"] == "elsewhere"  # the new holder's lease stays


def test_lease_on_an_fsspec_file_system():
    """Object stores take the lease with a conditional create (here fsspec's memory file system)."""
    import fsspec

    from mosaic.outputs._lease import Lease

    fs = fsspec.filesystem("memory")
    with Lease("memory://bucket/out.zarr") as lease:
        assert fs.exists("/bucket/out.zarr.mosaic-lock") and lease.url.startswith("memory://")
        with pytest.raises(mosaic.OutputLockedError, match=f"pid {os.getpid()}"):
            Lease("memory://bucket/out.zarr").acquire()
        lease.verify()
    assert not fs.exists("/bucket/out.zarr.mosaic-lock")
    with pytest.raises(mosaic.InvalidInputError, match="bucket's root"):
        Lease("memory://bucket")


# ============================================================================================ durability


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The fsyncs (by path), renames and tree deletions of the test, in order (the real calls run)."""
    calls: list[tuple[str, str]] = []
    fsync, replace, rmtree = os.fsync, os.replace, shutil.rmtree

    def spy_fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def spy_replace(src: object, dst: object, **kwargs: object) -> None:
        replace(src, dst, **kwargs)
        calls.append(("replace", os.fspath(dst)))

    def spy_rmtree(path: object, *args: object, **kwargs: object) -> None:
        calls.append(("rmtree", os.fspath(path)))
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(shutil, "rmtree", spy_rmtree)
    return calls


def test_chunks_are_on_disk_before_their_marker_and_the_store_before_complete(index_path, tmp_path, syscalls):
    """Every region's chunk file and folder are flushed after its rename and before the region's marker;
    the "complete" status is flushed before the resume state is deleted."""
    out = tmp_path / "durable.zarr"
    report = mosaic.regrid(out, SEAM, "EPSG:4326", "2024-06", index=index_path, **SMALL)
    calls = list(syscalls)

    def between(call: tuple[str, str], start: int, stop: int) -> bool:
        return call in calls[start + 1 : stop]

    marked = [(i, path) for i, (op, path) in enumerate(calls) if op == "replace" and "/done/" in path]
    assert len(marked) == report.written > 0
    for index, marker in marked:
        chunk = str(out / "B02" / "c" / Path(*marker.rsplit("/", 1)[1].split(".")))
        if not os.path.exists(chunk):
            continue  # zarr writes no chunk of fill value only
        renamed = max(i for i, call in enumerate(calls[:index]) if call == ("replace", chunk))
        assert between(("fsync", chunk), renamed, index), marker
        assert between(("fsync", os.path.dirname(chunk)), renamed, index), marker
    last = marked[-1][0]
    status = next(i for i, (op, path) in enumerate(calls) if i > last and path == f"{out}/zarr.json")
    state = calls.index(("rmtree", f"{out}/{STATE_DIR}"))
    assert between(("fsync", f"{out}/zarr.json"), status, state) and between(
        ("fsync", str(out)), status, state
    )


def test_cog_is_flushed_before_it_replaces_the_output(index_path, tmp_path, syscalls):
    out = tmp_path / "one.tif"
    mosaic.regrid(out, SEAM, "EPSG:4326", "2024-06-01", index=index_path, **SMALL)
    staged = str(tmp_path / "one.tif.cog-tmp.tif")
    assert syscalls.index(("fsync", staged)) < syscalls.index(("replace", str(out)))
    assert ("fsync", str(tmp_path)) in syscalls[syscalls.index(("replace", str(out))) :]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.tif"]


def test_index_write_is_atomic_durable_and_never_shares_a_temporary_name(demo_index, tmp_path, syscalls):
    """TileIndex.write: a unique temporary name, flushed before the rename, removed when the write fails."""
    path = tmp_path / "index.parquet"
    other = tmp_path / "index.parquet.tmp"  # what another writer's temporary file was called
    other.write_bytes(b"another writer's half-written index")
    demo_index.write(path)
    assert other.read_bytes() == b"another writer's half-written index"
    replaced = syscalls.index(("replace", str(path)))
    temporary = syscalls[replaced - 1][1]
    assert syscalls[replaced - 1][0] == "fsync" and temporary != str(other) and temporary.endswith(".tmp")
    assert ("fsync", str(tmp_path)) in syscalls[replaced:]
    assert mosaic.TileIndex.read(path).equals(demo_index)

    # writers of one path at once (threads): each write whole, the last one wins, no temporary left
    from concurrent.futures import ThreadPoolExecutor

    parts = [demo_index.take(range(n)) for n in (1, 5, 20, len(demo_index))]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: parts[i % 4].write(path), range(16)))
    assert any(mosaic.TileIndex.read(path).equals(part) for part in parts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.parquet", "index.parquet.tmp"]


def test_index_write_that_fails_leaves_the_old_index_and_no_temporary_file(demo_index, tmp_path):
    """A real failure mid-write (the file size limit: EFBIG) keeps the old index whole and leaves nothing."""
    path = tmp_path / "index.parquet"
    small = demo_index.take([0])
    small.write(path)
    before = path.read_bytes()
    script = (
        "import resource, signal, sys\n"
        "from mosaic import TileIndex\n"
        "index = TileIndex.read(sys.argv[1])\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))\n"
        "index.write(sys.argv[2])\n"
    )
    big = tmp_path / "big" / "index.parquet"
    demo_index.write(big)
    assert big.stat().st_size > 16384
    proc = subprocess.run([sys.executable, "-c", script, str(big), str(path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "File too large" in proc.stderr, proc.stderr
    assert path.read_bytes() == before and mosaic.TileIndex.read(path).equals(small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "index.parquet"]

    # a failure after the file is written: the rename over a folder of that name
    folder = tmp_path / "taken.parquet"
    (folder / "x").mkdir(parents=True)
    with pytest.raises(OSError):
        small.write(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "index.parquet", "taken.parquet"]


def test_kill_in_the_middle_of_overwrite_is_finished_by_a_rerun(index_path, reference, tmp_path):
    """``--overwrite`` killed half-way through deleting: the store stays a regrid's, and a rerun finishes it.

    The deletion writes ``started.json`` (this request's fingerprint) first and deletes the rest after,
    so a rerun recognises the folder; it used to be left without its root metadata ("not a Zarr store").
    """
    out = tmp_path / "over.zarr"
    shutil.copytree(reference["path"], out)
    children = len(list(out.iterdir()))
    # the state folder, started.json (a temporary file, renamed), then 2 operations per folder deleted
    proc = start(index_path, out, "--overwrite", hook={"stop_at": 3 + children})
    assert stops(proc)
    kill(proc)
    left = [p.name for p in out.iterdir() if p.name != STATE_DIR]
    assert (out / STATE_DIR / "started.json").exists() and 0 < len(left) < children, left
    report, err = finish(start(index_path, out))  # the same request, without --overwrite
    assert "taking over the lease" in err and report["written"] == reference["regions"]
    assert tree(out) == tree(reference["path"])
