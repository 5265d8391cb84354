"""The shipped default codec: manifest, lookup by quality and fingerprint, and the CLI defaults."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lic
from lic import coding, pretrained
from lic.bitstream import fingerprint_prefix
from lic.cli import main
from lic.demo import jpeg_at_psnr, run_demo
from lic.errors import CheckpointError, UsageError
from lic.evaluation.metrics import psnr_rgb
from lic.imageio import tensor_to_pixels
from tests.images import write_mode


def _fake_weights(tmp_path: Path, checkpoint: Path, qualities=(1, 2)) -> Path:
    """A weights folder holding ``checkpoint`` once per quality, with its manifest."""
    folder = tmp_path / "weights"
    folder.mkdir()
    codec = lic.load_codec(checkpoint)
    models = []
    for quality in qualities:
        name = f"q{quality}.ckpt"
        shutil.copyfile(checkpoint, folder / name)
        models.append(
            {
                "quality": quality,
                "lmbda": 0.001 * quality,
                "file": name,
                "codec": codec.codec_name,
                "fingerprint": codec.fingerprint,
                "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            }
        )
    (folder / "manifest.json").write_text(
        json.dumps({"models": models, "default_quality": qualities[-1]})
    )
    return folder


# -- lookup logic, on a folder of test weights -------------------------------------------------------


def test_lookup_by_quality_and_fingerprint(tmp_path, tiny_checkpoint) -> None:
    folder = _fake_weights(tmp_path, tiny_checkpoint)
    assert pretrained.default_checkpoint(1, folder) == folder / "q1.ckpt"
    assert pretrained.default_checkpoint(None, folder) == folder / "q2.ckpt"
    with pytest.raises(UsageError, match="--quality must be one of 1, 2"):
        pretrained.default_checkpoint(7, folder)
    fingerprint = lic.load_codec(tiny_checkpoint).fingerprint
    assert (
        pretrained.find_by_fingerprint(fingerprint_prefix(fingerprint), folder)
        == folder / "q1.ckpt"
    )
    assert pretrained.find_by_fingerprint("00" * 8, folder) is None
    assert pretrained.verify(folder) == []


def test_tampered_or_missing_weights_are_reported(tmp_path, tiny_checkpoint) -> None:
    folder = _fake_weights(tmp_path, tiny_checkpoint)
    (folder / "q1.ckpt").write_bytes(b"x")
    (folder / "q2.ckpt").unlink()
    problems = pretrained.verify(folder)
    assert len(problems) == 2 and "sha256" in problems[0] and "missing" in problems[1]
    with pytest.raises(CheckpointError, match="no default weights installed"):
        pretrained.default_models(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a default-weights manifest"):
        pretrained.default_models(tmp_path / "bad")


# -- the weights that ship in the package ----------------------------------------------------------


def test_shipped_weights_match_their_manifest() -> None:
    manifest = pretrained.manifest()
    models = pretrained.default_models()
    assert len(models) >= 4, "the default codec needs four or more rate points"
    assert [m.quality for m in models] == list(range(1, len(models) + 1))
    assert [m.lmbda for m in models] == sorted({m.lmbda for m in models}), (
        "one lambda per quality, rising"
    )
    assert pretrained.verify() == []
    assert sum(m.path.stat().st_size for m in models) <= 20 * 2**20
    assert manifest["data"]["train"].startswith("shared datasets/train")
    for model in models:
        codec = lic.load_codec(model.path)  # checks the recorded fingerprint against the weights
        assert codec.fingerprint == model.fingerprint and codec.codec_name == manifest["codec"]
        assert codec.metadata["lmbda"] == pytest.approx(model.lmbda)
        assert codec.metadata["experiment"] == "default_student"


def test_default_encode_then_decode_by_fingerprint(tmp_path, capsys) -> None:
    source = write_mode(tmp_path / "in.png", "RGB")
    sizes = []
    for quality in (1, len(pretrained.default_models())):
        stream = tmp_path / f"q{quality}.lic"
        assert main(["encode", str(source), "-o", str(stream), "--quality", str(quality)]) == 0
        assert main(["decode", str(stream), "-o", str(tmp_path / f"q{quality}.png")]) == 0
        sizes.append(stream.stat().st_size)
        decoded = np.asarray(Image.open(tmp_path / f"q{quality}.png").convert("RGB"))
        assert decoded.shape == np.asarray(Image.open(source).convert("RGB")).shape
    assert sizes[0] < sizes[1], "the highest quality should spend more bytes than the lowest"
    capsys.readouterr()
    assert main(["encode", str(source), "-o", str(tmp_path / "x.lic"), "--quality", "99"]) == 2
    assert "--quality must be one of" in capsys.readouterr().err


def test_rate_and_quality_rise_with_the_quality_setting(kodak_dir) -> None:
    """On a real photo crop, every step up in quality costs bits and buys PSNR."""
    pixels = np.asarray(Image.open(kodak_dir / "kodim23.png").convert("RGB"))[128:384, 192:448]
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    points = []
    for path in pretrained.default_checkpoints():
        codec = lic.load_codec(path)
        data = coding.encode(codec, x)
        decoded = tensor_to_pixels(coding.decode(codec, data))
        points.append((len(data), psnr_rgb(pixels, decoded)))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(points)), points
    assert all(a[1] < b[1] for a, b in itertools.pairwise(points)), points


def test_demo_codes_and_finds_jpeg_at_the_same_psnr(tmp_path, kodak_dir) -> None:
    crop = np.asarray(Image.open(kodak_dir / "kodim01.png").convert("RGB"))[:192, :256]
    Image.fromarray(crop).save(tmp_path / "crop.png")
    (row,) = run_demo([tmp_path / "crop.png"], tmp_path / "out")
    assert (tmp_path / "out" / "crop.lic").stat().st_size == row.lic_bytes
    assert row.jpeg_psnr >= row.psnr and row.jpeg_bytes > 0
    worse = jpeg_at_psnr(crop, row.psnr - 3)
    assert worse is not None and worse[1] <= row.jpeg_bytes  # a lower target never costs more
    assert jpeg_at_psnr(crop, 99.0) is None


def test_demo_without_images_shared_data_or_samples_is_a_usage_error(
    tmp_path, capsys, monkeypatch
) -> None:
    """Without the shared Kodak set lic falls back to its sample photos; without those too, an error."""
    monkeypatch.setenv("LIC_SHARED", str(tmp_path / "absent"))
    monkeypatch.setattr("lic.demo.SAMPLES_DIR", tmp_path / "no-samples")
    assert main(["demo", "--data-root", str(tmp_path / "none"), "-o", str(tmp_path / "o")]) == 2
    assert "no sample images" in capsys.readouterr().err


def test_evaluate_and_bench_default_to_every_rate_point(tmp_path, kodak_dir, capsys) -> None:
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--dataset",
        str(kodak_dir),
        "--limit",
        "1",
        "--name",
        "default",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    results = json.loads((out / "default.json").read_text())["results"]
    assert len(results["bpp"]) == len(pretrained.default_models())
    assert results["bpp"] == sorted(results["bpp"])
    assert (
        main(
            [
                "bench",
                "--size",
                "64x64",
                "--runs",
                "1",
                "--warmup",
                "0",
                "-o",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    bench = json.loads((tmp_path / "b.json").read_text())
    assert len(bench["codecs"]) == len(pretrained.default_models())
    assert (
        main(["evaluate", "--dataset", str(kodak_dir), "--anchors-only", "-o", str(tmp_path / "e")])
        == 2
    )
    assert "nothing to evaluate" in capsys.readouterr().err


def test_results_name_shipped_weights_without_a_machine_path(tmp_path, kodak_dir) -> None:
    out = tmp_path / "eval"
    assert (
        main(
            ["evaluate", "--dataset", str(kodak_dir), "--limit", "1", "--name", "d", "-o", str(out)]
        )
        == 0
    )
    recorded = [c["checkpoint"] for c in json.loads((out / "d.json").read_text())["checkpoints"]]
    assert recorded == [f"lic/weights/{m.path.name}" for m in pretrained.default_models()]
