"""Shared fixtures: the shared-data location and a saved tiny codec."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import lic
from tests.helpers import perturbed_codec

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """``$LIC_SHARED`` if set, else ``../shared`` beside the repository."""
    return Path(os.environ.get("LIC_SHARED", REPO.parent / "shared"))


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
