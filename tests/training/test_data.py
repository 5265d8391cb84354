"""Image folders: recursive discovery, crops and flips, and bad files that never crash."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from lic.errors import UsageError
from lic.files import list_images
from lic.training.data import ImageDataModule, ImageFolder


def test_finds_png_and_jpeg_recursively(image_folder) -> None:
    names = [p.name for p in list_images(image_folder)]
    assert len(names) == 12
    assert any(n.endswith(".JPG") for n in names) and any(n.endswith(".png") for n in names)
    assert any(p.parent.name == "nested" for p in list_images(image_folder))


def test_random_crops_and_whole_images(image_folder) -> None:
    torch.manual_seed(0)
    crops = ImageFolder(image_folder, crop_size=64)
    samples = [crops[0] for _ in range(6)]
    assert all(s.shape == (3, 64, 64) and s.dtype == torch.float32 for s in samples)
    assert 0 <= min(s.min() for s in samples) and max(s.max() for s in samples) <= 1
    assert len({s.sum().item() for s in samples}) > 1, "crops or flips never vary"
    whole = ImageFolder(image_folder, crop_size=None, limit=3)
    assert len(whole) == 3 and whole[0].shape[-1] == 128


def test_flips_are_exact_mirrors(tmp_path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    dataset = ImageFolder(tmp_path, crop_size=32)
    reference = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    variants = {reference.flip(-1), reference.flip(-2), reference.flip(-1).flip(-2)}
    torch.manual_seed(0)
    seen = [dataset[0] for _ in range(40)]
    assert all(any(torch.equal(s, v) for v in [reference, *variants]) for s in seen)
    assert any(not torch.equal(s, reference) for s in seen)


def test_bad_and_small_files_are_reported_once_and_skipped(image_folder, tmp_path, caplog) -> None:
    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    (root / "junk.png").write_bytes(b"not a png")
    Image.new("RGB", (20, 20)).save(root / "tiny.png")
    good = (root / "img01.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 3])
    with caplog.at_level(logging.WARNING, logger="lic.training.data"):
        dataset = ImageFolder(root, crop_size=64)
        assert len(dataset) == 13  # 12 good + the truncated one (its header reads fine)
        index = [p.name for p in dataset.paths].index("truncated.png")
        for _ in range(3):
            assert dataset[index].shape == (3, 64, 64)  # replaced by another image
    messages = [r.getMessage() for r in caplog.records]
    assert sum("junk.png" in m for m in messages) == 1
    assert sum("smaller than 64x64" in m for m in messages) == 1
    assert sum("truncated.png" in m for m in messages) == 1


def test_empty_or_missing_folders_are_clear_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(UsageError, match="no usable images"):
        ImageFolder(tmp_path)


def test_datamodule_batches(image_folder) -> None:
    dm = ImageDataModule(
        str(image_folder), str(image_folder), crop_size=64, batch_size=4, num_workers=0, val_limit=2
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 3, 64, 64)
    val = list(dm.val_dataloader())
    assert len(val) == 2 and val[0].shape[0] == 1


def test_cache_decodes_each_image_once_and_changes_nothing(image_folder, monkeypatch) -> None:
    from lic.training import data

    calls = []
    real_read = data._read
    monkeypatch.setattr(data, "_read", lambda path: calls.append(path) or real_read(path))
    cached, plain = (
        ImageFolder(image_folder, crop_size=64, cache=True),
        ImageFolder(image_folder, crop_size=64),
    )
    for index in [0, 1, 0, 1, 0]:
        torch.manual_seed(index)
        a = cached[index]
        torch.manual_seed(index)
        assert torch.equal(a, plain[index])
    assert (
        calls.count(cached.paths[0]) == 1 + 3
    )  # cached once; the plain folder read it three times
