#!/usr/bin/env python
"""Copy the trained default students into the package and write ``lic/weights/manifest.json``.

    python scripts/package_default.py [--runs runs] [--max-mb 20]

Takes ``runs/default_student/lmbda_<λ>/codec.ckpt`` for every λ that scripts/train_default.py
trained (quality 1 = the smallest λ = the lowest rate), checks that each loads and that they are
one codec, and records per rate point its λ, steps, sha256, weights fingerprint and teacher, and
for the set the recipes, the training data (its MANIFEST.tsv sha256) and the steps of the teacher
and of the shared student base. Refuses to write more than ``--max-mb`` of weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.checkpoint import load_codec
from lic.paths import shared_dir
from lic.pretrained import MANIFEST_NAME, WEIGHTS_DIR


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lmbda_of(folder: Path) -> float:
    return float(folder.name.removeprefix("lmbda_"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    parser.add_argument("--max-mb", type=float, default=20.0)
    parser.add_argument("--default-quality", type=int, default=3)
    args = parser.parse_args()

    students = sorted((args.runs / "default_student").glob("lmbda_*/codec.ckpt"), key=lambda p: lmbda_of(p.parent))
    if len(students) < 4:
        sys.exit(f"package_default: need 4 or more trained rate points, found {len(students)} under {args.runs}")
    total = sum(p.stat().st_size for p in students) / 2**20
    if total > args.max_mb:
        sys.exit(f"package_default: {total:.1f} MB of weights exceeds --max-mb {args.max_mb}")

    def facts(path: Path) -> dict:
        codec = load_codec(path)
        return {"codec": codec.codec_name, "config": codec.codec_config, "fingerprint": codec.fingerprint,
                "metadata": codec.metadata, "parameters": sum(p.numel() for p in codec.parameters())}

    base = students[0].parents[2] / "default_student_base"
    base_ckpts = sorted(base.glob("lmbda_*/codec.ckpt"))
    base_facts = facts(base_ckpts[0]) if base_ckpts else None
    models, codec_names = [], set()
    teachers = {}
    for quality, path in enumerate(students, start=1):
        info = facts(path)
        codec_names.add(info["codec"])
        lmbda = lmbda_of(path.parent)
        teacher_ckpt = args.runs / "default_teacher" / f"lmbda_{lmbda}" / "codec.ckpt"
        if teacher_ckpt.is_file():
            teacher = facts(teacher_ckpt)
            teachers[str(lmbda)] = {"codec": teacher["codec"], "fingerprint": teacher["fingerprint"],
                                    "steps": teacher["metadata"].get("steps"),
                                    "parameters": teacher["parameters"],
                                    "from": None if base_facts is None or lmbda == base_facts["metadata"].get("lmbda")
                                    else f"the lambda {base_facts['metadata'].get('lmbda')} teacher"}
        name = f"{info['codec']}-q{quality}.ckpt"
        models.append({
            "quality": quality,
            "lmbda": lmbda,
            "file": name,
            "codec": info["codec"],
            "fingerprint": info["fingerprint"],
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "parameters": info["parameters"],
            "steps": info["metadata"].get("steps"),
            "teacher_fingerprint": teachers.get(str(lmbda), {}).get("fingerprint"),
        })
    if len(codec_names) != 1:
        sys.exit(f"package_default: the rate points are different codecs: {sorted(codec_names)}")

    train_manifest = shared_dir() / "datasets" / "train" / "MANIFEST.tsv"
    manifest = {
        "name": "lic default codec",
        "codec": codec_names.pop(),
        "default_quality": args.default_quality,
        "metric": "mse",
        "data": {
            "train": "shared datasets/train (never Kodak, CLIC or Tecnick)",
            "images": len(train_manifest.read_text().splitlines()) - 1
            if train_manifest.is_file() else None,
            "manifest_sha256": sha256(train_manifest) if train_manifest.is_file() else None,
            "crop": 128,
            "batch": 8,
        },
        "recipe": {
            "command": "python scripts/train_default.py && python scripts/package_default.py",
            "teacher": "recipes/experiment/default_teacher.yaml (base lambda, then fine-tuned to each lambda)",
            "student_base": "recipes/experiment/default_student_base.yaml (scratch, base lambda)",
            "student": "recipes/experiment/default_student.yaml (FEDS: feature 10%, channel 10%, fine-tune 80%)",
        },
        "student_base": None if base_facts is None else {
            "lmbda": base_facts["metadata"].get("lmbda"), "steps": base_facts["metadata"].get("steps"),
            "fingerprint": base_facts["fingerprint"],
        },
        "teachers": teachers,
        "models": models,
    }
    WEIGHTS_DIR.mkdir(exist_ok=True)
    for stale in WEIGHTS_DIR.glob("*.ckpt"):
        stale.unlink()
    for model, path in zip(models, students):
        shutil.copyfile(path, WEIGHTS_DIR / model["file"])
    tmp = WEIGHTS_DIR / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(WEIGHTS_DIR / MANIFEST_NAME)
    print(f"{WEIGHTS_DIR}: {len(models)} rate points, {total:.1f} MB")
    for model in models:
        print(f"  q{model['quality']}  lambda {model['lmbda']:<7} {model['steps']} steps  {model['fingerprint'][:16]}")


if __name__ == "__main__":
    main()
