"""The cache of fixed-point networks: never part of a codec, rebuilt whenever weights change."""

from __future__ import annotations

import copy
import gc
import io
import pickle

import pytest
import torch

import lic
from lic import pretrained
from lic.codecs import exact as fx
from tests.helpers import perturbed_codec


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(80, 112), mode="bilinear")
    return (0.9 * smooth + 0.1 * torch.rand(1, 3, 80, 112, generator=g)).clamp(0, 1)


def _codes(codec: torch.nn.Module, x: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Strings, decoded image and eval-forward reconstruction of ``x``."""
    with torch.no_grad():
        compressed = codec.compress(x)
        return compressed.strings, codec.decompress(compressed), codec(x).x_hat


def _networks(codec: torch.nn.Module) -> list[torch.nn.Module]:
    context = codec.context
    return [
        codec.h_s,
        *context.mean_transforms,
        *context.scale_transforms,
        *context.lrp_transforms,
    ]


@pytest.fixture()
def shipped() -> torch.nn.Module:
    return lic.load_codec(pretrained.default_checkpoint())


def test_a_codec_that_has_coded_pickles_and_codes_the_same(shipped) -> None:
    x = _image()
    strings, decoded, x_hat = _codes(shipped, x)
    assert all(network in fx.CACHE for network in _networks(shipped))
    buffer = io.BytesIO()
    torch.save(shipped, buffer)
    for copied in (
        pickle.loads(pickle.dumps(shipped)),
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=False),
        copy.deepcopy(shipped),
    ):
        assert not any(network in fx.CACHE for network in _networks(copied))
        copied_strings, copied_decoded, copied_x_hat = _codes(copied, x)
        assert copied_strings == strings
        assert torch.equal(copied_decoded, decoded)
        assert torch.equal(copied_x_hat, x_hat)
        assert copied.fingerprint == shipped.fingerprint


def test_the_cache_holds_no_module_and_pickles_empty() -> None:
    cache = fx.FixedPointCache()
    layer = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.GELU())
    network = cache.get(layer)
    assert layer in cache and len(cache) == 1
    assert len(pickle.loads(pickle.dumps(cache))) == 0
    q = fx.to_fixed(torch.randn(1, 2, 5, 5))
    assert torch.equal(pickle.loads(pickle.dumps(network))(q), network(q))
    del layer
    gc.collect()
    assert len(cache) == 0  # the entry went with its module


def test_load_state_dict_rebuilds_the_fixed_point_networks(shipped) -> None:
    x = _image(1)
    strings, _, _ = _codes(shipped, x)
    # Another codec: the shipped one with the entropy-parameter networks of another quality
    # (a fixed-rate default's lowest), or perturbed (a variable-rate default has one set).
    # (Whole state dicts of another quality do not load into a codec that holds coding tables:
    # CompressAI resizes its CDF buffers only when they are empty.)
    networks = (
        "h_s.",
        "context.mean_transforms.",
        "context.scale_transforms.",
        "context.lrp_transforms.",
    )
    if pretrained.is_variable_rate():
        generator = torch.Generator().manual_seed(0)
        replaced = {
            k: v + 0.02 * v.std() * torch.randn(v.shape, generator=generator)
            for k, v in shipped.state_dict().items()
            if k.startswith(networks) and v.is_floating_point() and v.numel() > 1
        }
    else:
        lowest = lic.load_codec(pretrained.default_checkpoint(1)).state_dict()
        replaced = {k: v for k, v in lowest.items() if k.startswith(networks)}
    other = copy.deepcopy(shipped)
    other.load_state_dict(replaced, strict=False)
    other_strings, other_decoded, other_x_hat = _codes(other, x)
    assert other_strings != strings

    shipped.load_state_dict(other.state_dict())
    reloaded_strings, reloaded_decoded, reloaded_x_hat = _codes(shipped, x)
    assert reloaded_strings == other_strings
    assert torch.equal(reloaded_decoded, other_decoded)
    assert torch.equal(reloaded_x_hat, other_x_hat)


def test_optimizer_steps_and_conversions_rebuild_the_fixed_point_networks() -> None:
    x = _image(2)
    codec = perturbed_codec("student-tiny", x, steps=5)
    strings, _, _ = _codes(codec, x)
    built = {network: fx.fixed_point(network) for network in _networks(codec)}

    codec.train()
    optimizer = torch.optim.SGD(codec.context.parameters(), lr=1e-3)
    out = codec(x)
    sum(-torch.log2(lik).sum() for lik in out.likelihoods.values()).backward()
    optimizer.step()
    codec.eval()
    assert fx.fixed_point(codec.h_s) is built[codec.h_s]  # untouched weights: kept
    for network in codec.context.mean_transforms:
        assert fx.fixed_point(network) is not built[network]
    stepped_strings, stepped_decoded, _ = _codes(codec, x)
    assert stepped_strings != strings
    fresh_strings, fresh_decoded, _ = _codes(copy.deepcopy(codec), x)  # a copy starts empty
    assert stepped_strings == fresh_strings
    assert torch.equal(stepped_decoded, fresh_decoded)

    # A dtype round trip replaces every parameter's storage: rebuilt, and codes as before.
    built = {network: fx.fixed_point(network) for network in _networks(codec)}
    codec.double()
    assert all(fx.fixed_point(n) is not built[n] for n in _networks(codec))
    codec.float()
    assert _codes(codec, x)[0] == stepped_strings


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_moving_between_devices_rebuilds_the_fixed_point_networks(shipped) -> None:
    """Strings made on one device decode on the other: the entropy parameters are the same
    integers (only the float synthesis may differ, in its last bits)."""
    x = _image(3)
    with torch.no_grad():
        from_cpu = shipped.compress(x)
        decoded_on_cpu = shipped.decompress(from_cpu)
        shipped.to("cuda")
        assert all(fx.fixed_point(n).steps[0].weight.is_cuda for n in _networks(shipped))
        torch.testing.assert_close(
            shipped.decompress(from_cpu).cpu(), decoded_on_cpu, atol=2e-3, rtol=0
        )
        from_cuda = shipped.compress(x.cuda())
        decoded_on_cuda = shipped.decompress(from_cuda).cpu()
        shipped.to("cpu")
        assert not any(fx.fixed_point(n).steps[0].weight.is_cuda for n in _networks(shipped))
        torch.testing.assert_close(
            shipped.decompress(from_cuda), decoded_on_cuda, atol=2e-3, rtol=0
        )
