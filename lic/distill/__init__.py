"""FEDS as plain torch: feature adapters, distillation terms registered by name, the phase
schedule, and the :class:`Distiller` that weighs the terms phase by phase. Knows codecs only
through their forward result and their configured widths (``feature_channels()``)."""

from lic.distill.adapters import FeatureAdapters
from lic.distill.losses import (
    EntropyWeightedChannelLoss,
    FeatureAlignmentLoss,
    channel_bits,
    channel_weights,
)
from lic.distill.schedule import Phase, PhaseSchedule, resolve_phases
from lic.distill.terms import (
    DEFAULT_TAPS,
    TERMS,
    ChannelDistributionTerm,
    ChannelTerm,
    Distiller,
    DistillInputs,
    DistillTerm,
    EntropyParameterTerm,
    FeatureTerm,
    OutputTerm,
    build_term,
    default_terms,
    effective_channels,
    marginal_channel_bits,
    register_term,
)


def needs_teacher(phase: Phase) -> bool:
    """Whether ``phase`` uses the teacher at all (the fine-tune phase does not)."""
    return Distiller.needs_teacher(phase)


__all__ = [
    "DEFAULT_TAPS",
    "TERMS",
    "ChannelDistributionTerm",
    "ChannelTerm",
    "DistillInputs",
    "DistillTerm",
    "Distiller",
    "EntropyParameterTerm",
    "EntropyWeightedChannelLoss",
    "FeatureAdapters",
    "FeatureAlignmentLoss",
    "FeatureTerm",
    "OutputTerm",
    "Phase",
    "PhaseSchedule",
    "build_term",
    "channel_bits",
    "channel_weights",
    "default_terms",
    "effective_channels",
    "marginal_channel_bits",
    "needs_teacher",
    "register_term",
    "resolve_phases",
]
