"""Shared fixtures: the shared-data location, a saved tiny codec, a folder of test photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lic
from lic.paths import shared_dir
from tests.helpers import perturbed_codec

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The shared material, by lic's one rule (:func:`lic.paths.shared_dir`)."""
    return shared_dir()


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    path = shared_root() / "datasets" / "kodak"
    if not (path / "kodim01.png").is_file():
        pytest.skip(f"shared Kodak set not found at {path} (set LIC_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved ``student-tiny`` with perturbed weights (lambda 0.0130, mse)."""
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    codec = perturbed_codec("student-tiny", image, steps=20)
    path = tmp_path_factory.mktemp("ckpt") / "student-tiny.ckpt"
    lic.save_codec(codec, path, lmbda=0.013, metric="mse")
    return path


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.integers(-8, 9, (height, width, 3))
    return np.clip(np.asarray(image).astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small photos-like images (PNG and JPEG, one nested folder)."""
    root = tmp_path_factory.mktemp("images")
    (root / "nested").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = root / "nested" if i % 3 == 0 else root
        image = Image.fromarray(_photo(rng, 96 + 8 * (i % 4), 128))
        if i % 2:
            image.save(folder / f"img{i:02d}.png")
        else:
            image.save(folder / f"img{i:02d}.JPG", quality=92)
    return root
