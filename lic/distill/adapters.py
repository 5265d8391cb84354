"""Learnable 1×1 adapters from student feature widths to teacher feature widths."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


def _key(tap: str) -> str:
    return tap.replace(".", "__")  # ModuleDict keys cannot contain dots


class FeatureAdapters(nn.Module):
    """One 1×1 convolution per tapped feature, student channels → teacher channels.

    Args:
        student_channels: channels of each tapped student feature, by tap name.
        teacher_channels: channels of the same taps in the teacher.
    """

    def __init__(
        self, student_channels: Mapping[str, int], teacher_channels: Mapping[str, int]
    ) -> None:
        super().__init__()
        missing = set(student_channels) ^ set(teacher_channels)
        if missing:
            raise ValueError(f"taps missing on one side: {sorted(missing)}")
        self.taps = list(student_channels)
        self.adapters = nn.ModuleDict(
            {
                _key(t): nn.Conv2d(student_channels[t], teacher_channels[t], kernel_size=1)
                for t in self.taps
            }
        )

    def forward(self, tap: str, feature: Tensor) -> Tensor:
        return self.adapters[_key(tap)](feature)
