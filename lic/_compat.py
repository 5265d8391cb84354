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

``import lic`` must stay cheap (``lic --help`` and ``lic info`` never need torch), so it does
not import torchvision itself: it calls :func:`install_torchvision_hook`, which puts a finder on
:data:`sys.meta_path` that runs :func:`ensure_torchvision_importable` at the moment anything
first imports torchvision, directly or through compressai, timm or Lightning. Until then torch
is not imported either.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import types

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
    import torch  # only now: importing this module must not cost a torch import

    # The failed import left half-initialised modules behind; start over once schemas exist.
    _forget_torchvision()
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _schema_library = library
    importlib.import_module("torchvision")
    return True


class _TorchvisionLoader:
    """Loads ``torchvision`` through :func:`ensure_torchvision_importable`.

    The import system hands :meth:`exec_module` an empty placeholder module; the real
    torchvision is imported in its place (the import system returns whatever
    ``sys.modules["torchvision"]`` holds once the loader is done).
    """

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default: an empty placeholder module

    def exec_module(self, module: types.ModuleType) -> None:
        _TorchvisionHook.uninstall()
        if sys.modules.get(module.__name__) is module:
            del sys.modules[module.__name__]
        ensure_torchvision_importable()
        if "torchvision" not in sys.modules:  # vanished between find_spec and now
            raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")


class _TorchvisionHook:
    """A :data:`sys.meta_path` finder that routes the first ``import torchvision`` through
    :func:`ensure_torchvision_importable`, then removes itself."""

    @classmethod
    def install(cls) -> None:
        if "torchvision" in sys.modules or any(isinstance(f, cls) for f in sys.meta_path):
            return
        sys.meta_path.insert(0, cls())

    @classmethod
    def uninstall(cls) -> None:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, cls)]

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchvision":
            return None
        for finder in sys.meta_path:  # is torchvision installed at all? (no import yet)
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            real = finder.find_spec(fullname, path, target)
            if real is not None:
                spec = importlib.machinery.ModuleSpec(
                    fullname, _TorchvisionLoader(), origin=real.origin, is_package=True
                )
                spec.submodule_search_locations = real.submodule_search_locations
                return spec
        return None  # not installed: the usual ModuleNotFoundError follows


def install_torchvision_hook() -> None:
    """Apply :func:`ensure_torchvision_importable` when torchvision is first imported.

    Cheap (no torch import) and idempotent; does nothing once torchvision is imported. Run by
    ``import lic``, so any module of lic, and any code that imports lic first, can import
    compressai, timm, Lightning or torchvision directly.
    """
    _TorchvisionHook.install()
