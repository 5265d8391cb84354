"""The FEDS phase schedule: which distillation terms are on at each training step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Phase:
    """A stretch of training with fixed distillation weights.

    Attributes:
        name: ``feature``, ``channel``, ``finetune``, or any label.
        steps: length in training steps.
        feature_weight: weight of the feature-alignment loss.
        channel_weight: weight of the entropy-weighted channel loss.
    """

    name: str
    steps: int
    feature_weight: float = 0.0
    channel_weight: float = 0.0


class PhaseSchedule:
    """Phases in order; the rate–distortion loss is on in all of them.

    FEDS runs ``feature`` (align intermediate features), then ``channel`` (entropy-weighted
    latent distillation), then ``finetune`` (rate–distortion only). Ablations are other lists:
    one phase with both weights for joint training without staging, a phase dropped, and so on.
    Steps past the end stay in the last phase.
    """

    def __init__(self, phases: Sequence[Phase | dict]) -> None:
        self.phases = [p if isinstance(p, Phase) else Phase(**p) for p in phases]
        if not self.phases:
            raise ValueError("a schedule needs at least one phase")
        if any(p.steps <= 0 for p in self.phases):
            raise ValueError("every phase needs a positive number of steps")
        self.boundaries = []
        total = 0
        for phase in self.phases:
            total += phase.steps
            self.boundaries.append(total)

    @property
    def total_steps(self) -> int:
        return self.boundaries[-1]

    def index_at(self, step: int) -> int:
        for index, end in enumerate(self.boundaries):
            if step < end:
                return index
        return len(self.phases) - 1

    def phase_at(self, step: int) -> Phase:
        return self.phases[self.index_at(step)]
