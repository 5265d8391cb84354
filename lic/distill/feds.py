"""The FEDS objective at one training step: the current phase's weighted distillation terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from lic.distill.adapters import FeatureAdapters
from lic.distill.losses import EntropyWeightedChannelLoss, FeatureAlignmentLoss
from lic.distill.schedule import Phase


def feds_terms(
    phase: Phase,
    adapters: FeatureAdapters,
    taps: Sequence[str],
    feature_loss: FeatureAlignmentLoss,
    channel_loss: EntropyWeightedChannelLoss,
    student_features: Mapping[str, Tensor],
    teacher_features: Mapping[str, Tensor],
    teacher_y_likelihoods: Tensor,
) -> tuple[Tensor | float, dict[str, Tensor]]:
    """``w_feat · L_feat + w_ch · L_ch`` for ``phase``, and the terms to log.

    Features are compared in float32 whatever precision the transforms ran in (a bf16 feature
    summed over a batch loses the small differences the loss is made of).
    """
    total: Tensor | float = 0.0
    logs: dict[str, Tensor] = {}
    if phase.feature_weight:
        adapted = {tap: adapters(tap, student_features[tap].float()) for tap in taps}
        feature = feature_loss(adapted, {tap: teacher_features[tap].float() for tap in taps})
        total = total + phase.feature_weight * feature
        logs["distill/feature"] = feature
    if phase.channel_weight:
        channel = channel_loss(
            adapters("y", student_features["y"].float()),
            teacher_features["y"].float(),
            teacher_y_likelihoods,
        )
        total = total + phase.channel_weight * channel
        logs["distill/channel"] = channel
    return total, logs


def needs_teacher(phase: Phase) -> bool:
    """Whether ``phase`` uses the teacher at all (the fine-tune phase does not)."""
    return bool(phase.feature_weight or phase.channel_weight)


__all__ = ["feds_terms", "needs_teacher"]
