"""Image folders as training and validation data.

Training samples are random crops with random horizontal and vertical flips; validation
samples are whole images (batch size 1, since sizes differ). Files are found recursively by
:func:`lic.files.list_images` (the image suffixes lic reads, any case; hidden files skipped, as
in evaluation) and checked once when the dataset is built, from their headers:

- unreadable files are reported once (one line each) and left out;
- images smaller than the crop in either side are left out and counted in one line (padding
  would teach the codec borders that real images do not have);
- a file that fails to decode later (it passed the header check, or was deleted, truncated
  or made unreadable after the folder was listed) is reported once by the worker that meets
  it, counted, left out for the rest of the run and replaced by the next readable image, so a
  bad file never kills a worker; when more than
  :data:`~lic.files.MAX_UNREADABLE_FRACTION` of the images have become unreadable, the data
  is gone rather than a few bad files, and an :class:`~lic.errors.ImageError` stops the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lic.errors import ImageError, UsageError
from lic.files import MAX_UNREADABLE_FRACTION, list_images
from lic.imageio import convert_to_rgb8

log = logging.getLogger(__name__)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return convert_to_rgb8(image).pixels


class ImageFolder(Dataset):
    """Images under a folder, as ``(3, H, W)`` float tensors in ``[0, 1]``.

    Args:
        root: folder searched recursively.
        crop_size: side of the random square crop; ``None`` returns whole images.
        limit: keep only the first ``limit`` images (sorted by path).
        cache: keep each decoded image in memory after its first use (RGB uint8: 0.75 MiB per
            512x512 photo), so small codecs on a CPU do not spend their steps decoding PNGs.
            Each data-loading worker holds its own cache; use it with ``num_workers=0``.

    Attributes:
        unreadable: the images that failed to decode during the run (left out since; each
            data-loading worker keeps its own count).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        crop_size: int | None = None,
        limit: int | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.crop_size = crop_size
        self._cache: dict[Path, np.ndarray] | None = {} if cache else None
        self.paths: list[Path] = []
        too_small = 0
        for path in list_images(self.root):
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped
                log.warning("skipping unreadable image %s (%s)", path, type(exc).__name__)
                continue
            if crop_size and (width < crop_size or height < crop_size):
                too_small += 1
                continue
            self.paths.append(path)
        if too_small:
            log.warning(
                "skipped %d images smaller than %dx%d in %s", too_small, crop_size, crop_size, root
            )
        if limit is not None:
            self.paths = self.paths[:limit]
        if not self.paths:
            raise UsageError(f"no usable images in {self.root}")
        self.unreadable: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> np.ndarray:
        """The pixels of image ``index``, or of the next readable one if it cannot be read."""
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            if path in self.unreadable:
                continue
            if self._cache is not None and path in self._cache:
                return self._cache[path]
            try:
                pixels = _read(path)
            except Exception as exc:  # noqa: BLE001 - any read error: counted, then replaced
                self._left_out(path, exc)
                continue
            if self._cache is not None:
                self._cache[path] = pixels
            return pixels
        raise ImageError(f"no image in {self.root} could be decoded")

    def _left_out(self, path: Path, exc: Exception) -> None:
        self.unreadable.add(path)
        count, total = len(self.unreadable), len(self.paths)
        if count > MAX_UNREADABLE_FRACTION * total:
            raise ImageError(
                f"{count} of {total} images in {self.root} became unreadable during the run "
                f"(last: {path.name}: {type(exc).__name__}); is the folder still there?"
            )
        log.warning(
            "cannot decode %s (%s); left out for the rest of the run (%d of %d images unreadable)",
            path,
            type(exc).__name__,
            count,
            total,
        )

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = self._load(index)
        if self.crop_size:
            # torch's generator: seeded by seed_everything, and per worker and epoch by the loader.
            height, width = pixels.shape[:2]
            top = int(torch.randint(0, height - self.crop_size + 1, ()))
            left = int(torch.randint(0, width - self.crop_size + 1, ()))
            flip_h, flip_v = (torch.rand(2) < 0.5).tolist()
            pixels = pixels[top : top + self.crop_size, left : left + self.crop_size]
            if flip_h:
                pixels = pixels[:, ::-1]
            if flip_v:
                pixels = pixels[::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        return tensor.float().div_(255)


class ImageDataModule(pl.LightningDataModule):
    """Random crops of one folder for training; whole images of another for validation.

    Args:
        train_dir: training images (never Kodak, CLIC or Tecnick).
        val_dir: validation images (a few Kodak images by default); ``None`` disables it.
        crop_size: training crop side (a multiple of 64 avoids padding).
        batch_size: training batch size.
        num_workers: data-loading worker processes.
        val_limit: number of validation images.
        cache_images: keep decoded training images in memory (see :class:`ImageFolder`).
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        crop_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 2,
        val_limit: int | None = 4,
        cache_images: bool = False,
    ) -> None:
        super().__init__()
        self.cache_images = cache_images
        self.train_dir, self.val_dir = train_dir, val_dir
        self.crop_size, self.batch_size = crop_size, batch_size
        self.num_workers, self.val_limit = num_workers, val_limit
        self.train_set: ImageFolder | None = None
        self.val_set: ImageFolder | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = ImageFolder(self.train_dir, self.crop_size, cache=self.cache_images)
        if self.val_dir and self.val_set is None:
            self.val_set = ImageFolder(self.val_dir, None, limit=self.val_limit)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, 1, shuffle=False) if self.val_set else []
