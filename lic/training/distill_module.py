"""FEDS: a frozen teacher guides a student through staged distillation phases."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lic.checkpoint import weights_fingerprint
from lic.distill import (
    DEFAULT_TAPS,
    Distiller,
    DistillTerm,
    EntropyWeightedChannelLoss,
    PhaseSchedule,
    default_terms,
)
from lic.errors import LicError, UsageError
from lic.training.losses import RateDistortionLoss
from lic.training.module import OptimizerFactory, RateDistortionModule, SchedulerFactory


class DistillationModule(RateDistortionModule):
    """Trains a student codec with the rate–distortion loss plus FEDS distillation terms.

    ``loss = rd_loss + Σ_t w_t(step) · L_t`` over the distillation terms that the current
    :class:`PhaseSchedule` phase weighs (:class:`~lic.distill.Distiller`; the terms are in
    :mod:`lic.distill.terms`: feature, channel, cwd, output, entropy). The
    teacher is frozen: eval mode, no gradients, kept out of the module tree (so it is neither
    optimised nor written into training checkpoints), and its weights fingerprint is checked
    unchanged at the end of training. It still follows the module's device and dtype moves
    (``.to``, ``.cpu``, Lightning's move back to the CPU after ``fit``), so a finished fit
    leaves no teacher behind in GPU memory. The adapters train with the student's main optimizer.

    Args:
        codec: the student.
        loss: the student's rate–distortion loss; λ must equal the teacher's. A variable-rate
            student distils from a variable-rate teacher run at the student's quality (and so
            at its λ) on every batch.
        teacher: a trained codec loaded with :func:`lic.load_codec` (it knows its λ).
        schedule: the distillation phases.
        terms: the configured distillation terms by name (a recipe's ``distill.terms``); None:
            FEDS's feature and channel terms from ``taps`` and ``channel_loss``.
        taps: features aligned by the default feature term.
        channel_loss: temperature/top-k of the default channel term.
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
        terms: Mapping[str, DistillTerm] | None = None,
        taps: Sequence[str] = DEFAULT_TAPS,
        channel_loss: EntropyWeightedChannelLoss | None = None,
        scheduler: SchedulerFactory | None = None,
        clip_max_norm: float = 1.0,
        max_nonfinite_steps: int = 5,
        transform_precision: str = "fp32",
        channels_last: bool = False,
    ) -> None:
        teacher_lmbda = (getattr(teacher, "metadata", None) or {}).get("lmbda")
        both_variable = getattr(codec, "variable_rate", False) and getattr(
            teacher, "variable_rate", False
        )
        if both_variable:
            rates = ("rate_levels", "rate_range")
            if any(codec.codec_config[k] != teacher.codec_config[k] for k in rates):
                raise LicError(
                    "a variable-rate student needs a teacher trained over the same qualities "
                    "(rate_levels, rate_range)"
                )
        elif teacher_lmbda is None or not math.isclose(teacher_lmbda, loss.lmbda, rel_tol=1e-6):
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
        if terms is None:
            channel_loss = channel_loss or EntropyWeightedChannelLoss()
            terms = default_terms(taps, channel_loss.temperature, channel_loss.top_k)
        feature = terms.get("feature")
        self.taps = list(getattr(feature, "taps", taps))
        try:
            self.distiller = Distiller(
                terms, schedule.phases, codec.feature_channels(), teacher.feature_channels()
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.hparams.update(
            {
                "teacher": teacher.codec_name,
                "teacher_fingerprint": self.teacher_fingerprint,
                "phases": [vars(p) for p in schedule.phases],
                "taps": self.taps,
                "terms": sorted(self.distiller.terms),
            }
        )

    @property
    def adapters(self) -> nn.Module:
        """The learnable 1×1 adapters of the distillation terms (trained with the student)."""
        return self.distiller.adapters

    def trainable_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        main, aux = super().trainable_parameters()
        return main + list(self.distiller.parameters()), aux

    def _apply(self, fn: Any, recurse: bool = True) -> DistillationModule:
        # nn.Module's one hook behind .to/.cpu/.cuda/.double: apply it to the teacher as well.
        super()._apply(fn, recurse)
        if recurse:
            self.teacher._apply(fn)
        return self

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
        if not self.distiller.needs_teacher(phase):
            return 0.0, logs
        with torch.no_grad():
            quality = {"quality": self.quality} if self.quality is not None else {}
            teacher_out = self.teacher(batch, exact=False, **quality)  # the fast float path
        total, terms = self.distiller(phase, batch, output, teacher_out)
        return total, logs | terms

    def on_train_end(self) -> None:
        if weights_fingerprint(self.teacher) != self.teacher_fingerprint:
            raise RuntimeError("the teacher's weights changed during distillation")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lic_phase"] = self.schedule.phase_at(self.global_step).name
