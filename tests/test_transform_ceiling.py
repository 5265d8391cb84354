"""The transforms' ceiling: ``g_s(g_a(x))`` with nothing rounded, what no rate can code past;
measured per quality by ``scripts/transform_ceiling.py`` and by the campaign's held-out crops."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

import lic
from lic import pretrained
from lic.codecs.refine import fit_synthesis_input
from lic.demo import SAMPLES_DIR
from lic.imageio import load_image
from lic.training.campaign import measure_crops
from lic.training.losses import RateDistortionLoss
from tests.conftest import REPO
from tests.helpers import perturbed_codec

SCRIPT = REPO / "scripts" / "transform_ceiling.py"


def _image() -> torch.Tensor:
    return load_image(min(SAMPLES_DIR.glob("*.png"))).to_tensor()[..., :80, :112]


def test_ceiling_is_the_transforms_alone() -> None:
    x = _image()  # 80x112: padded to the codec's stride and cropped back
    codec = perturbed_codec("student-tiny", x, steps=5).eval()  # latents far from zero
    with torch.no_grad():
        ceiling = codec.reconstruct_unquantized(x)
        padded, padding = codec._pad(x)
        by_hand = codec._crop(codec.g_s(codec.g_a(padded)), x.shape[-2:], padding)
        coded = codec(x).x_hat
    assert ceiling.shape == x.shape
    torch.testing.assert_close(ceiling, by_hand)
    assert (ceiling - coded).abs().mean() > 1e-3  # the coded path rounds; the ceiling does not


def test_finer_quantisation_approaches_the_ceiling() -> None:
    """At a variable-rate codec's quality, the gains scale the latent before rounding: a larger
    gain (with its inverse) leaves the ceiling alone and brings the coded image towards it."""
    torch.manual_seed(0)
    codec = lic.create_codec("student-tiny-vr").eval()
    x = _image()
    gaps = []
    with torch.no_grad():
        for boost in (0.0, 3.0, 6.0):
            codec.log_gain[-1].fill_(boost)
            codec.log_inverse_gain[-1].fill_(-boost)
            ceiling = codec.reconstruct_unquantized(x, quality=8.0)
            gaps.append(float((codec(x, exact=False, quality=8.0).x_hat - ceiling).abs().mean()))
            if boost == 0.0:
                reference = ceiling
            torch.testing.assert_close(ceiling, reference)  # g · g' = 1 at every boost
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.05 * gaps[0]


def test_campaign_measurement_reports_the_ceiling() -> None:
    torch.manual_seed(0)
    codec = lic.create_codec("student-tiny")
    crops = torch.stack([_image()[0, :, :64, :64], _image()[0, :, 16:80, 32:96]])
    measured = measure_crops(codec, crops, RateDistortionLoss(0.013))
    assert 0 < measured["psnr"] < 60 and 0 < measured["ceiling_psnr"] < 60
    with torch.no_grad():
        mse = float(torch.mean((codec.reconstruct_unquantized(crops) - crops) ** 2))
    assert measured["ceiling_psnr"] == pytest.approx(-10 * torch.log10(torch.tensor(mse)).item())


@pytest.mark.parametrize("name", ["student-tiny", "student-tiny-vr"])
def test_synthesis_fit_starts_at_the_ceiling_and_renders_better(name) -> None:
    x = _image()  # 80x112: padded to the codec's stride and cropped back
    codec = perturbed_codec(name, x, steps=5)
    codec.train().zero_grad(set_to_none=True)
    weights = {k: v.clone() for k, v in codec.state_dict().items()}
    quality = 8.0 if codec.variable_rate else None
    fit = fit_synthesis_input(codec, x, steps=30, quality=quality)
    assert codec.training  # mode restored
    assert all(p.grad is None for p in codec.parameters())
    for key, value in codec.state_dict().items():
        torch.testing.assert_close(value, weights[key])
    with torch.no_grad():
        ceiling = codec.eval().reconstruct_unquantized(x, quality)
    torch.testing.assert_close(fit.start, ceiling)
    assert fit.best.shape == x.shape and len(fit.mses) == 31
    assert fit.mses[0] == pytest.approx(float((ceiling - x).square().mean()), rel=1e-5)
    best = float((fit.best - x).square().mean())
    assert best == pytest.approx(min(fit.mses), rel=1e-5) and best < 0.99 * fit.mses[0]


def test_synthesis_fit_refuses_a_negative_step_count() -> None:
    with pytest.raises(ValueError, match="whole number"):
        fit_synthesis_input(lic.create_codec("student-tiny"), _image(), steps=-1)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def test_script_measures_every_quality(tmp_path) -> None:
    checkpoint = tmp_path / "student-tiny-vr.ckpt"
    lic.save_codec(perturbed_codec("student-tiny-vr", _image(), steps=5), checkpoint, metric="mse")
    out = tmp_path / "ceiling.json"
    result = _run(str(checkpoint), "--data", str(SAMPLES_DIR), "--images", "1", "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["quality"] for row in rows] == [float(q) for q in range(1, 9)]
    assert [row["lmbda"] for row in rows] == sorted(row["lmbda"] for row in rows)
    for row in rows:
        assert row["gap_db"] == pytest.approx(row["ceiling_psnr"] - row["psnr"])
        assert row["bpp"] > 0
        assert 0 < row["live_channels"] <= row["latent_channels"] == 24  # student-tiny: M = 24
        # gains as initialised (reciprocal, g · g' = 1) but for the perturbation: one ceiling
        assert row["ceiling_psnr"] == pytest.approx(rows[0]["ceiling_psnr"], abs=0.05)
    # the top quality quantises finer: more bits, and coded closer to the ceiling
    assert rows[-1]["bpp"] > rows[0]["bpp"] and abs(rows[-1]["gap_db"]) < abs(rows[0]["gap_db"])
    assert "| student-tiny-vr.ckpt | 8 | 0.18 |" in result.stdout


def test_script_measures_the_default_grown_to_ten_levels(tmp_path) -> None:
    out = tmp_path / "grown.json"
    result = _run(
        "--grow", "student-medium-vr10", "--data", str(SAMPLES_DIR), "--images", "1",
        "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["quality"] for row in rows] == [float(q) for q in range(1, 11)]
    assert rows[2]["lmbda"] == pytest.approx(0.0018, rel=1e-5) and rows[0]["lmbda"] < 0.0005
    bpps = [row["bpp"] for row in rows]  # the added low levels go on down the curve
    assert bpps == sorted(bpps) and bpps[0] < 0.7 * bpps[2]
    checkpoint = tmp_path / "student-tiny-vr.ckpt"
    lic.save_codec(perturbed_codec("student-tiny-vr", _image(), steps=1), checkpoint, metric="mse")
    refused = _run(str(checkpoint), "--grow", "student-medium-vr10", "--images", "1")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: cannot grow student-tiny-vr into student-medium-vr10")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_script_measures_the_campaign_held_out_photos(tmp_path) -> None:
    from lic.paths import shared_dir
    from lic.training.campaign import load_plan, training_split

    plan = load_plan(REPO / "recipes" / "campaign" / "default.yaml", shared_dir(), tmp_path)
    trained, held = training_split(plan)
    checkpoint = pretrained.default_checkpoint()  # trained: its curve rises
    levels = int(lic.load_codec(checkpoint).quality_range[1])
    twin = tmp_path / "twin.ckpt"
    shutil.copy(checkpoint, twin)
    shifted = lic.load_codec(checkpoint)
    with torch.no_grad():
        shifted.g_s[-1].bias += 0.02  # a colour cast: lower PSNR at every quality
    other = tmp_path / "shifted.ckpt"
    lic.save_codec(shifted, other, metric="mse")
    untrained = tmp_path / "untrained.ckpt"
    torch.manual_seed(0)  # initial weights whose PSNR does not rise with the rate
    lic.save_codec(lic.create_codec("student-tiny-vr").eval(), untrained, metric="mse")
    out = tmp_path / "ceiling.json"
    result = _run(
        *map(str, (checkpoint, twin, other, untrained)), "--data", "heldout", "--images", "2",
        "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["data"] == "heldout"
    assert report["image_names"] == [p.name for p in held[:2]]
    assert not set(report["image_names"]) & {p.name for p in trained}
    assert len(report["rows"]) == 3 * levels + 8  # every level of each; the tiny one has eight
    versus = report["bd_rate_vs_first"]
    assert versus["twin.ckpt"] == pytest.approx(0.0, abs=1e-9)  # the same weights: the same curve
    assert versus["shifted.ckpt"] > 1.0  # worse everywhere: more bits for the same PSNR
    assert versus["untrained.ckpt"] is None  # its PSNR does not rise with rate: no BD-rate
    assert f"against {checkpoint.name}" in result.stdout
    assert "untrained.ckpt: no BD-rate" in result.stdout


def test_script_measures_the_synthesis_ceiling(tmp_path) -> None:
    checkpoint = tmp_path / "student-tiny.ckpt"
    lic.save_codec(perturbed_codec("student-tiny", _image(), steps=5), checkpoint, lmbda=0.013)
    out = tmp_path / "ceiling.json"
    result = _run(
        str(checkpoint), "--data", str(SAMPLES_DIR), "--images", "2", "--synthesis", "20",
        "--synthesis-images", "1", "--synthesis-crop", "64", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    (synthesis,) = report["synthesis"]
    assert synthesis["images"] == 1 and synthesis["crop"] == 64 and synthesis["steps"] == 20
    assert synthesis["synthesis_psnr"] > synthesis["ceiling_psnr"]
    assert synthesis["gain_db"] == pytest.approx(
        synthesis["synthesis_psnr"] - synthesis["ceiling_psnr"]
    )
    assert "centre crops of 64²" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--synthesis", "-1"], "--synthesis must be at least 0"),
        (["--synthesis-crop", "0"], "--synthesis-crop must be at least 1"),
        (["--data", "no-such-dataset"], "not found"),
        (["--history", "nobody"], "has no run 'nobody'"),
    ],
)
def test_bad_requests_fail_in_one_line(args, message) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_a_file_that_is_no_checkpoint_fails_in_one_line(tmp_path) -> None:
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    result = _run(str(bogus), "--data", str(SAMPLES_DIR), "--images", "1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "bogus.ckpt" in result.stderr
