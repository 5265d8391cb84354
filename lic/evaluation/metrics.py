"""Image quality metrics on 8-bit images, as the field reports them."""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim

#: MS-SSIM's five scales and 11-pixel window need this many pixels on the short side.
MS_SSIM_MIN_SIDE = 161


def psnr_rgb(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR over all RGB samples of two ``(H, W, 3)`` uint8 images, in dB (inf if identical)."""
    mse = np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim_rgb(original: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM of two ``(H, W, 3)`` uint8 images (NaN when the image is too small)."""
    if min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]

    return float(ms_ssim(tensor(original), tensor(decoded), data_range=255.0))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the decibel scale used in plots, ``-10 log10(1 - MS-SSIM)``."""
    return -10 * math.log10(max(1 - value, 1e-12))
