"""lic: learned image codecs with teacher–student distillation (FEDS).

Importing the package is cheap: the public names below are loaded on first use (PEP 562), so
``lic --help``, ``lic info`` and :mod:`lic.bitstream` never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lic._compat import install_torchvision_hook

# compressai, timm and Lightning import torchvision; the shim repairs that import when it
# first happens (see lic._compat), without importing torch now.
install_torchvision_hook()

if TYPE_CHECKING:
    from lic import pretrained
    from lic.checkpoint import load_codec, save_codec
    from lic.codecs import create_codec, list_codecs

__version__ = "0.1.0"
__all__ = ["__version__", "create_codec", "list_codecs", "load_codec", "pretrained", "save_codec"]

# Public name -> the module that defines it (imported on first access).
_LAZY = {
    "create_codec": "lic.codecs",
    "list_codecs": "lic.codecs",
    "load_codec": "lic.checkpoint",
    "save_codec": "lic.checkpoint",
    "pretrained": "lic.pretrained",  # the shipped default codec (a module)
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lic' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name == f"lic.{name}" else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
