"""FEDS evidence from the campaign: every distilled run against its scratch baseline and teacher.

Which run is compared with which follows from the plan alone:

- A *distilled* run is one with a ``teacher``.
- Its *baseline* is the run trained without a teacher on the same codec, λ, steps and schedule
  (:data:`SCHEDULE_FIELDS`) that starts from the baseline of the distilled run's own starting
  point (from nothing when it starts from nothing). So ``student-feds`` → ``student-scratch``
  (not ``student-scratch-2``: another learning rate), and ``student-feds-fixed-4`` (a fine-tune
  of ``student-feds``) → ``student-fixed-4`` (the same fine-tune of ``student-scratch``). Of
  several such runs, the one of the same ``seed`` (``student-feds-seed1`` →
  ``student-scratch-seed1``), else the first in the plan.
- A *curve* is the set of distilled runs that start from one distilled run: its fine-tunes at
  several λ. Beside it stand its baselines' curve and its teachers' curve, at the λ where all
  three have finished.

At one λ, from the runs' records alone (:func:`single_rate_rows`): the held-out RD loss at
equal steps, the steps and compute a distilled run needs to reach its baseline's final loss,
both losses at equal compute, the teacher's forward passes (steps of phases that use it) and
the effective number of weighted channels (``1/Σw²`` of the channel term, averaged over the
steps that logged it). The held-out loss is the campaign's own measurement: 16 centre crops of
photos never trained on, EMA weights; Kodak is reported, never used to choose.

Over λ (:func:`rate_curves`, :func:`evaluate_curves`): every run of a curve is exported from
the campaign state and coded through real bitstreams; BD-rates against the baseline curve and
the teacher curve come from :func:`lic.evaluation.report.write_report`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lic.training.campaign import Plan, RunSpec, core_hours, cpu_seconds_per_step, read_record

#: What a baseline shares with its distilled run besides the starting point.
SCHEDULE_FIELDS = (
    "codec",
    "lmbda",
    "steps",
    "batch",
    "crops",
    "lr",
    "warmup",
    "decay_from",
    "ema_decay",
)
# Not ``precision``: ``auto`` resolves per machine (bf16 transforms where the CPU or GPU has bf16,
# fp32 elsewhere), so what a run declares does not say what it ran in; each slice's record does,
# and the evidence states where a run and its baseline differ.
#: The channel term's effective channel count, as the campaign logs it.
EFFECTIVE_CHANNELS = "distill/channel/effective_channels"


def _same_schedule(a: RunSpec, b: RunSpec) -> bool:
    """Whether two runs train alike (:data:`SCHEDULE_FIELDS`), starting points aside."""
    return all(getattr(a, f) == getattr(b, f) for f in SCHEDULE_FIELDS)


def _untaught(plan: Plan, init: str | None, like: RunSpec) -> list[RunSpec]:
    """The runs trained without a teacher that start from ``init`` and train like ``like``
    (:data:`SCHEDULE_FIELDS`), in plan order."""
    return [
        other
        for other in plan.runs
        if other.teacher is None and other.init == init and _same_schedule(other, like)
    ]


def baseline(plan: Plan, spec: RunSpec) -> RunSpec | None:
    """The run ``spec`` is compared with (see the module doc), or None if the plan has none."""
    start = None
    if spec.init is not None:
        origin = plan.run(spec.init)
        start = baseline(plan, origin) if origin.teacher else origin
        if start is None:
            return None
    candidates = [
        other
        for other in _untaught(plan, start.name if start else None, spec)
        if other.name != spec.name
    ]
    # the twin of its own seed (crop stream) where the plan has one, else the first in the plan
    same_seed = [other for other in candidates if other.seed == spec.seed]
    return (same_seed or candidates or [None])[0]


def seeds_of(plan: Plan, base: RunSpec) -> list[RunSpec]:
    """``base`` and every run that repeats it under another ``seed`` (trained without a teacher,
    same starting point and schedule), in plan order."""
    return _untaught(plan, base.init, base)


def teacher_passes(spec: RunSpec, step: int) -> int:
    """Teacher forward passes in a distilled run's first ``step`` steps (one per step of a
    phase that uses the teacher)."""
    from lic.distill import PhaseSchedule, needs_teacher

    passes, start = 0, 0
    for phase in PhaseSchedule(list(spec.phases)).phases:
        if needs_teacher(phase):
            passes += max(0, min(step, start + phase.steps) - start)
        start += phase.steps
    return passes


def _curve(record: dict[str, Any], cost: float | None) -> list[tuple[int, float | None, float]]:
    """``(step, compute hours, held-out loss)`` of every measurement. Compute is CPU
    core-hours, a GPU step counted at the run's CPU cost per step (``cost``,
    :func:`lic.training.campaign.cpu_seconds_per_step`; None where there is none)."""
    return [
        (e["step"], core_hours(record, e, cost), e["heldout"]["loss"])
        for e in record["evals"]
        if "heldout" in e
    ]


def reach(
    curve: list[tuple[int, float | None, float]], target: float
) -> tuple[float, float | None] | None:
    """Steps and compute at which a learning curve first reaches ``target`` loss (linear
    between measurements; the first measurement counts as reached there), or None."""
    previous = None
    for point in curve:
        if point[2] <= target:
            if previous is None or previous[2] == point[2]:
                return float(point[0]), point[1]
            t = (previous[2] - target) / (previous[2] - point[2])
            step = previous[0] + t * (point[0] - previous[0])
            hours = None
            if previous[1] is not None and point[1] is not None:
                hours = previous[1] + t * (point[1] - previous[1])
            return float(step), hours
        previous = point
    return None


def loss_at(curve: list[tuple[int, float | None, float]], compute: float | None) -> float | None:
    """A learning curve's held-out loss at ``compute`` hours (linear between measurements),
    None outside the measured range or where the compute is unknown."""
    known = [p for p in curve if p[1] is not None]
    if compute is None or not known or not known[0][1] <= compute <= known[-1][1]:
        return None
    return float(np.interp(compute, [p[1] for p in known], [p[2] for p in known]))


def effective_channels(record: dict[str, Any]) -> float | None:
    """The channel term's effective channel count over the run so far: each slice's mean,
    weighted by the steps it spent in phases that logged it."""
    total = weight = 0.0
    previous = 0
    for evaluation in record["evals"]:
        value = evaluation.get("train_running", {}).get(EFFECTIVE_CHANNELS)
        if value is not None:
            steps = evaluation["step"] - previous
            total += value * steps
            weight += steps
        previous = evaluation["step"]
    return total / weight if weight else None


def _percent(value: float, reference: float) -> float:
    return 100 * (value / reference - 1)


def trained_on(record: dict[str, Any]) -> str:
    """Where a run's steps ran and in what precision, as ``"H100 fp32"`` or, mixed,
    ``"AMD EPYC bf16 73%, H100 bf16 27%"`` (a GPU by its short name)."""
    steps: dict[str, int] = {}
    for part in record["slices"]:
        name = part.get("name") or "?"
        if part.get("device") == "cuda":
            where = name.removeprefix("NVIDIA ").split()[0]  # "H100"
        else:  # "AMD EPYC", "Intel Xeon": core-hours of different CPUs differ
            where = name.replace("(R)", "").replace(" Processor", "").strip()
        precision = {"bfloat16": "bf16", "float32": "fp32"}.get(part.get("precision"), "?")
        key = f"{where} {precision}"
        steps[key] = steps.get(key, 0) + part["to_step"] - part["from_step"]
    total = sum(steps.values())
    if len(steps) == 1:
        return next(iter(steps))
    return ", ".join(
        f"{key} {100 * n / total:.0f}%" for key, n in sorted(steps.items(), key=lambda kv: -kv[1])
    )


def single_rate_rows(plan: Plan) -> list[dict[str, Any]]:
    """One row per started distilled run with a baseline: see the module doc."""
    rows = []
    for spec in plan.runs:
        base = baseline(plan, spec) if spec.teacher else None
        record = read_record(plan.run_dir(spec.name)) if base else None
        if record is None or not _curve(record, None):
            continue
        base_record = read_record(plan.run_dir(base.name))
        curve = _curve(record, cpu_seconds_per_step(plan, spec.name))
        step, hours, loss = curve[-1]
        row: dict[str, Any] = {
            "run": spec.name,
            "codec": spec.codec,
            "lmbda": spec.lmbda,
            "baseline": base.name,
            "teacher": spec.teacher,
            "step": step,
            "target": spec.steps,
            "compute_hours": hours,
            "teacher_passes": teacher_passes(spec, step),
            "heldout_loss": loss,
            "kodak": record["evals"][-1].get("kodak"),
            "effective_channels": effective_channels(record),
            "trained_on": trained_on(record),
        }
        base_curve = (
            _curve(base_record, cpu_seconds_per_step(plan, base.name)) if base_record else []
        )
        if base_curve:
            b_step, b_hours, b_loss = base_curve[-1]
            same_step = [p for p in base_curve if p[0] == step]
            reached = reach(curve, b_loss) if b_step >= base.steps else None
            common = None if None in (hours, b_hours) else min(hours, b_hours)
            at_compute = (loss_at(curve, common), loss_at(base_curve, common))
            row |= {
                "baseline_step": b_step,
                "baseline_compute_hours": b_hours,
                "baseline_loss": b_loss,
                "baseline_kodak": base_record["evals"][-1].get("kodak"),
                "baseline_trained_on": trained_on(base_record),
                # at equal steps: the baseline's measurement at this run's step, if there is one
                "loss_vs_baseline_equal_steps_percent": (
                    _percent(loss, same_step[0][2]) if same_step else None
                ),
                "steps_to_baseline_final": reached[0] if reached else None,
                "compute_to_baseline_final": reached[1] if reached else None,
                "equal_compute_hours": common,
                "loss_vs_baseline_equal_compute_percent": (
                    _percent(*at_compute) if None not in at_compute else None
                ),
            }
        # against every seed of the baseline measured at this run's step: their mean, and
        # where the run falls among them (the seed spread is the yardstick for the difference)
        seeds = {}
        for twin in seeds_of(plan, base):
            twin_record = read_record(plan.run_dir(twin.name))
            at_step = (
                [p[2] for p in _curve(twin_record, None) if p[0] == step] if twin_record else []
            )
            if at_step:
                seeds[twin.name] = at_step[0]
        if len(seeds) > 1:
            mean = float(np.mean(list(seeds.values())))
            row |= {
                "baseline_seeds": seeds,
                "baseline_seeds_mean": mean,
                "loss_vs_baseline_seeds_mean_percent": _percent(loss, mean),
                "baseline_seeds_range_percent": [
                    _percent(min(seeds.values()), mean),
                    _percent(max(seeds.values()), mean),
                ],
            }
        rows.append(row)
    return rows


def replicates(plan: Plan) -> list[dict[str, Any]]:
    """Runs trained without a teacher that repeat an earlier one under another ``seed`` (same
    codec, schedule and starting point): the held-out loss of each against the run it repeats,
    at the steps both reached. The spread between them is the yardstick for differences between
    a distilled run and its baseline."""
    rows = []
    for spec in plan.runs:
        if spec.teacher is not None or spec.seed == 0:
            continue
        twin = next((other for other in seeds_of(plan, spec) if other.seed != spec.seed), None)
        record = read_record(plan.run_dir(spec.name))
        twin_record = read_record(plan.run_dir(twin.name)) if twin else None
        if twin is None or record is None or twin_record is None:
            continue
        mine, theirs = _curve(record, None), {p[0]: p[2] for p in _curve(twin_record, None)}
        common = [p for p in mine if p[0] in theirs]
        if not common:
            continue
        step, _, loss = common[-1]
        rows.append(
            {
                "run": spec.name,
                "repeats": twin.name,
                "step": step,
                "heldout_loss": loss,
                "twin_loss": theirs[step],
                "loss_vs_twin_percent": _percent(loss, theirs[step]),
            }
        )
    return rows


#: The three curves of a :class:`RateCurve`, and what each is called in its label.
ROLES = {"distilled": "distilled", "baselines": "baseline", "teachers": "teacher"}


@dataclass(frozen=True)
class RateCurve:
    """A distilled run's fine-tunes at several λ, with their baselines and teachers."""

    root: str
    distilled: tuple[str, ...]
    baselines: tuple[str, ...]
    teachers: tuple[str, ...]
    missing: tuple[str, ...]  # runs at the curve's λ that have not finished

    def label(self, which: str) -> str:
        """``student-feds-fixed-* (distilled, 4 λ)``: the runs' common name, role and size."""
        names = list(getattr(self, which))
        prefix = os.path.commonprefix(names) + "*" if len(names) > 1 else names[0]
        return f"{prefix} ({ROLES[which]}, {len(names)} λ)"


def _finished(plan: Plan, name: str) -> bool:
    record = read_record(plan.run_dir(name))
    return record is not None and record["step"] >= plan.run(name).steps


def rate_curves(plan: Plan) -> list[RateCurve]:
    """Every curve of the plan (a distilled run that distilled fine-tunes start from), with the
    λ at which the fine-tune, its baseline and its teacher have all finished, by λ."""
    curves = []
    for root in plan.runs:
        fine_tunes = [s for s in plan.runs if s.teacher and s.init == root.name and root.teacher]
        points, missing = [], []
        for spec in sorted(fine_tunes, key=lambda s: s.lmbda):
            base = baseline(plan, spec)
            if base is None:
                continue
            names = (spec.name, base.name, spec.teacher)
            unfinished = [n for n in names if not _finished(plan, n)]
            missing += unfinished
            if not unfinished:
                points.append(names)
        if fine_tunes:
            columns = [tuple(p[i] for p in points) for i in range(3)]  # distilled, base, teacher
            curves.append(RateCurve(root.name, *columns, tuple(dict.fromkeys(missing))))
    return curves


def compute_hours(plan: Plan, runs: tuple[str, ...]) -> float | None:
    """CPU core-hours of ``runs`` and of the runs they start from, each once, GPU steps counted
    at the run's CPU cost per step (see :func:`_curve`); None where one has no such cost."""
    names = {*runs, *(plan.run(r).init for r in runs)} - {None}
    total = 0.0
    for name in sorted(names):
        record = read_record(plan.run_dir(name))
        if record is None:
            continue
        final = {"step": record["step"], "cpu_core_hours": record["compute"]["cpu_core_hours"]}
        hours = core_hours(record, final, cpu_seconds_per_step(plan, name))
        if hours is None:
            return None
        total += hours
    return total


def _reusable(folder: Path, checkpoints: list[Path], images: list[Path]) -> Path | None:
    """The results JSON in ``folder`` of these very checkpoints (by weights fingerprint, in
    order) on these very images, if an earlier evaluation wrote one; else None."""
    import csv
    import json

    from lic.checkpoint import load_codec

    table = folder / "per-image.csv"
    found = sorted(folder.glob("*.json"))
    if len(found) != 1 or not table.is_file():
        return None
    try:
        results = json.loads(found[0].read_text())
        with open(table, newline="") as handle:
            coded = {row["image"] for row in csv.DictReader(handle)}
    except (OSError, ValueError, KeyError):
        return None
    wanted = [load_codec(path).fingerprint for path in checkpoints]
    had = [entry.get("fingerprint") for entry in results.get("checkpoints", [])]
    if had != wanted or coded != {path.name for path in images}:
        return None
    if results.get("images") != len(images):
        return None
    return found[0]


def evaluate_curve(
    plan: Plan, curve: RateCurve, images: list[Path], output: Path, workdir: Path, dataset: str
) -> dict[str, list[dict]]:
    """Code ``images`` with every run of ``curve`` (exported from the campaign state) through
    real bitstreams; write ``output/<role>/`` (results JSON, per-image CSV) and the BD-rate
    reports against the baseline and the teacher curves (``output/vs-baseline/``,
    ``output/vs-teacher/``); returns the reports' rows.

    A role whose folder already holds the results of the same weights (fingerprints) on the
    same images is not coded again: a finished run's weights never change, so regenerating the
    study after one more curve or ablation costs only what is new."""
    from lic.evaluation.report import write_report
    from lic.evaluation.runner import run_evaluation
    from lic.training.campaign import export_run

    files = []
    for which in ROLES:
        paths = [export_run(plan, run, workdir / f"{run}.ckpt") for run in getattr(curve, which)]
        earlier = _reusable(output / which, paths, images)
        if earlier is not None:
            files.append(earlier)
            continue
        files += run_evaluation(
            images, paths, output / which, name=curve.label(which), dataset=dataset
        )
    return {
        folder: write_report(files, curve.label(which), output / folder)["rows"]
        for which, folder in (("baselines", "vs-baseline"), ("teachers", "vs-teacher"))
    }
