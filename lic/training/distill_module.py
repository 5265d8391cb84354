"""FEDS: a frozen teacher guides a student through staged distillation phases."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lic.checkpoint import weights_fingerprint
from lic.distill import (
    EntropyWeightedChannelLoss,
    FeatureAdapters,
    FeatureAlignmentLoss,
    PhaseSchedule,
    feds_terms,
    needs_teacher,
)
from lic.errors import LicError, UsageError
from lic.training.losses import RateDistortionLoss
from lic.training.module import OptimizerFactory, RateDistortionModule, SchedulerFactory

DEFAULT_TAPS = ("g_a.0", "g_a.1", "g_a.2", "y", "g_s.0", "g_s.1", "g_s.2")


class DistillationModule(RateDistortionModule):
    """Trains a student codec with the rate–distortion loss plus FEDS distillation terms.

    ``loss = rd_loss + w_feat(step) · L_feat + w_ch(step) · L_ch`` with the weights of the
    current :class:`PhaseSchedule` phase (see :mod:`lic.distill.losses` for both terms). The
    teacher is frozen: eval mode, no gradients, kept out of the module tree (so it is neither
    optimised nor written into training checkpoints), and its weights fingerprint is checked
    unchanged at the end of training. The adapters train with the student's main optimizer.

    Args:
        codec: the student.
        loss: the student's rate–distortion loss; λ must equal the teacher's.
        teacher: a trained codec loaded with :func:`lic.load_codec` (it knows its λ).
        schedule: the distillation phases.
        taps: features aligned by the feature loss (the latent ``y`` is always adapted, for the
            channel loss).
        channel_loss: the entropy-weighted channel loss.
        others: as :class:`RateDistortionModule`.
    """

    def __init__(
        self,
        codec: nn.Module,
        loss: RateDistortionLoss,
        optimizer: OptimizerFactory,
        aux_optimizer: OptimizerFactory,
        teacher: nn.Module,
        schedule: PhaseSchedule,
        taps: Sequence[str] = DEFAULT_TAPS,
        channel_loss: EntropyWeightedChannelLoss | None = None,
        scheduler: SchedulerFactory | None = None,
        clip_max_norm: float = 1.0,
        max_nonfinite_steps: int = 5,
        transform_precision: str = "fp32",
        channels_last: bool = False,
    ) -> None:
        teacher_lmbda = (getattr(teacher, "metadata", None) or {}).get("lmbda")
        if teacher_lmbda is None or not math.isclose(teacher_lmbda, loss.lmbda, rel_tol=1e-6):
            raise LicError(
                f"the teacher was trained for lambda={teacher_lmbda}, this run uses lambda={loss.lmbda}: "
                "distil each rate point from the teacher of the same lambda"
            )
        super().__init__(
            codec,
            loss,
            optimizer,
            aux_optimizer,
            scheduler,
            clip_max_norm,
            max_nonfinite_steps,
            transform_precision,
            channels_last,
        )
        object.__setattr__(self, "teacher", teacher)  # deliberately not a submodule
        teacher.eval().requires_grad_(False)
        self.teacher_fingerprint = weights_fingerprint(teacher)
        self.schedule = schedule
        self.taps = list(taps)
        adapted = list(dict.fromkeys([*self.taps, "y"]))
        student_channels, teacher_channels = codec.feature_channels(), teacher.feature_channels()
        unknown = set(adapted) - set(student_channels)
        if unknown:
            raise UsageError(
                f"unknown feature taps {sorted(unknown)}; available: {sorted(student_channels)}"
            )
        self.adapters = FeatureAdapters(
            {tap: student_channels[tap] for tap in adapted},
            {tap: teacher_channels[tap] for tap in adapted},
        )
        self.feature_loss = FeatureAlignmentLoss()
        self.channel_loss = channel_loss or EntropyWeightedChannelLoss()
        self.hparams.update(
            {
                "teacher": teacher.codec_name,
                "teacher_fingerprint": self.teacher_fingerprint,
                "phases": [vars(p) for p in schedule.phases],
                "taps": self.taps,
            }
        )

    def trainable_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        main, aux = super().trainable_parameters()
        return main + list(self.adapters.parameters()), aux

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.teacher.to(self.device).eval()
        self.teacher.transform_autocast = self.codec.transform_autocast
        if self.trainer.max_steps != self.schedule.total_steps:
            raise UsageError(
                f"trainer.max_steps={self.trainer.max_steps} but the distillation phases add up to "
                f"{self.schedule.total_steps} steps"
            )

    def extra_loss(self, batch: Tensor, output: Any) -> tuple[Tensor | float, dict[str, Tensor]]:
        phase_index = self.schedule.index_at(self.global_step)
        phase = self.schedule.phases[phase_index]
        logs = {"distill/phase": torch.tensor(float(phase_index))}
        if not needs_teacher(phase):
            return 0.0, logs
        with torch.no_grad():
            teacher_out = self.teacher(batch, exact=False)  # features only: the fast float path
        total, terms = feds_terms(
            phase,
            self.adapters,
            self.taps,
            self.feature_loss,
            self.channel_loss,
            output.features,
            teacher_out.features,
            teacher_out.likelihoods["y"],
        )
        return total, logs | terms

    def on_train_end(self) -> None:
        if weights_fingerprint(self.teacher) != self.teacher_fingerprint:
            raise RuntimeError("the teacher's weights changed during distillation")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lic_phase"] = self.schedule.phase_at(self.global_step).name
