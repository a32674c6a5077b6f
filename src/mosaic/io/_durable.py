"""Durable local writes: fsync of files and folders, unique temporary names, replace by rename.

A rename is atomic but not durable: after a power cut, a file renamed into place may hold no bytes
(they were still in the page cache) and the rename itself may be lost (its folder was not flushed).
A writer that must never leave one thing on disk without another (a region's marker without the
region's chunks, an index file without its rows) flushes the file before the rename and the folder
after it. These helpers are for local file systems; an object store's PUT is durable when it returns.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file", "fsync_paths", "fsync_tree", "replace", "temporary_name"]


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's bytes and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder (the names in it: creations, renames, deletions) to the disk (POSIX only)."""
    if sys.platform == "win32":  # folders cannot be opened there; NTFS journals renames itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_paths(files: Iterable[str], root: str) -> None:
    """Flush ``files`` (those that exist), then every folder from theirs up to ``root`` included.

    For files written by a library that renames a temporary file into place and creates the folders
    on the way (zarr's ``LocalStore``): a missing file (a chunk zarr deleted or never wrote, as it does
    for chunks of fill value only) still gets its folder flushed, so the deletion is durable too.
    """
    root = os.path.normpath(root)
    folders: set[str] = set()
    for path in files:
        try:
            fsync_file(path)
        except FileNotFoundError:
            pass
        folder = os.path.dirname(os.path.normpath(path))
        while len(folder) >= len(root) and folder.startswith(root):
            folders.add(folder)
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):  # deepest first: a new folder, then its parent
        fsync_dir(folder)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Flush every file and folder under ``root`` (bottom-up), and ``root`` itself."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """A hidden name beside ``path`` that no other writer (process or thread) picks.

    ``.<name>.<pid>-<random>.tmp``: a fixed name (``<name>.tmp``) lets two writers clobber each other.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def replace(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Flush ``tmp``, rename it over ``path`` (atomic), flush the folder (durable)."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
