"""lic: learned image codecs with teacher–student distillation (FEDS)."""

from lic._compat import ensure_torchvision_importable

# Must run before compressai, timm or lightning import torchvision.
ensure_torchvision_importable()

from lic.checkpoint import load_codec, save_codec  # noqa: E402
from lic.codecs import create_codec, list_codecs  # noqa: E402
from lic import pretrained  # noqa: E402  (the shipped default codec)

__version__ = "0.1.0"
__all__ = ["create_codec", "list_codecs", "load_codec", "pretrained", "save_codec", "__version__"]
