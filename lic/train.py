"""``lic-train``: the Hydra entry point. Compose, instantiate, fit.

    lic-train experiment=quick
    lic-train experiment=student loss.lmbda=0.0067 trainer=gpu
    lic-train -m experiment=quick loss.lmbda=0.0018,0.0035,0.0067,0.0130

Each run lives in ``run_dir`` (``runs/<name>/lmbda_<λ>`` by default). Re-running the same
command resumes from ``run_dir/checkpoints/last.ckpt`` when it exists; ``resume=PATH``
resumes from a given Lightning checkpoint instead.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import lic  # noqa: F401  (the torchvision shim must run before Lightning is imported)
from lic.errors import LicError

log = logging.getLogger("lic.train")
# The module steps its optimizers by hand and a checkpoint taken after step N is meant to hold
# the weights after step N; Lightning warns about exactly that.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
# Re-running a command resumes in the same folder, which Lightning finds suspicious.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
# Training is step-based on random crops: a resumed epoch simply draws new crops.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``cfg.resume``, else the run's last checkpoint, else None."""
    if cfg.resume:
        path = Path(cfg.resume)
        if not path.is_file():
            raise LicError(f"resume checkpoint not found: {path}")
        return str(path)
    last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def remove_stale_temporaries(directory: Path) -> int:
    """Delete the temporary files of checkpoint writes that a killed run never finished.

    :class:`~lic.training.callbacks.AtomicCheckpointIO` writes ``.<name>.<random>.tmp`` and
    renames it into place; a run killed in between leaves the temporary file behind (and the
    previous checkpoint intact). Returns how many were removed.
    """
    stale = list(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def resolve_phases(phases: list[dict], total_steps: int) -> list[dict]:
    """Phase lengths from ``steps`` or ``fraction`` of ``total_steps``; the last takes the rest."""
    resolved, used = [], 0
    for index, phase in enumerate(phases):
        phase = dict(phase)
        fraction = phase.pop("fraction", None)
        if "steps" not in phase:
            if fraction is None:
                raise LicError(f"distillation phase {phase.get('name')!r} needs steps or fraction")
            last = index == len(phases) - 1
            phase["steps"] = total_steps - used if last else round(fraction * total_steps)
        used += phase["steps"]
        resolved.append(phase)
    return resolved


def warm_start(codec, path: str) -> None:
    """Load the weights of the codec checkpoint ``path`` into ``codec`` (same codec and config)."""
    from lic.checkpoint import load_codec

    source = load_codec(path)
    if source.codec_name != codec.codec_name or source.codec_config != codec.codec_config:
        raise LicError(
            f"init_checkpoint {path} holds codec {source.codec_name!r} {source.codec_config}, "
            f"not the configured {codec.codec_name!r} {codec.codec_config}"
        )
    codec.load_state_dict(source.state_dict())


def _distillation_module(cfg: DictConfig, codec, loss, optim, speed: dict | None = None):
    from hydra.utils import instantiate

    from lic.checkpoint import load_codec
    from lic.distill import PhaseSchedule
    from lic.training.distill_module import DistillationModule

    if not cfg.get("teacher_checkpoint"):
        raise LicError("distillation needs teacher_checkpoint=PATH (the teacher's codec.ckpt, same lambda)")
    teacher = load_codec(cfg.teacher_checkpoint)
    phases = resolve_phases(OmegaConf.to_container(cfg.distill.phases), cfg.trainer.max_steps)
    return DistillationModule(
        codec=codec,
        loss=loss,
        teacher=teacher,
        schedule=PhaseSchedule(phases),
        taps=list(cfg.distill.taps),
        channel_loss=instantiate(cfg.distill.channel_loss),
        **optim,
        **(speed or {}),
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by a composed config; returns the final metrics."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from lic.training.callbacks import AtomicCheckpointIO
    from lic.training.module import RateDistortionModule

    pl.seed_everything(cfg.seed, workers=True)
    codec = instantiate(cfg.codec)
    ckpt_path = resume_path(cfg)
    if cfg.get("init_checkpoint") and not ckpt_path:
        warm_start(codec, cfg.init_checkpoint)
        log.info("starting from the weights of %s", cfg.init_checkpoint)
    optim = instantiate(cfg.optim)
    speed = OmegaConf.to_container(cfg.speed) if cfg.get("speed") else {}
    if cfg.get("distill"):
        module = _distillation_module(cfg, codec, instantiate(cfg.loss), optim, speed)
    else:
        module = RateDistortionModule(codec=codec, loss=instantiate(cfg.loss), **optim, **speed)
    datamodule = instantiate(cfg.data)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()])
    removed = remove_stale_temporaries(Path(cfg.run_dir) / "checkpoints")
    if removed:
        log.info("removed %d unfinished checkpoint write(s) of an interrupted run", removed)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@hydra.main(config_path=str(RECIPES), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    try:
        train(cfg)
    except LicError as exc:
        print(f"lic-train: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
