"""The user's credentials file: ``$XDG_CONFIG_HOME/mosaic/credentials.json`` (else ``~/.config/mosaic/``).

Written by ``mosaic login``, readable by its owner only (mode 0600, in a 0700 folder); read by the
profiles that look for an Earthdata token (:func:`mosaic.auth.earthdata_token`). A file that others can
read is refused, as ssh refuses such keys.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from mosaic.errors import InvalidInputError

__all__ = ["config_path", "load", "save"]


def config_path() -> Path:
    """Where the credentials file is (it may not exist)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mosaic" / "credentials.json"


def load() -> dict[str, Any]:
    """The stored credentials (empty when there is no file).

    Raises:
        InvalidInputError: the file is readable by others than its owner, or is not JSON.
    """
    path = config_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    if hasattr(os, "getuid") and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInputError(f"{path} is readable by others: run `chmod 600 {path}`, then log in again")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not JSON: remove it and run `mosaic login` again") from exc
    return data if isinstance(data, dict) else {}


def save(section: str, values: dict[str, str]) -> Path:
    """Store ``values`` under ``section`` (replacing it), the file 0600 from its creation; its path."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = load()
    data[section] = values
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    return path
