#!/usr/bin/env python
"""The training campaign: continue every run of a plan from its saved state, within a time budget.

    python scripts/campaign.py run --hours 2.5                 # CPU: runs side by side, a core each
    python scripts/campaign.py run --minutes 9 --device cuda   # one GPU command (state <= 16 MiB a file)
    python scripts/campaign.py status                          # where every run stands
    python scripts/campaign.py report                          # docs/campaign/: curves, table, plot
    python scripts/campaign.py measure                         # Kodak points of GPU-trained runs

The plan is ``recipes/campaign/<plan>.yaml`` (``--plan``, default ``default``); the state lives in
``campaign/<plan>/`` (``--state-dir``), tracked in git, so a fresh clone continues it. ``run`` gives
each runnable run (below its target, prerequisites reached) slices of at most ``--slice-minutes``;
each slice is a worker process that loads the state, trains, saves every ``--save-minutes`` and at
the end, and measures the run (held-out and training crops, Kodak through real bitstreams). On CPU
``--jobs`` runs (default: one per core) go side by side with ``--cores / running`` threads each (a run
alone gets every core, at most ``--threads-per-run``); on CUDA every runnable run shares the GPU.
Runs are served in plan order: the plan lists them by priority, so the free lanes go to the
first runnable runs, and a started run continues before a later one starts. SIGTERM or Ctrl-C ends the slices after their
current step, with state saved. A run that has not started waits while its state would take the
tracked campaign state past ``--state-budget-mb`` (40 MB, the issue's budget): finished runs
that the plan keeps as their EMA or record alone make room.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.errors import UsageError
from lic.paths import device_tree_bytes, shared_dir


def _plan(args: argparse.Namespace):
    from lic.training.campaign import load_plan

    path = (
        Path(args.plan)
        if args.plan.endswith(".yaml")
        else REPO / "recipes" / "campaign" / f"{args.plan}.yaml"
    )
    return load_plan(path, args.shared, args.state_dir)


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from lic.training.campaign import (
        STATE_BUDGET_BYTES,
        compact_finished,
        expected_state_bytes,
        reserved_state_bytes,
        run_progress,
        runnable,
        worker_environment,
    )

    plan = _plan(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("campaign: error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    budget = args.hours * 3600 if args.hours is not None else args.minutes * 60
    end = time.time() + budget
    cores = args.cores or os.cpu_count() or 1
    only = set(args.only or [])
    unknown = only - {spec.name for spec in plan.runs}
    if unknown:
        raise UsageError(f"--only: the plan has no run {min(unknown)!r}")
    jobs = args.jobs or (8 if args.device == "cuda" else cores)

    def compact() -> None:
        for name, kept in compact_finished(plan):
            where = " (its weights stay in git history)" if kept == "record" else ""
            print(f"[{_stamp()}] {name}: finished, kept as its {kept} alone{where}", flush=True)

    compact()
    budget_bytes = (
        STATE_BUDGET_BYTES if args.state_budget_mb is None else int(args.state_budget_mb * 10**6)
    )
    over_budget: set[str] = set()
    log_dir = plan.work_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True
        for process, _ in running.values():
            process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = []
    print(
        f"[{_stamp()}] campaign {plan.name}: {budget / 60:.1f} min on {args.device}, up to {jobs} runs side by side",
        flush=True,
    )
    while True:
        for name, (process, started) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[name]
            print(
                f"[{_stamp()}] {name}: slice ended (exit {code}) after {time.time() - started:.0f} s",
                flush=True,
            )
            if code != 0:
                failed.append(name)
            # a run that reached its target gives back its training state now, not at the
            # next start: the runs waiting on it (after:) and on the state budget start at once
            compact()
        remaining = end - time.time() - args.margin
        progress = run_progress(plan)
        waiting = [
            s
            for s in runnable(plan, progress)
            if s.name not in running and s.name not in failed and (not only or s.name in only)
        ]
        # in plan order: the plan lists its runs by priority, so a started run goes on before a
        # later one starts, and the free lanes go to the runs listed first
        if stopping or remaining < args.min_slice_minutes * 60:
            waiting = []
        if not running and not waiting:
            break
        free = jobs - len(running)
        if waiting and free > 0:
            used = reserved_state_bytes(plan, running)  # once the running runs have saved
            fits = []
            for spec in waiting:
                if progress[spec.name] == 0 and not plan.run_dir(spec.name).exists():
                    needed = expected_state_bytes(spec)
                    if used + needed > budget_bytes:
                        if spec.name not in over_budget:
                            over_budget.add(spec.name)
                            # running runs count at their full size until their slice ends
                            held = f"{used / 1e6:.1f} MB" + (
                                " with the running runs' full state; it starts if their "
                                "slices leave room"
                                if running
                                else ""
                            )
                            print(
                                f"[{_stamp()}] {spec.name}: waits: its state "
                                f"(~{needed / 1e6:.1f} MB) would take the campaign state past "
                                f"{budget_bytes / 1e6:g} MB ({held})",
                                flush=True,
                            )
                        continue
                    used += needed
                fits.append(spec)
            waiting = fits
            if not running and not waiting:
                break
        for spec in waiting[:free]:
            share = max(1, min(jobs, len(running) + len(waiting)))
            threads = max(1, cores // share) if args.device == "cpu" else 1
            if args.threads_per_run:
                threads = min(threads, args.threads_per_run)
            seconds = min(args.slice_minutes * 60, remaining)
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--plan",
                args.plan,
                "--state-dir",
                str(args.state_dir),
                "--shared",
                str(args.shared),
                "worker",
                "--run",
                spec.name,
                "--seconds",
                f"{seconds:.0f}",
                "--threads",
                str(threads),
                "--device",
                args.device,
                "--save-minutes",
                str(args.save_minutes),
            ]
            if args.max_steps:
                command += ["--max-steps", str(args.max_steps)]
            env = worker_environment(threads)
            log = open(log_dir / f"{spec.name}.log", "a")  # noqa: SIM115 - owned by the child
            running[spec.name] = (
                subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT),
                time.time(),
            )
            print(
                f"[{_stamp()}] {spec.name}: step {progress[spec.name]} of {spec.steps}, slice of "
                f"{seconds / 60:.1f} min, {threads} thread(s); log {log_dir / (spec.name + '.log')}",
                flush=True,
            )
        time.sleep(args.poll)
    _print_status(plan)
    if failed:
        print(
            f"campaign: error: runs failed: {', '.join(failed)} (see their logs in {log_dir})",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from lic.training.campaign import train_slice

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    plan = _plan(args)
    record = train_slice(
        plan,
        args.run,
        args.seconds,
        device=args.device,
        threads=args.threads,
        save_every=args.save_minutes * 60,
        max_steps=args.max_steps,
        evaluate=not args.no_eval,
    )
    last = record["evals"][-1] if record["evals"] else {}
    print(json.dumps({"run": args.run, "step": record["step"], "last_eval": last}), flush=True)
    return 0


def _print_status(plan) -> None:
    from lic.training.campaign import iter_records

    width = max(len(spec.name) for spec in plan.runs) + 2
    cw = max(len(spec.codec) for spec in plan.runs) + 2
    print(
        f"{'run':<{width}}{'codec':<{cw}}{'lambda':>8}{'step':>8}{'target':>8}{'core-h':>8}{'GPU-h':>7}"
        f"{'Kodak bpp':>10}{'PSNR':>7}{'held-out':>10}{'train':>8}"
    )
    for spec, record in iter_records(plan):
        if record is None:
            print(
                f"{spec.name:<{width}}{spec.codec:<{cw}}{spec.lmbda:>8}{0:>8}{spec.steps:>8}   (not started)"
            )
            continue
        measured = [e for e in record["evals"] if "kodak" in e]
        last = measured[-1] if measured else {}
        kodak = last.get("kodak", {})
        held, train = last.get("heldout", {}), last.get("train_eval", {})
        print(
            f"{spec.name:<{width}}{spec.codec:<{cw}}{spec.lmbda:>8}{record['step']:>8}{spec.steps:>8}"
            f"{record['compute']['cpu_core_hours']:>8.2f}{record['compute']['gpu_hours']:>7.2f}"
            f"{kodak.get('bpp', float('nan')):>10.3f}{kodak.get('psnr', float('nan')):>7.2f}"
            f"{held.get('loss', float('nan')):>10.3f}{train.get('loss', float('nan')):>8.3f}"
        )


def cmd_status(args: argparse.Namespace) -> int:
    _print_status(_plan(args))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lic.training.campaign_report import write_report

    plan = _plan(args)
    out = Path(args.output)
    written = write_report(plan, out)
    for path in written:
        print(path)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lic.bitstream import short_fingerprint
    from lic.checkpoint import load_codec
    from lic.training.campaign import export_run

    plan = _plan(args)
    for run in args.runs:
        path = export_run(plan, run, Path(args.output) / f"{run}.ckpt")
        print(f"{path}: {run}, fingerprint {short_fingerprint(load_codec(path).fingerprint)}")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    """Kodak points for finished runs whose final evaluation lacks one (GPU commands)."""
    import tempfile

    from lic.training.campaign import measure_kodak, unmeasured_runs

    plan = _plan(args)
    runs = args.runs or unmeasured_runs(plan)
    if not runs:
        print("every finished run has its Kodak point")
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            point = measure_kodak(plan, run, Path(tmp))
            print(f"{run}: Kodak {point['bpp']:.4f} bpp, {point['psnr']:.2f} dB")
    return 0


def cmd_gpu_merge(args: argparse.Namespace) -> int:
    """Unpack ``state.tar.*`` (scripts/gpu_slice.sh's pieces) and merge it (``merge_state``)."""
    import io
    import tarfile
    import tempfile

    from lic.training.campaign import merge_state

    pieces = sorted(Path(args.folder).glob("state.tar.*"))
    if not pieces:
        raise UsageError(f"{args.folder}: no state.tar.* pieces (scripts/gpu_slice.sh writes them)")
    plan = _plan(args)
    data = b"".join(piece.read_bytes() for piece in pieces)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                archive.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            raise UsageError(
                f"{args.folder}: the state pieces do not make a tar file ({exc})"
            ) from None
        taken = merge_state(plan, Path(tmp))
    for run, ours, theirs in taken:
        print(f"{run}: step {ours} -> {theirs}")
    if not taken:
        print("nothing taken: every returned run is at or behind the state here")
    return 0


def cmd_gpu_pack(args: argparse.Namespace) -> int:
    """Copy a shard of the training photos (plus all held-out ones) that fits a device command.

    A device command sends the working tree and its carried folders, 64 MiB in all; with the
    campaign state in the tree, the 108 MB training folder cannot travel whole. Each pack holds
    the held-out photos and the next shard of training photos (shards rotate with the number of
    GPU slices already recorded), so successive GPU commands cover the whole set. Photos travel
    as lossless WebP where that is smaller (about 27% smaller than these PNGs, pixels checked
    equal); the campaign matches them to their MANIFEST.tsv names without the suffix.
    """
    import shutil

    from lic.training.campaign import iter_records, manifest_names, training_split

    plan = _plan(args)
    train, held = training_split(plan)
    budget = int(args.mib * 2**20) - device_tree_bytes(REPO) - _folder_bytes(REPO / ".whl")
    held_packed = [_packed_photo(path) for path in held]
    held_bytes = sum(len(data) for _, data in held_packed)
    if budget - held_bytes < 10 * 2**20:
        print(
            f"campaign: error: only {budget / 2**20:.1f} MiB left beside the working tree for photos",
            file=sys.stderr,
        )
        return 1
    shards, current, size = [], [], held_bytes
    for path in train:
        name, data = _packed_photo(path)
        if current and size + len(data) > budget:
            shards.append(current)
            current, size = [], held_bytes
        current.append((name, data))
        size += len(data)
    shards.append(current)
    gpu_slices = sum(
        1
        for _, record in iter_records(plan)
        if record
        for s in record["slices"]
        if s["device"] == "cuda"
    )
    index = args.shard if args.shard is not None else gpu_slices % len(shards)
    out = Path(args.output)
    try:  # where the plan looks for the photos, below the shared folder the pack stands in for
        target = out / plan.train_dir.resolve().relative_to(Path(args.shared).resolve())
    except ValueError:
        target = out / "datasets" / "train"
    if out.exists():
        shutil.rmtree(out)
    target.mkdir(parents=True)
    for name, data in [*held_packed, *shards[index]]:
        (target / name).write_bytes(data)
    if manifest_names(plan.train_dir) is not None:  # the shard holds out the same photos
        shutil.copy(plan.train_dir / "MANIFEST.tsv", target / "MANIFEST.tsv")
    (out / "PACK.json").write_text(
        json.dumps(
            {
                "shard": index,
                "shards": len(shards),
                "train_photos": len(shards[index]),
                "heldout_photos": len(held),
                "bytes": _folder_bytes(out),
            },
            indent=1,
        )
        + "\n"
    )
    print(
        f"{out}: shard {index + 1} of {len(shards)}: {len(shards[index])} training + {len(held)} held-out photos, "
        f"{_folder_bytes(out) / 2**20:.1f} MiB (the working tree is {device_tree_bytes(REPO) / 2**20:.1f} MiB)"
    )
    return 0


def _packed_photo(path: Path) -> tuple[str, bytes]:
    """``path``'s photo as it travels: lossless WebP when that is smaller and decodes to the same
    pixels, the file itself otherwise. Returns (file name, bytes)."""
    import io

    import numpy as np
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGB":  # keep anything but 8-bit RGB exactly as it is
            return path.name, data
        pixels = np.asarray(image)
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", lossless=True, quality=50, method=4)
    webp = buffer.getvalue()
    with Image.open(io.BytesIO(webp)) as decoded:
        same = decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), pixels)
    return (path.stem + ".webp", webp) if same and len(webp) < len(data) else (path.name, data)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plan", default="default", help="recipes/campaign/<plan>.yaml, or a path to a plan"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=REPO / "campaign", help="where run states live"
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=shared_dir(),
        help="shared material (default: lic.paths.shared_dir())",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="continue the plan within a time budget")
    budget = run.add_mutually_exclusive_group(required=True)
    budget.add_argument("--hours", type=float)
    budget.add_argument("--minutes", type=float)
    run.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    run.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="runs side by side (default: one per CPU core, which measured faster than "
        "giving one run every core; on CUDA: all)",
    )
    run.add_argument("--cores", type=int, default=0, help="CPU cores to use (default: all)")
    run.add_argument(
        "--threads-per-run",
        type=int,
        default=0,
        help="at most this many threads for one run (default: a run alone gets every core; on "
        "an AMD EPYC two threads made one teacher step ten times slower)",
    )
    run.add_argument(
        "--only", nargs="+", metavar="RUN", help="continue only these runs (default: every one)"
    )
    run.add_argument("--slice-minutes", type=float, default=20.0, help="longest slice of one run")
    run.add_argument(
        "--state-budget-mb",
        type=float,
        default=None,
        help="do not start a run whose state would take the tracked campaign state past this "
        "(default: 40, lic.training.campaign.STATE_BUDGET_BYTES)",
    )
    run.add_argument(
        "--min-slice-minutes", type=float, default=1.0, help="do not start a shorter slice"
    )
    run.add_argument(
        "--save-minutes", type=float, default=5.0, help="save state at least this often"
    )
    run.add_argument(
        "--margin", type=float, default=90.0, help="seconds kept for the final save and evaluation"
    )
    run.add_argument(
        "--max-steps", type=int, default=0, help="at most this many steps per slice (tests)"
    )
    run.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser("worker", help="one slice of one run, in this process")
    worker.add_argument("--run", required=True)
    worker.add_argument("--seconds", type=float, required=True)
    worker.add_argument("--threads", type=int, default=1)
    worker.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    worker.add_argument("--save-minutes", type=float, default=5.0)
    worker.add_argument("--max-steps", type=int, default=None)
    worker.add_argument("--no-eval", action="store_true")
    worker.set_defaults(func=cmd_worker)

    status = sub.add_parser("status", help="steps, compute and last measurements of every run")
    status.set_defaults(func=cmd_status)

    report = sub.add_parser("report", help="learning curves, table and plot")
    report.add_argument("-o", "--output", default=str(REPO / "docs" / "campaign"))
    report.set_defaults(func=cmd_report)

    export = sub.add_parser("export", help="codec checkpoints of runs, from their saved state")
    export.add_argument("runs", nargs="+", help="run names of the plan")
    export.add_argument(
        "-o", "--output", default=str(REPO / "runs" / "campaign" / "default"), help="folder"
    )
    export.set_defaults(func=cmd_export)

    measure = sub.add_parser(
        "measure", help="Kodak points of finished runs trained without Kodak (GPU commands)"
    )
    measure.add_argument("runs", nargs="*", help="default: every finished run without one")
    measure.set_defaults(func=cmd_measure)

    merge = sub.add_parser(
        "gpu-merge", help="take the runs that a GPU command's state (state.tar.*) got further"
    )
    merge.add_argument("folder", help="where the device command's files landed (files_at)")
    merge.set_defaults(func=cmd_gpu_merge)

    pack = sub.add_parser(
        "gpu-pack", help="a shard of the training photos that fits a device command"
    )
    pack.add_argument(
        "-o", "--output", default=str(REPO / ".gpu-data"), help="git-ignored folder to carry"
    )
    pack.add_argument(
        "--mib", type=float, default=62.0, help="what the device command may send in all"
    )
    pack.add_argument(
        "--shard", type=int, default=None, help="which shard (default: the next in turn)"
    )
    pack.set_defaults(func=cmd_gpu_pack)

    args = parser.parse_args(argv)
    from lic.errors import LicError

    try:
        return args.func(args)
    except LicError as exc:
        print(f"campaign: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
