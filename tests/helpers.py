"""Helpers shared by the tests: tiny codecs whose latents are far from zero, and the shipped
default codec's rate points in either of its shapes (fixed-rate set or one variable-rate model)."""

from __future__ import annotations

import re

import torch

import lic
from lic import pretrained
from lic.checkpoint import weights_fingerprint
from lic.codecs import create_codec

TINY_CODECS = [name for name in lic.list_codecs() if name.endswith("-tiny")]


def perturbed_codec(
    name: str, image: torch.Tensor, steps: int = 60, seed: int = 0
) -> torch.nn.Module:
    """A codec whose latents are far from zero and whose entropy model fits them.

    Random transforms are perturbed and ``g_a``'s output rescaled so that ``y`` has a standard
    deviation of about 8 on ``image`` (nearly every symbol non-zero), and the predicted scales
    start near that spread. The entropy-parameter networks are then fitted to the latent for a
    few Adam steps on the rate alone, so the coded distributions look like a trained codec's.
    (A random hyper-synthesis predicts scales that leave symbols far in the escape-coded tails,
    where the likelihood is floored and has no gradient, and where modelled and real code
    lengths legitimately differ.) The fit keeps the parameters of its lowest rate, not its last
    step's: a few steps of Adam can end in a transient that leaves a slice's means off, and
    which step does so depends on the CPU's floating-point order (thread count included).
    """
    torch.manual_seed(seed)
    codec = create_codec(name)
    with torch.no_grad():
        for p in codec.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        std = codec.g_a(codec._pad(image)[0]).std()
        codec.g_a[-1].weight.mul_(8.0 / std)
        codec.g_a[-1].bias.mul_(8.0 / std)
        for transform in codec.context.scale_transforms:
            transform[-1].bias.fill_(8.0)  # start every scale near the latent's spread
    entropy_parameters = [
        p
        for n, p in codec.named_parameters()
        if not n.startswith(("g_a.", "g_s.")) and not n.endswith("quantiles")
    ]
    optimizer = torch.optim.Adam(entropy_parameters, lr=3e-3)
    codec.train()
    best_rate, best = float("inf"), None
    for _ in range(steps):
        out = codec(image)
        rate = sum(-torch.log2(lik).sum() for lik in out.likelihoods.values())
        if (value := rate.item()) < best_rate:
            best_rate, best = value, [p.detach().clone() for p in entropy_parameters]
        optimizer.zero_grad()
        rate.backward()
        optimizer.step()
    if best is not None:  # Adam's last step can land in a transient; keep the best fit seen
        with torch.no_grad():
            for p, kept in zip(entropy_parameters, best, strict=True):
                p.copy_(kept)
    codec.eval()
    codec.update(force=True, update_quantiles=True)
    return codec


RatePoint = pretrained.RatePoint


def shipped_points() -> list[RatePoint]:
    """The shipped default codec's rate points (:func:`lic.pretrained.rate_points`)."""
    return pretrained.rate_points()


def default_coding_quality() -> float | None:
    """The quality with which :func:`lic.coding.encode` codes as ``lic encode`` does without
    ``--quality``: None for a fixed-rate default (the checkpoint of ``default_quality`` has one
    rate); the manifest's ``default_quality`` for a variable-rate one (the codec's own default,
    its middle level, may be another)."""
    return pretrained.default_quality() if pretrained.is_variable_rate() else None


def fixed_rate_default(quality: int = 3) -> torch.nn.Module:
    """A fixed-rate codec of the shipped default's network.

    The checkpoint of ``quality`` for a fixed-rate default; for a variable-rate default its
    network as the fixed-rate codec it extends (``student-small-vr`` → ``student-small``,
    ``student-medium-vr10`` → ``student-medium``), its
    per-level gains left out (a fixed-rate codec with trained weights, at no trained λ).
    """
    if not pretrained.is_variable_rate():
        return lic.load_codec(pretrained.default_checkpoint(quality))
    variable = lic.load_codec(pretrained.default_checkpoint())
    codec = create_codec(re.sub(r"-vr\d*$", "", variable.codec_name))  # -vr, -vr10: the base
    keys = codec.load_state_dict(variable.state_dict(), strict=False)
    assert not keys.missing_keys, keys
    assert set(keys.unexpected_keys) == {"log_gain", "log_inverse_gain"}, keys
    assert not codec.variable_rate
    codec.fingerprint = weights_fingerprint(codec)  # as lic.load_codec gives it: it can code
    codec.metadata = {"metric": variable.metadata.get("metric")}
    return codec.eval()
