"""Finding images: one rule for training and evaluation (suffixes, hidden files, recursion)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from lic.errors import UsageError
from lic.files import IMAGE_SUFFIXES, atomic_output, list_images
from tests.conftest import REPO


def test_every_readable_suffix_in_any_case_recursively_and_no_hidden_files(tmp_path) -> None:
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    wanted = ["a.png", "b.JPG", "c.jpeg", "nested/d.webp", "nested/deeper/e.TIFF", "f.bmp"]
    for name in [*wanted, ".hidden.png", "nested/._mac.jpg", "notes.txt", "g.png.part"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()  # a folder named like an image is not one
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == sorted(wanted, key=lambda name: tmp_path / name)
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm"} == IMAGE_SUFFIXES


def test_a_missing_folder_is_a_usage_error(tmp_path) -> None:
    with pytest.raises(UsageError, match="image folder not found"):
        list_images(tmp_path / "absent")


def test_training_and_evaluation_list_a_folder_alike(image_folder) -> None:
    from lic.evaluation.datasets import resolve_images
    from lic.training.data import ImageFolder

    _, evaluated = resolve_images(str(image_folder))
    assert ImageFolder(image_folder).paths == evaluated == list_images(image_folder)


def test_files_and_bitstream_import_without_torch() -> None:
    code = "import sys; import lic.files, lic.bitstream, lic.paths; print('torch' in sys.modules)"
    if "True" in _run("import sys; import lic; print('torch' in sys.modules)"):
        pytest.skip("`import lic` itself loads torch here (the package is not lazy yet)")
    assert _run(code) == "False"


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_output_gives_new_files_the_usual_permissions(tmp_path, umask) -> None:
    old = os.umask(umask)
    try:
        with atomic_output(tmp_path / "out.lic") as tmp:
            tmp.write_bytes(b"data")
        with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.lic") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("failed mid-write")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.lic").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "out.lic").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.lic"]
