#!/usr/bin/env python
"""Package trained weights as lic's default codec: ``lic/weights/*.ckpt`` and ``manifest.json``.

    python scripts/package_default.py [--runs runs] [--max-mb 20]
    python scripts/package_default.py --campaign RUN [--plan default] [--state-dir campaign]

**Fixed-rate students** (the first form): takes ``runs/default_student/lmbda_<λ>/codec.ckpt`` for
every λ that scripts/train_default.py trained (quality 1 = the smallest λ = the lowest rate),
checks that each loads and that they are one codec, and records per rate point its λ, steps,
sha256, weights fingerprint and teacher, and for the set the recipes, the training data (its
MANIFEST.tsv sha256) and the steps of the teacher and of the shared student base.

How the students were trained (crop, batch, metric, FEDS phase split) is read from the runs, never
written here: the metric from each codec checkpoint's metadata, the rest from the recipe Hydra
saved in each run folder (``.hydra/config.yaml``). Every rate point must record them and agree.

**One campaign run** (``--campaign RUN``): exports the run's saved EMA weights from the campaign
state (:func:`lic.training.campaign.export_run`) as the one checkpoint of the default codec: a
variable-rate run (a ``*-vr`` codec) gives every quality of its range from that file, a
fixed-rate run one rate point. The manifest records the codec, its quality range and the λ of
each trained level, the data and crops of the plan, the run's steps, images seen and compute.
Only a run that reached its target steps is packaged (``--unfinished`` to override).

Both forms refuse to write more than ``--max-mb`` of weights, and move the models of the manifest
they replace to its ``retired`` list (with ``--until``: where those weights can still be found,
by default the current git commit), so that ``lic decode`` of a file they made says where to find
them; the replaced checkpoint files are removed. The replaced default's measured curves
(``scripts/make_docs.py``'s ``<docs>/{kodak,clic}/lic-default.json``, when their checkpoints'
fingerprints are the replaced default's) are kept as ``<docs>/previous/{kodak,clic}.json``, named
after that codec's campaign run (with its steps, ``RUN at N steps``, when the new default comes
from the same run further on), for make_docs' report against the default it replaced.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.bitstream import short_fingerprint
from lic.errors import LicError
from lic.files import write_json
from lic.paths import RUNS_DIR, RunDir, portable_path, run_dir, run_dirs, shared_dir
from lic.pretrained import MANIFEST_NAME, WEIGHTS_DIR


class PackagingError(Exception):
    """A run that lacks, or disagrees on, a fact the manifest needs."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recorded(config: Any, key: str, run: RunDir) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        value = OmegaConf.select(config, key, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise PackagingError(f"{run.config}: cannot read {key} ({exc})") from None
    if value is None:
        raise PackagingError(f"{run.config}: the run does not record {key}")
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def phase_split(phases: list[dict], total_steps: int) -> list[tuple[str, float]]:
    """Each distillation phase's share of the steps, as the trainer resolves them
    (:func:`lic.distill.resolve_phases`: ``steps`` or a ``fraction``; the last takes the rest)."""
    from lic.distill import resolve_phases

    try:
        resolved = resolve_phases(phases, total_steps)
    except ValueError as exc:
        raise PackagingError(str(exc)) from None
    return [(str(phase["name"]), phase["steps"] / total_steps) for phase in resolved]


def recorded_setup(run: RunDir, metadata: dict[str, Any]) -> dict[str, Any]:
    """How one student run was trained, from what it recorded.

    Args:
        run: the run folder; its ``.hydra/config.yaml`` gives crop, batch and phases.
        metadata: its codec checkpoint's metadata; gives the metric the weights were trained for.

    Raises:
        PackagingError: the run lacks one of them.
    """
    from omegaconf import OmegaConf

    from lic.paths import register_resolvers

    if not run.config.is_file():
        raise PackagingError(f"{run.path}: no recorded recipe ({run.config} is missing)")
    if not metadata.get("metric"):
        raise PackagingError(f"{run.codec}: the checkpoint does not record its metric")
    register_resolvers()
    config = OmegaConf.load(run.config)
    phases = _recorded(config, "distill.phases", run)
    total_steps = _recorded(config, "trainer.max_steps", run)
    return {
        "crop": int(_recorded(config, "data.crop_size", run)),
        "batch": int(_recorded(config, "data.batch_size", run)),
        "metric": metadata["metric"],
        "phases": phase_split(phases, total_steps),
    }


def common_setup(setups: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """The one setup all rate points share; every disagreement is named."""
    first_path, first = next(iter(setups.items()))
    for path, setup in setups.items():
        for key, value in setup.items():
            if value != first[key]:
                raise PackagingError(
                    f"the rate points disagree on {key}: {value!r} in {path}, "
                    f"{first[key]!r} in {first_path}"
                )
    return first


def describe_phases(split: list[tuple[str, float]]) -> str:
    """``feature 10%, channel 10%, finetune 80%``."""
    return ", ".join(f"{name} {share:.0%}" for name, share in split)


def facts(path: Path) -> dict[str, Any]:
    """What a codec checkpoint says about itself."""
    from lic.checkpoint import load_codec

    codec = load_codec(path)
    return {
        "codec": codec.codec_name,
        "config": codec.codec_config,
        "fingerprint": codec.fingerprint,
        "metadata": codec.metadata,
        "parameters": sum(p.numel() for p in codec.parameters()),
    }


def _number(value: float) -> int | float:
    """``3`` for 3.0 (as a manifest writes whole numbers), else the value."""
    return int(value) if float(value).is_integer() else float(value)


def default_until() -> str:
    """Where the weights installed now can be found once replaced: this checkout's commit."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "an earlier lic release"
    commit = done.stdout.strip()
    return f"lic commit {commit}" if commit else "an earlier lic release"


def read_installed(out: Path) -> dict | None:
    """The manifest in ``out`` that a new one replaces (None: there is none)."""
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except ValueError as exc:
        raise PackagingError(f"{path}: not JSON ({exc}); move it away first") from None
    if not isinstance(old, dict):
        raise PackagingError(f"{path}: not a default-weights manifest; move it away first")
    return old


def retire(old: dict | None, kept: set[str], until: str) -> list[dict[str, Any]]:
    """The ``retired`` list of a manifest replacing ``old``: its models, then its retired ones.

    Models whose fingerprint is in ``kept`` (the new manifest's) stay installed; an entry is
    listed once per fingerprint.
    """
    if old is None:
        return []
    entries, seen = [], set(kept)
    for model in old.get("models", []):
        if model["fingerprint"] in seen:
            continue
        seen.add(model["fingerprint"])
        entry = {
            "codec": model["codec"],
            "fingerprint": model["fingerprint"],
            "quality": model.get("quality"),
            "lmbda": model.get("lmbda"),
            "until": until,
            "file": f"lic/weights/{model['file']}",
        }
        if model.get("variable_rate"):
            entry["quality_range"] = model["quality_range"]
        entries.append(entry)
    for entry in old.get("retired", []):
        if entry["fingerprint"] not in seen:
            seen.add(entry["fingerprint"])
            entries.append(entry)
    return entries


def keep_previous_curves(
    old: dict | None,
    kept: set[str],
    docs: Path,
    until: str | None = None,
    new_run: str | None = None,
) -> list[Path]:
    """Copy the replaced default's curves to ``docs/previous/`` (see the module doc).

    A curve is kept only when every checkpoint it was measured with is one of ``old``'s models
    and none is kept installed (``kept``: the new manifest's fingerprints), so curves of another
    codec, or of the weights staying on, never pass as the previous default. The curve is named
    after ``old``'s campaign run, and its steps too when the new default is that run further on
    (``new_run``), so that the reports never name both defaults alike. Returns the files written.
    """
    if old is None:
        return []
    replaced = {m["fingerprint"] for m in old.get("models", [])} - kept
    run = (old.get("recipe") or {}).get("run")
    name = run or old.get("codec") or "previous default"
    steps = (old.get("training") or {}).get("steps")
    if run and run == new_run and steps is not None:
        name = f"{run} at {steps:,} steps"
    where = f"campaign run {run}, {old.get('codec')}" if run else old.get("codec")
    until = until or datetime.date.today().isoformat()
    written = []
    for dataset in ("kodak", "clic"):
        source = docs / dataset / "lic-default.json"
        try:
            curve = json.loads(source.read_text())
            used = {c["fingerprint"] for c in curve["checkpoints"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not measured (or not make_docs' curve): nothing to keep
        if not used or not used <= replaced:
            print(f"  {source}: not measured with the replaced weights, not kept as previous")
            continue
        curve["name"] = name
        curve["description"] = (
            f"the default codec until {until} ({where}), as make_docs measured it: "
            f"{curve.get('description', '')}"
        )
        target = write_json(docs / "previous" / f"{dataset}.json", curve)
        written.append(target)
        print(f"  kept {source} as {target} ({name})")
    return written


def replaced_files(old: dict | None, out: Path, keep: set[str]) -> list[Path]:
    """The checkpoint files the replaced manifest lists (plain names in ``out``), but ``keep``."""
    if old is None:
        return []
    names = {model.get("file") for model in old.get("models", [])}
    return [
        out / name
        for name in sorted(n for n in names if isinstance(n, str))
        if Path(name).name == name and name not in keep and (out / name).is_file()
    ]


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write ``out/manifest.json`` atomically (a temporary file renamed over it)."""
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / MANIFEST_NAME)


def _plan_path(plan: str) -> Path:
    return Path(plan) if plan.endswith(".yaml") else REPO / "recipes" / "campaign" / f"{plan}.yaml"


def _recorded_plan(plan: str) -> str:
    """The plan as the manifest names it: relative to the checkout when inside it."""
    path = _plan_path(plan).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else portable_path(path)


def training_data(folder: Path) -> dict[str, Any]:
    """The training folder's photo count and ``MANIFEST.tsv`` sha256 (None where unknown)."""
    from lic.files import list_images
    from lic.training.campaign import manifest_names

    names = manifest_names(folder)
    if names is None and folder.is_dir():
        names = list_images(folder)
    listing = folder / "MANIFEST.tsv"
    return {
        "train": portable_path(folder),
        "images": None if names is None else len(names),
        "manifest_sha256": sha256(listing) if listing.is_file() else None,
    }


def _start(plan: Any, init: dict | None) -> dict | None:
    """The run a campaign run started from (its record's ``init``), with that run's codec and λ
    from the plan and its compute from its record, so that the docs can say what it was (a
    fixed-rate student made variable-rate, or a variable-rate run continued) and what the
    codec cost in all."""
    from lic.codecs.registry import codec_spec
    from lic.training.campaign import read_record

    if not init:
        return None
    start = plan.run(init["run"])
    record = read_record(plan.run_dir(start.name)) or {}
    return {
        **init,
        "codec": start.codec,
        # as ChannelARCodec.variable_rate, without building the codec
        "variable_rate": codec_spec(start.codec).kwargs.get("rate_levels", 0) > 0,
        "lmbda": start.lmbda,
        "compute": record.get("compute"),
    }


def package_campaign(args: argparse.Namespace) -> None:
    """Package one campaign run as the default codec (see the module doc)."""
    from lic.checkpoint import load_codec
    from lic.training.campaign import export_run, load_plan, read_record

    out = args.out or WEIGHTS_DIR
    plan = load_plan(_plan_path(args.plan), args.shared, args.state_dir)
    spec = plan.run(args.campaign)
    record = read_record(plan.run_dir(spec.name))
    if record is None or record["step"] == 0:
        raise PackagingError(f"run {spec.name!r} has no saved state in {plan.run_dir(spec.name)}")
    if record["step"] < spec.steps and not args.unfinished:
        raise PackagingError(
            f"run {spec.name!r} is at step {record['step']} of {spec.steps}: not finished "
            "(--unfinished packages it anyway)"
        )
    old = read_installed(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{record['codec']}.ckpt"
    staging = out / f".{name}.tmp"
    try:
        export_run(plan, spec.name, staging)
        size = staging.stat().st_size / 2**20
        if size > args.max_mb:
            raise PackagingError(f"{size:.1f} MB of weights exceeds --max-mb {args.max_mb}")
        codec = load_codec(staging)
        model = {
            "file": name,
            "codec": codec.codec_name,
            "fingerprint": codec.fingerprint,
            "sha256": sha256(staging),
            "bytes": staging.stat().st_size,
            "parameters": sum(p.numel() for p in codec.parameters()),
            "steps": codec.metadata.get("steps"),
        }
        if getattr(codec, "variable_rate", False):
            low, high = codec.quality_range
            levels = range(int(low), int(high) + 1)
            model |= {
                "variable_rate": True,
                "quality_range": [_number(low), _number(high)],
                "lmbdas": [float(f"{codec.lmbda_at(q):.6g}") for q in levels],
            }
            quality = (
                _default_quality(codec) if args.default_quality is None else args.default_quality
            )
            if not low <= quality <= high:
                raise PackagingError(
                    f"--default-quality must be from {low:g} to {high:g}, got {quality:g}"
                )
        else:
            model = {"quality": 1, "lmbda": record["lmbda"], **model}
            quality = 1.0 if args.default_quality is None else args.default_quality
            if quality != 1:
                raise PackagingError(
                    f"a fixed-rate run is one rate point, quality 1: --default-quality {quality:g}"
                )
        manifest = {
            "name": "lic default codec",
            "codec": codec.codec_name,
            "variable_rate": model.get("variable_rate", False),
            "quality_range": model.get("quality_range"),
            "default_quality": _number(quality),
            "metric": codec.metadata.get("metric"),
            "data": {
                **training_data(plan.train_dir),
                "holdout_every": plan.holdout_every,
                "crops": [list(crop) for crop in spec.crops],
                "batch": spec.batch,
            },
            "recipe": {
                "command": shlex.join(["python", "scripts/package_default.py", *args.argv]),
                "plan": _recorded_plan(args.plan),
                "run": spec.name,
            },
            "training": {
                "steps": record["step"],
                "target_steps": spec.steps,
                "images_seen": record["images_seen"],
                "compute": record["compute"],
                "init": _start(plan, record.get("init")),
                "teacher": spec.teacher,
            },
            "models": [model],
            "retired": retire(old, {model["fingerprint"]}, args.until or default_until()),
        }
        os.replace(staging, out / name)
    finally:
        staging.unlink(missing_ok=True)
    write_manifest(out, manifest)
    for stale in replaced_files(old, out, {name}):
        stale.unlink()
    keep_previous_curves(old, {model["fingerprint"]}, args.docs, new_run=args.campaign)
    rates = (
        f"qualities {model['quality_range'][0]:g} to {model['quality_range'][1]:g}, "
        f"lambda {model['lmbdas'][0]} to {model['lmbdas'][-1]}"
        if model.get("variable_rate")
        else f"one rate point, lambda {model['lmbda']}"
    )
    print(f"{out}: {name}, {model['codec']}, {rates}, {size:.1f} MB")
    print(
        f"  run {spec.name} of plan {plan.name}: {record['step']} steps, "
        f"{short_fingerprint(model['fingerprint'])}; {len(manifest['retired'])} retired"
    )


def _default_quality(codec: Any) -> float:
    """The quality of λ 0.0067, quality 3 of the zoo's eight levels (about 0.34 bpp on Kodak
    for the default so far), also for a codec with more levels (``student-medium-vr10``: 5)."""
    from lic.codecs.zoo import VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE

    lmbda = codec.level_lmbdas(VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE)[2]
    return round(codec.quality_for(lmbda), 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / RUNS_DIR)
    parser.add_argument("--max-mb", type=float, default=20.0)
    parser.add_argument(
        "--default-quality",
        type=float,
        help="quality used when none is given (default: the quality of λ 0.0067, 3 of eight "
        "levels; a fixed-rate campaign run: 1)",
    )
    parser.add_argument(
        "--campaign", metavar="RUN", help="package this campaign run (see the module doc)"
    )
    parser.add_argument(
        "--plan", default="default", help="recipes/campaign/<plan>.yaml, or a path to a plan"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=REPO / "campaign", help="where run states live"
    )
    parser.add_argument(
        "--shared", type=Path, default=shared_dir(), help="shared material (lic.paths.shared_dir)"
    )
    parser.add_argument(
        "--unfinished", action="store_true", help="package a run below its target steps"
    )
    parser.add_argument("--out", type=Path, help="weights folder (default: lic/weights)")
    parser.add_argument(
        "--docs",
        type=Path,
        default=REPO / "docs" / "default-model",
        help="make_docs' folder, where the replaced default's curves are kept (previous/)",
    )
    parser.add_argument(
        "--until",
        help="where the replaced weights can be found, for the retired list "
        "(default: 'lic commit <HEAD>')",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.campaign:
        try:
            package_campaign(args)
        except (PackagingError, LicError) as exc:
            sys.exit(f"package_default: {exc}")
        return
    package_runs(args)


def package_runs(args: argparse.Namespace) -> None:
    """Package the fixed-rate students of scripts/train_default.py (see the module doc)."""
    out = args.out or WEIGHTS_DIR
    default_quality = 3 if args.default_quality is None else int(args.default_quality)
    students = [run for run in run_dirs("default_student", args.runs) if run.codec.is_file()]
    if len(students) < 4:
        sys.exit(
            f"package_default: need 4 or more trained rate points, found {len(students)} "
            f"under {args.runs}"
        )
    total = sum(run.codec.stat().st_size for run in students) / 2**20
    if total > args.max_mb:
        sys.exit(f"package_default: {total:.1f} MB of weights exceeds --max-mb {args.max_mb}")

    base_ckpts = [
        run.codec for run in run_dirs("default_student_base", args.runs) if run.codec.is_file()
    ]
    base_facts = facts(base_ckpts[0]) if base_ckpts else None
    models, codec_names, setups = [], set(), {}
    teachers = {}
    for quality, run in enumerate(students, start=1):
        info = facts(run.codec)
        try:
            setups[run.path] = recorded_setup(run, info["metadata"])
        except PackagingError as exc:
            sys.exit(f"package_default: {exc}")
        codec_names.add(info["codec"])
        lmbda = run.lmbda
        teacher_ckpt = run_dir("default_teacher", lmbda, args.runs).codec
        if teacher_ckpt.is_file():
            teacher = facts(teacher_ckpt)
            base_lmbda = None if base_facts is None else base_facts["metadata"].get("lmbda")
            teachers[str(lmbda)] = {
                "codec": teacher["codec"],
                "fingerprint": teacher["fingerprint"],
                "steps": teacher["metadata"].get("steps"),
                "parameters": teacher["parameters"],
                "from": None
                if base_facts is None or lmbda == base_lmbda
                else f"the lambda {base_lmbda} teacher",
            }
        name = f"{info['codec']}-q{quality}.ckpt"
        models.append(
            {
                "quality": quality,
                "lmbda": lmbda,
                "file": name,
                "codec": info["codec"],
                "fingerprint": info["fingerprint"],
                "sha256": sha256(run.codec),
                "bytes": run.codec.stat().st_size,
                "parameters": info["parameters"],
                "steps": info["metadata"].get("steps"),
                "teacher_fingerprint": teachers.get(str(lmbda), {}).get("fingerprint"),
            }
        )
    if len(codec_names) != 1:
        sys.exit(f"package_default: the rate points are different codecs: {sorted(codec_names)}")
    try:
        setup = common_setup(setups)
    except PackagingError as exc:
        sys.exit(f"package_default: {exc}")

    train_manifest = shared_dir() / "datasets" / "train" / "MANIFEST.tsv"
    manifest = {
        "name": "lic default codec",
        "codec": codec_names.pop(),
        "default_quality": default_quality,
        "metric": setup["metric"],
        "data": {
            "train": "shared datasets/train (never Kodak, CLIC or Tecnick)",
            "images": len(train_manifest.read_text().splitlines()) - 1
            if train_manifest.is_file()
            else None,
            "manifest_sha256": sha256(train_manifest) if train_manifest.is_file() else None,
            "crop": setup["crop"],
            "batch": setup["batch"],
        },
        "recipe": {
            "command": "python scripts/train_default.py && python scripts/package_default.py",
            "teacher": "recipes/experiment/default_teacher.yaml "
            "(base lambda, then fine-tuned to each lambda)",
            "student_base": "recipes/experiment/default_student_base.yaml (scratch, base lambda)",
            "student": "recipes/experiment/default_student.yaml "
            f"(FEDS: {describe_phases(setup['phases'])})",
        },
        "student_base": None
        if base_facts is None
        else {
            "lmbda": base_facts["metadata"].get("lmbda"),
            "steps": base_facts["metadata"].get("steps"),
            "fingerprint": base_facts["fingerprint"],
        },
        "teachers": teachers,
        "models": models,
    }
    try:
        old = read_installed(out)
    except PackagingError as exc:
        sys.exit(f"package_default: {exc}")
    retired = retire(old, {m["fingerprint"] for m in models}, args.until or default_until())
    if retired:
        manifest["retired"] = retired
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.ckpt"):
        stale.unlink()
    for model, run in zip(models, students):
        shutil.copyfile(run.codec, out / model["file"])
    write_manifest(out, manifest)
    keep_previous_curves(old, {m["fingerprint"] for m in models}, args.docs)
    print(f"{out}: {len(models)} rate points, {total:.1f} MB")
    for model in models:
        print(
            f"  q{model['quality']}  lambda {model['lmbda']:<7} {model['steps']} steps  "
            f"{short_fingerprint(model['fingerprint'])}"
        )


if __name__ == "__main__":
    main()
