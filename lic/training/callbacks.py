"""Callbacks and plugins: codec export with a real-bitstream check, rank agreement, atomic
checkpoint writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lic import coding
from lic.bitstream import short_fingerprint
from lic.checkpoint import load_codec, save_codec, weights_fingerprint, write_plain
from lic.files import atomic_output
from lic.imageio import tensor_to_pixels
from lic.paths import REAL_BITS_FILE, portable_path

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, fsyncs, then renames it into place.

    A run killed at any moment leaves either the previous checkpoint or the new one under the
    final name, never a partial file. A write that fails (no space left, a file-size limit)
    stops the run with a one-line :class:`~lic.errors.CheckpointError` and leaves the previous
    checkpoints as they were, so the run resumes from the last one written
    (:func:`lic.checkpoint.write_plain`).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_plain(checkpoint, path)


def _real_bits(codec: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, float]:
    """Mean bpp of the real container and PSNR of the 8-bit decoded image."""
    bpps, psnrs = [], []
    for image in images:
        x = image.unsqueeze(0)
        data = coding.encode(codec, x)
        decoded = tensor_to_pixels(coding.decode(codec, data)).astype("float64")
        original = tensor_to_pixels(x).astype("float64")
        mse = ((decoded - original) ** 2).mean()
        bpps.append(8 * len(data) / (x.shape[-2] * x.shape[-1]))
        psnrs.append(10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-10))).item())
    return {
        "real_bpp": sum(bpps) / len(bpps),
        "real_psnr": sum(psnrs) / len(psnrs),
        "images": len(images),
    }


class ExportCodec(pl.Callback):
    """At the end of training, export the codec for ``lic encode`` and measure real bits.

    Rank zero updates the entropy-coding tables, writes a codec checkpoint (:func:`save_codec`)
    with λ, metric, steps and ``metadata``, loads that file back and codes the validation
    images through the real bitstream. Their mean bpp and PSNR are logged as
    ``val/real_bpp`` / ``val/real_psnr`` and written to ``real-bits.json`` beside the export.

    Args:
        path: where the codec checkpoint goes.
        metadata: extra JSON-compatible facts for the checkpoint (experiment, data...); the
            ``data`` folder is recorded by :func:`lic.paths.portable_path`.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        if self.metadata.get("data"):
            self.metadata["data"] = portable_path(self.metadata["data"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        codec = pl_module.codec
        hparams = pl_module.hparams
        fingerprint = save_codec(
            codec,
            self.path,
            lmbda=hparams["lmbda"],
            metric=hparams["metric"],
            steps=trainer.global_step,
            **self.metadata,
        )
        log.info("exported %s (fingerprint %s)", self.path, short_fingerprint(fingerprint))
        datamodule = trainer.datamodule
        val_set = getattr(datamodule, "val_set", None) if datamodule is not None else None
        if not val_set:
            return
        exported = load_codec(self.path)
        results = {
            "steps": trainer.global_step,
            **_real_bits(exported, [val_set[i] for i in range(len(val_set))]),
        }
        for logger in trainer.loggers:
            logger.log_metrics(
                {f"val/{k}": v for k, v in results.items() if k.startswith("real")},
                step=trainer.global_step,
            )
        with atomic_output(self.path.with_name(REAL_BITS_FILE)) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
        print(
            f"lic: exported {self.path}: {results['real_bpp']:.4f} bpp, {results['real_psnr']:.2f} dB "
            f"on {results['images']} validation images (real bitstreams)"
        )


class RankAgreement(pl.Callback):
    """At the end of training, check that every rank holds the same weights.

    Each rank fingerprints its codec's parameters (buffers such as the coding tables are
    rebuilt by export on rank zero alone); the fingerprints are gathered, rank zero writes them
    to ``path``, and the run fails if they differ (DDP drift would otherwise go unnoticed).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fingerprint = weights_fingerprint(pl_module.codec, parameters_only=True)
        code = torch.tensor(
            [int(fingerprint[i : i + 8], 16) for i in range(0, 64, 8)], dtype=torch.int64
        )
        gathered = trainer.strategy.all_gather(code.to(pl_module.device))
        rows = gathered.reshape(-1, 8).cpu().tolist()
        by_rank = ["".join(f"{v:08x}" for v in row) for row in rows]
        if trainer.is_global_zero:
            with atomic_output(self.path) as tmp:
                tmp.write_text(
                    json.dumps(
                        {"world_size": trainer.world_size, "fingerprints": by_rank}, indent=2
                    )
                    + "\n"
                )
        if len(set(by_rank)) != 1:
            raise RuntimeError(f"ranks hold different weights after training: {by_rank}")
