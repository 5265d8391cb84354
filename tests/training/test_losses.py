"""The rate–distortion loss computes exactly its documented formula."""

from __future__ import annotations

import math

import pytest
import torch

from lic.codecs import CodecOutput
from lic.training.losses import RateDistortionLoss, bits_per_pixel, psnr


def _output(x_hat: torch.Tensor, likelihoods: dict[str, torch.Tensor]) -> CodecOutput:
    return CodecOutput(x_hat=x_hat, likelihoods=likelihoods, features={})


def test_bits_per_pixel_counts_every_latent_per_image() -> None:
    likelihoods = {"y": torch.full((2, 4, 2, 2), 0.5), "z": torch.full((2, 1, 1, 1), 0.25)}
    # per image: 16 symbols × 1 bit + 1 symbol × 2 bits = 18 bits over 8×8 pixels
    assert bits_per_pixel(likelihoods, 64).item() == pytest.approx(18 / 64)


def test_mse_loss_is_lambda_255_squared_mse_plus_bpp() -> None:
    x = torch.zeros(2, 3, 8, 8)
    x_hat = torch.full_like(x, 0.1)
    likelihoods = {"y": torch.full((2, 4, 2, 2), 0.5)}
    terms = RateDistortionLoss(0.01)(_output(x_hat, likelihoods), x)
    assert terms.mse.item() == pytest.approx(0.01)
    assert terms.bpp.item() == pytest.approx(16 / 64)
    assert terms.loss.item() == pytest.approx(0.01 * 255**2 * 0.01 + 16 / 64, rel=1e-5)
    assert terms.psnr.item() == pytest.approx(20.0, rel=1e-5)


def test_ms_ssim_variant_is_zero_distortion_for_a_perfect_reconstruction() -> None:
    x = torch.rand(1, 3, 176, 176, generator=torch.Generator().manual_seed(0))
    likelihoods = {"y": torch.ones(1, 4, 11, 11)}
    terms = RateDistortionLoss(8.73, "ms-ssim")(_output(x.clone(), likelihoods), x)
    assert terms.ms_ssim.item() == pytest.approx(1.0, abs=1e-5)
    assert terms.loss.item() == pytest.approx(0.0, abs=1e-4)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert RateDistortionLoss(8.73, "ms-ssim")(_output(noisy, likelihoods), x).loss.item() > 0.01


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RateDistortionLoss(0.01, "psnr")
    with pytest.raises(ValueError):
        RateDistortionLoss(0.0)


def test_psnr() -> None:
    assert psnr(torch.tensor(1e-2)).item() == pytest.approx(20.0)
    assert math.isfinite(psnr(torch.tensor(0.0)).item())
