"""The one table of codecs by name.

A codec variant is a name, a class and a dict of constructor arguments (as in timm's
``@register_model`` variants): never a copied class. Configs, checkpoints and bitstreams refer
to codecs by that name, and :func:`create_codec` is the only way they are built, so every built
codec knows its name and its full constructor arguments (``codec.codec_name`` and
``codec.codec_config``), which is what a checkpoint stores.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lic.errors import UsageError


@dataclass(frozen=True)
class CodecSpec:
    """A registered codec variant."""

    name: str
    cls: type[nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, CodecSpec] = {}


def register_codec(name: str, cls: type[nn.Module], description: str, **kwargs: Any) -> CodecSpec:
    """Register a variant; a second registration under the same name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"codec {name!r} is already registered")
    unknown = set(kwargs) - set(inspect.signature(cls).parameters)
    if unknown:
        raise TypeError(f"{cls.__name__} takes no argument(s) {sorted(unknown)} (codec {name!r})")
    spec = CodecSpec(name, cls, dict(kwargs), description)
    _REGISTRY[name] = spec
    return spec


def list_codecs() -> list[str]:
    """Names of all registered codecs, sorted."""
    return sorted(_REGISTRY)


def _listing() -> str:
    """The registered names on one short line: a variant with a variable-rate twin once."""
    names = list_codecs()
    paired = [n for n in names if f"{n}-vr" in _REGISTRY]
    rest = [n for n in names if n not in paired and n.removesuffix("-vr") not in paired]
    listing = ", ".join(paired) + (" (each also as <name>-vr)" if paired else "")
    return ", ".join(filter(None, [listing, *rest]))


def codec_spec(name: str) -> CodecSpec:
    """The registered variant called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown codec {name!r}; registered codecs: {_listing()}") from None


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def resolve_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full constructor arguments of codec ``name`` with ``overrides``: its ``codec_config``.

    Raises:
        UsageError: an unknown codec, or an argument its class does not take.
    """
    spec = codec_spec(name)
    signature = inspect.signature(spec.cls)
    unknown = set(overrides) - set(signature.parameters)
    if unknown:
        raise UsageError(f"codec {name!r} takes no argument(s) {', '.join(sorted(unknown))}")
    bound = signature.bind(**{**spec.kwargs, **overrides})
    bound.apply_defaults()
    return {key: _jsonable(value) for key, value in bound.arguments.items()}


def create_codec(name: str, **overrides: Any) -> nn.Module:
    """Build the registered codec ``name``, with constructor arguments overridden.

    The returned module carries ``codec_name`` and ``codec_config`` (all constructor
    arguments, defaults included, as JSON-compatible values: :func:`resolve_config`).
    """
    config = resolve_config(name, **overrides)
    codec = codec_spec(name).cls(**config)
    codec.codec_name = name
    codec.codec_config = config
    return codec
