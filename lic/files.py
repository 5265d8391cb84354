"""Files on disk: writing outputs atomically, and finding the images in a folder.

Torch-free (standard library only), so that anything writing a file or listing a dataset can use
it without loading the image or network stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from lic.errors import LicError, UsageError

#: Suffixes (lower case) of the image files lic reads, for training and evaluation alike: every
#: one decodes through Pillow (:func:`lic.imageio.load_image`).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp"})

#: A training set may lose at most this fraction of its images to read errors after it was
#: listed (a file deleted, truncated or made unreadable during a run): up to it, each one is
#: skipped with one warning; beyond it the data is gone (an unmounted disk, a deleted folder)
#: rather than a few bad files, and training stops with a one-line error.
MAX_UNREADABLE_FRACTION = 0.5


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A failure (exception) removes the temporary file, so nothing half-written is ever left
    under the final name, and an existing file there is left untouched. The file is created
    with the permissions any new file gets (``0o666`` less the umask, as ``open`` would give;
    ``tempfile.mkstemp`` would make it private), and its data reach the disk (fsync) before the
    rename, so a crash leaves the old file or the new one, never an empty one.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise LicError(f"output directory does not exist: {directory}")
    tmp_path = _create_beside(path, directory)
    try:
        yield tmp_path
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], data: object, indent: int = 1) -> Path:
    """Write ``data`` as JSON (a final newline) through :func:`atomic_output`, creating the
    parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as staging:
        staging.write_text(json.dumps(data, indent=indent) + "\n")
    return path


def _create_beside(path: Path, directory: Path) -> Path:
    """A new, empty, uniquely named hidden file in ``directory`` (mode 0o666 less the umask)."""
    for _ in range(100):
        tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise LicError(f"cannot create a temporary file in {directory}")


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
