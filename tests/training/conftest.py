"""Helpers for training tests: composed configs pointing at the test image folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

from lic.training.recipes import compose_recipe
from tests.conftest import REPO

RECIPES = REPO / "recipes"


def compose_train(overrides: list[str]) -> DictConfig:
    return compose_recipe(overrides, recipes=RECIPES)


def small_run_overrides(image_folder: Path, run_dir: Path, steps: int = 6) -> list[str]:
    """``experiment=quick`` shrunk to seconds, on the test folder (tiny codec, float32)."""
    return [
        "experiment=quick",
        "codec=student-tiny",
        "speed.transform_precision=fp32",
        "speed.channels_last=false",
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


def campaign_shared(root: Path, image_folder: Path) -> Path:
    """A campaign's shared folder under ``root``: the test photos to train on (``photos/``)
    and two of them as a 'kodak' (``kodak/``)."""
    shared = root / "shared"
    (shared / "photos").mkdir(parents=True)
    (shared / "kodak").mkdir()
    photos = sorted(p for p in image_folder.iterdir() if p.is_file())
    for photo in photos:
        shutil.copy(photo, shared / "photos" / photo.name)
    for photo in [p for p in photos if p.suffix == ".png"][:2]:
        shutil.copy(photo, shared / "kodak" / photo.name)
    return shared
