"""Distillation sizes its adapters from the codecs' configurations, never by running them."""

from __future__ import annotations

import pytest
import torch

import lic
from lic.distill import Phase, PhaseSchedule
from lic.training.distill_module import DistillationModule
from lic.training.losses import RateDistortionLoss


def _no_forward(*args, **kwargs):
    raise AssertionError("a forward pass to learn feature widths")


def test_adapters_take_their_widths_from_feature_channels(monkeypatch) -> None:
    student, teacher = lic.create_codec("student-tiny"), lic.create_codec("teacher-tiny")
    teacher.metadata = {"lmbda": 0.013}
    for codec in (student, teacher):
        monkeypatch.setattr(codec, "forward", _no_forward)
    module = DistillationModule(
        student,
        RateDistortionLoss(0.013),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        aux_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        teacher=teacher,
        schedule=PhaseSchedule([Phase("joint", 4, 1.0, 1.0)]),
    )
    student_channels, teacher_channels = student.feature_channels(), teacher.feature_channels()
    for tap in [*module.taps, "y"]:
        adapted = module.adapters(tap, torch.zeros(1, student_channels[tap], 2, 2))
        assert adapted.shape[1] == teacher_channels[tap], tap
    with pytest.raises(AssertionError, match="forward pass"):
        student(torch.rand(1, 3, 64, 64))  # the guard was in place
