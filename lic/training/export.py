"""Turn a Lightning training checkpoint into a codec checkpoint for ``lic encode``."""

from __future__ import annotations

import os
from pathlib import Path

from lic.checkpoint import read_plain, save_codec
from lic.codecs import create_codec
from lic.errors import CheckpointError


def export_training_checkpoint(
    source: str | os.PathLike[str], output: str | os.PathLike[str]
) -> str:
    """Export the codec of a :class:`RateDistortionModule` checkpoint; returns its fingerprint.

    The Lightning checkpoint is read with ``weights_only=True``: the module stores only plain
    hyper-parameters (codec name and arguments, λ, metric).
    """
    source = Path(source)
    payload = read_plain(source)
    hparams = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    if not hparams or "codec" not in hparams or "state_dict" not in payload:
        raise CheckpointError(
            f"{source}: not a lic training checkpoint (no codec hyper-parameters)"
        )
    codec = create_codec(hparams["codec"], **hparams.get("codec_config", {}))
    prefix = "codec."
    state = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    try:
        codec.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: weights do not fit codec {hparams['codec']!r}: {' '.join(str(exc).split())[:300]}"
        ) from None
    return save_codec(
        codec,
        output,
        lmbda=hparams.get("lmbda"),
        metric=hparams.get("metric"),
        steps=payload.get("global_step"),
        source=source.name,
    )
