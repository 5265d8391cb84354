"""Rate–distortion losses."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pytorch_msssim import ms_ssim
from torch import Tensor, nn

from lic.bitstream import METRICS
from lic.codecs import CodecOutput


def bits_per_pixel(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Mean over the batch of ``sum(-log2 p) / pixels`` for all latents."""
    batch = next(iter(likelihoods.values())).shape[0]
    total = sum(torch.log(lik).sum() for lik in likelihoods.values())
    return total / (-math.log(2) * num_pixels * batch)


def psnr(mse: Tensor, peak: float = 1.0) -> Tensor:
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-12))


@dataclass
class RateDistortionTerms:
    """The loss and what it is made of (all scalars)."""

    loss: Tensor
    bpp: Tensor
    mse: Tensor
    psnr: Tensor
    ms_ssim: Tensor | None = None


class RateDistortionLoss(nn.Module):
    """``L = λ · D + R`` with R in bits per pixel.

    - ``metric="mse"``: ``D = 255² · MSE`` (images in ``[0, 1]``), CompressAI's convention, so
      λ ∈ {0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483} spans about 0.1–1.5 bpp.
    - ``metric="ms-ssim"``: ``D = 1 − MS-SSIM``, with λ ∈ {2.40, 4.58, 8.73, 16.64, 31.73,
      60.50}. MS-SSIM's five scales need images of at least 161 pixels a side.

    Args:
        lmbda: the rate–distortion trade-off λ.
        metric: ``"mse"`` or ``"ms-ssim"`` (:data:`lic.bitstream.METRICS`).
    """

    def __init__(self, lmbda: float, metric: str = "mse") -> None:
        super().__init__()
        if metric not in METRICS:
            known = ", ".join(map(repr, METRICS))
            raise ValueError(f"metric must be one of {known}, got {metric!r}")
        if not lmbda > 0:
            raise ValueError(f"lambda must be positive, got {lmbda}")
        self.lmbda = float(lmbda)
        self.metric = metric

    def forward(
        self, output: CodecOutput, target: Tensor, lmbda: float | None = None
    ) -> RateDistortionTerms:
        """The loss at this module's λ, or at ``lmbda`` (a variable-rate codec's batch λ)."""
        lmbda = self.lmbda if lmbda is None else lmbda
        num_pixels = target.shape[-2] * target.shape[-1]
        bpp = bits_per_pixel(output.likelihoods, num_pixels)
        mse = torch.mean((output.x_hat - target) ** 2)
        if self.metric == "mse":
            return RateDistortionTerms(lmbda * 255**2 * mse + bpp, bpp, mse, psnr(mse))
        similarity = ms_ssim(output.x_hat, target, data_range=1.0)
        loss = lmbda * (1 - similarity) + bpp
        return RateDistortionTerms(loss, bpp, mse, psnr(mse), similarity)
