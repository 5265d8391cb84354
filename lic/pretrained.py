"""The default codec that ships with lic: fixed-rate rate points, or one variable-rate model.

The weights live in ``lic/weights/`` next to ``manifest.json``, in one of two shapes:

- **fixed rate**: one checkpoint per rate point, each with its quality number (1 = lowest
  rate) and λ (written by ``scripts/package_default.py`` from ``scripts/train_default.py``);
- **variable rate**: one ``*-vr`` checkpoint whose entry carries ``"variable_rate": true``,
  its ``"quality_range"`` (e.g. ``[1, 8]``, continuous in between) and the λ of each trained
  level (written by ``scripts/package_default.py --campaign RUN``).

Every entry records its file, sha256 and weights fingerprint; the manifest records the
``default_quality``, the recipe, the training and the data. An optional ``"retired"`` list names
earlier default weights that are no longer installed (codec, fingerprint, quality, λ, and
``until``: where they can still be found), so that their files fail to decode with a message
saying where the weights are.

- :func:`default_checkpoint` gives the file of one quality (``lic encode`` without
  ``--checkpoint``);
- :func:`find_by_fingerprint` finds the file whose weights made a bitstream (``lic decode``);
  :func:`find_retired` the retired weights that did, when none installed did;
- :func:`default_checkpoints` gives all of them (``lic evaluate`` / ``lic bench``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from lic.errors import CheckpointError, UsageError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class DefaultModel:
    """One checkpoint of the default codec: a rate point, or the one variable-rate model.

    A variable-rate model has no single ``quality`` or ``lmbda`` (None): it takes any quality
    in ``quality_range``, and ``lmbdas`` gives the λ of each trained level.
    """

    quality: int | None
    lmbda: float | None
    path: Path
    sha256: str
    fingerprint: str
    codec: str
    quality_range: tuple[float, float] | None = None
    lmbdas: tuple[float, ...] | None = None

    @property
    def variable_rate(self) -> bool:
        """Whether this one checkpoint codes at any quality of its range."""
        return self.quality_range is not None


@dataclass(frozen=True)
class RetiredModel:
    """Earlier default weights that are no longer installed, and where they can be found."""

    codec: str
    fingerprint: str
    quality: float | None
    lmbda: float | None
    until: str
    file: str | None = None
    quality_range: tuple[float, float] | None = None

    def describe(self) -> str:
        """``quality 3, student-small`` or ``student-small-vr, variable rate 1 to 8``."""
        if self.quality_range is not None:
            low, high = self.quality_range
            return f"{self.codec}, variable rate {low:g} to {high:g}"
        if self.quality is None:
            return self.codec
        return f"quality {self.quality:g}, {self.codec}"


def _range(value, where: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: quality_range must be [low, high], got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise ValueError(f"{where}: quality_range must be [low, high] with 0 < low < high")
    return low, high


def _check_shape(manifest: dict) -> None:
    """A manifest is a fixed-rate set or exactly one variable-rate model; else a ValueError."""
    models = manifest["models"]
    if not isinstance(models, list) or not models:
        raise ValueError("no models")
    for entry in models:
        needed = {"file", "codec", "fingerprint", "sha256"}
        needed |= {"quality_range"} if entry.get("variable_rate") else {"quality", "lmbda"}
        missing = sorted(needed - set(entry))
        if missing:
            raise ValueError(f"a model entry lacks {', '.join(missing)}")
    variable = [m for m in models if m.get("variable_rate")]
    if variable:
        if len(models) != 1:
            raise ValueError("a variable-rate default has exactly one model")
        low, high = _range(variable[0].get("quality_range"), "the variable-rate model")
        quality = manifest.get("default_quality")
        if quality is not None and not low <= float(quality) <= high:
            raise ValueError(f"default_quality {quality} is outside {low:g} to {high:g}")
    for entry in manifest.get("retired", []):
        if not isinstance(entry, dict) or not {"codec", "fingerprint", "until"} <= set(entry):
            raise ValueError("a retired entry needs codec, fingerprint and until")


@lru_cache(maxsize=4)
def _read_manifest(path: Path, mtime_ns: int, size: int) -> dict:
    """The parsed manifest (cached per version of the file: its mtime and size)."""
    try:
        manifest = json.loads(path.read_text())
        _check_shape(manifest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a default-weights manifest ({exc})") from None
    return manifest


def _manifest(directory: Path) -> dict:
    path = directory / MANIFEST_NAME
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise CheckpointError(
            f"no default weights installed ({path} is missing): give --checkpoint"
        ) from None
    return _read_manifest(path, stat.st_mtime_ns, stat.st_size)


def manifest(directory: Path | None = None) -> dict:
    """The manifest of the installed default weights (a copy)."""
    return json.loads(json.dumps(_manifest(directory or WEIGHTS_DIR)))


def default_models(directory: Path | None = None) -> list[DefaultModel]:
    """All checkpoints of the default codec, lowest rate first (one if it is variable-rate)."""
    directory = directory or WEIGHTS_DIR
    models = []
    for e in _manifest(directory)["models"]:
        variable = bool(e.get("variable_rate"))
        lmbdas = tuple(float(v) for v in e.get("lmbdas", ())) if variable else ()
        models.append(
            DefaultModel(
                quality=None if variable else int(e["quality"]),
                lmbda=None if variable else float(e["lmbda"]),
                path=directory / e["file"],
                sha256=e["sha256"],
                fingerprint=e["fingerprint"],
                codec=e["codec"],
                quality_range=_range(e["quality_range"], e["file"]) if variable else None,
                lmbdas=lmbdas or None,
            )
        )
    return sorted(models, key=lambda m: m.quality or 0)


def is_variable_rate(directory: Path | None = None) -> bool:
    """Whether the default codec is one variable-rate checkpoint (any quality of a range)."""
    return default_models(directory)[0].variable_rate


def quality_range(directory: Path | None = None) -> tuple[float, float] | None:
    """The qualities a variable-rate default takes, ``(low, high)``; None for a fixed-rate set."""
    return default_models(directory)[0].quality_range


def default_quality(directory: Path | None = None) -> float:
    """The quality used when none is given: the manifest's ``default_quality``.

    Without one: the highest rate point of a fixed-rate set, the middle level of a
    variable-rate model (as :attr:`lic.codecs.codec.ChannelARCodec.default_quality`).
    """
    models = default_models(directory)
    recorded = _manifest(directory or WEIGHTS_DIR).get("default_quality")
    if recorded is not None:
        return float(recorded)
    if models[0].variable_rate:
        return float(int(models[0].quality_range[1]) // 2 + 1)
    return float(models[-1].quality)


def describe_qualities(directory: Path | None = None) -> str:
    """The default codec's qualities in words, for help texts."""
    models = default_models(directory)
    default = f"default {default_quality(directory):g}"
    if models[0].variable_rate:
        low, high = models[0].quality_range
        return f"any number from {low:g} (smallest files) to {high:g}, {default}"
    qualities = [str(m.quality) for m in models]
    listed = (
        ", ".join(qualities[:-1]) + f" or {qualities[-1]}" if len(qualities) > 1 else qualities[0]
    )
    return f"{listed} (1: smallest files), {default}"


class RatePoint(NamedTuple):
    """One rate point of the shipped default codec.

    ``coding_quality`` is what :func:`lic.coding.encode` and ``codec.compress`` / ``codec(x)``
    take for it: None for a fixed-rate checkpoint (one rate), the quality for a variable-rate one.
    """

    quality: int
    path: Path
    coding_quality: float | None
    lmbda: float | None

    def kwargs(self) -> dict:
        """``quality=`` for a codec's ``forward`` / ``compress`` (nothing for a fixed rate)."""
        return {} if self.coding_quality is None else {"quality": self.coding_quality}


def rate_points(directory: Path | None = None) -> list[RatePoint]:
    """The default codec's rate points, lowest rate first: each checkpoint of a
    fixed-rate set, or each trained level (1 to L) of its one variable-rate checkpoint."""
    models = default_models(directory)
    if not models[0].variable_rate:
        return [RatePoint(m.quality, m.path, None, m.lmbda) for m in models]
    (model,) = models
    low, high = model.quality_range
    levels = range(int(low), int(high) + 1)
    lmbdas = model.lmbdas or (None,) * len(levels)
    return [
        RatePoint(q, model.path, float(q), lmbda) for q, lmbda in zip(levels, lmbdas, strict=True)
    ]


def default_checkpoint(quality: float | None = None, directory: Path | None = None) -> Path:
    """The checkpoint of one quality (default: the manifest's ``default_quality``).

    A variable-rate default has one checkpoint for every quality of its range.

    Raises:
        UsageError: a quality the default codec does not have.
    """
    models = default_models(directory)
    if models[0].variable_rate:
        low, high = models[0].quality_range
        if quality is not None:
            try:
                value = float(quality)
            except (TypeError, ValueError):
                value = math.nan
            if not low <= value <= high:  # NaN fails too
                raise UsageError(
                    f"--quality must be a number from {low:g} to {high:g}, got {quality}"
                )
        return models[0].path
    if quality is None:
        quality = default_quality(directory)
    for model in models:
        if model.quality == quality:
            return model.path
    qualities = ", ".join(str(m.quality) for m in models)
    raise UsageError(f"--quality must be one of {qualities}, got {quality}")


def default_checkpoints(directory: Path | None = None) -> list[Path]:
    """Every checkpoint of the default codec, lowest rate first (one if it is variable-rate)."""
    return [m.path for m in default_models(directory)]


def _prefix(fingerprint: bytes | str) -> str:
    return fingerprint.hex() if isinstance(fingerprint, bytes) else fingerprint.lower()


def find_by_fingerprint(fingerprint: bytes | str, directory: Path | None = None) -> Path | None:
    """The default checkpoint whose weights fingerprint starts with ``fingerprint``, if any.

    Bitstreams carry the first bytes of the fingerprint; the manifest holds it in full.
    """
    prefix = _prefix(fingerprint)
    try:
        models = default_models(directory)
    except CheckpointError:
        return None
    for model in models:
        if model.fingerprint.startswith(prefix):
            return model.path
    return None


def retired_models(directory: Path | None = None) -> list[RetiredModel]:
    """Earlier default weights the manifest names as no longer installed (its ``retired``)."""
    return [
        RetiredModel(
            codec=e["codec"],
            fingerprint=e["fingerprint"],
            quality=None if e.get("quality") is None else float(e["quality"]),
            lmbda=None if e.get("lmbda") is None else float(e["lmbda"]),
            until=e["until"],
            file=e.get("file"),
            quality_range=_range(e["quality_range"], "retired") if e.get("quality_range") else None,
        )
        for e in _manifest(directory or WEIGHTS_DIR).get("retired", [])
    ]


def find_retired(fingerprint: bytes | str, directory: Path | None = None) -> RetiredModel | None:
    """The retired default weights whose fingerprint starts with ``fingerprint``, if any."""
    prefix = _prefix(fingerprint)
    try:
        retired = retired_models(directory)
    except CheckpointError:
        return None
    return next((r for r in retired if r.fingerprint.startswith(prefix)), None)


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
