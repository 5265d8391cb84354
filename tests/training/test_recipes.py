"""Every experiment composes, and every piece of it instantiates."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

import lic
from lic.train import build_model
from lic.training.distill_module import DistillationModule
from lic.training.module import RateDistortionModule
from tests.training.conftest import RECIPES, compose_train

EXPERIMENTS = sorted(p.stem for p in (RECIPES / "experiment").glob("*.yaml"))


def test_the_required_experiments_exist() -> None:
    assert {"quick", "teacher", "student", "feds", "feds_quick", "teacher_quick"} <= set(
        EXPERIMENTS
    )
    assert {"feds_feature_only", "feds_channel_only", "feds_joint", "feds_swin"} <= set(EXPERIMENTS)


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    lic.save_codec(lic.create_codec("teacher-tiny"), path, lmbda=0.013, metric="mse")
    return path


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(
    experiment: str, tmp_path, teacher_checkpoint
) -> None:
    cfg = compose_train(
        [
            f"experiment={experiment}",
            f"run_dir={tmp_path}",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            f"teacher_checkpoint={teacher_checkpoint}",
        ]
    )
    assert cfg.name == experiment
    assert str(tmp_path) in cfg.callbacks.export.path
    module = build_model(cfg)
    if cfg.get("distill"):
        assert isinstance(module, DistillationModule)
        assert module.schedule.total_steps == cfg.trainer.max_steps
    else:
        assert type(module) is RateDistortionModule
    assert module.hparams["codec"] == cfg.codec.name
    datamodule = instantiate(cfg.data)
    assert datamodule.crop_size == cfg.data.crop_size
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    loggers = [instantiate(c) for c in cfg.logger.values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_steps == cfg.trainer.max_steps
    optimizers, schedulers = module.configure_optimizers()
    assert len(optimizers) == 2 and len(schedulers) == 1


def test_groups_mirror_the_package() -> None:
    groups = {p.name for p in RECIPES.iterdir() if p.is_dir()}
    assert {
        "codec",
        "data",
        "loss",
        "optim",
        "trainer",
        "callbacks",
        "logger",
        "distill",
        "experiment",
    } <= groups


def test_experiments_only_override_defaults() -> None:
    for path in (RECIPES / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path.name
        assert "_target_" not in text, f"{path.name} defines objects instead of overriding"


def test_default_data_is_the_shared_training_set() -> None:
    cfg = compose_train([])
    assert cfg.data.train_dir.endswith("datasets/train")
    assert "kodak" not in cfg.data.train_dir and "kodak" in cfg.data.val_dir
