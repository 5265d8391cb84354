"""Learning-rate schedules defined in training steps."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def step_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    decay_at: Sequence[float] = (0.9,),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the learning rate by ``gamma`` at each fraction ``decay_at`` of ``total_steps``.

    CompressAI-style training keeps the rate constant and drops it by 10× near the end.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    milestones = sorted({max(1, round(f * total_steps)) for f in decay_at})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
