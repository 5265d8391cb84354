"""The default codec that ships with lic: a FEDS-distilled student at several rate points.

The weights live in ``lic/weights/`` next to ``manifest.json``, which records for each rate point
its quality number (1 = lowest rate), λ, file, sha256 and weights fingerprint, and for the whole
set the recipe, training steps, data and teacher. ``scripts/package_default.py`` writes them from
the runs of ``scripts/train_default.py``.

- :func:`default_checkpoint` gives the file of one quality (``lic encode`` without
  ``--checkpoint``);
- :func:`find_by_fingerprint` finds the file whose weights made a bitstream (``lic decode``);
- :func:`default_checkpoints` gives all of them (``lic evaluate`` / ``lic bench``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lic.errors import CheckpointError, UsageError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class DefaultModel:
    """One rate point of the default codec."""

    quality: int
    lmbda: float
    path: Path
    sha256: str
    fingerprint: str
    codec: str


@lru_cache(maxsize=4)
def _manifest(directory: Path) -> dict:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no default weights installed ({path} is missing): give --checkpoint"
        )
    try:
        manifest = json.loads(path.read_text())
        models = manifest["models"]
        if not isinstance(models, list) or not models:
            raise ValueError("no models")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a default-weights manifest ({exc})") from None
    return manifest


def manifest(directory: Path | None = None) -> dict:
    """The manifest of the installed default weights (a copy)."""
    return json.loads(json.dumps(_manifest(directory or WEIGHTS_DIR)))


def default_models(directory: Path | None = None) -> list[DefaultModel]:
    """All rate points of the default codec, lowest rate first."""
    directory = directory or WEIGHTS_DIR
    entries = _manifest(directory)["models"]
    models = [
        DefaultModel(
            quality=int(e["quality"]),
            lmbda=float(e["lmbda"]),
            path=directory / e["file"],
            sha256=e["sha256"],
            fingerprint=e["fingerprint"],
            codec=e["codec"],
        )
        for e in entries
    ]
    return sorted(models, key=lambda m: m.quality)


def default_checkpoint(quality: int | None = None, directory: Path | None = None) -> Path:
    """The checkpoint of one quality (default: the manifest's ``default_quality``)."""
    models = default_models(directory)
    if quality is None:
        quality = int(
            _manifest(directory or WEIGHTS_DIR).get("default_quality", models[-1].quality)
        )
    for model in models:
        if model.quality == quality:
            return model.path
    qualities = ", ".join(str(m.quality) for m in models)
    raise UsageError(f"--quality must be one of {qualities}, got {quality}")


def default_checkpoints(directory: Path | None = None) -> list[Path]:
    """Every rate point's checkpoint, lowest rate first."""
    return [m.path for m in default_models(directory)]


def find_by_fingerprint(fingerprint: bytes | str, directory: Path | None = None) -> Path | None:
    """The default checkpoint whose weights fingerprint starts with ``fingerprint``, if any.

    Bitstreams carry the first bytes of the fingerprint; the manifest holds it in full.
    """
    prefix = fingerprint.hex() if isinstance(fingerprint, bytes) else fingerprint.lower()
    try:
        models = default_models(directory)
    except CheckpointError:
        return None
    for model in models:
        if model.fingerprint.startswith(prefix):
            return model.path
    return None


def verify(directory: Path | None = None) -> list[str]:
    """Problems with the installed default weights (missing files, wrong sha256); empty if none."""
    problems = []
    for model in default_models(directory):
        if not model.path.is_file():
            problems.append(f"{model.path.name}: missing")
            continue
        digest = hashlib.sha256(model.path.read_bytes()).hexdigest()
        if digest != model.sha256:
            problems.append(
                f"{model.path.name}: sha256 {digest[:16]}…, manifest says {model.sha256[:16]}…"
            )
    return problems
