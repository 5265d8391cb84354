#!/usr/bin/env python
"""Copy the trained default students into the package and write ``lic/weights/manifest.json``.

    python scripts/package_default.py [--runs runs] [--max-mb 20]

Takes ``runs/default_student/lmbda_<λ>/codec.ckpt`` for every λ that scripts/train_default.py
trained (quality 1 = the smallest λ = the lowest rate), checks that each loads and that they are
one codec, and records per rate point its λ, steps, sha256, weights fingerprint and teacher, and
for the set the recipes, the training data (its MANIFEST.tsv sha256) and the steps of the teacher
and of the shared student base. Refuses to write more than ``--max-mb`` of weights.

How the students were trained (crop, batch, metric, FEDS phase split) is read from the runs, never
written here: the metric from each codec checkpoint's metadata, the rest from the recipe Hydra
saved in each run folder (``.hydra/config.yaml``). Every rate point must record them and agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.bitstream import short_fingerprint
from lic.paths import RUNS_DIR, RunDir, run_dir, run_dirs, shared_dir
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / RUNS_DIR)
    parser.add_argument("--max-mb", type=float, default=20.0)
    parser.add_argument("--default-quality", type=int, default=3)
    args = parser.parse_args()

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
        "default_quality": args.default_quality,
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
    WEIGHTS_DIR.mkdir(exist_ok=True)
    for stale in WEIGHTS_DIR.glob("*.ckpt"):
        stale.unlink()
    for model, run in zip(models, students):
        shutil.copyfile(run.codec, WEIGHTS_DIR / model["file"])
    tmp = WEIGHTS_DIR / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(WEIGHTS_DIR / MANIFEST_NAME)
    print(f"{WEIGHTS_DIR}: {len(models)} rate points, {total:.1f} MB")
    for model in models:
        print(
            f"  q{model['quality']}  lambda {model['lmbda']:<7} {model['steps']} steps  "
            f"{short_fingerprint(model['fingerprint'])}"
        )


if __name__ == "__main__":
    main()
