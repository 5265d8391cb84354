"""FEDS training: phases at the configured steps, a frozen teacher, resume mid-phase, λ check."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

import lic
from lic.checkpoint import weights_fingerprint
from lic.distill import Phase, PhaseSchedule
from lic.errors import LicError
from lic.train import train
from lic.training.distill_module import DistillationModule
from lic.training.losses import RateDistortionLoss
from tests.training.conftest import compose_train, small_run_overrides


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher-tiny.ckpt"
    lic.save_codec(lic.create_codec("teacher-tiny"), path, lmbda=0.013, metric="mse")
    return path


def _phases_by_step(run_dir: Path, version: int = 0) -> dict[int, float]:
    phases = {}
    for metrics in [run_dir / "logs" / f"version_{version}" / "metrics.csv"]:
        with metrics.open() as handle:
            for row in csv.DictReader(handle):
                if row.get("distill/phase"):
                    phases[int(row["step"])] = float(row["distill/phase"])
    return phases


def _overrides(image_folder, run_dir, teacher, steps=6, *extra) -> list[str]:
    base = [
        o
        for o in small_run_overrides(image_folder, run_dir, steps)
        if not o.startswith("experiment=")
    ]
    return ["experiment=feds_quick", *base, f"teacher_checkpoint={teacher}", *extra]


def test_phases_switch_at_the_configured_steps(image_folder, teacher_checkpoint, tmp_path) -> None:
    run = tmp_path / "run"
    train(
        compose_train(_overrides(image_folder, run, teacher_checkpoint))
    )  # 0.3/0.3/0.4 of 6 steps
    assert _phases_by_step(run) == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}
    student = lic.load_codec(run / "codec.ckpt")
    assert student.codec_name == "student-tiny"  # the student is exported, not the teacher


def test_resume_mid_phase_continues_in_the_right_phase(
    image_folder, teacher_checkpoint, tmp_path
) -> None:
    first = tmp_path / "first"
    keep_all = ["callbacks.checkpoint.every_n_train_steps=3", "callbacks.checkpoint.save_top_k=-1"]
    train(compose_train(_overrides(image_folder, first, teacher_checkpoint, 6, *keep_all)))
    middle = first / "checkpoints" / "step3.ckpt"
    saved = torch.load(middle, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3 and saved["lic_phase"] == "channel"
    # Resume the same run from its middle checkpoint (a second log version records it).
    train(
        compose_train(
            _overrides(image_folder, first, teacher_checkpoint, 6, *keep_all, f"resume={middle}")
        )
    )
    assert _phases_by_step(first, version=1) == {3: 1, 4: 2, 5: 2}
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_teacher_is_frozen_and_unchanged(teacher_checkpoint, tmp_path) -> None:
    teacher = lic.load_codec(teacher_checkpoint)
    before = weights_fingerprint(teacher)
    module = DistillationModule(
        lic.create_codec("student-tiny"),
        RateDistortionLoss(0.013),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        aux_optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        teacher=teacher,
        schedule=PhaseSchedule([Phase("joint", 4, 1.0, 1.0)]),
    )
    assert not any(name.startswith("teacher") for name, _ in module.named_parameters())
    student_before = weights_fingerprint(module.codec)
    data = DataLoader([torch.rand(3, 64, 64) for _ in range(8)], batch_size=2)
    trainer = pl.Trainer(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=data)
    assert trainer.global_step == 4
    assert weights_fingerprint(teacher) == before and not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert weights_fingerprint(module.codec) != student_before
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.adapters.parameters())


def test_the_teacher_follows_the_module_s_moves_but_stays_out_of_its_tree(
    teacher_checkpoint,
) -> None:
    """Lightning moves a fitted module back to the CPU; the teacher (not a submodule) must go
    with it rather than stay behind in GPU memory. Checked here through a dtype move, which
    takes the same ``nn.Module._apply`` path as a device move."""
    module = DistillationModule(
        lic.create_codec("student-tiny"),
        RateDistortionLoss(0.013),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        aux_optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        teacher=lic.load_codec(teacher_checkpoint),
        schedule=PhaseSchedule([Phase("joint", 4, 1.0, 1.0)]),
    )
    assert module.double() is module
    assert all(p.dtype == torch.float64 for p in module.teacher.parameters())
    assert all(p.dtype == torch.float64 for p in module.codec.parameters())
    module.float()
    assert all(p.dtype == torch.float32 for p in module.teacher.parameters())
    assert not any(key.startswith("teacher") for key in module.state_dict())


def test_teacher_of_another_lambda_is_refused(teacher_checkpoint, image_folder, tmp_path) -> None:
    with pytest.raises(LicError, match="lambda=0.013, this run uses lambda=0.0067"):
        train(
            compose_train(
                _overrides(image_folder, tmp_path, teacher_checkpoint, 6, "loss.lmbda=0.0067")
            )
        )
    with pytest.raises(LicError, match="teacher_checkpoint=PATH"):
        train(compose_train(_overrides(image_folder, tmp_path, "null")))
