"""scripts/package_default.py: the manifest's training facts come from the runs, or it refuses."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest
import yaml

from lic.paths import run_dir
from tests.conftest import REPO

LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013)
PHASES = [
    {"name": "feature", "fraction": 0.1, "feature_weight": 1.0},
    {"name": "channel", "fraction": 0.1, "channel_weight": 1.0},
    {"name": "finetune", "fraction": 0.8},
]


@pytest.fixture(scope="module")
def package_default():
    spec = importlib.util.spec_from_file_location(
        "package_default", REPO / "scripts" / "package_default.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(crop: int = 96, batch: int = 6, phases: list | None = None) -> dict:
    """What Hydra saves as ``.hydra/config.yaml``, cut to what packaging reads (interpolations
    left in, as Hydra leaves them)."""
    return {
        "data": {
            "train_dir": "${shared_dir}/datasets/train",
            "crop_size": crop,
            "batch_size": batch,
        },
        "loss": {"lmbda": 0.013, "metric": "mse"},
        "trainer": {"max_steps": 4000},
        "distill": {"phases": PHASES if phases is None else phases},
        "shared_dir": "${oc.env:LIC_SHARED,../shared}",
    }


def _fabricate(runs, tiny_checkpoint, configs: dict[float, dict | None]) -> None:
    """Student runs (a codec.ckpt each, the tiny test codec) with the given recorded recipes."""
    for lmbda, config in configs.items():
        run = run_dir("default_student", lmbda, runs)
        run.path.mkdir(parents=True)
        shutil.copyfile(tiny_checkpoint, run.codec)
        if config is not None:
            run.config.parent.mkdir()
            run.config.write_text(yaml.safe_dump(config))


def _package(package_default, monkeypatch, runs, weights) -> dict:
    monkeypatch.setattr(package_default, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(sys, "argv", ["package_default.py", "--runs", str(runs)])
    package_default.main()
    return json.loads((weights / package_default.MANIFEST_NAME).read_text())


def test_manifest_takes_crop_batch_metric_and_phases_from_the_runs(
    package_default, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    runs = tmp_path / "runs"
    _fabricate(runs, tiny_checkpoint, {lmbda: _config() for lmbda in LAMBDAS})
    manifest = _package(package_default, monkeypatch, runs, tmp_path / "weights")
    assert manifest["data"]["crop"] == 96 and manifest["data"]["batch"] == 6
    assert manifest["metric"] == "mse"  # the checkpoints' metadata (tests/conftest.py saves mse)
    assert manifest["recipe"]["student"].endswith("(FEDS: feature 10%, channel 10%, finetune 80%)")
    assert [m["lmbda"] for m in manifest["models"]] == list(LAMBDAS)
    assert sorted(p.name for p in (tmp_path / "weights").glob("*.ckpt")) == [
        f"student-tiny-q{q}.ckpt" for q in range(1, 5)
    ]


def test_phase_split_follows_the_trainer_rule(package_default) -> None:
    phases = [{"name": "a", "steps": 400}, {"name": "b", "fraction": 0.5}, {"name": "c"}]
    split = package_default.phase_split(phases, 4000)
    assert [name for name, _ in split] == ["a", "b", "c"]
    assert [share for _, share in split] == pytest.approx([0.1, 0.5, 0.4])


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        ({0.0018: None}, "no recorded recipe"),
        ({0.0018: {**_config(), "data": {"crop_size": 96}}}, "does not record data.batch_size"),
        ({0.0018: {**_config(), "distill": None}}, "does not record distill.phases"),
        ({0.0018: _config(crop=128)}, "disagree on crop: 96 in"),
    ],
)
def test_a_run_that_lacks_or_disagrees_is_refused(
    package_default, tiny_checkpoint, tmp_path, monkeypatch, capsys, configs, message
) -> None:
    runs = tmp_path / "runs"
    _fabricate(runs, tiny_checkpoint, {**{lmbda: _config() for lmbda in LAMBDAS[1:]}, **configs})
    with pytest.raises(SystemExit) as exit_info:
        _package(package_default, monkeypatch, runs, tmp_path / "weights")
    assert message in str(exit_info.value) and str(exit_info.value).startswith("package_default:")
    assert not (tmp_path / "weights").exists()
