"""A deeper codec grown from a shallower one computes the same function, then trains."""

from __future__ import annotations

import pytest
import torch

from lic.codecs import create_codec
from lic.codecs.grow import load_grown
from lic.training.losses import RateDistortionLoss


def _pair(**deeper: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    shallow = create_codec("student-tiny-vr").eval()
    grown = create_codec("student-tiny-vr", **deeper).eval()
    return shallow, grown


def test_grown_codec_computes_the_shallow_function() -> None:
    shallow, grown = _pair(analysis_res_blocks=(1, 3, 2))
    added = load_grown(grown, shallow.state_dict())
    assert added == ["g_a.1.2.1", "g_a.1.2.2", "g_a.2.2.1"]
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in shallow.parameters())
    x = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        for quality in (1.0, 4.5, 8.0):
            a = shallow.reconstruct_unquantized(x, quality=quality)
            b = grown.reconstruct_unquantized(x, quality=quality)
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
            out_a, out_b = shallow(x, quality=quality), grown(x, quality=quality)
            torch.testing.assert_close(out_b.x_hat, out_a.x_hat, rtol=0, atol=1e-6)


def test_added_blocks_learn_from_the_first_step() -> None:
    shallow, grown = _pair(analysis_res_blocks=(1, 2, 1))
    load_grown(grown, shallow.state_dict())
    grown.train()
    out = grown(torch.rand(2, 3, 64, 64), quality=8.0)
    RateDistortionLoss(0.18)(out, torch.rand(2, 3, 64, 64)).loss.backward()
    last = grown.g_a[1][2][1].body[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    assert torch.count_nonzero(last.weight) == 0  # still the identity before the step


def test_same_architecture_loads_exactly_and_adds_nothing() -> None:
    shallow, other = _pair()
    assert load_grown(other, shallow.state_dict()) == []
    for key, value in shallow.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"channels": 24}, "only added residual blocks"),  # other widths: not a growth
        ({"res_blocks": (0, 1, 1)}, "which the grown codec lacks"),  # a shallower target
        ({"analysis_res_blocks": (1, 2, 1), "hyper_channels": 8}, r"'h_a\.0\.weight' is \(16"),
    ],
)
def test_what_is_not_a_growth_is_refused(target: dict, message: str) -> None:
    shallow, other = _pair(**target)
    with pytest.raises(ValueError, match=message):
        load_grown(other, shallow.state_dict())


def test_weights_lacking_more_than_whole_blocks_are_refused() -> None:
    shallow, grown = _pair(analysis_res_blocks=(1, 2, 1))
    state = dict(shallow.state_dict())
    del state["g_s.0.2.0.body.1.bias"]  # half a block: a damaged file, not a growth
    with pytest.raises(ValueError, match="not in an added block"):
        load_grown(grown, state)


def test_registered_deep_encoder_grows_from_the_default_network() -> None:
    torch.manual_seed(0)
    shallow = create_codec("student-medium-vr")
    grown = create_codec("student-medium-deep-ga-vr")
    assert len(load_grown(grown, shallow.state_dict())) == 4
    g_s = sum(p.numel() for p in grown.g_s.parameters())
    assert g_s == sum(p.numel() for p in shallow.g_s.parameters())  # decoding costs the same


def _ten_levels() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A trained-looking eight-level codec (gains moved off their start) and its ten-level twin."""
    from lic.codecs.zoo import VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE, levels_below

    torch.manual_seed(0)
    trained = create_codec("student-tiny-vr").eval()
    with torch.no_grad():
        trained.log_gain.add_(0.1 * torch.randn_like(trained.log_gain))
        trained.log_inverse_gain.add_(0.1 * torch.randn_like(trained.log_inverse_gain))
    low = levels_below(VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE, 2)
    grown = create_codec("student-tiny-vr", rate_levels=10, rate_range=low).eval()
    return trained, grown


def test_added_rate_levels_keep_every_trained_quality_under_its_new_number() -> None:
    trained, grown = _ten_levels()
    assert load_grown(grown, trained.state_dict(), trained.trained_lmbdas) == ["level 1", "level 2"]
    for old, new in zip(trained.trained_lmbdas, grown.trained_lmbdas[2:]):
        assert new == pytest.approx(old, rel=1e-6)
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        for quality in (1.0, 3.25, 8.0):  # trained levels and between them
            a, b = trained(x, quality=quality), grown(x, quality=quality + 2)
            torch.testing.assert_close(b.x_hat, a.x_hat, rtol=0, atol=0)
            for key in a.likelihoods:
                torch.testing.assert_close(b.likelihoods[key], a.likelihoods[key], rtol=0, atol=0)


def test_added_rate_levels_start_where_the_trained_gains_extrapolate() -> None:
    trained, grown = _ten_levels()
    load_grown(grown, trained.state_dict(), trained.trained_lmbdas)
    g = trained.log_gain.detach()
    step = g[1] - g[0]
    torch.testing.assert_close(grown.log_gain[1].detach(), g[0] - step)
    torch.testing.assert_close(grown.log_gain[0].detach(), g[0] - 2 * step)
    inverse = trained.log_inverse_gain.detach()
    torch.testing.assert_close(
        grown.log_inverse_gain[0].detach(), inverse[0] - 2 * (inverse[1] - inverse[0])
    )
    # lower λ, coarser steps: the added levels' gains are smaller than quality 1's, in order
    means = grown.log_gain.detach().mean(dim=1)
    assert means[0] < means[1] < means[2]


def test_rate_levels_that_are_not_a_growth_are_refused() -> None:
    trained, grown = _ten_levels()
    with pytest.raises(ValueError, match="needs the 8 trained λ"):
        load_grown(grown, trained.state_dict())
    shifted = [2 * v for v in trained.trained_lmbdas]  # another grid: not consecutive levels
    with pytest.raises(ValueError, match="not consecutive levels"):
        load_grown(grown, trained.state_dict(), shifted)
    with pytest.raises(ValueError, match="only added rate levels"):  # fewer levels
        load_grown(trained, grown.state_dict(), grown.trained_lmbdas)


def test_registered_ten_level_codec_grows_from_the_default_network() -> None:
    from lic.codecs.grow import registered_lmbdas

    torch.manual_seed(0)
    trained = create_codec("student-medium-vr")
    grown = create_codec("student-medium-vr10")
    assert registered_lmbdas("student-medium-vr") == trained.trained_lmbdas
    assert registered_lmbdas("student-medium") is None
    added = load_grown(grown, trained.state_dict(), registered_lmbdas("student-medium-vr"))
    assert added == ["level 1", "level 2"]
    assert grown.lmbda_at(3.0) == pytest.approx(0.0018, rel=1e-6)
    assert grown.lmbda_at(1.0) < 0.0005
