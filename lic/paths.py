"""Where lic looks for things outside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    """The project's shared material: ``$LIC_SHARED``, else ``../shared`` from the working directory."""
    return Path(os.environ.get("LIC_SHARED", "../shared"))


def data_root() -> Path:
    """Where ``lic datasets download`` puts datasets by default: ``$LIC_DATA``, else ``datasets``."""
    return Path(os.environ.get("LIC_DATA", "datasets"))
