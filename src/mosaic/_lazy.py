"""Public names resolved on first use (PEP 562), for the package and each stage's public face.

``import mosaic`` and ``import mosaic.index`` stay cheap, and a stage's ``__init__`` never imports its
own modules at import time, so modules inside a stage can import each other by full path in any order
without cycles through a half-initialised package (as scientific-python's ``lazy_loader.attach``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def attach(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps a public name to its module.

    A name is imported from its module on first use and cached in the package's namespace; any other
    attribute is tried as a submodule (``mosaic.synthetic``), so submodules stay reachable as
    attributes as they were before the package went lazy.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
            vars(sys.modules[package])[name] = value  # later lookups skip __getattr__
            return value
        if not name.startswith("__"):
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(vars(sys.modules[package]).get("__all__", names))

    return __getattr__, __dir__
