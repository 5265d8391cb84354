"""`lic encode` / `lic decode` end to end: real files, exit codes, one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lic
from lic.bitstream import short_fingerprint
from lic.cli import main
from lic.imageio import load_image, tensor_to_pixels
from tests.images import write_mode
from tests.test_imageio import CASES


def _encode(source: Path, output: Path, checkpoint: Path, *extra: str) -> int:
    return main(["encode", str(source), "-o", str(output), "--checkpoint", str(checkpoint), *extra])


def _decode(source: Path, output: Path, checkpoint: Path | None) -> int:
    argv = ["decode", str(source), "-o", str(output)]
    return main(argv + (["--checkpoint", str(checkpoint)] if checkpoint else []))


def _encoded_sample(tmp_path: Path, checkpoint: Path, capsys) -> Path:
    """A small RGB image encoded to ``a.lic``, with the captured output discarded."""
    assert _encode(write_mode(tmp_path / "in.png", "RGB"), tmp_path / "a.lic", checkpoint) == 0
    capsys.readouterr()
    return tmp_path / "a.lic"


def _round_trip(tmp_path: Path, source: Path, checkpoint: Path, capsys):
    stream, output = tmp_path / "out.lic", tmp_path / "out.png"
    assert _encode(source, stream, checkpoint) == 0
    printed = capsys.readouterr()
    assert _decode(stream, output, checkpoint) == 0
    return stream, np.asarray(Image.open(output).convert("RGB")), printed


def _forward_pixels(checkpoint: Path, pixels: np.ndarray) -> np.ndarray:
    codec = lic.load_codec(checkpoint)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return tensor_to_pixels(codec(x).x_hat)


def _fails(argv: list[str], capsys, code: int, *fragments: str) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("lic: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err


def test_kodak_image_round_trip(kodak_dir, tiny_checkpoint, tmp_path, capsys) -> None:
    source = kodak_dir / "kodim23.png"
    stream, decoded, printed = _round_trip(tmp_path, source, tiny_checkpoint, capsys)
    size = stream.stat().st_size
    assert f"{size} bytes" in printed.out and f"{8 * size / (768 * 512):.4f} bpp" in printed.out
    assert "encoded in" in printed.out and printed.err == ""
    original = load_image(source).pixels
    assert decoded.shape == original.shape
    assert np.array_equal(decoded, _forward_pixels(tiny_checkpoint, original))


@pytest.mark.parametrize("size", [(97, 131), (1, 1)])
def test_odd_and_minimal_sizes(tmp_path, tiny_checkpoint, capsys, size) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    _, decoded, _ = _round_trip(tmp_path, tmp_path / "in.png", tiny_checkpoint, capsys)
    assert decoded.shape == (*size, 3)
    assert np.array_equal(decoded, _forward_pixels(tiny_checkpoint, pixels))


@pytest.mark.parametrize("mode", list(CASES))
def test_each_input_mode_round_trips_with_a_notice(tmp_path, tiny_checkpoint, capsys, mode) -> None:
    source = write_mode(tmp_path / f"in.{'jpg' if mode == 'jpeg' else 'png'}", mode)
    _, decoded, printed = _round_trip(tmp_path, source, tiny_checkpoint, capsys)
    assert printed.err == (f"lic: note: {source}: {CASES[mode]}\n" if CASES[mode] else "")
    assert decoded.shape == (37, 53, 3)


def test_bad_inputs_are_one_line_errors_and_leave_no_output(tmp_path, tiny_checkpoint, capsys):
    ckpt, out, png = str(tiny_checkpoint), str(tmp_path / "o.lic"), str(tmp_path / "o.png")
    missing = str(tmp_path / "missing.png")
    _fails(["encode", missing, "-o", out, "--checkpoint", ckpt], capsys, 1, "no such image")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    bad_png = str(tmp_path / "bad.png")
    _fails(["encode", bad_png, "-o", out, "--checkpoint", ckpt], capsys, 1, "not an image")
    (tmp_path / "bad.lic").write_bytes(b"garbage")
    bad_lic = str(tmp_path / "bad.lic")
    _fails(["decode", bad_lic, "-o", png, "--checkpoint", ckpt], capsys, 1, "magic")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.lic", "bad.png"]


def test_fingerprint_mismatch_names_both(tmp_path, tiny_checkpoint, capsys) -> None:
    stream = _encoded_sample(tmp_path, tiny_checkpoint, capsys)
    other = tmp_path / "other.ckpt"
    lic.save_codec(lic.create_codec("student-tiny"), other)
    expected = short_fingerprint(lic.load_codec(tiny_checkpoint).fingerprint)
    actual = short_fingerprint(lic.load_codec(other).fingerprint)
    argv = ["decode", str(stream), "-o", str(tmp_path / "a.png"), "--checkpoint", str(other)]
    _fails(argv, capsys, 1, expected, actual)
    assert not (tmp_path / "a.png").exists()


def test_usage_errors_exit_2(tmp_path, tiny_checkpoint, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["encode", "x.png"])  # no -o, no --checkpoint
    assert info.value.code == 2
    stream = _encoded_sample(tmp_path, tiny_checkpoint, capsys)
    argv = ["decode", str(stream), "-o", str(tmp_path / "a.png")]
    _fails(argv, capsys, 2, "--checkpoint is required")
    if not torch.cuda.is_available():
        argv = ["encode", str(tmp_path / "in.png"), "-o", str(tmp_path / "b.lic")]
        _fails(argv + ["--checkpoint", str(tiny_checkpoint), "--device", "cuda"], capsys, 2, "CUDA")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.lic").exists()


def test_info_prints_the_header(tmp_path, tiny_checkpoint, capsys) -> None:
    stream = _encoded_sample(tmp_path, tiny_checkpoint, capsys)
    assert main(["info", str(stream)]) == 0
    out = capsys.readouterr().out
    assert "student-tiny" in out and "0.013" in out and "1 of 53x37" in out


def test_codecs_lists_parameter_counts(capsys) -> None:
    assert main(["codecs", "student-tiny", "teacher-tiny"]) == 0
    out = capsys.readouterr().out
    count = sum(p.numel() for p in lic.create_codec("teacher-tiny").parameters())
    assert f"{count:,}" in out and "student-tiny" in out


def test_console_script_is_installed(tmp_path, tiny_checkpoint) -> None:
    exe = shutil.which("lic", path=str(Path(sys.executable).parent))
    assert exe, "the `lic` console script is not installed beside this Python"
    source = write_mode(tmp_path / "in.png", "RGB")
    ckpt = str(tiny_checkpoint)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *argv], capture_output=True, text=True, timeout=300)

    done = run("encode", str(source), "-o", str(tmp_path / "a.lic"), "--checkpoint", ckpt)
    assert done.returncode == 0, done.stderr
    assert "bpp" in done.stdout
    bad = run("decode", str(source), "-o", str(tmp_path / "x.png"), "--checkpoint", ckpt)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_unwritable_output_is_a_one_line_error(tmp_path, tiny_checkpoint, capsys) -> None:
    source = write_mode(tmp_path / "in.png", "RGB")
    (tmp_path / "dir.lic").mkdir()
    argv = ["encode", str(source), "-o", str(tmp_path / "dir.lic"), "--checkpoint"]
    _fails(argv + [str(tiny_checkpoint)], capsys, 1, "dir.lic")
    missing_dir = str(tmp_path / "nowhere" / "a.lic")
    argv = ["encode", str(source), "-o", missing_dir, "--checkpoint", str(tiny_checkpoint)]
    _fails(argv, capsys, 1, "output directory does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.lic", "in.png"]


def test_demo_falls_back_to_the_sample_photos_shipped_with_lic(tmp_path, capsys, monkeypatch):
    """A fresh clone alone (no shared folder beside it) still has something to show."""
    from lic import demo

    samples = demo.sample_photos()
    assert len(samples) >= 3 and (demo.SAMPLES_DIR / "SOURCE.md").is_file()
    assert sum(p.stat().st_size for p in samples) < 1_000_000
    empty = tmp_path / "shared"
    empty.mkdir()
    monkeypatch.setenv("LIC_SHARED", str(empty))
    argv = ["demo", "--data-root", str(tmp_path / "none"), "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"coding {len(samples)} sample photos shipped with lic" in out
    for path in samples:
        assert (tmp_path / "out" / f"{path.stem}.lic").stat().st_size > 0
        assert (tmp_path / "out" / f"{path.stem}.png").is_file() and path.name in out
    header = out.splitlines()[1]
    assert "encode" in header and "decode" in header and "enc+dec" not in header
    # Without the shipped photos either, it is still a usage error naming the way out.
    monkeypatch.setattr(demo, "SAMPLES_DIR", tmp_path / "no-samples")
    _fails(argv, capsys, 2, "no sample images")
