"""``lic-train``: the Hydra entry point. Compose, instantiate, fit.

    lic-train experiment=quick
    lic-train experiment=student loss.lmbda=0.0067 trainer=gpu
    lic-train -m experiment=quick loss.lmbda=0.0018,0.0035,0.0067,0.0130
    lic-train --config-dir my_recipes experiment=mine      # a recipe folder of your own, too

Everything a run is made of comes from the recipes (``recipes/``, found by
:func:`lic.paths.recipes_dir`): the ``model`` group is the LightningModule, which Hydra builds
from the ``codec``, ``loss``, ``optim`` and ``speed`` nodes (and, for ``model=feds``, the
teacher and the ``distill`` phases). This module only composes, instantiates and fits.

Each run lives in ``run_dir`` (``runs/<name>/lmbda_<λ>`` by default). Re-running the same
command resumes from ``run_dir/checkpoints/last.ckpt`` when it exists; ``resume=PATH``
resumes from a given Lightning checkpoint instead (checked first: :func:`check_resume`).
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lic.errors import CheckpointError, LicError, message_line
from lic.paths import RunDir, recipes_dir

log = logging.getLogger("lic.train")
# The module steps its optimizers by hand and a checkpoint taken after step N is meant to hold
# the weights after step N; Lightning warns about exactly that.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
# Re-running a command resumes in the same folder, which Lightning finds suspicious.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
# Training is step-based on random crops: a resumed epoch simply draws new crops.
warnings.filterwarnings(
    "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
)


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``cfg.resume``, else the run's last checkpoint, else None."""
    if cfg.resume:
        path = Path(cfg.resume)
        if not path.is_file():
            raise LicError(f"resume checkpoint not found: {path}")
        return str(path)
    last = RunDir(Path(cfg.run_dir)).last_checkpoint
    return str(last) if last.is_file() else None


#: What a training checkpoint must hold to be resumed: Lightning's state of the loop, the
#: weights, both optimizers and the schedule, and the run's identity (codec, λ, metric).
RESUME_KEYS = (
    "pytorch-lightning_version",
    "global_step",
    "loops",
    "state_dict",
    "optimizer_states",
    "lr_schedulers",
    "hyper_parameters",
)


def check_resume(path: str, module: Any) -> None:
    """Refuse, in one line, a training checkpoint that ``module``'s run cannot continue exactly.

    A resume continues the same run: the checkpoint must hold :data:`RESUME_KEYS`, for the
    same codec (name and configuration), λ and metric, with weights that fit the module by
    name and shape. A checkpoint written by an older lic resumes when all it lacks has a
    migration:

    - no ``lic_nonfinite_in_a_row`` (non-finite steps were not counted yet): the count
      restarts at zero;
    - a codec configuration without arguments added since (``rate_levels`` and ``rate_range``
      came with variable-rate codecs): they take the registered variant's value, which is what
      the older code built (:func:`lic.codecs.registry.resolve_config`).

    Anything else (a missing key, weights without an entry the codec now has, another codec,
    configuration, λ or metric) is a :class:`~lic.errors.CheckpointError` naming it, raised
    before training starts, rather than Lightning's traceback or a silently different run.
    The file is read once more by Lightning when it resumes.
    """
    from lic.checkpoint import read_plain_dict, state_dict_mismatch
    from lic.codecs.registry import resolve_config

    payload = read_plain_dict(path, RESUME_KEYS, "Lightning training checkpoint")
    saved, codec = payload["hyper_parameters"], module.codec
    saved = saved if isinstance(saved, dict) else {}
    if saved.get("codec") != codec.codec_name:
        raise CheckpointError(
            f"{path} holds a {saved.get('codec')!r} run; this run trains {codec.codec_name!r}"
        )
    try:
        config = resolve_config(codec.codec_name, **(saved.get("codec_config") or {}))
    except LicError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    differences = [
        f"{key} {config.get(key)} in the checkpoint, {value} here"
        for key, value in codec.codec_config.items()
        if config.get(key) != value
    ]
    lmbda, metric = saved.get("lmbda"), saved.get("metric")
    if not isinstance(lmbda, int | float) or not math.isclose(
        lmbda, module.loss.lmbda, rel_tol=1e-6
    ):
        differences.append(f"lambda {lmbda} in the checkpoint, {module.loss.lmbda} here")
    if metric != module.loss.metric:
        differences.append(f"metric {metric} in the checkpoint, {module.loss.metric} here")
    if differences:
        raise CheckpointError(
            f"{path} is another run ({'; '.join(differences)}): a resume continues the same run"
        )
    mismatch = state_dict_mismatch(module.state_dict(), payload["state_dict"])
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit this run: {mismatch}")


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


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with lic's own errors passed through unwrapped.

    Hydra wraps whatever a constructor raises in an ``InstantiationException``; a
    :class:`~lic.errors.LicError` among the causes (a teacher of another λ, a codec that does
    not fit ``init_checkpoint``) is what the user needs to read, so it is raised as it is.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, LicError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def build_model(cfg: DictConfig):
    """The LightningModule of a composed recipe (its ``model`` node)."""
    teacher = cfg.model.get("teacher")
    if teacher is not None and teacher.get("path") is None:
        raise LicError(
            "distillation needs teacher_checkpoint=PATH (the teacher's codec.ckpt, same lambda)"
        )
    return instantiate(cfg.model)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by a composed config; returns the final metrics."""
    import pytorch_lightning as pl  # torchvision through lic's import hook (lic._compat)

    from lic.training.callbacks import AtomicCheckpointIO

    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path = resume_path(cfg)
    module = build_model(cfg)
    datamodule = instantiate(cfg.data)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
    )
    removed = remove_stale_temporaries(RunDir(Path(cfg.run_dir)).checkpoints)
    if removed:
        log.info("removed %d unfinished checkpoint write(s) of an interrupted run", removed)
    if ckpt_path:
        check_resume(ckpt_path, module)
        log.info("resuming from %s", ckpt_path)
    elif cfg.get("init_checkpoint"):
        log.info("starting from the weights of %s", cfg.init_checkpoint)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def main() -> None:
    """The ``lic-train`` command: Hydra's command line over :func:`train`."""
    from lic.training.recipes import register_recipes

    register_recipes()

    @hydra.main(config_path=str(recipes_dir()), config_name="train", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
        try:
            train(cfg)
        except LicError as exc:
            print(f"lic-train: error: {message_line(exc)}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except OSError as exc:  # an unwritable log or output, a full disk, ...
            where = f": {exc.filename}" if exc.filename else ""
            print(f"lic-train: error: {exc.strerror or exc}{where}", file=sys.stderr)
            sys.exit(1)

    _main()


if __name__ == "__main__":
    main()
