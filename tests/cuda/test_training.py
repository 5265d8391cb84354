"""Training on CUDA: a few steps with each GPU trainer recipe, FEDS with the teacher on the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lic
from lic.checkpoint import weights_fingerprint
from lic.train import train
from tests.conftest import REPO
from tests.training.conftest import compose_train, small_run_overrides

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher-tiny.ckpt"
    lic.save_codec(lic.create_codec("teacher-tiny"), path, lmbda=0.013, metric="mse")
    return path


@pytest.mark.parametrize(
    "speed",
    [
        ["speed.transform_precision=fp32", "speed.channels_last=false"],
        ["speed.transform_precision=auto", "speed.channels_last=true"],  # bf16 on a GPU
    ],
    ids=["fp32", "auto-channels-last"],
)
def test_trainer_gpu_trains_and_exports(image_folder, tmp_path, speed) -> None:
    run = tmp_path / "run"
    cfg = compose_train([*small_run_overrides(image_folder, run, steps=4), "trainer=gpu", *speed])
    assert cfg.trainer.accelerator == "gpu"
    torch.cuda.reset_peak_memory_stats()
    metrics = train(cfg)
    assert torch.cuda.max_memory_allocated() > 0  # the steps ran on the GPU
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    codec = lic.load_codec(run / "codec.ckpt")
    assert codec.metadata["steps"] == 4 and codec.transform_autocast is None
    assert (run / "real-bits.json").is_file()


@pytest.mark.skipif(
    torch.cuda.device_count() == 1, reason="trainer=ddp needs more than one CUDA device"
)
def test_trainer_ddp_keeps_ranks_identical(image_folder, tmp_path) -> None:
    run = tmp_path / "run"
    overrides = small_run_overrides(image_folder, run, steps=4)
    command = [sys.executable, "-m", "lic.train", *overrides, "trainer=ddp", "trainer.devices=2"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=480
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((run / "weights-by-rank.json").read_text())
    assert ranks["world_size"] == 2 and len(set(ranks["fingerprints"])) == 1


def test_feds_recipe_with_trainer_gpu(image_folder, teacher_checkpoint, tmp_path) -> None:
    run = tmp_path / "run"
    base = [o for o in small_run_overrides(image_folder, run, 6) if not o.startswith("experiment=")]
    cfg = compose_train(
        ["experiment=feds_quick", *base, f"teacher_checkpoint={teacher_checkpoint}", "trainer=gpu"]
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    student = lic.load_codec(run / "codec.ckpt")
    assert student.codec_name == "student-tiny"


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_feds_teacher_runs_on_the_gpu_and_stays_frozen(teacher_checkpoint, tmp_path) -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lic.distill import Phase, PhaseSchedule
    from lic.training.distill_module import DistillationModule
    from lic.training.losses import RateDistortionLoss

    teacher = lic.load_codec(teacher_checkpoint)
    before = weights_fingerprint(teacher)
    module = DistillationModule(
        lic.create_codec("student-tiny"),
        RateDistortionLoss(0.013),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        aux_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        teacher=teacher,
        schedule=PhaseSchedule([Phase("joint", 4, feature_weight=1.0, channel_weight=1.0)]),
    )
    devices: list[tuple[str, str]] = []

    class RecordDevices(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            teacher_device = next(pl_module.teacher.parameters()).device.type
            devices.append((teacher_device, next(pl_module.codec.parameters()).device.type))

    data = DataLoader([torch.rand(3, 64, 64) for _ in range(8)], batch_size=2)
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[RecordDevices()],
    )
    trainer.fit(module, train_dataloaders=data)
    assert trainer.global_step == 4
    assert devices == [("cuda", "cuda")] * 4  # both on the GPU while training
    # Lightning moves the fitted module back to the CPU; the teacher goes with it.
    assert all(not p.is_cuda for p in teacher.parameters())
    assert weights_fingerprint(teacher) == before and not teacher.training
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.adapters.parameters())
