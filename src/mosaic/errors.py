"""Exceptions and warnings raised by mosaic.

One root (:class:`MosaicError`) and small named subclasses, each mixing in the builtin a caller would
naturally catch (``ValueError`` for bad arguments, ``OSError`` for failed reads). Errors about one
scene or file carry its ``href`` (and scene ``id`` where known) and are raised ``from`` the cause.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "GDALVersionError",
    "IncompleteMetadataWarning",
    "IndexFormatError",
    "InvalidInputError",
    "MissingIndexError",
    "MosaicError",
    "MosaicWarning",
    "NoDataError",
    "OutputLockedError",
    "ReadError",
    "ReadFailedWarning",
    "RegridRecoveryWarning",
    "SkippedSourcesWarning",
    "SourceError",
]


class MosaicError(Exception):
    """Root of every error mosaic raises on purpose."""


class InvalidInputError(MosaicError, ValueError):
    """An argument is malformed: a bbox, a time range, a CRS, an option value."""


class SourceError(MosaicError, ValueError):
    """One input file or STAC Item cannot become a tile index row.

    Attributes:
        href: the file, URL or Item the problem is about.
        reason: what is wrong with it, in words a user can act on.
        scene_id: the scene (Item) id where known.
    """

    def __init__(self, href: str, reason: str, *, scene_id: str | None = None):
        self.href = href
        self.reason = reason
        self.scene_id = scene_id
        where = f"{href} (scene {scene_id})" if scene_id else href
        super().__init__(f"{where}: {reason}")

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


class ReadError(SourceError, OSError):
    """Reading pixels (or metadata) from a scene failed."""


class AuthenticationError(ReadError):
    """A read was refused because credentials are missing or wrong."""


class OutputLockedError(MosaicError, RuntimeError):
    """Another process writes this output: it holds the output's lease (or took this writer's over).

    The message names the holder (host, pid, since when, heartbeat age) and the lease file.
    """


class GDALVersionError(MosaicError, RuntimeError):
    """The GDAL at hand lacks a driver or feature mosaic needs."""


class MosaicWarning(UserWarning):
    """Root of mosaic's warnings."""


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
