"""Training end to end: fast_dev_run, export, resume after SIGKILL, non-finite steps, DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

import lic
from lic import coding
from lic.checkpoint import weights_fingerprint
from lic.cli import main as lic_main
from lic.train import train
from lic.training.losses import RateDistortionLoss
from lic.training.module import NonFiniteLossError, RateDistortionModule
from tests.conftest import REPO
from tests.training.conftest import compose_train, small_run_overrides


def _global_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_fast_dev_run_trains_and_exports(image_folder, tmp_path) -> None:
    cfg = compose_train(small_run_overrides(image_folder, tmp_path) + ["+trainer.fast_dev_run=2"])
    train(cfg)
    codec = lic.load_codec(tmp_path / "codec.ckpt")
    assert codec.codec_name == "student-tiny" and codec.metadata["lmbda"] == pytest.approx(0.013)
    assert codec.metadata["steps"] == 2 and codec.metadata["experiment"] == "quick"


def test_bf16_transforms_and_channels_last_train_and_export_float32(image_folder, tmp_path) -> None:
    overrides = small_run_overrides(image_folder, tmp_path, steps=3)
    overrides += ["speed.transform_precision=bf16", "speed.channels_last=true"]
    metrics = train(compose_train(overrides))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    codec = lic.load_codec(tmp_path / "codec.ckpt")
    assert codec.transform_autocast is None  # exported codecs code in float32
    image = torch.rand(1, 3, 64, 64)
    out = codec(image)
    assert out.x_hat.dtype == torch.float32 and out.features["g_a.0"].dtype == torch.float32


def test_an_unknown_precision_is_refused(image_folder, tmp_path) -> None:
    from lic.errors import UsageError

    overrides = small_run_overrides(image_folder, tmp_path) + ["speed.transform_precision=fp16"]
    with pytest.raises(UsageError, match="precision must be one of auto, bf16, fp32"):
        train(compose_train(overrides))


def test_run_exports_a_codec_that_the_cli_uses(image_folder, kodak_dir, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    cfg = compose_train(small_run_overrides(image_folder, run, steps=6))
    train(cfg)
    assert _global_step(run / "checkpoints" / "last.ckpt") == 6
    assert (run / "real-bits.json").is_file()
    assert list((run / "logs").glob("version_*/metrics.csv"))
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    exported = lic.load_codec(run / "codec.ckpt")

    # `lic export` of the final Lightning checkpoint gives the very same codec.
    assert (
        lic_main(
            ["export", str(run / "checkpoints" / "last.ckpt"), "-o", str(tmp_path / "again.ckpt")]
        )
        == 0
    )
    assert lic.load_codec(tmp_path / "again.ckpt").fingerprint == exported.fingerprint

    stream, output = tmp_path / "k.lic", tmp_path / "k.png"
    ckpt = str(run / "codec.ckpt")
    capsys.readouterr()
    assert (
        lic_main(
            ["encode", str(kodak_dir / "kodim05.png"), "-o", str(stream), "--checkpoint", ckpt]
        )
        == 0
    )
    assert lic_main(["decode", str(stream), "-o", str(output), "--checkpoint", ckpt]) == 0
    assert output.stat().st_size > 0 and "bpp" in capsys.readouterr().out


def test_warm_start_begins_from_the_given_weights(image_folder, tiny_checkpoint, tmp_path) -> None:
    """init_checkpoint loads the weights before step one; a different codec is refused."""
    from lic.checkpoint import warm_start
    from lic.errors import LicError

    codec = lic.create_codec("student-tiny")
    warm_start(codec, str(tiny_checkpoint))
    assert weights_fingerprint(codec) == lic.load_codec(tiny_checkpoint).fingerprint
    with pytest.raises(LicError, match="not the configured 'student-tiny'"):
        warm_start(lic.create_codec("student-tiny", latent_channels=48), str(tiny_checkpoint))
    with pytest.raises(LicError, match="not the configured 'student-small'"):
        warm_start(lic.create_codec("student-small"), str(tiny_checkpoint))

    run = tmp_path / "run"
    overrides = small_run_overrides(image_folder, run, steps=2) + [
        f"init_checkpoint={tiny_checkpoint}"
    ]
    train(compose_train(overrides + ["optim.optimizer.lr=1e-12", "optim.aux_optimizer.lr=1e-12"]))
    trained = lic.load_codec(run / "codec.ckpt")
    start = lic.load_codec(tiny_checkpoint)
    for name, value in start.named_parameters():
        if "quantiles" not in name:  # the aux loss moves these anyway
            assert torch.allclose(dict(trained.named_parameters())[name], value, atol=1e-6), name


def test_export_refuses_what_is_not_a_training_checkpoint(
    tiny_checkpoint, tmp_path, capsys
) -> None:
    assert lic_main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "x.ckpt")]) == 1
    assert "not a lic training checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path) -> None:
    codec = lic.create_codec("student-tiny")
    module = RateDistortionModule(
        codec,
        RateDistortionLoss(0.013),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        aux_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        max_nonfinite_steps=3,
    )
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    data = DataLoader([torch.full((3, 64, 64), float("nan"))] * 8, batch_size=2)
    trainer = pl.Trainer(
        max_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match="not finite for 3 steps in a row"):
        trainer.fit(module, train_dataloaders=data)
    after = codec.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), (
        "a non-finite step changed weights"
    )


def _train_command(image_folder: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    overrides = small_run_overrides(image_folder, run_dir, steps=steps)
    return [sys.executable, "-m", "lic.train", *overrides, *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_three_sigkills_at_random_moments_then_the_same_steps_as_uninterrupted(
    image_folder, tmp_path
) -> None:
    """Killed three times (at random steps, random offsets into checkpoint writes), the run
    resumes each time and ends after exactly ``max_steps``; every checkpoint file on disk is
    complete at every moment we look."""
    import random

    steps = 40
    run = tmp_path / "run"
    command = _train_command(image_folder, run, steps, "callbacks.checkpoint.every_n_train_steps=2")
    checkpoints = run / "checkpoints"
    last = checkpoints / "last.ckpt"
    rng = random.Random(6)
    killed = []
    for kill in range(3):
        target = rng.randrange(4 + 10 * kill, 10 + 10 * kill)  # strictly later each time
        process = subprocess.Popen(
            command, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if last.is_file() and _global_step(last) >= target:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))  # anywhere in a step or a checkpoint write
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        for path in checkpoints.glob("*.ckpt"):  # complete files only, under final names
            torch.load(path, map_location="cpu", weights_only=True)
        killed.append(_global_step(last))
        assert killed[-1] < steps
    assert killed == sorted(killed) and killed[0] >= 4

    done = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {last}" in done.stderr + done.stdout
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == steps  # what an uninterrupted run of max_steps ends with
    assert final["lr_schedulers"][0]["last_epoch"] == steps  # the schedule resumed, not restarted
    assert not list(checkpoints.glob(".*.tmp")), "unfinished writes were not cleaned up"
    resumed_log = max((run / "logs").glob("version_*/metrics.csv"))
    with resumed_log.open() as handle:
        logged = [int(row["step"]) for row in csv.DictReader(handle) if row.get("step")]
    assert logged and min(logged) >= killed[-1]


def test_two_process_ddp_on_cpu_keeps_ranks_identical(image_folder, tmp_path) -> None:
    run = tmp_path / "run"
    command = _train_command(
        image_folder,
        run,
        4,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.val_check_interval=4",
    )
    done = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=480
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((run / "weights-by-rank.json").read_text())
    assert ranks["world_size"] == 2 and len(ranks["fingerprints"]) == 2
    assert len(set(ranks["fingerprints"])) == 1
    exported = lic.load_codec(run / "codec.ckpt")
    assert weights_fingerprint(exported, parameters_only=True) == ranks["fingerprints"][0]
    assert _global_step(run / "checkpoints" / "last.ckpt") == 4


def test_multirun_over_lambda_makes_one_run_folder_each(image_folder, tmp_path) -> None:
    overrides = [
        o for o in small_run_overrides(image_folder, tmp_path) if not o.startswith("run_dir=")
    ]
    command = [
        sys.executable,
        "-m",
        "lic.train",
        "-m",
        *overrides,
        "loss.lmbda=0.0067,0.013",
        "+trainer.fast_dev_run=1",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for lmbda in (0.0067, 0.013):
        codec = lic.load_codec(tmp_path / "runs" / "quick" / f"lmbda_{lmbda}" / "codec.ckpt")
        assert codec.metadata["lmbda"] == pytest.approx(lmbda)


def test_a_variable_rate_codec_trains_at_a_drawn_quality_per_batch(image_folder, tmp_path) -> None:
    """codec=<name>-vr: λ drawn per batch across the range; the export codes at any quality."""
    run = tmp_path / "vr"
    overrides = small_run_overrides(image_folder, run, steps=3) + ["codec=student-tiny-vr"]
    metrics = train(compose_train(overrides))
    assert 1.0 <= metrics["train/quality"] <= 8.0
    codec = lic.load_codec(run / "codec.ckpt")
    assert codec.codec_name == "student-tiny-vr" and codec.variable_rate
    image = torch.rand(1, 3, 64, 64)
    sizes = [len(coding.encode(codec, image, q)) for q in (1.0, 4.25, 8.0)]
    assert all(size > 0 for size in sizes)
