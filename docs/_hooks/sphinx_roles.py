"""A griffe extension for the docs build: Sphinx roles in docstrings become inline code.

The package's docstrings use Sphinx cross-reference roles (:class:`TileIndex`, :func:`mosaic.load`,
:meth:`~mosaic.planning.planner.Plan.summary`), which mkdocstrings would otherwise print literally. Each becomes
inline code: the target as written, or only its last component when written with a leading ``~``.
Loaded by mkdocstrings (``extensions:`` in mkdocs.yml); not part of the site (``exclude_docs``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    target = match.group(2).strip()
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` to ```target``` in every docstring mkdocstrings loads."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the object's docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
