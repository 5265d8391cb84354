"""Import-time compatibility shims, applied before anything imports torchvision.

compressai, timm, pytorch-lightning and torchmetrics all import ``torchvision``. On a CPU-only
machine the only torchvision release matching torch 2.13.0 is a CUDA build: its C++ extension
fails to load (which torchvision tolerates), but its ``_meta_registrations`` module then
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, and
the import dies with ``RuntimeError: operator torchvision::nms does not exist``.

:func:`ensure_torchvision_importable` reacts to exactly that failure: it defines the two missing
operator *schemas* (no kernels), so the registrations succeed and the import completes.
torchvision's C++ ops stay unavailable, which lic never needs. Where torchvision imports
normally, or is not installed, nothing is changed.
"""

from __future__ import annotations

import importlib
import sys

import torch

_MISSING_OPERATOR = "operator torchvision::nms does not exist"

# Schemas as torchvision's C++ extension declares them (torchvision/csrc/ops/nms.cpp).
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

# Keeps the schema definitions alive: torch drops them when the Library is garbage collected.
_schema_library: torch.library.Library | None = None


def _forget_torchvision() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` succeed on CPU torch with a CUDA-only torchvision build.

    Returns:
        True if the schemas had to be defined, False if nothing was done (torchvision imported
        on its own, was already imported, or is not installed).

    Raises:
        RuntimeError: any torchvision import failure other than the missing-``nms`` one,
            unchanged.
    """
    global _schema_library
    if "torchvision" in sys.modules:
        return False
    try:
        importlib.import_module("torchvision")
        return False
    except ModuleNotFoundError as exc:
        if exc.name == "torchvision":
            return False
        raise
    except RuntimeError as exc:
        if _MISSING_OPERATOR not in str(exc):
            raise
    # The failed import left half-initialised modules behind; start over once schemas exist.
    _forget_torchvision()
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _schema_library = library
    importlib.import_module("torchvision")
    return True
