"""scripts/package_default.py: the manifest's training facts come from the runs, or it refuses."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest
import yaml

import lic
from lic import coding, pretrained
from lic.errors import UsageError
from lic.paths import run_dir
from lic.training import campaign as cp
from tests.conftest import REPO
from tests.images import write_mode
from tests.training import test_campaign as campaign_tests

setup = campaign_tests.setup  # the tiny campaign's shared folder, plan file and state folder

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


def _package(package_default, monkeypatch, runs, weights, *extra: str) -> dict:
    monkeypatch.setattr(package_default, "WEIGHTS_DIR", weights)
    docs = ["--docs", str(weights.parent / "docs")]
    monkeypatch.setattr(sys, "argv", ["package_default.py", "--runs", str(runs), *docs, *extra])
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


# -- one campaign run as the default codec ---------------------------------------------------------

VR_RUN = """
  vr:
    codec: student-tiny-vr
    steps: 2
    crops: [[0, 64]]
"""


def _package_campaign(package_default, setup_paths, weights, *extra: str, run="vr") -> dict:
    plan, shared, state = setup_paths
    argv = ["--campaign", run, "--plan", str(plan), "--shared", str(shared)]
    argv += ["--state-dir", str(state), "--out", str(weights), "--until", "lic commit abc1234"]
    argv += ["--docs", str(weights.parent / "docs")]
    package_default.main([*argv, *extra])
    return json.loads((weights / package_default.MANIFEST_NAME).read_text())


def test_a_variable_rate_campaign_run_becomes_the_default_codec(
    package_default, setup, tiny_checkpoint, tmp_path, monkeypatch, capsys
) -> None:
    """Packaged over a fixed-rate set: encode/decode use it, files of the old set say where."""
    plan_path, shared, state = setup
    plan_path.write_text(campaign_tests.PLAN + VR_RUN)
    plan = cp.load_plan(plan_path, shared, state)
    weights = tmp_path / "weights"
    fixed = _package(package_default, monkeypatch, _fixed_runs(tmp_path, tiny_checkpoint), weights)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights)
    source = write_mode(tmp_path / "in.png", "RGB")
    coding.encode_file(source, tmp_path / "old.lic", quality=2)  # the fixed-rate default

    cp.train_slice(plan, "vr", seconds=120, max_steps=1, evaluate=False)
    with pytest.raises(SystemExit, match="at step 1 of 2: not finished"):
        _package_campaign(package_default, setup, weights)
    cp.train_slice(plan, "vr", seconds=120, evaluate=False)
    manifest = _package_campaign(package_default, setup, weights)

    (model,) = manifest["models"]
    assert model["variable_rate"] and model["quality_range"] == [1, 8] == manifest["quality_range"]
    levels = [lic.create_codec("student-tiny-vr").lmbda_at(q) for q in range(1, 9)]
    assert model["lmbdas"] == pytest.approx(levels, rel=1e-5)
    assert model["lmbdas"][:4] == pytest.approx(LAMBDAS, rel=0.01)  # as the fixed set's
    assert manifest["codec"] == model["codec"] == "student-tiny-vr"
    assert manifest["default_quality"] == 3 and manifest["metric"] == "mse"
    assert manifest["recipe"]["run"] == "vr" and "--campaign vr" in manifest["recipe"]["command"]
    assert manifest["training"]["steps"] == 2 and manifest["training"]["images_seen"] == 4
    assert manifest["training"]["compute"]["cpu_core_hours"] > 0
    assert manifest["data"]["crops"] == [[0, 64]] and manifest["data"]["batch"] == 2
    assert manifest["data"]["images"] == len(list((shared / "photos").iterdir()))
    assert sorted(p.name for p in weights.iterdir()) == ["manifest.json", "student-tiny-vr.ckpt"]
    assert model["sha256"] == package_default.sha256(weights / "student-tiny-vr.ckpt")
    (retired,) = manifest["retired"]  # the fixed set: four files of one set of weights
    assert retired["fingerprint"] == fixed["models"][0]["fingerprint"]
    assert retired["quality"] == 1 and retired["until"] == "lic commit abc1234"

    assert pretrained.is_variable_rate() and pretrained.verify() == []
    report = coding.encode_file(source, tmp_path / "new.lic", quality=2.5)
    assert report.quality == 2.5
    coding.decode_file(tmp_path / "new.lic", tmp_path / "new.png", None)
    header = coding.read_bitstream_file(tmp_path / "new.lic")
    assert header.codec == "student-tiny-vr" and header.quality == 2.5
    assert header.lmbda == pytest.approx(
        lic.load_codec(pretrained.default_checkpoint()).lmbda_at(2.5)
    )
    assert coding.encode_file(source, tmp_path / "d.lic").quality == 3
    with pytest.raises(UsageError, match="earlier default codec .*lic commit abc1234"):
        coding.decode_file(tmp_path / "old.lic", tmp_path / "old.png", None)

    # make_docs' curves of this default on Kodak; the CLIC one is stale (other weights)
    docs = tmp_path / "docs"
    for dataset, fingerprint in (("kodak", model["fingerprint"]), ("clic", "0" * 64)):
        (docs / dataset).mkdir(parents=True)
        curve = {"name": "lic-default", "description": f"lic student-tiny-vr on {dataset} (cpu)"}
        curve |= {"results": {"bpp": [0.1, 0.2]}, "checkpoints": [{"fingerprint": fingerprint}]}
        (docs / dataset / "lic-default.json").write_text(json.dumps(curve))

    # Packaged again after more training: the first VR weights retire too, the old set stays.
    plan_path.write_text(campaign_tests.PLAN + VR_RUN.replace("steps: 2", "steps: 3"))
    cp.train_slice(cp.load_plan(plan_path, shared, state), "vr", seconds=120, evaluate=False)
    again = _package_campaign(package_default, setup, weights, "--default-quality", "4.5")
    # the replaced default's Kodak curve is kept for make_docs' report against it, named after
    # it: the same run as the new default, so with its steps
    kept = json.loads((docs / "previous" / "kodak.json").read_text())
    assert kept["name"] == "vr at 2 steps" and kept["results"] == {"bpp": [0.1, 0.2]}
    assert kept["description"].startswith("the default codec until ")
    assert "(campaign run vr, student-tiny-vr)" in kept["description"]
    assert kept["description"].endswith("lic student-tiny-vr on kodak (cpu)")
    assert not (docs / "previous" / "clic.json").exists()  # not measured with those weights
    assert sorted(p.name for p in (docs / "previous").iterdir()) == ["kodak.json"]
    assert again["default_quality"] == 4.5
    assert [r["fingerprint"] for r in again["retired"]] == [
        model["fingerprint"],
        retired["fingerprint"],
    ]
    assert again["retired"][0]["quality_range"] == [1, 8]
    with pytest.raises(UsageError, match=r"\(student-tiny-vr, variable rate 1 to 8\)"):
        coding.decode_file(tmp_path / "new.lic", tmp_path / "new.png", None)
    assert "1 retired" in capsys.readouterr().out


def test_a_continued_campaign_run_says_where_it_started(package_default, setup, tmp_path) -> None:
    """The manifest names the run it started from with that run's codec and λ, and make_docs'
    budget line tells a variable-rate run continued from a fixed-rate student made variable-rate."""
    plan_path, shared, state = setup
    fixed = (
        "  fixed:\n    codec: student-tiny\n    lmbda: 0.02\n    steps: 1\n    crops: [[0, 64]]\n"
    )
    more = "    init: {start}\n    after: {{{start}: {steps}}}\n"
    plan_path.write_text(
        campaign_tests.PLAN
        + VR_RUN
        + fixed
        + VR_RUN.replace("vr:", "vr-more:")
        + more.format(start="vr", steps=2)
        + VR_RUN.replace("vr:", "vr-from-fixed:")
        + more.format(start="fixed", steps=1)
    )
    plan = cp.load_plan(plan_path, shared, state)
    for run in ("vr", "fixed", "vr-more", "vr-from-fixed"):
        cp.train_slice(plan, run, seconds=120, evaluate=False)
    spec = importlib.util.spec_from_file_location("make_docs", REPO / "scripts" / "make_docs.py")
    make_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_docs)

    weights = tmp_path / "weights"
    manifest = _package_campaign(package_default, setup, weights, run="vr-more")
    init = manifest["training"]["init"]
    assert init == {
        "run": "vr",
        "step": 2,
        "codec": "student-tiny-vr",
        "variable_rate": True,
        "lmbda": plan.run("vr").lmbda,
        "compute": cp.read_record(plan.run_dir("vr"))["compute"],
    }
    assert init["compute"]["cpu_core_hours"] > 0
    budget = make_docs._budget(manifest)
    assert (
        f"continuing the campaign's `vr` (2 steps, {init['compute']['cpu_core_hours']:.2f} CPU"
        in budget
    )
    assert "it is trained from scratch" in budget and "made variable-rate" not in budget

    manifest = _package_campaign(package_default, setup, weights, run="vr-from-fixed")
    assert manifest["training"]["init"]["codec"] == "student-tiny"
    assert not manifest["training"]["init"]["variable_rate"]
    budget = make_docs._budget(manifest)
    assert "from the campaign's `fixed` (1 steps at λ 0.02, " in budget
    assert "it is the scratch student made variable-rate" in budget


def test_campaign_packaging_refusals_leave_the_weights_alone(
    package_default, setup, tmp_path
) -> None:
    plan_path, shared, state = setup
    plan_path.write_text(campaign_tests.PLAN + VR_RUN)
    weights = tmp_path / "weights"
    with pytest.raises(SystemExit, match="^package_default: run 'vr' has no saved state"):
        _package_campaign(package_default, setup, weights)
    with pytest.raises(SystemExit, match="plan 't' has no run 'nope'"):
        package_default.main(
            ["--campaign", "nope", "--plan", str(plan_path), "--state-dir", str(state)]
        )
    cp.train_slice(cp.load_plan(plan_path, shared, state), "vr", seconds=120, evaluate=False)
    with pytest.raises(SystemExit, match="exceeds --max-mb 0.01"):
        _package_campaign(package_default, setup, weights, "--max-mb", "0.01")
    with pytest.raises(SystemExit, match="--default-quality must be from 1 to 8, got 9"):
        _package_campaign(package_default, setup, weights, "--default-quality", "9")
    assert not weights.exists() or list(weights.iterdir()) == []


def _fixed_runs(tmp_path, tiny_checkpoint):
    runs = tmp_path / "runs"
    _fabricate(runs, tiny_checkpoint, {lmbda: _config() for lmbda in LAMBDAS})
    return runs
