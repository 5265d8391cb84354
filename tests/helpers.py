"""Helpers shared by the tests: tiny codecs whose latents are far from zero."""

from __future__ import annotations

import torch

import lic
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
    lengths legitimately differ.)
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
    for _ in range(steps):
        out = codec(image)
        rate = sum(-torch.log2(lik).sum() for lik in out.likelihoods.values())
        optimizer.zero_grad()
        rate.backward()
        optimizer.step()
    codec.eval()
    codec.update(force=True, update_quantiles=True)
    return codec
