"""Files on disk: writing outputs atomically, and finding the images in a folder.

Torch-free (standard library only), so that anything writing a file or listing a dataset can use
it without loading the image or network stack.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lic.errors import LicError, UsageError

#: Suffixes (lower case) of the image files lic reads, for training and evaluation alike: every
#: one decodes through Pillow (:func:`lic.imageio.load_image`).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp"})


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A failure (exception) removes the temporary file, so nothing half-written is ever left
    under the final name, and an existing file there is left untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise LicError(f"output directory does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a file lic reads as an image: an image suffix (any case), not hidden.

    Hidden files (``.name``) are skipped: they are editor, OS or download leftovers
    (``._photo.png`` from macOS, a ``.photo.png.part``), never photos.
    """
    suffix, hidden = path.suffix.lower(), path.name.startswith(".")
    return suffix in IMAGE_SUFFIXES and not hidden and path.is_file()


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``folder``, recursively, sorted by path (see :func:`is_image_file`).

    Raises:
        UsageError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if is_image_file(p))
