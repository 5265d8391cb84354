"""Codec checkpoints: one file that rebuilds a codec and identifies its exact weights.

A checkpoint is a ``torch.save`` of plain containers (no classes), read back with
``torch.load(weights_only=True)`` so that loading never unpickles arbitrary objects::

    {
      "format": "lic-codec", "version": 1,
      "codec": registry name, "config": constructor arguments,
      "state_dict": weights and entropy-coding tables (updated before saving),
      "metadata": {"lmbda": float | None, "metric": "mse" | "ms-ssim" | None, ...},
      "fingerprint": sha256 (hex) of the state dict,
    }

The fingerprint covers every tensor the decoder uses, coding tables included; bitstreams carry
its first :data:`lic.bitstream.FINGERPRINT_SIZE` bytes so that a file is never decoded with
other weights.

Checkpoints written by an older lic load when what they lack has a migration (see
:func:`load_codec`); anything else is refused with a one-line :class:`CheckpointError`.
Every checkpoint write goes through :func:`write_plain`: atomic, and a full disk is one line.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lic.bitstream import METRICS, short_fingerprint
from lic.codecs import create_codec
from lic.errors import CheckpointError, LicError
from lic.files import atomic_output

FORMAT = "lic-codec"
VERSION = 1


def weights_fingerprint(codec: nn.Module, parameters_only: bool = False) -> str:
    """sha256 (hex) over the names, dtypes, shapes and bytes of the codec's state dict.

    With ``parameters_only`` the buffers (entropy-coding tables, which ``update`` rebuilds)
    are left out: what training changes, and all data-parallel ranks must agree on.
    """
    digest = hashlib.sha256()
    tensors = dict(codec.named_parameters()) if parameters_only else codec.state_dict()
    for name, tensor in sorted(tensors.items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_codec(
    codec: nn.Module,
    path: str | os.PathLike[str],
    *,
    lmbda: float | None = None,
    metric: str | None = None,
    **metadata: Any,
) -> str:
    """Update the codec's entropy-coding tables and write it to ``path`` atomically.

    Args:
        codec: a codec built by :func:`lic.create_codec` (it knows its registry name).
        path: destination file.
        lmbda: rate–distortion trade-off it was trained for.
        metric: distortion it was trained for, one of :data:`lic.bitstream.METRICS`.
        **metadata: further JSON-compatible facts (steps, data, recipe...).

    Returns:
        The weights fingerprint (hex).

    Raises:
        CheckpointError: the file cannot be written (see :func:`write_plain`).
    """
    name = getattr(codec, "codec_name", None)
    if name is None:
        raise CheckpointError(
            "codec was not built by lic.create_codec: its registry name is unknown"
        )
    if metric is not None and metric not in METRICS:
        raise CheckpointError(f"metric must be one of {METRICS}, got {metric!r}")
    codec.update(force=True)
    fingerprint = weights_fingerprint(codec)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "codec": name,
        "config": codec.codec_config,
        "state_dict": {k: v.detach().cpu() for k, v in codec.state_dict().items()},
        "metadata": {"lmbda": lmbda, "metric": metric, **metadata},
        "fingerprint": fingerprint,
    }
    write_plain(payload, path)
    codec.fingerprint = fingerprint
    codec.metadata = payload["metadata"]
    return fingerprint


def plain_bytes(payload: Any) -> memoryview:
    """``torch.save(payload)`` into memory: the bytes of a checkpoint file."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getbuffer()


def write_plain(payload: Any, path: str | os.PathLike[str]) -> None:
    """Write ``torch.save(payload)`` to ``path`` atomically (temporary file, fsync, rename).

    The payload is serialised in memory first and written with plain file writes: torch's own
    writer reports a full disk or a file-size limit as an opaque ``RuntimeError`` ("unexpected
    pos ..."), a plain write as the ``OSError`` it is. A failed write removes its temporary
    file and leaves whatever ``path`` held before untouched.

    Raises:
        CheckpointError: the file cannot be written (no space left, file too large, ...), in
            one line.
    """
    data = plain_bytes(payload)
    path = Path(path)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise CheckpointError(
            f"cannot write {path}: {exc.strerror or exc} (any previous {path.name} is unchanged)"
        ) from None


def read_plain(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure as a one-line CheckpointError.

    ``weights_only`` refuses to unpickle anything but tensors and plain containers, so a file
    carrying code (a malicious pickle) is refused, never executed.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load (not a plain-data checkpoint): {first}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on arbitrary bytes
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None


def read_plain_dict(path: str | os.PathLike[str], keys: Sequence[str], kind: str) -> dict:
    """:func:`read_plain` of a file that must be a dict holding ``keys`` (a ``kind`` of file).

    Raises:
        CheckpointError: unreadable, not a dict, or lacking keys (named), in one line.
    """
    payload = read_plain(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a {kind}")
    missing = [key for key in keys if key not in payload]
    if missing:
        raise CheckpointError(
            f"{path}: the {kind} lacks {', '.join(missing)} (written by another version?)"
        )
    return payload


def _read(path: Path) -> dict[str, Any]:
    payload = read_plain(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a lic codec checkpoint (use `lic export` for training checkpoints)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('version')} is not supported "
            f"(this lic reads version {VERSION})"
        )
    missing = {"codec", "config", "state_dict", "fingerprint"} - set(payload)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(sorted(missing))}")
    return payload


#: State entries that are coding tables, not weights: their size follows the weights, and
#: ``update()`` rebuilds them.
CODING_TABLE_SUFFIXES = ("._offset", "._quantized_cdf", "._cdf_length", ".scale_table")


def state_dict_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str:
    """What differs between a module's state dict and a checkpoint's, in one line ('' if none).

    Missing and unexpected entries are named, then the first entry that is not a tensor or has
    another shape (coding tables excepted: their size follows the weights).
    """

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    parts = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        parts.append(f"missing {some(missing)}")
    if unexpected:
        parts.append(f"unexpected {some(unexpected)}")
    for key in sorted(set(expected) & set(found)):
        value = found[key]
        if not isinstance(value, torch.Tensor):
            parts.append(f"{key} is a {type(value).__name__}, not a tensor")
            break
        if key.endswith(CODING_TABLE_SUFFIXES):
            continue  # coding tables: their size follows the weights and is rebuilt anyway
        if value.shape != expected[key].shape:
            parts.append(
                f"{key} is {tuple(value.shape)} in the checkpoint, {tuple(expected[key].shape)} in the codec"
            )
            break
    return "; ".join(parts)


def load_codec(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a codec saved by :func:`save_codec`, in eval mode, ready to code.

    The codec gets ``fingerprint`` (hex) and ``metadata`` attributes.

    A checkpoint written by an older lic loads when all it lacks has a migration:

    - no ``metadata``: the codec's ``metadata`` is empty (λ and metric unknown);
    - a ``config`` without constructor arguments added since (``rate_levels`` and
      ``rate_range`` came with variable-rate codecs): they take the registered variant's value,
      which is what the older code built. The fingerprint then proves the weights are the ones
      saved.

    Any other difference is refused: another format version, a missing field, or weights that
    lack an entry the codec has (a variable-rate checkpoint without its gains) are named in one
    line.

    Raises:
        CheckpointError: unreadable file, unknown format, weights that do not fit the codec,
            or weights whose fingerprint differs from the recorded one.
    """
    path = Path(path)
    payload = _read(path)
    try:
        codec = create_codec(payload["codec"], **payload["config"])
    except LicError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: configuration does not build codec {payload['codec']!r}: {exc}"
        ) from None
    mismatch = state_dict_mismatch(codec.state_dict(), payload["state_dict"])
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit codec {payload['codec']!r}: {mismatch}")
    codec.load_state_dict(payload["state_dict"])
    fingerprint = weights_fingerprint(codec)
    if fingerprint != payload["fingerprint"]:
        raise CheckpointError(
            f"{path}: weights fingerprint {short_fingerprint(fingerprint)} differs from the "
            f"recorded {short_fingerprint(str(payload['fingerprint']))}: the file is corrupt"
        )
    codec.fingerprint = fingerprint
    codec.metadata = dict(payload.get("metadata") or {})
    return codec.to(device).eval()


def warm_start(codec: nn.Module, path: str | os.PathLike[str] | None) -> nn.Module:
    """Load the weights of the codec checkpoint ``path`` into ``codec``, and return ``codec``.

    A warm start: a new training run that begins from trained weights (for example a fine-tune
    of a trained codec to another λ). A fixed-rate codec may also start its variable-rate form
    (``student-small`` → ``student-small-vr``): the network is loaded, the gains keep their
    initial ``sqrt(λ)`` spread. ``path=None`` returns ``codec`` unchanged, so a recipe can
    always route its codec through here (``recipes/model/rd.yaml``). A run that resumes from its
    own Lightning checkpoint restores those weights over these.

    Raises:
        LicError: the checkpoint holds another codec or configuration.
    """
    if path is None:
        return codec
    source = load_codec(path)
    if source.codec_name == codec.codec_name and source.codec_config == codec.codec_config:
        codec.load_state_dict(source.state_dict())
        return codec
    rate_keys = ("rate_levels", "rate_range")

    def network(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in rate_keys}

    if (
        getattr(codec, "variable_rate", False)
        and not getattr(source, "variable_rate", False)
        and source.codec_name == codec.codec_name.removesuffix("-vr")
        and network(source.codec_config) == network(codec.codec_config)
    ):
        # A fixed-rate codec starts its variable-rate form: same network, gains as initialised.
        missing, unexpected = codec.load_state_dict(source.state_dict(), strict=False)
        if unexpected or set(missing) != {"log_gain", "log_inverse_gain"}:
            raise LicError(f"init_checkpoint {path} does not fit {codec.codec_name!r}")
        return codec
    raise LicError(
        f"init_checkpoint {path} holds codec {source.codec_name!r} {source.codec_config}, "
        f"not the configured {codec.codec_name!r} {codec.codec_config}"
    )
