"""The FEDS phase schedule: which distillation terms are on at each training step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Phase:
    """A stretch of training with fixed distillation weights.

    Attributes:
        name: ``feature``, ``channel``, ``finetune``, or any label.
        steps: length in training steps.
        feature_weight: weight of the feature-alignment term (``feature``).
        channel_weight: weight of the entropy-weighted channel term (``channel``).
        weights: weights of any registered terms by name (``{cwd: 1.0, output: 0.5}``).
    """

    name: str
    steps: int
    feature_weight: float = 0.0
    channel_weight: float = 0.0
    weights: Mapping[str, float] = field(default_factory=dict)

    def term_weights(self) -> dict[str, float]:
        """The weight of every distillation term this phase uses (non-zero weights only).

        ``feature_weight`` and ``channel_weight`` are shorthands for ``weights: {feature: w}``
        and ``weights: {channel: w}``; ``weights`` names any registered term
        (:mod:`lic.distill.terms`).
        """
        merged = {"feature": self.feature_weight, "channel": self.channel_weight, **self.weights}
        return {name: float(w) for name, w in merged.items() if w}


def resolve_phases(phases: Sequence[Mapping[str, Any]], total_steps: int) -> list[dict[str, Any]]:
    """Phase lengths from ``steps`` or ``fraction`` of ``total_steps``; the last takes the rest.

    ``[{name: feature, fraction: 0.3}, {name: channel, fraction: 0.3}, {name: finetune}]`` over
    1001 steps gives 300, 300 and 401 steps, so the phases always add up to ``total_steps``.

    Raises:
        ValueError: a phase other than the last with neither ``steps`` nor ``fraction``.
    """
    resolved, used = [], 0
    for index, phase in enumerate(phases):
        phase = dict(phase)
        fraction = phase.pop("fraction", None)
        if "steps" not in phase:
            last = index == len(phases) - 1
            if fraction is None and not last:
                raise ValueError(
                    f"distillation phase {phase.get('name')!r} needs steps or fraction"
                )
            phase["steps"] = total_steps - used if last else round(fraction * total_steps)
        used += phase["steps"]
        resolved.append(phase)
    return resolved


class PhaseSchedule:
    """Phases in order; the rate–distortion loss is on in all of them.

    FEDS runs ``feature`` (align intermediate features), then ``channel`` (entropy-weighted
    latent distillation), then ``finetune`` (rate–distortion only). Ablations are other lists:
    one phase with both weights for joint training without staging, a phase dropped, and so on.
    Steps past the end stay in the last phase.

    Args:
        phases: :class:`Phase` objects, or mappings with a phase's fields where ``fraction``
            (of ``total_steps``) may replace ``steps`` (see :func:`resolve_phases`).
        total_steps: the run's length; needed when a phase gives a ``fraction``.
    """

    def __init__(
        self, phases: Sequence[Phase | Mapping[str, Any]], total_steps: int | None = None
    ) -> None:
        if any(not isinstance(p, Phase) and "steps" not in p for p in phases):
            if total_steps is None:
                raise ValueError("phases given as fractions need total_steps")
            phases = resolve_phases(phases, total_steps)
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
