"""FEDS evidence from the campaign: pairing runs, learning-curve arithmetic, the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lic.training import campaign as cp
from lic.training import campaign_study as study
from tests.conftest import REPO
from tests.training.conftest import campaign_shared

SCRIPT = REPO / "scripts" / "feds_evidence.py"


def _evidence(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, check=False
    )


PLAN = """
name: t
data:
  train_dir: "{shared}/photos"
  holdout_every: 4
  eval_crop: 64
  eval_images: 2
  kodak_dir: "{shared}/kodak"
defaults:
  batch: 2
  warmup: 1
  precision: fp32
  crops: [[0, 64]]
runs:
  teacher: {codec: teacher-tiny, lmbda: 0.013, steps: 2, lr: 1.0e-3}
  scratch: {codec: student-tiny, lmbda: 0.013, steps: 2}
  other-lr: {codec: student-tiny, lmbda: 0.013, steps: 2, lr: 5.0e-4}
  scratch-seed1: {codec: student-tiny, lmbda: 0.013, steps: 2, seed: 1}
  feds:
    codec: student-tiny
    lmbda: 0.013
    steps: 2
    teacher: teacher
    after: {teacher: 2}
    phases: [{name: feature, steps: 1, weights: {feature: 1.0}}, {name: finetune, steps: 1}]
"""
for tag, lmbda in (("a", 0.0035), ("b", 0.18)):
    PLAN += f"""
  teacher-{tag}: {{codec: teacher-tiny, lmbda: {lmbda}, steps: 1, lr: 1.0e-3, init: teacher, after: {{teacher: 2}}}}
  scratch-{tag}: {{codec: student-tiny, lmbda: {lmbda}, steps: 1, init: scratch, after: {{scratch: 2}}}}
  feds-{tag}:
    codec: student-tiny
    lmbda: {lmbda}
    steps: 1
    init: feds
    teacher: teacher-{tag}
    after: {{feds: 2, teacher-{tag}: 1}}
    phases: [{{name: channel, steps: 1, weights: {{channel: 1.0}}}}]
"""


def io_plan(folder: Path, runs: str) -> Path:
    """A plan file with these runs (YAML lines under ``runs:``)."""
    path = folder / "p.yaml"
    path.write_text(
        "name: p\ndata: {train_dir: '{shared}/photos'}\ndefaults: {lmbda: 0.01, crops: [[0, 64]]}\n"
        f"runs:\n  {runs}\n"
    )
    return path


@pytest.fixture()
def plan(tmp_path: Path, image_folder: Path) -> cp.Plan:
    shared = campaign_shared(tmp_path, image_folder)
    (tmp_path / "t.yaml").write_text(PLAN)
    return cp.load_plan(tmp_path / "t.yaml", shared, tmp_path / "state")


def test_the_shipped_plan_pairs_each_distilled_run_with_its_scratch_twin(tmp_path: Path) -> None:
    plan = cp.load_plan(REPO / "recipes/campaign/default.yaml", tmp_path, tmp_path / "state")
    pairs = {s.name: study.baseline(plan, s) for s in plan.runs if s.teacher}
    names = {k: v.name if v else None for k, v in pairs.items()}
    assert names["student-feds"] == "student-scratch"  # lr 1e-3, not student-scratch-2
    assert names["student-feds-fixed-4"] == "student-fixed-4"
    assert names["student-swin-feds"] == "student-swin-scratch"
    assert names["student-feds-seed1"] == "student-scratch-seed1"  # its own seed's twin
    seed0 = {k: v for k, v in names.items() if "fixed" not in k and "swin" not in k}
    assert set(seed0.values()) == {"student-scratch", "student-scratch-seed1"}
    assert all(v == "student-scratch" for k, v in seed0.items() if plan.run(k).seed == 0)
    (curve,) = study.rate_curves(plan)  # nothing trained: every point waits
    assert curve.root == "student-feds" and curve.distilled == ()
    assert {"student-feds-fixed-2", "teacher-fixed-8"} <= set(curve.missing)


def test_learning_curve_arithmetic() -> None:
    curve = [(100, 1.0, 2.0), (200, 2.0, 1.5), (300, 3.0, 1.2)]
    assert study.reach(curve, 1.75) == (150.0, 1.5)
    assert study.reach(curve, 2.5) == (100.0, 1.0)  # already there at the first measurement
    assert study.reach(curve, 1.0) is None
    assert study.loss_at(curve, 2.5) == pytest.approx(1.35)
    assert study.loss_at(curve, 0.5) is None and study.loss_at(curve, 3.5) is None
    spec = cp.RunSpec(
        "r",
        "student-tiny",
        0.01,
        100,
        teacher="t",
        phases=(
            {"name": "feature", "steps": 10, "weights": {"feature": 1.0}},
            {"name": "channel", "steps": 20, "weights": {"channel": 1.0}},
            {"name": "finetune", "steps": 70},
        ),
    )
    assert [study.teacher_passes(spec, s) for s in (5, 30, 100)] == [5, 30, 30]
    key = study.EFFECTIVE_CHANNELS
    record = {
        "evals": [
            {"step": 10, "train_running": {}},
            {"step": 20, "train_running": {key: 4.0}},
            {"step": 50, "train_running": {key: 8.0}},
        ]
    }
    assert study.effective_channels(record) == pytest.approx((4 * 10 + 8 * 30) / 40)
    # compute unknown for part of a curve (GPU steps without a CPU cost): no equal-compute point
    assert study.reach([(100, None, 2.0), (200, None, 1.0)], 1.5) == (150.0, None)
    assert study.loss_at([(100, 1.0, 2.0), (200, None, 1.0)], 1.0) == 2.0
    assert study.loss_at(curve, None) is None


def test_gpu_steps_count_at_the_runs_cpu_cost(tmp_path: Path) -> None:
    """A GPU hour of a GPU shared by several runs is no core-hour: GPU steps are costed at the
    run's own CPU seconds per step, or its starting run's; unknown without either."""
    plan = cp.load_plan(
        io_plan(
            tmp_path,
            "a: {codec: student-tiny, steps: 40}\n  b: {codec: student-tiny, steps: 9, init: a, after: {a: 40}}\n  c: {codec: student-tiny, steps: 9}",
        ),
        tmp_path,
        tmp_path / "state",
    )
    cpu = {"device": "cpu", "threads": 2, "name": "Intel(R) Xeon(R) Processor"}
    gpu = {"device": "cuda", "name": "NVIDIA H100 80GB HBM3"}
    slices = {
        "a": [
            {**cpu, "from_step": 0, "to_step": 10, "train_seconds": 50.0},
            {**gpu, "from_step": 10, "to_step": 30, "train_seconds": 5.0},
            {**cpu, "from_step": 30, "to_step": 40, "train_seconds": 30.0},
        ],
        "b": [{**gpu, "from_step": 0, "to_step": 9, "train_seconds": 2.0}],
        "c": [{**gpu, "from_step": 0, "to_step": 9, "train_seconds": 2.0}],
    }
    for name, parts in slices.items():
        for part in parts:
            part["precision"] = "float32" if part["device"] == "cuda" else "bfloat16"
        run_dir = plan.run_dir(name)
        run_dir.mkdir(parents=True)
        record = cp.new_record(plan.run(name)) | {"step": parts[-1]["to_step"], "slices": parts}
        (run_dir / "state.json").write_text(json.dumps(record))
    cost = cp.cpu_seconds_per_step(plan, "a")
    assert cost == pytest.approx((50 * 2 + 30 * 2) / 20)  # 8 core-seconds a step
    assert cp.cpu_seconds_per_step(plan, "b") == cost  # GPU only: its starting run's cost
    assert cp.cpu_seconds_per_step(plan, "c") is None
    record = cp.read_record(plan.run_dir("a"))
    measured = {"step": 20, "cpu_core_hours": 0.5}  # 10 of the GPU's 20 steps done by then
    assert cp.core_hours(record, measured, cost) == pytest.approx(0.5 + 10 * 8 / 3600)
    assert cp.core_hours(record, {"step": 10, "cpu_core_hours": 0.5}, None) == 0.5  # no GPU step
    assert cp.core_hours(record, measured, None) is None
    assert study.trained_on(record) == "Intel Xeon bf16 50%, H100 fp32 50%"
    assert study.trained_on(cp.read_record(plan.run_dir("c"))) == "H100 fp32"


def test_the_evidence_report_from_a_small_campaign(plan: cp.Plan, tmp_path: Path) -> None:
    for spec in plan.runs:  # in plan order, every prerequisite first
        assert spec in cp.runnable(plan)
        cp.train_slice(plan, spec.name, seconds=120)
    pairs = {s.name: study.baseline(plan, s).name for s in plan.runs if s.teacher}
    assert pairs == {"feds": "scratch", "feds-a": "scratch-a", "feds-b": "scratch-b"}
    (spread,) = study.replicates(plan)  # the same recipe under another seed: the noise yardstick
    assert (spread["run"], spread["repeats"], spread["step"]) == ("scratch-seed1", "scratch", 2)
    losses = [
        cp.read_record(plan.run_dir(n))["evals"][-1]["heldout"]["loss"]
        for n in ("scratch-seed1", "scratch")
    ]
    assert spread["loss_vs_twin_percent"] == pytest.approx(100 * (losses[0] / losses[1] - 1))
    assert losses[0] != losses[1]  # another crop stream (and initialisation)

    rows = {r["run"]: r for r in study.single_rate_rows(plan)}
    assert set(rows) == {"feds", "feds-a", "feds-b"}
    feds, scratch = (cp.read_record(plan.run_dir(n)) for n in ("feds", "scratch"))
    row = rows["feds"]
    assert row["teacher_passes"] == 1 and row["step"] == 2
    expected = 100 * (
        feds["evals"][-1]["heldout"]["loss"] / scratch["evals"][-1]["heldout"]["loss"] - 1
    )
    assert row["loss_vs_baseline_equal_steps_percent"] == pytest.approx(expected)
    assert row["effective_channels"] is None  # no channel phase
    # against the mean of the baseline's seeds, with where those seeds fall around it
    assert [s.name for s in study.seeds_of(plan, plan.run("scratch"))] == [
        "scratch",
        "scratch-seed1",
    ]
    assert list(row["baseline_seeds"]) == ["scratch", "scratch-seed1"]
    mean = sum(losses) / 2
    assert row["baseline_seeds_mean"] == pytest.approx(mean)
    loss = feds["evals"][-1]["heldout"]["loss"]
    assert row["loss_vs_baseline_seeds_mean_percent"] == pytest.approx(100 * (loss / mean - 1))
    low, high = row["baseline_seeds_range_percent"]
    assert low == pytest.approx(-high) and high == pytest.approx(100 * (max(losses) / mean - 1))
    assert "baseline_seeds" not in rows["feds-a"]  # scratch-a has no other seed
    assert rows["feds-a"]["effective_channels"] >= 1  # 1/Σw² of weights that sum to one

    (curve,) = study.rate_curves(plan)
    assert (curve.distilled, curve.baselines, curve.teachers, curve.missing) == (
        ("feds-a", "feds-b"),
        ("scratch-a", "scratch-b"),
        ("teacher-a", "teacher-b"),
        (),
    )
    hours = study.compute_hours(plan, curve.teachers)  # the teacher counted once
    records = [cp.read_record(plan.run_dir(n)) for n in ("teacher", "teacher-a", "teacher-b")]
    assert hours == pytest.approx(sum(r["compute"]["cpu_core_hours"] for r in records))

    kodak = plan.kodak_dir
    out = tmp_path / "evidence"
    common = ["--plan", str(tmp_path / "t.yaml"), "--state-dir", str(plan.state_dir)]
    common += ["--shared", str(kodak.parent), "--datasets", str(kodak), "-o", str(out)]
    bad = _evidence(*common[:-4], "--datasets", "nope", "-o", str(out))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "'nope' not found" in bad.stderr
    assert not out.exists()  # nothing half-written
    done = _evidence(*common, "--min-points", "3")
    assert done.returncode == 0, done.stderr
    assert "fewer than 3 λ" in (out / "README.md").read_text()

    done = _evidence(*common, "--min-points", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    reports = summary["curves"][0]["datasets"]["kodak"]
    assert reports["vs-baseline"][0]["name"] != curve.label("baselines")  # the anchor is no row
    results = json.loads(next((out / "feds" / "kodak" / "distilled").glob("*.json")).read_text())
    assert results["name"] == curve.label("distilled") == "feds-* (distilled, 2 λ)"
    assert len(results["results"]["bpp"]) == 2 and results["images"] == 2
    assert all(b > 0 for b in results["results"]["bpp"])
    assert (out / "feds" / "kodak" / "vs-teacher" / "rd-psnr.png").read_bytes()[:4] == b"\x89PNG"
    readme = (out / "README.md").read_text()
    assert "| feds | scratch | 2 of 2 |" in readme
    assert "Seed spread: scratch-seed1 (scratch's recipe under another seed) at 2 steps" in readme
    assert "| feds | 2 | " in readme and "scratch-seed1 " in readme  # the seeds' table
    row = next(line for line in readme.splitlines() if line.startswith("| feds | kodak |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "0.0035, 0.18" and len(cells) == 7
    for cell in cells[3:6]:  # vs baseline, vs teacher, the teacher vs baseline: a figure or why not
        assert cell.endswith("%") or cell.startswith("n/a (")

    # Again: the same weights on the same images are not coded again (the results are reused)...
    results_files = {p: p.read_bytes() for p in (out / "feds" / "kodak").glob("*/*.json")}
    results_files = {p: d for p, d in results_files.items() if p.parent.name in study.ROLES}
    assert len(results_files) == 3
    stamps = {p: p.stat().st_mtime_ns for p in results_files}
    distilled = next(p for p in results_files if p.parent.name == "distilled")
    stale = json.loads(distilled.read_text())
    stale["checkpoints"][0]["fingerprint"] = "0" * 64  # ...but other weights are
    distilled.write_text(json.dumps(stale))
    stamps[distilled] = distilled.stat().st_mtime_ns
    again = _evidence(*common, "--min-points", "2")
    assert again.returncode == 0, again.stderr
    for path, stamp in stamps.items():
        assert (path.stat().st_mtime_ns == stamp) == (path != distilled), path
    recoded, first = json.loads(distilled.read_text()), json.loads(results_files[distilled])
    for key in ("bpp", "psnr-rgb"):  # coded again: the same figures (timings aside)
        assert recoded["results"][key] == first["results"][key]
    assert recoded["checkpoints"] == first["checkpoints"]
    assert (out / "README.md").read_text() == readme
    fewer = _evidence(*common, "--min-points", "2", "--limit", "1")  # other images: coded again
    assert fewer.returncode == 0, fewer.stderr
    assert json.loads(distilled.read_text())["images"] == 1
