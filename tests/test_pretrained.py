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
from lic.checkpoint import warm_start
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


def _fake_vr_weights(tmp_path: Path, checkpoint: Path, **extra) -> Path:
    """A weights folder holding the variable-rate ``checkpoint`` alone, with its manifest."""
    folder = tmp_path / "weights"
    folder.mkdir()
    codec = lic.load_codec(checkpoint)
    shutil.copyfile(checkpoint, folder / "vr.ckpt")
    model = {
        "file": "vr.ckpt",
        "codec": codec.codec_name,
        "variable_rate": True,
        "quality_range": [1, 8],
        "lmbdas": [codec.lmbda_at(q) for q in range(1, 9)],
        "fingerprint": codec.fingerprint,
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    }
    manifest = {"codec": codec.codec_name, "default_quality": 3, "models": [model], **extra}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def tiny_vr_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A saved ``student-tiny-vr``: the test ``student-tiny`` with gains as initialised (mse)."""
    codec = warm_start(lic.create_codec("student-tiny-vr"), tiny_checkpoint)
    path = tmp_path_factory.mktemp("vr") / "student-tiny-vr.ckpt"
    lic.save_codec(codec, path, metric="mse")
    return path


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


def test_a_variable_rate_default_is_one_file_for_every_quality(tmp_path, tiny_vr_checkpoint):
    folder = _fake_vr_weights(tmp_path, tiny_vr_checkpoint)
    assert pretrained.is_variable_rate(folder) and pretrained.quality_range(folder) == (1, 8)
    assert pretrained.default_quality(folder) == 3
    for quality in (None, 1, 2.5, 8):
        assert pretrained.default_checkpoint(quality, folder) == folder / "vr.ckpt"
    for quality in (0.5, 9, float("nan")):
        with pytest.raises(UsageError, match="--quality must be a number from 1 to 8, got"):
            pretrained.default_checkpoint(quality, folder)
    (model,) = pretrained.default_models(folder)
    assert model.variable_rate and model.quality is None and model.lmbda is None
    assert model.lmbdas[0] == pytest.approx(0.0018) and model.lmbdas[-1] == pytest.approx(0.18)
    assert pretrained.default_checkpoints(folder) == [folder / "vr.ckpt"]
    fingerprint = fingerprint_prefix(lic.load_codec(tiny_vr_checkpoint).fingerprint)
    assert pretrained.find_by_fingerprint(fingerprint, folder) == folder / "vr.ckpt"
    assert pretrained.verify(folder) == []
    assert "from 1 (smallest files) to 8, default 3" in pretrained.describe_qualities(folder)
    (tmp_path / "fixed").mkdir()
    fixed = _fake_weights(tmp_path / "fixed", tiny_vr_checkpoint)
    assert not pretrained.is_variable_rate(fixed) and pretrained.quality_range(fixed) is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["models"].append(dict(m["models"][0])), "exactly one model"),
        (lambda m: m.update(default_quality=9), "default_quality 9 is outside 1 to 8"),
        (lambda m: m["models"][0].update(quality_range=[8, 1]), "0 < low < high"),
        (lambda m: m["models"][0].pop("sha256"), "lacks sha256"),
        (lambda m: m.update(retired=[{"codec": "x"}]), "retired entry needs"),
    ],
)
def test_malformed_variable_rate_manifests_are_refused(
    tmp_path, tiny_vr_checkpoint, edit, message
) -> None:
    folder = _fake_vr_weights(tmp_path, tiny_vr_checkpoint)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=message):
        pretrained.default_models(folder)


def test_cli_with_a_variable_rate_default(
    tmp_path, tiny_vr_checkpoint, monkeypatch, capsys
) -> None:
    """encode takes any quality of the range (default the manifest's), decode finds the file."""
    folder = _fake_vr_weights(tmp_path, tiny_vr_checkpoint)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    source = write_mode(tmp_path / "in.png", "RGB")
    sizes = {}
    for quality in ("1", "2.5", None, "8"):
        stream = tmp_path / f"q{quality}.lic"
        extra = ["--quality", quality] if quality else []
        assert main(["encode", str(source), "-o", str(stream), *extra]) == 0
        shown = quality or "3"
        assert f"(default codec, quality {shown})" in capsys.readouterr().out
        assert coding.read_bitstream_file(stream).quality == pytest.approx(float(shown))
        assert main(["decode", str(stream), "-o", str(tmp_path / "out.png")]) == 0
        sizes[shown] = stream.stat().st_size
    assert sizes["1"] < sizes["8"]
    report = coding.encode_file(source, tmp_path / "t.lic", target_bpp=1.0)
    assert 1 <= report.quality <= 8 and "encodes" in report.search
    capsys.readouterr()
    argv = ["encode", str(source), "-o", str(tmp_path / "x.lic"), "--quality", "9"]
    assert main(argv) == 2
    assert "--quality must be a number from 1 to 8, got 9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "from 1 (smallest files) to 8, default 3" in " ".join(capsys.readouterr().out.split())


def test_a_file_of_retired_default_weights_says_where_they_are(
    tmp_path, tiny_checkpoint, tiny_vr_checkpoint, monkeypatch, capsys
) -> None:
    codec = lic.load_codec(tiny_checkpoint)
    retired = {
        "codec": codec.codec_name,
        "fingerprint": codec.fingerprint,
        "quality": 3,
        "lmbda": 0.0067,
        "until": "lic commit 9ee9f9e",
        "file": "lic/weights/student-small-q3.ckpt",
    }
    folder = _fake_vr_weights(tmp_path, tiny_vr_checkpoint, retired=[retired])
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    source = write_mode(tmp_path / "in.png", "RGB")
    stream = tmp_path / "old.lic"
    coding.encode_file(source, stream, tiny_checkpoint)
    assert main(["decode", str(stream), "-o", str(tmp_path / "old.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lic: error: ") and err.count("\n") == 1
    for fragment in (
        "made by an earlier default codec (quality 3, student-tiny)",
        "no longer ships",
        "lic/weights/student-small-q3.ckpt in lic commit 9ee9f9e",
        "--checkpoint",
    ):
        assert fragment in err
    assert not (tmp_path / "old.png").exists()
    assert (
        main(
            ["decode", str(stream), "-o", str(tmp_path / "old.png"), "--checkpoint"]
            + [str(tiny_checkpoint)]
        )
        == 0
    )
    other = tmp_path / "other.ckpt"  # weights no manifest knows: today's message
    lic.save_codec(lic.create_codec("student-tiny"), other)
    coding.encode_file(source, tmp_path / "unknown.lic", other)
    assert main(["decode", str(tmp_path / "unknown.lic"), "-o", str(tmp_path / "u.png")]) == 2
    assert "--checkpoint is required: no installed weights match" in capsys.readouterr().err


def test_evaluate_bench_and_demo_with_a_variable_rate_default(
    tmp_path, tiny_vr_checkpoint, image_folder, monkeypatch
) -> None:
    folder = _fake_vr_weights(tmp_path, tiny_vr_checkpoint)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    out = tmp_path / "eval"
    argv = ["evaluate", "--dataset", str(image_folder), "--limit", "1", "--name", "d", "-o"]
    assert main([*argv, str(out)]) == 0
    results = json.loads((out / "d.json").read_text())["results"]
    assert len(results["bpp"]) == 8  # every trained level of the one checkpoint
    bench = ["bench", "--size", "64x64", "--runs", "1", "--warmup", "0", "-o"]
    assert main([*bench, str(tmp_path / "b.json")]) == 0
    (label,) = json.loads((tmp_path / "b.json").read_text())["codecs"]
    assert label == "default student-tiny-vr (vr.ckpt, quality 3)"
    image = min(image_folder.glob("*.png"))
    (row,) = run_demo([image], tmp_path / "demo", quality=2.5)
    header = coding.read_bitstream_file(tmp_path / "demo" / f"{image.stem}.lic")
    assert header.quality == pytest.approx(2.5) and row.lic_bytes > 0
    run_demo([image], tmp_path / "demo3")
    assert coding.read_bitstream_file(tmp_path / "demo3" / f"{image.stem}.lic").quality == 3


# -- the weights that ship in the package ----------------------------------------------------------


def _shipped_points() -> list[tuple[Path, float | None]]:
    """The shipped default's rate points: (checkpoint, quality; None for a fixed-rate file).

    A variable-rate default gives one point per trained level of its one checkpoint.
    """
    models = pretrained.default_models()
    if models[0].variable_rate:
        low, high = models[0].quality_range
        return [(models[0].path, float(q)) for q in range(int(low), int(high) + 1)]
    return [(m.path, None) for m in models]


def test_shipped_weights_match_their_manifest() -> None:
    manifest = pretrained.manifest()
    models = pretrained.default_models()
    assert pretrained.verify() == []
    assert sum(m.path.stat().st_size for m in models) <= 20 * 2**20
    assert manifest["data"]["train"].startswith(("shared datasets/train", "<shared>/datasets/"))
    if models[0].variable_rate:
        (model,) = models
        codec = lic.load_codec(model.path)  # checks the recorded fingerprint against the weights
        assert codec.fingerprint == model.fingerprint and codec.codec_name == manifest["codec"]
        assert codec.variable_rate and codec.quality_range == model.quality_range
        levels = [codec.lmbda_at(quality) for _, quality in _shipped_points()]
        assert list(model.lmbdas) == pytest.approx(levels, rel=1e-5)
        # the earlier four-point default's λ are consecutive levels (its qualities live on)
        first = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.0018))
        earlier = [0.0018, 0.0035, 0.0067, 0.013]
        assert levels[first : first + 4] == pytest.approx(earlier, rel=0.01)
        assert codec.metadata["experiment"].startswith("campaign/")
        return
    assert len(models) >= 4, "the default codec needs four or more rate points"
    assert [m.quality for m in models] == list(range(1, len(models) + 1))
    assert [m.lmbda for m in models] == sorted({m.lmbda for m in models}), (
        "one lambda per quality, rising"
    )
    for model in models:
        codec = lic.load_codec(model.path)  # checks the recorded fingerprint against the weights
        assert codec.fingerprint == model.fingerprint and codec.codec_name == manifest["codec"]
        assert codec.metadata["lmbda"] == pytest.approx(model.lmbda)
        assert codec.metadata["experiment"] == "default_student"


def test_default_encode_then_decode_by_fingerprint(tmp_path, capsys) -> None:
    source = write_mode(tmp_path / "in.png", "RGB")
    sizes = []
    points = _shipped_points()
    for quality in (1, points[-1][1] or len(points)):
        stream = tmp_path / f"q{quality:g}.lic"
        argv = ["encode", str(source), "-o", str(stream), "--quality", f"{quality:g}"]
        assert main(argv) == 0
        assert main(["decode", str(stream), "-o", str(tmp_path / f"q{quality:g}.png")]) == 0
        sizes.append(stream.stat().st_size)
        decoded = np.asarray(Image.open(tmp_path / f"q{quality:g}.png").convert("RGB"))
        assert decoded.shape == np.asarray(Image.open(source).convert("RGB")).shape
    assert sizes[0] < sizes[1], "the highest quality should spend more bytes than the lowest"
    capsys.readouterr()
    assert main(["encode", str(source), "-o", str(tmp_path / "x.lic"), "--quality", "99"]) == 2
    assert "--quality must be " in capsys.readouterr().err


def test_rate_and_quality_rise_with_the_quality_setting(kodak_dir) -> None:
    """On a real photo crop, every step up in quality costs bits and buys PSNR."""
    pixels = np.asarray(Image.open(kodak_dir / "kodim23.png").convert("RGB"))[128:384, 192:448]
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    points = []
    for path, quality in _shipped_points():
        codec = lic.load_codec(path)
        data = coding.encode(codec, x, quality)
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
    assert len(results["bpp"]) == len(_shipped_points())
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
    assert recorded == [f"lic/weights/{path.name}" for path, _ in _shipped_points()]
