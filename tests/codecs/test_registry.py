"""The registry is the one table of codecs; every registered codec builds, runs and configures."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate

import lic
from lic.codecs import create_codec
from lic.errors import UsageError
from tests.conftest import REPO
from tests.helpers import TINY_CODECS

PAPER_SCALE = ["teacher", "student", "student-swin"]


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_variant_is_registered_with_its_tiny_twin() -> None:
    names = lic.list_codecs()
    for name in PAPER_SCALE:
        assert name in names and f"{name}-tiny" in names


def test_create_codec_records_name_and_full_config() -> None:
    codec = create_codec("student-tiny", latent_channels=30, num_slices=5)
    assert codec.codec_name == "student-tiny"
    assert codec.codec_config["latent_channels"] == 30
    assert codec.codec_config["max_support_slices"] == -1  # defaults are recorded too
    json.dumps(codec.codec_config)
    rebuilt = create_codec("student-tiny", **codec.codec_config)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in codec.parameters()]


def test_unknown_names_and_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown codec 'nope'") as info:
        create_codec("nope")
    listed = str(info.value).split("registered codecs: ")[1]
    for name in lic.list_codecs():  # each named, the variable-rate twins once for all
        assert name.removesuffix("-vr") in listed
    assert "each also as <name>-vr" in listed and len(str(info.value)) < 300  # one line
    with pytest.raises(UsageError, match="no argument"):
        create_codec("student-tiny", width=3)


@pytest.mark.parametrize("name", TINY_CODECS)
def test_forward_exposes_named_features_and_trains(name: str) -> None:
    codec = create_codec(name).train()
    x = torch.rand(2, 3, 64, 64)
    out = codec(x)
    n = codec.codec_config["channels"]
    m = codec.codec_config["latent_channels"]
    slices = codec.codec_config["num_slices"]
    assert out.x_hat.shape == x.shape
    assert out.likelihoods["y"].shape == (2, m, 4, 4)
    assert out.likelihoods["z"].shape == (2, codec.codec_config["hyper_channels"], 1, 1)
    expected = {"g_a.0": 32, "g_a.1": 16, "g_a.2": 8, "g_s.0": 8, "g_s.1": 16, "g_s.2": 32}
    for key, side in expected.items():
        assert out.features[key].shape == (2, n, side, side), key
    assert out.features["y"].shape == (2, m, 4, 4)
    for i in range(slices):
        for kind in ("mean", "scale"):
            assert out.features[f"entropy.{i}.{kind}"].shape == (2, m // slices, 4, 4)
    rate = sum(-torch.log2(lik).sum() for lik in out.likelihoods.values())
    (rate + (out.x_hat - x).pow(2).mean()).backward()
    assert codec.g_a[0][0].weight.grad.abs().sum() > 0
    assert codec.g_s[-1].weight.grad.abs().sum() > 0


def test_swin_variants_use_timm_swin_v2_blocks() -> None:
    from timm.models.swin_transformer_v2 import SwinTransformerV2Block

    for name, has_attention in [
        ("teacher-tiny", True),
        ("student-swin-tiny", True),
        ("student-tiny", False),
    ]:
        blocks = [m for m in create_codec(name).modules() if isinstance(m, SwinTransformerV2Block)]
        assert bool(blocks) == has_attention, name
        assert all(b.dynamic_mask for b in blocks)


@pytest.mark.parametrize("name", lic.list_codecs())
def test_each_codec_has_a_hydra_config_that_builds_it(name: str) -> None:
    from lic.training.recipes import compose_recipe

    node = compose_recipe([f"codec={name}"], recipes=REPO / "recipes").codec
    assert node.name == name
    if name in TINY_CODECS:
        codec = instantiate(node)
        assert codec.codec_name == name


def test_paper_scale_student_is_at_most_37_percent_of_teacher() -> None:
    counts = {name: _params(create_codec(name)) for name in PAPER_SCALE}
    assert counts["student"] <= 0.37 * counts["teacher"]
    assert counts["student-swin"] <= 0.37 * counts["teacher"]
    assert counts["teacher"] > 30_000_000  # a high-capacity teacher, not a tiny one
