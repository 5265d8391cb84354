"""Distillation terms by name: what each measures, the Distiller that weighs them, the registry."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import lic
from lic.distill import (
    TERMS,
    ChannelDistributionTerm,
    ChannelTerm,
    Distiller,
    DistillTerm,
    EntropyParameterTerm,
    FeatureTerm,
    OutputTerm,
    Phase,
    effective_channels,
    marginal_channel_bits,
    register_term,
)


def _output(seed: int, channels: int = 6, x_hat=None):
    g = torch.Generator().manual_seed(seed)
    features = {
        "y": torch.randn(2, channels, 4, 4, generator=g) * 3,
        "g_a.0": torch.randn(2, 5, 8, 8, generator=g),
        "entropy.0.mean": torch.randn(2, 3, 4, 4, generator=g),
        "entropy.0.scale": torch.rand(2, 3, 4, 4, generator=g) + 0.1,
    }
    likelihoods = {"y": torch.rand(2, channels, 4, 4, generator=g).clamp_min(0.01)}
    x_hat = torch.rand(2, 3, 16, 16, generator=g) if x_hat is None else x_hat
    return SimpleNamespace(features=features, likelihoods=likelihoods, x_hat=x_hat)


def _identity_adapters(distiller: Distiller) -> None:
    with torch.no_grad():
        for conv in distiller.adapters.adapters.values():
            conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
            conv.bias.zero_()


TERM_INSTANCES = {
    "feature": FeatureTerm(taps=["g_a.0", "y"]),
    "channel": ChannelTerm(),
    "channel-marginal-identity": ChannelTerm(source="marginal", align="identity"),
    "cwd": ChannelDistributionTerm(taps=["y", "g_a.0"]),
    "output": OutputTerm(),
    "entropy": EntropyParameterTerm(),
    "entropy-identity": EntropyParameterTerm(align="identity"),
}
WIDTHS = {"y": 6, "g_a.0": 5, "entropy.0.mean": 3, "entropy.0.scale": 3}


@pytest.mark.parametrize("label", sorted(TERM_INSTANCES))
def test_each_term_is_zero_when_the_student_matches_the_teacher_and_positive_otherwise(
    label,
) -> None:
    term = TERM_INSTANCES[label]
    distiller = Distiller({"t": term}, [Phase("p", 1, weights={"t": 1.0})], WIDTHS, WIDTHS)
    _identity_adapters(distiller)
    images = torch.rand(2, 3, 16, 16)
    teacher = _output(0)
    same, _ = distiller(Phase("p", 1, weights={"t": 1.0}), images, teacher, teacher)
    other, logs = distiller(Phase("p", 1, weights={"t": 1.0}), images, _output(1), teacher)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)
    assert float(other.detach()) > 1e-3
    assert "distill/t" in logs


def test_the_channel_term_logs_how_many_channels_its_weights_spread_over() -> None:
    distiller = Distiller(
        {"channel": ChannelTerm(temperature=1e6)},
        [Phase("c", 1, channel_weight=1.0)],
        WIDTHS,
        WIDTHS,
    )
    _, logs = distiller(
        Phase("c", 1, channel_weight=1.0), torch.rand(2, 3, 16, 16), _output(1), _output(0)
    )
    assert float(logs["distill/channel/effective_channels"]) == pytest.approx(
        6.0, rel=1e-3
    )  # τ→∞: uniform
    assert float(effective_channels(torch.tensor([1.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert float(effective_channels(torch.full((8,), 1 / 8))) == pytest.approx(8.0)


def test_marginal_bits_are_the_histogram_entropy_of_each_rounded_channel() -> None:
    latent = torch.zeros(4, 3, 2, 2)
    latent[:, 1] = (
        torch.tensor([0.0, 1.0, 2.0, 3.0]).repeat(4)[:16].reshape(4, 2, 2)
    )  # 4 values alike
    latent[:, 2] = torch.tensor([-1.2, 0.9]).repeat(8).reshape(4, 2, 2)  # rounds to -1 and 1
    bits = marginal_channel_bits(latent)
    elements = 4 * 2 * 2
    assert bits.tolist() == pytest.approx([0.0, 2.0 * elements, 1.0 * elements])


def test_conditional_and_marginal_weights_can_rank_channels_oppositely() -> None:
    """A channel that varies a lot but that the entropy model predicts well is costly on its own
    (marginal) and cheap in context (conditional): the two sources disagree about it."""
    teacher = _output(0, channels=2)
    teacher.features["y"][:, 0] = torch.arange(32.0).reshape(2, 4, 4)  # 32 distinct values
    teacher.features["y"][:, 1] = torch.tensor([0.0, 1.0]).repeat(16).reshape(2, 4, 4)
    teacher.likelihoods["y"][:, 0] = 0.99  # predicted almost perfectly in context
    teacher.likelihoods["y"][:, 1] = 0.3
    inputs = SimpleNamespace(teacher=teacher)
    conditional = ChannelTerm("conditional").teacher_bits(inputs)
    marginal = ChannelTerm("marginal").teacher_bits(inputs)
    assert conditional[0] < conditional[1] and marginal[0] > marginal[1]


def test_identity_alignment_reaches_the_student_latent_without_an_adapter() -> None:
    phase = Phase("c", 1, channel_weight=1.0)
    through_adapter = Distiller({"channel": ChannelTerm()}, [phase], WIDTHS, {**WIDTHS, "y": 8})
    direct = Distiller(
        {"channel": ChannelTerm(align="identity")}, [phase], WIDTHS, {**WIDTHS, "y": 8}
    )
    assert list(through_adapter.adapters.parameters()) and not list(direct.adapters.parameters())
    student, teacher = _output(1), _output(0, channels=8)
    student.features["y"].requires_grad_(True)
    loss, _ = direct(phase, torch.rand(2, 3, 16, 16), student, teacher)
    loss.backward()
    grad = student.features["y"].grad
    assert grad is not None and grad.abs().sum() > 0


def test_cwd_compares_where_channels_respond_not_their_offsets() -> None:
    term = ChannelDistributionTerm(taps=["y"], temperature=1.0)
    distiller = Distiller({"cwd": term}, [Phase("p", 1, weights={"cwd": 1.0})], WIDTHS, WIDTHS)
    _identity_adapters(distiller)
    teacher = _output(0)
    shifted = _output(0)
    shifted.features["y"] = teacher.features["y"] + torch.randn(2, 6, 1, 1)  # per-channel offsets
    loss, _ = distiller(
        Phase("p", 1, weights={"cwd": 1.0}), torch.rand(2, 3, 16, 16), shifted, teacher
    )
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-5)


def test_the_output_term_is_relative_to_the_teacher_s_own_distortion() -> None:
    images = torch.rand(2, 3, 16, 16)
    teacher = _output(0)
    student = _output(1, x_hat=images.clone())  # as far from the teacher as the teacher is from x
    value, _ = OutputTerm()(SimpleNamespace(images=images, student=student, teacher=teacher))
    assert float(value) == pytest.approx(1.0, rel=1e-5)


def test_a_new_term_is_one_class_and_a_name() -> None:
    @register_term("test-l1-output")
    class L1Output(DistillTerm):
        def forward(self, inputs):
            return (inputs.student.x_hat - inputs.teacher.x_hat).abs().mean(), {
                "scale": torch.tensor(2.0)
            }

    try:
        phase = Phase("p", 1, weights={"test-l1-output": 0.5})
        distiller = Distiller({"test-l1-output": L1Output()}, [phase], WIDTHS, WIDTHS)
        student, teacher = _output(1), _output(0)
        total, logs = distiller(phase, torch.rand(2, 3, 16, 16), student, teacher)
        expected = 0.5 * (student.x_hat - teacher.x_hat).abs().mean()
        assert float(total.detach()) == pytest.approx(float(expected))
        assert set(logs) == {"distill/test-l1-output", "distill/test-l1-output/scale"}
        with pytest.raises(ValueError, match="already registered"):
            register_term("test-l1-output")(ChannelTerm)
    finally:
        TERMS.pop("test-l1-output")


def test_phases_may_only_weigh_configured_terms_and_unused_terms_cost_nothing() -> None:
    with pytest.raises(ValueError, match=r"not configured: \['cwd'\]"):
        Distiller({"feature": FeatureTerm()}, [Phase("p", 1, weights={"cwd": 1.0})], WIDTHS, WIDTHS)
    distiller = Distiller(
        {"feature": FeatureTerm(taps=["g_a.0"]), "cwd": ChannelDistributionTerm()},
        [Phase("p", 1, feature_weight=1.0), Phase("f", 1)],
        WIDTHS,
        WIDTHS,
    )
    assert set(distiller.terms) == {"feature"} and distiller.adapters.taps == ["g_a.0"]
    assert not Distiller.needs_teacher(Phase("f", 1))


def test_every_shipped_term_trains_a_real_student_against_a_real_teacher() -> None:
    student, teacher = lic.create_codec("student-tiny"), lic.create_codec("teacher-tiny").eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    terms = {
        "feature": FeatureTerm(),
        "channel": ChannelTerm(source="marginal"),
        "cwd": ChannelDistributionTerm(),
        "output": OutputTerm(),
        "entropy": EntropyParameterTerm(),
    }
    phase = Phase("all", 1, weights=dict.fromkeys(terms, 1.0))
    distiller = Distiller(terms, [phase], student.feature_channels(), teacher.feature_channels())
    with torch.no_grad():
        teacher_out = teacher(images, exact=False)
    total, logs = distiller(phase, images, student(images), teacher_out)
    assert math.isfinite(float(total.detach()))
    assert {f"distill/{name}" for name in terms} <= set(logs)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    reached = [
        n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    ]
    assert any(n.startswith("g_a") for n in reached) and any(n.startswith("g_s") for n in reached)
