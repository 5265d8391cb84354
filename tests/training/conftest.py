"""Fixtures for training tests: a small image folder and composed configs pointing at it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from tests.conftest import REPO

RECIPES = REPO / "recipes"


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


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=False)


def small_run_overrides(image_folder: Path, run_dir: Path, steps: int = 6) -> list[str]:
    """``experiment=quick`` shrunk to seconds, on the test folder."""
    return [
        "experiment=quick",
        f"run_dir={run_dir}",
        f"data.train_dir={image_folder}",
        f"data.val_dir={image_folder}",
        "data.crop_size=64",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.val_limit=1",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "callbacks.checkpoint.every_n_train_steps=2",
    ]
