"""One writer per output: a lease file beside a regrid's output, taken atomically, kept alive by a heartbeat.

The lease of an output ``OUT`` is the file ``OUT.mosaic-lock``, *beside* the output rather than in it:
it guards the path whether a store exists there yet or not, and ``--overwrite`` deletes the store
without touching it. It holds JSON naming the holder (host name, boot id and pid namespace, pid, the
process's start time), when the lease was taken, the last heartbeat and a random token.

Taking it is atomic where the storage allows:

- local (and NFS) paths: the record is written to a temporary file, which is hard-linked to the lease
  name (``link`` fails if the name exists, and the lease never exists half-written); where hard links
  are not supported, ``O_CREAT | O_EXCL``;
- fsspec object stores: ``pipe_file(mode="create")``, which s3fs sends as a conditional PUT
  (``If-None-Match: *``: atomic on AWS S3 and servers that honour it); file systems without a
  conditional write fall back to fsspec's check-then-write, which is not atomic.

A lease whose holder is provably gone is taken over, with a :class:`~mosaic.errors.RegridRecoveryWarning`:

- on the holder's host (same host name, boot id and pid namespace): its pid no longer runs, is a
  zombie, or runs a process started at another time (the pid was reused);
- from another host: its heartbeat is older than :data:`STALE_SECONDS`.

A holder alive on this host is never taken over, however old its heartbeat (a stopped or starved
process still owns its output). A takeover is atomic on local paths (rename aside, check it is the
record that was judged, else put it back); on object stores it is a delete then a conditional create.

While the lease is held, a thread beats every :data:`HEARTBEAT_SECONDS` (on local paths it touches the
file, whose modification time is the heartbeat, so the record is never rewritten under a taker; on
object stores it rewrites the record) and checks that the lease still names this writer; if
another writer took it over, :meth:`Lease.check` raises
:class:`~mosaic.errors.OutputLockedError` at the next region. Write tasks (also on dask.distributed
workers, which never take the lease) call :func:`confirm` before they write, so tasks of a writer
whose lease was taken over (or released after an error) stop instead of writing into a store
another run now owns.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from dataclasses import replace as _replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from mosaic.errors import InvalidInputError, OutputError, OutputLockedError, RegridRecoveryWarning
from mosaic.io import _durable

__all__ = ["HEARTBEAT_SECONDS", "LOCK_SUFFIX", "STALE_SECONDS", "Holder", "Lease", "confirm", "lock_location"]

LOCK_SUFFIX = ".mosaic-lock"
"""The lease of output ``OUT`` is the file ``OUT`` + this suffix."""
HEARTBEAT_SECONDS = 10.0
"""How often the holder rewrites its heartbeat."""
STALE_SECONDS = 120.0
"""A lease held from another host whose heartbeat is older than this is taken over."""
_START_TOLERANCE = 1.0
"""Seconds two readings of one process's start time may differ by (Linux derives it from the boot time)."""
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


# ============================================================================================ holder


@dataclass(frozen=True, slots=True)
class Holder:
    """What a lease file says about its holder.

    Attributes:
        host: host name.
        pid: process id (0: the lease file could not be read).
        started: the process's start time (seconds since the epoch), None where unknown.
        since: when the lease was taken.
        heartbeat: the last heartbeat.
        token: random, one per lease taken.
        boot_id: the host's boot id (Linux), None elsewhere.
        pid_namespace: the process's pid namespace (Linux), None elsewhere.
    """

    host: str
    pid: int
    started: float | None
    since: float
    heartbeat: float
    token: str
    boot_id: str | None = None
    pid_namespace: str | None = None

    @classmethod
    def me(cls, token: str) -> Holder:
        """This process, taking a lease now."""
        now = time.time()
        host, boot_id, namespace = _host()
        return cls(host, os.getpid(), _process_start(os.getpid()), now, now, token, boot_id, namespace)

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder a lease file names, or None if it is not a lease record."""
        try:
            record = json.loads(data)
            return cls(
                host=str(record["host"]),
                pid=int(record["pid"]),
                started=None if record.get("started") is None else float(record["started"]),
                since=float(record["since"]),
                heartbeat=float(record["heartbeat"]),
                token=str(record["token"]),
                boot_id=record.get("boot_id"),
                pid_namespace=record.get("pid_namespace"),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def to_json(self, output: str) -> bytes:
        """The lease file's content (with the output and readable times, for people)."""
        record = {
            "output": output,
            "host": self.host,
            "boot_id": self.boot_id,
            "pid_namespace": self.pid_namespace,
            "pid": self.pid,
            "started": self.started,
            "since": self.since,
            "heartbeat": self.heartbeat,
            "token": self.token,
            "started_utc": None if self.started is None else _utc(self.started),
            "since_utc": _utc(self.since),
            "heartbeat_utc": _utc(self.heartbeat),
        }
        return json.dumps(record, indent=1).encode()

    def same_host(self) -> bool:
        """Whether the holder runs on this host, in this pid namespace (so its pid can be checked)."""
        return (self.host, self.boot_id, self.pid_namespace) == _host()

    def describe(self, now: float) -> str:
        """``pid N on host H (process started ..., lease taken ..., last heartbeat N s ago)``."""
        if self.pid == 0:
            return f"an unreadable lease record (last written {_age(now - self.heartbeat)} ago)"
        started = "" if self.started is None else f"process started {_utc(self.started)}, "
        return (
            f"pid {self.pid} on host {self.host} ({started}lease taken {_utc(self.since)}, "
            f"last heartbeat {_age(now - self.heartbeat)} ago)"
        )


def gone(holder: Holder, now: float, stale_seconds: float = STALE_SECONDS) -> str | None:
    """Why ``holder`` is provably gone (its lease may be taken over), or None if it may be alive."""
    if holder.pid and holder.same_host():
        if _running(holder.pid, holder.started):
            return None
        return f"its process (pid {holder.pid}) no longer runs on this host"
    age = now - holder.heartbeat
    if age > stale_seconds:
        return f"no heartbeat for {_age(age)} (a holder on another host is gone after {stale_seconds:.0f} s)"
    return None


# ============================================================================================ lease


def lock_location(output: str) -> tuple[Any, str]:
    """The fsspec file system and path of ``output``'s lease file (beside the output)."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(output)
    root = str(root).rstrip("/")
    if not _is_local(fs) and "/" not in root.strip("/"):
        raise InvalidInputError(
            f"{output} is a bucket's root; a regrid's lease file goes beside its output, so write to a "
            "path inside the bucket (e.g. .../mosaic.zarr)"
        )
    return fs, root + LOCK_SUFFIX


class Lease:
    """The lease of one output, for the process that writes it (a context manager: take, hold, release).

    Args:
        output: the output path or fsspec URL (a local path should be absolute).
        heartbeat_seconds: how often the heartbeat thread rewrites the record.
        stale_seconds: a holder on another host whose heartbeat is older than this is gone.
    """

    def __init__(
        self,
        output: str,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ):
        self.output = output
        self.fs, self.path = lock_location(output)
        self.local = _is_local(self.fs)
        self.url = self.path if self.local else str(self.fs.unstrip_protocol(self.path))
        """Where the lease file is, as a path or URL (what :func:`confirm` takes)."""
        self.token = uuid.uuid4().hex
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self._holder: Holder | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ life cycle

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release(quiet=exc is not None)

    def acquire(self) -> Lease:
        """Take the lease, taking over a holder that is provably gone (with a warning).

        Raises:
            OutputLockedError: a live process holds it (the message names it).
        """
        if self.local:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            except OSError as exc:
                raise OutputError.at(self.output, "the output", exc) from exc
        for _ in range(10):  # each turn loses a race to another writer at most once
            me = Holder.me(self.token)
            if self._create(me.to_json(self.output)):
                self._holder = me
                self._clean_leftovers()
                self._thread = threading.Thread(target=self._beat, name="mosaic-lease", daemon=True)
                self._thread.start()
                return self
            found = self._read()
            if found is None:
                continue  # released between our attempt and this read
            data, holder = found
            now = time.time()
            reason = gone(holder, now, self.stale_seconds)
            if reason is None:
                raise OutputLockedError(
                    f"{self.output} is being written by another mosaic process: {holder.describe(now)}; "
                    f"wait for it to end or stop it (its lease: {self.url})"
                )
            if self._take_over(data):
                warnings.warn(
                    f"{self.output}: taking over the lease of {holder.describe(now)}: {reason}",
                    RegridRecoveryWarning,
                    stacklevel=3,
                )
        raise OutputLockedError(
            f"{self.output}: other writers keep taking its lease ({self.url}); try again later"
        )

    def check(self) -> None:
        """Raise if the heartbeat thread found the lease taken over (cheap: no I/O).

        Raises:
            OutputLockedError: another writer holds the lease now.
        """
        if self._lost is not None:
            raise OutputLockedError(self._lost)

    def verify(self) -> None:
        """Read the lease file and raise unless it still names this writer (before irreversible steps).

        Raises:
            OutputLockedError: another writer holds the lease now, or the lease file is gone.
        """
        self.check()
        found = self._read()
        if found is None or found[1].token != self.token:
            self._lost = self._lost_message(found)
            raise OutputLockedError(self._lost)

    def release(self, *, quiet: bool = False) -> None:
        """Stop the heartbeat and delete the lease file if it is still this writer's.

        Args:
            quiet: ignore file-system errors (when releasing on the way out of another error).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._holder is None:
            return
        self._holder = None
        try:
            found = self._read()
            if found is not None and found[1].token == self.token:
                if self.local:
                    os.unlink(self.path)
                else:
                    self.fs.rm_file(self.path)
        except OSError:
            if not quiet:
                raise

    # ------------------------------------------------------------------------------ heartbeat

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._refresh()
            except OSError:
                continue  # a missed beat (e.g. a network error); the next one tries again
            if self._lost is not None:
                return

    def _refresh(self) -> None:
        if self.local:  # touch, then check: a record replaced meanwhile is never overwritten
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)
        found = self._read()
        if found is None or found[1].token != self.token or self._holder is None:
            self._lost = self._lost_message(found)
            return
        if not self.local:  # an object's time cannot be touched: rewrite the record (after the check)
            holder = _replace(self._holder, heartbeat=time.time())
            self.fs.pipe_file(self.path, holder.to_json(self.output))
            self._holder = holder

    def _lost_message(self, found: tuple[bytes, Holder] | None) -> str:
        if found is None:
            what = "its lease file was deleted"
        else:
            what = f"its lease was taken over by {found[1].describe(time.time())}"
        return (
            f"{self.output}: this writer stopped because {what} ({self.url}); another run may be "
            "writing the output: check it, then rerun to finish or --overwrite to start again"
        )

    # ------------------------------------------------------------------------------ storage

    def _read(self) -> tuple[bytes, Holder] | None:
        """The lease file's bytes and holder (heartbeat: the later of the record's and the file's time)."""
        try:
            if self.local:
                with open(self.path, "rb") as f:
                    data = f.read()
                    modified: float | None = os.fstat(f.fileno()).st_mtime
            else:
                data = bytes(self.fs.cat_file(self.path))
                modified = None
        except FileNotFoundError:
            return None
        holder = Holder.parse(data)
        if holder is None:  # not written by this module (a lease is never visible half-written)
            modified = self._modified() if modified is None else modified
            return data, Holder("", 0, None, modified, modified, "")
        return data, _replace(holder, heartbeat=max(holder.heartbeat, modified or 0.0))

    def _modified(self) -> float:
        """An object's modification time (now if unknown: an unreadable record is then never stale)."""
        try:
            return float(self.fs.modified(self.path).timestamp())
        except (OSError, NotImplementedError, AttributeError, ValueError):
            return time.time()

    def _create(self, data: bytes) -> bool:
        """Write the lease file if there is none, atomically; whether it was written."""
        if not self.local:
            try:
                self.fs.pipe_file(self.path, data, mode="create")
            except FileExistsError:
                return False
            except TypeError:  # an fsspec without pipe_file(mode=): check, then write
                if self.fs.exists(self.path):
                    return False
                self.fs.pipe_file(self.path, data)
            # a store that ignores the condition lets the last writer win: only that one goes on
            found = self._read()
            return found is not None and found[0] == data
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            try:
                os.link(tmp, self.path)  # fails if the name exists; the lease is never half-written
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _durable.fsync_dir(os.path.dirname(self.path))
        return True

    def _take_over(self, judged: bytes) -> bool:
        """Remove the lease file if it still holds ``judged`` (a dead holder's record)."""
        if not self.local:
            found = self._read()
            if found is None or found[0] != judged:
                return False
            self.fs.rm_file(self.path)
            return True
        aside = f"{self.path}.{self.token}.stale"
        try:
            os.rename(self.path, aside)  # atomic: of several writers taking over, one moves it
        except FileNotFoundError:
            return False
        with open(aside, "rb") as f:
            moved = f.read()
        if moved != judged:  # a live writer's lease, taken since we read: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def _clean_leftovers(self) -> None:
        """Delete temporary files of lease takers killed mid-way (older than the stale limit; local)."""
        if not self.local:
            return
        folder, name = os.path.split(self.path)
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.startswith(f"{name}.") and entry.name.endswith((".tmp", ".stale")):
                    with contextlib.suppress(OSError):
                        if time.time() - entry.stat().st_mtime > self.stale_seconds:
                            os.unlink(entry.path)


def confirm(url: str, token: str, output: str) -> None:
    """Raise unless the lease file at ``url`` still names ``token`` (write tasks call it before writing).

    Raises:
        OutputLockedError: the lease was released or taken over: the writer that started this task
            no longer owns the output.
    """
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        holder = None
    else:
        holder = Holder.parse(data)
        if holder is not None and holder.token == token:
            return
    whom = "nobody" if holder is None else holder.describe(time.time())
    raise OutputLockedError(
        f"{output}: a write task stopped: the writer that started it no longer holds the output's "
        f"lease ({url}; now held by {whom})"
    )


# ============================================================================================ host


def _host() -> tuple[str, str | None, str | None]:
    """(host name, boot id, pid namespace): equal for processes whose pids can be checked here."""
    return socket.gethostname(), _read_text("/proc/sys/kernel/random/boot_id"), _pid_namespace()


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if unknown."""
    try:
        import psutil  # a dependency of dask.distributed
    except ImportError:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _running(pid: int, started: float | None) -> bool:
    """Whether ``pid`` runs the process that started at ``started`` (not a zombie, not a reused pid)."""
    try:
        import psutil
    except ImportError:  # no start time to compare: a live pid counts as the holder
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return started is None or abs(created - started) < _START_TOLERANCE


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
