"""Exceptions and warnings raised by mosaic.

One root (:class:`MosaicError`) and small named subclasses, each mixing in the builtin a caller would
naturally catch (``ValueError`` for bad arguments, ``OSError`` for failed reads). Errors about one
scene or file carry its ``href`` (and scene ``id`` where known) and are raised ``from`` the cause.

Messages never show secrets: every error's and warning's text goes through :func:`mosaic.io.paths.redact`,
which blanks passwords, tokens and signatures in the hrefs (and GDAL messages) it quotes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "AuthenticationError",
    "CRSAreaWarning",
    "ChangedSourceWarning",
    "ChangedSourcesError",
    "DuplicateRowsWarning",
    "FilterError",
    "GDALVersionError",
    "GridSizeError",
    "HrefNotAllowedError",
    "IncompleteMetadataWarning",
    "IndexFormatError",
    "InvalidInputError",
    "InvalidMaskError",
    "MissingExtraError",
    "MissingIndexError",
    "MosaicError",
    "MosaicWarning",
    "NoDataError",
    "OutputError",
    "OutputLockedError",
    "ReadError",
    "ReadFailedWarning",
    "RegridRecoveryWarning",
    "SecretHrefWarning",
    "SkippedSourcesWarning",
    "SourceError",
    "VirtualStoreError",
]


def _redacted(args: tuple[object, ...]) -> tuple[object, ...]:
    from mosaic.io.paths import redact

    return tuple(redact(a) if isinstance(a, str) else a for a in args)


class MosaicError(Exception):
    """Root of every error mosaic raises on purpose (its message with secrets redacted)."""

    def __init__(self, *args: object):
        super().__init__(*_redacted(args))


class InvalidInputError(MosaicError, ValueError):
    """An argument is malformed: a bbox, a time range, a CRS, an option value."""


class InvalidMaskError(InvalidInputError):
    """A quality mask spec is malformed, or names a band the selected scenes do not have.

    The message names the spec (or the text given for it) and what to change, in one line.
    """


class VirtualStoreError(InvalidInputError):
    """Scenes a virtual Zarr store cannot describe as they are: tiles of another shape, codec or type.

    Zarr gives an array one chunk shape and one codec chain; the message names the scenes (and what
    differs) that do not fit, and what to do (``mixed="split"``, or re-encode them).
    """


class FilterError(InvalidInputError):
    """A ``filter=`` (CQL2) or ``sortby=`` that cannot be applied.

    It is malformed, uses an operator mosaic does not evaluate, names a property the index does not
    hold, or compares a value of the wrong type. The message names the bad part (and, for an unknown
    property, the ones the index holds).
    """


class GridSizeError(InvalidInputError):
    """The output grid is beyond what a request sensibly asks for.

    It has more pixels than ``max_pixels``, or pixels over 100 times finer than the finest selected
    scene's (most often a resolution in the wrong units, such as degrees given to a CRS in metres).
    The message names the size and the likely slip; a larger ``max_pixels=`` raises the limit,
    ``max_pixels=None`` lifts both checks.
    """


class SourceError(MosaicError, ValueError):
    """One input file or STAC Item cannot become a tile index row.

    Attributes:
        href: the file, URL or Item the problem is about (as given: it may carry a secret, which the
            message and ``reason`` do not show).
        reason: what is wrong with it, in words a user can act on.
        scene_id: the scene (Item) id where known.
    """

    def __init__(self, href: str, reason: str, *, scene_id: str | None = None):
        from mosaic.io.paths import redact

        self.href = href
        self.reason = redact(reason)
        self.scene_id = scene_id
        where = f"{redact(href)} (scene {scene_id})" if scene_id else redact(href)
        super().__init__(f"{where}: {self.reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_source_error, (type(self), self.href, self.reason, self.scene_id))


def _rebuild_source_error(
    cls: type[SourceError], href: str, reason: str, scene_id: str | None
) -> SourceError:
    return cls(href, reason, scene_id=scene_id)


class IndexFormatError(MosaicError, ValueError):
    """A saved tile index is not one mosaic can read (wrong schema, not GeoParquet, no geometry)."""


class MissingIndexError(MosaicError, ValueError):
    """No tile index was given and none is configured."""


class NoDataError(MosaicError, LookupError):
    """A request touches no scene, so there is nothing to mosaic."""


class OutputError(MosaicError, OSError):
    """An output cannot be written where asked: a read-only or special folder, a path under a file."""

    @classmethod
    def at(cls, path: str | os.PathLike[str], what: str, cause: BaseException) -> OutputError:
        """The error for writing ``what`` (e.g. "the index") at ``path`` failing with ``cause``."""
        target = Path(path)
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
        return cls(f"{target}: cannot write {what} here ({reason})")


class ReadError(SourceError, OSError):
    """Reading pixels (or metadata) from a scene failed."""


class AuthenticationError(ReadError):
    """A read was refused because credentials are missing or wrong."""


class ChangedSourcesError(InvalidInputError):
    """A regrid cannot resume: files it reads changed since it began (the message names the scenes).

    The regions already written hold the old files' pixels; resuming would mix the two versions.
    """


class OutputLockedError(MosaicError, RuntimeError):
    """Another process writes this output: it holds the output's lease (or took this writer's over).

    The message names the holder (host, pid, since when, heartbeat age) and the lease file.
    """


class GDALVersionError(MosaicError, RuntimeError):
    """The GDAL at hand lacks a driver or feature mosaic needs."""


class MissingExtraError(MosaicError, ImportError):
    """An optional feature needs packages of an extra that is not installed (the message names it)."""


class HrefNotAllowedError(MosaicError, PermissionError):
    """An href lies outside the allowed prefixes (``allowed_prefixes=``, ``$MOSAIC_ALLOWED_PREFIXES``).

    Raised before the file is opened; never skipped by ``on_error="skip"``.

    Attributes:
        href: the href refused (as given; the message shows it redacted).
        policy: the prefixes it was checked against, and where they were set.
        reason: why it is refused.
    """

    def __init__(self, href: str, policy: str, reason: str = "not under the allowed prefixes"):
        from mosaic.io.paths import redact

        self.href = href
        self.policy = policy
        self.reason = reason
        super().__init__(f"{redact(href)}: refused before opening it, {reason} ({policy})")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.href, self.policy, self.reason))


class MosaicWarning(UserWarning):
    """Root of mosaic's warnings (their messages with secrets redacted)."""

    def __init__(self, *args: object):
        super().__init__(*_redacted(args))


class CRSAreaWarning(MosaicWarning):
    """The request reaches well beyond the target CRS's area of use (EPSG:32632 for a box in Australia).

    The grid is still made, but the projection is distorted there: a CRS meant for the area is
    usually what was intended.
    """


class DuplicateRowsWarning(MosaicWarning):
    """A saved index holds the same row (scene id, asset and every other field) more than once.

    The copies are dropped, so that no scene counts twice (``method="count"``, ``"mean"``).
    """


class SkippedSourcesWarning(MosaicWarning):
    """Some inputs were skipped under ``on_error="skip"``; the warning lists which and why."""


class ReadFailedWarning(MosaicWarning):
    """A scene could not be read under ``on_error="skip"``; its pixels came from other scenes or nodata."""


class RegridRecoveryWarning(MosaicWarning):
    """A regrid found what a dead writer left and recovered: a stale lease taken over, lost resume state.

    The message says what was found and what the regrid does about it.
    """


class IncompleteMetadataWarning(MosaicWarning):
    """An asset's data type, nodata or band count is in neither its STAC Items nor a file header.

    The Items leave them out and no file of the asset could be opened to read them; the warning names
    the asset, the files tried, and what is assumed instead.
    """


class ChangedSourceWarning(MosaicWarning):
    """A scene's file is not the one indexed: its size or modification time differ from the index's.

    The index's grid, nodata and footprint of it may no longer hold. Warned once per file and process,
    naming the scene, the file (secrets hidden) and what changed.
    """


class SecretHrefWarning(MosaicWarning):
    """A tile index is written with hrefs that carry secrets (a signed URL, a password in a URL).

    The file then holds the secret for anyone it is shared with; the warning says which kinds of
    secret and how many hrefs, never their values.
    """
