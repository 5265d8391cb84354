"""FEDS as plain torch: feature adapters, the feature-alignment and entropy-weighted channel
losses, and the phase schedule. Knows codecs only through their forward result."""

from lic.distill.adapters import FeatureAdapters
from lic.distill.feds import feds_terms, needs_teacher
from lic.distill.losses import (
    EntropyWeightedChannelLoss,
    FeatureAlignmentLoss,
    channel_bits,
    channel_weights,
)
from lic.distill.schedule import Phase, PhaseSchedule, resolve_phases

__all__ = [
    "EntropyWeightedChannelLoss",
    "FeatureAdapters",
    "FeatureAlignmentLoss",
    "Phase",
    "PhaseSchedule",
    "channel_bits",
    "channel_weights",
    "feds_terms",
    "needs_teacher",
    "resolve_phases",
]
