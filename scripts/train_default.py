#!/usr/bin/env python
"""Train the default model: a teacher and a FEDS-distilled student at several rate points.

    python scripts/train_default.py [--lambdas 0.0018,0.0035,0.0067,0.013] [--base 0.0067]
                                    [--teacher-steps 4500] [--teacher-finetune-steps 600]
                                    [--base-steps 15000] [--student-steps 4000] [--jobs 2]

The plan, sized for two CPU cores (one thread per run, ``--jobs`` runs at a time):

1. ``default_teacher`` at the base lambda and ``default_student_base`` (scratch) at the same
   lambda, side by side;
2. the teacher fine-tuned from its base to every other lambda (``init_checkpoint``);
3. for every lambda, ``default_student``: FEDS (feature, channel, fine-tune phases) from the
   teacher of that lambda, starting from the student base.

Runs whose ``codec.ckpt`` exists are skipped and interrupted runs resume, so re-running the same
command continues the plan. Each run logs to ``runs/<name>/lmbda_<λ>/train.log``. When it is done,
``python scripts/package_default.py`` copies the students into the package.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.paths import RUNS_DIR, RunDir, run_dir
from lic.training.campaign import worker_environment


@dataclass
class Job:
    name: str
    experiment: str
    lmbda: float
    overrides: list[str]
    after: list[str] = field(default_factory=list)

    @property
    def run(self) -> RunDir:
        """The run's folder, under the repository (where the runs are started)."""
        return run_dir(self.experiment, self.lmbda, REPO / RUNS_DIR)

    @property
    def done(self) -> bool:
        return self.run.codec.exists()

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "lic.train",
            f"experiment={self.experiment}",
            f"loss.lmbda={self.lmbda}",
            "trainer.enable_progress_bar=false",
            *self.overrides,
        ]


def plan(args: argparse.Namespace) -> list[Job]:
    base = args.base
    teacher = lambda lmbda: run_dir("default_teacher", lmbda).codec
    jobs = [
        Job("teacher@base", "default_teacher", base, [f"trainer.max_steps={args.teacher_steps}"]),
        Job("student-base", "default_student_base", base, [f"trainer.max_steps={args.base_steps}"]),
    ]
    for lmbda in args.lambdas:
        if lmbda != base:
            jobs.append(
                Job(
                    f"teacher@{lmbda}",
                    "default_teacher",
                    lmbda,
                    [
                        f"trainer.max_steps={args.teacher_finetune_steps}",
                        f"init_checkpoint={teacher(base)}",
                        f"trainer.val_check_interval={args.teacher_finetune_steps}",
                    ],
                    after=["teacher@base"],
                )
            )
    for lmbda in args.lambdas:
        jobs.append(
            Job(
                f"student@{lmbda}",
                "default_student",
                lmbda,
                [
                    f"trainer.max_steps={args.student_steps}",
                    f"init_checkpoint={run_dir('default_student_base', base).codec}",
                    f"teacher_checkpoint={teacher(lmbda)}",
                ],
                after=["student-base", "teacher@base" if lmbda == base else f"teacher@{lmbda}"],
            )
        )
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    floats = lambda text: [float(v) for v in text.split(",")]
    parser.add_argument("--lambdas", type=floats, default=[0.0018, 0.0035, 0.0067, 0.013])
    parser.add_argument("--base", type=float, default=0.0067)
    parser.add_argument("--teacher-steps", type=int, default=4500)
    parser.add_argument("--teacher-finetune-steps", type=int, default=600)
    parser.add_argument("--base-steps", type=int, default=15000)
    parser.add_argument("--student-steps", type=int, default=4000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.base not in args.lambdas:
        parser.error("--base must be one of --lambdas")

    jobs = plan(args)
    finished = {job.name for job in jobs if job.done}
    pending = [job for job in jobs if job.name not in finished]
    running: dict[str, tuple[Job, subprocess.Popen, float]] = {}
    env = worker_environment(1)  # one thread each, large blocks kept in the heap
    while pending or running:
        for name, (job, process, started) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[name]
            if code != 0 or not job.done:
                for _, other, _ in running.values():
                    other.terminate()
                sys.exit(f"train_default: {name} failed (exit {code}); see {job.run.train_log}")
            finished.add(name)
            print(
                f"[{time.strftime('%H:%M:%S')}] done {name} in {time.time() - started:.0f} s",
                flush=True,
            )
        for job in list(pending):
            if len(running) >= args.jobs:
                break
            if all(dep in finished for dep in job.after):
                pending.remove(job)
                job.run.path.mkdir(parents=True, exist_ok=True)
                log = open(job.run.train_log, "a")  # noqa: SIM115 - owned by the child
                process = subprocess.Popen(
                    job.command(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
                )
                running[job.name] = (job, process, time.time())
                print(
                    f"[{time.strftime('%H:%M:%S')}] start {job.name}: {' '.join(job.command()[2:])}",
                    flush=True,
                )
        time.sleep(2)
    print("all runs done; next: python scripts/package_default.py")


if __name__ == "__main__":
    main()
