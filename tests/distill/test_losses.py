"""FEDS losses and schedule: zero exactly at agreement, weights that follow the teacher's bits."""

from __future__ import annotations

import pytest
import torch

from lic.distill import (
    EntropyWeightedChannelLoss,
    FeatureAdapters,
    FeatureAlignmentLoss,
    Phase,
    PhaseSchedule,
    channel_bits,
    channel_weights,
    resolve_phases,
)


def _features(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "g_a.0": torch.randn(2, 8, 16, 16, generator=g),
        "y": 5 * torch.randn(2, 12, 4, 4, generator=g),
    }


def test_feature_loss_is_zero_for_identical_features_and_positive_otherwise() -> None:
    loss = FeatureAlignmentLoss()
    teacher = _features(0)
    assert loss(teacher, teacher).item() == 0.0
    assert loss(_features(1), teacher).item() > 0
    # normalised: scaling both sides changes nothing
    scaled = {k: 10 * v for k, v in teacher.items()}
    other = {k: 10 * v for k, v in _features(1).items()}
    assert loss(other, scaled).item() == pytest.approx(loss(_features(1), teacher).item(), rel=1e-5)


def test_channel_loss_is_zero_for_identical_latents_and_positive_otherwise() -> None:
    loss = EntropyWeightedChannelLoss(temperature=1.0)
    y = 3 * torch.randn(2, 6, 4, 4)
    likelihoods = torch.rand(2, 6, 4, 4).clamp_min(0.01)
    assert loss(y, y, likelihoods).item() == 0.0
    assert loss(y + 0.1 * torch.randn_like(y), y, likelihoods).item() > 0
    top = EntropyWeightedChannelLoss(temperature=None, top_k=2)
    assert top(y, y, likelihoods).item() == 0.0 and top(y + 1, y, likelihoods).item() > 0


def test_channel_weights_sum_to_one_and_follow_the_teacher_bits() -> None:
    likelihoods = torch.ones(2, 4, 3, 3)
    likelihoods[:, 0] = 0.5  # 1 bit per symbol
    likelihoods[:, 1] = 0.125  # 3 bits
    likelihoods[:, 2] = 0.9
    likelihoods[:, 3] = 0.25  # 2 bits
    bits = channel_bits(likelihoods)
    assert bits[1] > bits[3] > bits[0] > bits[2]
    for temperature in (0.25, 1.0, 4.0):
        weights = channel_weights(bits, temperature=temperature)
        assert weights.sum().item() == pytest.approx(1.0)
        assert weights[1] > weights[3] > weights[0] > weights[2]
    sharp, flat = channel_weights(bits, temperature=0.25), channel_weights(bits, temperature=4.0)
    assert sharp[1] > flat[1]
    top = channel_weights(bits, top_k=2)
    assert top.sum().item() == pytest.approx(1.0)
    assert top[0] == 0 and top[2] == 0 and top[1] > top[3] > 0
    with pytest.raises(ValueError):
        channel_weights(bits, temperature=None)


def test_the_costliest_channel_dominates_the_channel_loss() -> None:
    y = torch.randn(1, 2, 4, 4) + 3
    likelihoods = torch.stack([torch.full((4, 4), 0.01), torch.full((4, 4), 0.9)])[None]
    loss = EntropyWeightedChannelLoss(temperature=0.5)
    error_in_costly = y.clone()
    error_in_costly[:, 0] += 1
    error_in_cheap = y.clone()
    error_in_cheap[:, 1] += 1
    assert loss(error_in_costly, y, likelihoods) > 5 * loss(error_in_cheap, y, likelihoods)


def test_adapters_map_student_widths_to_teacher_widths() -> None:
    adapters = FeatureAdapters({"y": 24, "g_a.0": 16}, {"y": 40, "g_a.0": 32})
    assert adapters("y", torch.zeros(1, 24, 4, 4)).shape == (1, 40, 4, 4)
    assert adapters("g_a.0", torch.zeros(1, 16, 8, 8)).shape == (1, 32, 8, 8)
    with pytest.raises(ValueError):
        FeatureAdapters({"y": 1}, {"z": 1})


def test_schedule_switches_at_the_configured_steps() -> None:
    schedule = PhaseSchedule(
        [Phase("feature", 3, 1.0), Phase("channel", 2, 0, 1.0), Phase("finetune", 4)]
    )
    names = [schedule.phase_at(step).name for step in range(11)]
    assert names == ["feature"] * 3 + ["channel"] * 2 + ["finetune"] * 6
    assert schedule.total_steps == 9
    with pytest.raises(ValueError):
        PhaseSchedule([Phase("x", 0)])


def test_fractions_resolve_to_steps_that_add_up() -> None:
    phases = resolve_phases(
        [
            {"name": "a", "fraction": 0.3},
            {"name": "b", "fraction": 0.3},
            {"name": "c", "fraction": 0.4},
        ],
        1001,
    )
    assert [p["steps"] for p in phases] == [300, 300, 401]
    assert resolve_phases([{"name": "a", "steps": 5}], 5) == [{"name": "a", "steps": 5}]


def test_the_schedule_resolves_fractions_itself() -> None:
    phases = [{"name": "feature", "fraction": 0.3, "feature_weight": 1.0}, {"name": "finetune"}]
    schedule = PhaseSchedule(phases, total_steps=101)
    assert [p.steps for p in schedule.phases] == [30, 71] and schedule.total_steps == 101
    assert schedule.phase_at(29).feature_weight == 1.0 and schedule.phase_at(30).name == "finetune"
    with pytest.raises(ValueError, match="need total_steps"):
        PhaseSchedule(phases)
