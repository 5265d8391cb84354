"""Training that accumulates: a declared plan of runs that every call continues from saved state.

A *plan* (``recipes/campaign/<name>.yaml``) declares runs: a codec, λ, a target number of steps,
crop and learning-rate schedules, and which run starts from or distils from which. Each call of
the campaign (``scripts/campaign.py run``) gives every runnable run a *slice* of time: the run
loads its state, trains until the slice ends or its target is reached, saves its state, and
measures itself. Calls on different machines continue the same runs, so compute accumulates
across sessions, CPUs and GPUs.

State (``campaign/<plan>/<run>/``, tracked in git, so a fresh clone continues it):

- ``weights.pt``: the codec's parameters and buffers (float32), and the FEDS adapters;
- ``ema.pt``: the exponential moving average of the weights (timm's ``ModelEmaV3``), which is
  what gets evaluated and exported, stored as its bf16 difference from the weights;
- ``optim.pt``: Adam's step count and second moments in bfloat16 (half the size of float32;
  the first moments are dropped: they re-form within ~10 steps, where the second moments
  take thousands), and the auxiliary optimizer of the entropy bottleneck's quantiles;
- ``state.json``: steps, images seen, compute per hardware, every slice (hardware, threads,
  steps, seconds) and every evaluation (held-out and training-set losses, Kodak through real
  bitstreams).

A run with ``keep: ema`` keeps less once it reaches its target: only ``ema.pt``, holding the
EMA weights in float16 (float32 where float16 would round a tensor by more than 2^-10), beside
``state.json``. That is all that evaluating it, exporting it and starting other runs from it
need, at a quarter of the bytes; the price is that its target cannot be raised later. A run with
``keep: record`` keeps only ``state.json`` once its finished EMA weights are committed: its
curves stay in the tree, and its weights are read back from git history when something needs
them (:func:`load_ema`).

The tracked state has a budget (:data:`STATE_BUDGET_BYTES`): the campaign does not start a run
whose state would take the total past it (:func:`state_bytes`, :func:`expected_state_bytes`);
the run waits until finished runs make room.

A save writes the new state into a sibling folder and swaps it in with two renames; a run
killed at any moment leaves the previous state or the new one (``load`` repairs a swap that
was cut in half), and a save that fails (a full disk) leaves the previous one with a one-line
error. No file exceeds ``MAX_FILE_BYTES`` (what a GPU command can send back). A state that
this code cannot resume exactly (written by another version of lic, edited by hand, a merge
conflict) is refused in one line naming what is missing or does not fit, before training.

Design choices (ours; see README "Training campaign"):

- the transforms run under bf16 autocast where the hardware has bf16 (``precision: auto``),
  the entropy model and the rate in float32 (``ChannelARCodec.transform_autocast``);
- channels-last memory layout; training photos decoded once and held in memory (on the GPU
  with ``device: cuda``) and cropped there;
- learning rate: linear warm-up, then constant, then ×0.1 from ``decay_from`` (absolute
  steps), so that a run's target can be raised later without a schedule that already ended;
- a held-out split of the training folder (every ``holdout_every``-th photo, never trained
  on) measures generalisation: the same evaluation on held-out photos and on as many training
  photos, whose gap shows overfitting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lic.errors import CheckpointError, ImageError, UsageError
from lic.files import MAX_UNREADABLE_FRACTION, list_images
from lic.training.precision import autocast_dtype

log = logging.getLogger(__name__)

#: Largest state file: a GPU command returns files of at most 16 MiB.
MAX_FILE_BYTES = 16 * 2**20
STATE_FILES = ("weights.pt", "ema.pt", "optim.pt", "state.json")
#: The campaign state's budget in the repository (the training-campaign issue: 40 MB tracked).
STATE_BUDGET_BYTES = 40 * 10**6
#: What :func:`compact_finished` keeps of a finished run, per ``keep``.
KEEP = ("all", "ema", "record")
#: What a run's ``state.json`` holds (:func:`new_record`), and its ``compute`` entry.
RECORD_KEYS = ("run", "codec", "lmbda", "step", "images_seen", "compute", "slices", "evals")
COMPUTE_KEYS = ("cpu_core_hours", "gpu_hours")


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One run of a plan (every field can be set in the recipe; steps are absolute).

    Attributes:
        name: the run's name (its state folder).
        codec: registered codec name.
        lmbda: rate–distortion λ (MSE, CompressAI's scale).
        steps: target number of training steps; raising it later continues the run.
        batch: images per step.
        crops: ``[[from_step, side], ...]``: the crop side from each step on (small crops early
            are cheap; the hyper-latent of a 128² crop is only 2×2, so later steps use larger).
        lr: peak learning rate of the main optimizer.
        warmup: steps of linear warm-up from ``lr / 100``.
        decay_from: from this step on the learning rate is ``lr / 10`` (None: never).
        ema_decay: decay of the weights' moving average.
        precision: ``auto`` (bf16 transforms where the device supports them), ``bf16``, ``fp32``.
        channels_last: use the channels-last memory layout.
        init: start from the EMA weights of this run when the run begins: the same codec, its
            fixed-rate network for a ``-vr`` codec (gains as initialised), or a shallower codec
            a deeper one grows from (:func:`lic.codecs.grow.load_grown`).
        teacher: distil from the EMA weights of this run (FEDS).
        phases: FEDS phases ``[{name, steps, weights: {term: w}}]`` (with a teacher).
        taps: features aligned by the default ``feature`` term.
        channel_temperature: softmax temperature of the default ``channel`` term.
        terms: ``{term: {option: value}}``: distillation terms built by registered name
            (:func:`lic.distill.build_term`), replacing the default feature/channel terms of
            the same name (e.g. ``{channel: {source: marginal, temperature: 2.0}}``).
        after: ``{run: steps}``: start only when those runs have reached those steps.
        clip_max_norm: gradient-norm clip of the main parameters.
        seed: the crop stream's seed (0 for every run unless a plan says otherwise; weights
            start from torch's unseeded initialisation): a run repeated with another seed
            measures how far two runs of one recipe land apart.
        keep: ``all`` (default): the state to continue; ``ema``: once the run reaches
            ``steps``, only its EMA weights (see the module doc), for runs that end there;
            ``record``: once its finished weights are committed, only ``state.json`` (the
            weights stay in git history), for runs whose results are recorded.
    """

    name: str
    codec: str
    lmbda: float
    steps: int
    batch: int = 8
    crops: tuple[tuple[int, int], ...] = ((0, 128),)
    lr: float = 1e-4
    warmup: int = 500
    decay_from: int | None = None
    ema_decay: float = 0.999
    precision: str = "auto"
    channels_last: bool = True
    init: str | None = None
    teacher: str | None = None
    phases: tuple[dict, ...] = ()
    taps: tuple[str, ...] = ("g_a.0", "g_a.1", "g_a.2", "y", "g_s.0", "g_s.1", "g_s.2")
    channel_temperature: float = 1.0
    terms: dict[str, dict] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    clip_max_norm: float = 1.0
    keep: str = "all"
    seed: int = 0

    def crop_at(self, step: int) -> int:
        side = self.crops[0][1]
        for start, value in self.crops:
            if step >= start:
                side = value
        return side

    def lr_at(self, step: int) -> float:
        if self.decay_from is not None and step >= self.decay_from:
            return self.lr / 10
        if step < self.warmup:
            return self.lr * (0.01 + 0.99 * step / self.warmup)
        return self.lr


@dataclass(frozen=True)
class Plan:
    """A campaign: runs in priority order, the data, and where the state lives."""

    name: str
    runs: tuple[RunSpec, ...]
    train_dir: Path
    holdout_every: int = 20
    eval_crop: int = 256
    eval_images: int = 16
    kodak_dir: Path | None = None
    state_dir: Path = Path("campaign")

    def run(self, name: str) -> RunSpec:
        for spec in self.runs:
            if spec.name == name:
                return spec
        raise UsageError(
            f"plan {self.name!r} has no run {name!r}; runs: {[r.name for r in self.runs]}"
        )

    def run_dir(self, name: str) -> Path:
        return self.state_dir / self.name / name

    @property
    def work_dir(self) -> Path:
        """Untracked outputs (logs, exported codecs): ``runs/campaign/<plan>`` beside the state."""
        return self.state_dir.parent / "runs" / "campaign" / self.name


def load_plan(path: str | os.PathLike[str], shared: Path, state_dir: Path) -> Plan:
    """Read a plan recipe; ``{shared}`` in paths is the shared-material folder.

    Raises:
        UsageError: unknown keys, unknown codecs or runs, cycles, or a teacher without phases.
    """
    from omegaconf import OmegaConf

    from lic.codecs import list_codecs
    from lic.distill import build_term

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"campaign plan not found: {path}")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    defaults = raw.pop("defaults", {}) or {}
    run_entries = raw.pop("runs", None)
    if not run_entries:
        raise UsageError(f"{path}: a plan needs runs")
    known = {f.name for f in RunSpec.__dataclass_fields__.values()}
    runs = []
    for name, entry in run_entries.items():
        values = {**defaults, **(entry or {}), "name": name}
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"{path}: run {name!r} has unknown keys {sorted(unknown)}")
        for key in ("crops", "phases", "taps"):
            if key in values:
                values[key] = tuple(tuple(v) if key == "crops" else v for v in values[key])
        missing = [
            f.name
            for f in RunSpec.__dataclass_fields__.values()
            if f.name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise UsageError(f"{path}: run {name!r} needs {', '.join(missing)}")
        spec = RunSpec(**values)
        if spec.codec not in list_codecs():
            raise UsageError(f"{path}: run {name!r}: unknown codec {spec.codec!r}")
        for term, options in spec.terms.items():
            try:
                build_term(term, **(options or {}))
            except (TypeError, ValueError) as exc:
                raise UsageError(
                    f"{path}: run {name!r}: distillation term {term!r}: {exc}"
                ) from None
        if spec.teacher and not spec.phases:
            raise UsageError(
                f"{path}: run {name!r} distils from {spec.teacher!r} but declares no phases"
            )
        if spec.keep not in KEEP:
            raise UsageError(
                f"{path}: run {name!r}: keep must be one of {', '.join(KEEP)}, not {spec.keep!r}"
            )
        runs.append(spec)
    names = {r.name for r in runs}
    for spec in runs:
        for other in [spec.init, spec.teacher, *spec.after]:
            if other is not None and other not in names:
                raise UsageError(f"{path}: run {spec.name!r} refers to unknown run {other!r}")
        if spec.init and spec.init not in spec.after:
            raise UsageError(
                f"{path}: run {spec.name!r} starts from {spec.init!r}: list it in `after`"
            )
        if spec.teacher and spec.teacher not in spec.after:
            raise UsageError(
                f"{path}: run {spec.name!r} distils from {spec.teacher!r}: list it in `after`"
            )
    data = raw.pop("data", {}) or {}
    template = {"shared": str(shared)}
    kodak = data.get("kodak_dir")
    plan = Plan(
        name=raw.pop("name", path.stem),
        runs=tuple(runs),
        train_dir=Path(data["train_dir"].format(**template)),
        holdout_every=int(data.get("holdout_every", 20)),
        eval_crop=int(data.get("eval_crop", 256)),
        eval_images=int(data.get("eval_images", 16)),
        kodak_dir=Path(kodak.format(**template)) if kodak else None,
        state_dir=state_dir,
    )
    if raw:
        raise UsageError(f"{path}: unknown plan keys {sorted(raw)}")
    return plan


# -- data --------------------------------------------------------------------------------------


def split_holdout(
    paths: Sequence[Path], every: int, universe: Sequence[str] | None = None
) -> tuple[list[Path], list[Path]]:
    """Training and held-out photos: every ``every``-th name of ``universe`` (sorted) is held out.

    ``universe`` is the full list of the folder's photo names (its ``MANIFEST.tsv``), so that a
    folder holding only part of the photos (a GPU shard) holds out the same ones; by default the
    names of ``paths``. Photos are matched by name without suffix, so a shard that stores them in
    another lossless format (``photo.webp`` for ``photo.png``) holds out the same photos too.
    """
    names = sorted(universe) if universe is not None else sorted(p.name for p in paths)
    held = {Path(name).stem for name in names[::every]}
    paths = sorted(paths, key=lambda p: p.name)
    return [p for p in paths if p.stem not in held], [p for p in paths if p.stem in held]


def manifest_names(folder: Path) -> list[str] | None:
    """Photo names listed in ``folder/MANIFEST.tsv`` (first column after the header), if any."""
    manifest = folder / "MANIFEST.tsv"
    if not manifest.is_file():
        return None
    rows = manifest.read_text().splitlines()[1:]
    return [row.split("\t", 1)[0] for row in rows if row.strip()]


def training_split(plan: Plan) -> tuple[list[Path], list[Path]]:
    """The plan's training and held-out photos."""
    return split_holdout(
        _photo_paths(plan.train_dir), plan.holdout_every, manifest_names(plan.train_dir)
    )


class ResidentImages:
    """Decoded photos held in memory on ``device`` (uint8, HWC), and random crops of them.

    Crops are cut where the photos live (on the GPU with ``device="cuda"``), flipped at random,
    and returned as a float batch ``(B, 3, side, side)`` in ``[0, 1]``. The random choices come
    from a CPU generator, so a seed gives the same crops on every device.

    A photo that cannot be read (deleted, truncated or made unreadable since the folder was
    listed) is left out with one warning and counted in ``unreadable``; more than
    :data:`~lic.files.MAX_UNREADABLE_FRACTION` of them is an :class:`~lic.errors.ImageError`.
    Once loaded, the photos are in memory: what happens to the files after that does not matter.
    """

    def __init__(self, paths: Sequence[Path], device: torch.device | str = "cpu") -> None:
        from PIL import Image

        from lic.imageio import convert_to_rgb8

        if not paths:
            raise UsageError("no training photos")
        self.device = torch.device(device)
        self.names: list[str] = []
        self.images: list[Tensor] = []
        self.unreadable: list[Path] = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    pixels = convert_to_rgb8(image).pixels
            except Exception as exc:  # noqa: BLE001 - any read error: counted, then left out
                self.unreadable.append(path)
                if len(self.unreadable) > MAX_UNREADABLE_FRACTION * len(paths):
                    raise ImageError(
                        f"{len(self.unreadable)} of {len(paths)} training photos cannot be read "
                        f"(last: {path}: {type(exc).__name__}); is the folder still there?"
                    ) from None
                log.warning("skipping unreadable photo %s (%s)", path, type(exc).__name__)
                continue
            self.names.append(path.name)
            self.images.append(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device))

    def __len__(self) -> int:
        return len(self.images)

    def min_side(self) -> int:
        return min(min(image.shape[:2]) for image in self.images)

    def sample(self, batch: int, side: int, generator: torch.Generator) -> Tensor:
        if side > self.min_side():
            raise UsageError(
                f"crop {side} is larger than the smallest training photo ({self.min_side()} px)"
            )
        picks = torch.randint(0, len(self.images), (batch,), generator=generator).tolist()
        crops = []
        for index in picks:
            image = self.images[index]
            height, width = image.shape[:2]
            top = int(torch.randint(0, height - side + 1, (), generator=generator))
            left = int(torch.randint(0, width - side + 1, (), generator=generator))
            flip_h, flip_v = (torch.rand(2, generator=generator) < 0.5).tolist()
            crop = image[top : top + side, left : left + side]
            if flip_h:
                crop = crop.flip(1)
            if flip_v:
                crop = crop.flip(0)
            crops.append(crop)
        return torch.stack(crops).permute(0, 3, 1, 2).float().div_(255)

    def center_crops(self, side: int, count: int) -> Tensor:
        """Centre crops of ``count`` photos spread evenly over the set: a fixed evaluation batch."""
        count = min(count, len(self.images))
        picks = np.linspace(0, len(self.images) - 1, count).round().astype(int)
        crops = []
        for index in picks:
            image = self.images[index]
            height, width = image.shape[:2]
            top, left = (height - side) // 2, (width - side) // 2
            crops.append(image[top : top + side, left : left + side])
        return torch.stack(crops).permute(0, 3, 1, 2).float().div_(255)


# -- hardware ----------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# glibc's malloc hands every freed block above its (adaptive) mmap threshold back to the kernel
# and maps it afresh at the next step. A CPU training step frees and reallocates activations of
# tens of MB per layer, so the process pays page faults for them every step: 7.7% of a
# ``student-medium-vr`` step at 8 x 256² on one AVX2 EPYC core (2,392 ms against 2,209 ms; no
# change for ``student-small`` at 128²: ``scripts/step_speed.py --variants fp32,fp32+glibc
# --repeats 3``, docs/campaign/step-speed-cpu-epyc-avx2-malloc-*.json). Fixed thresholds of
# 1 GiB keep those blocks in the heap for the next step; the peak memory is the same. Other C
# libraries ignore these variables, and a value already in the environment wins.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def worker_environment(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a training worker process: ``threads`` OpenMP/MKL threads and the
    malloc thresholds of :data:`MALLOC_ENV` (unless ``base``, default ``os.environ``, sets
    them)."""
    env = dict(os.environ if base is None else base)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    for key, value in MALLOC_ENV.items():
        env.setdefault(key, value)
    return env


def hardware(device: torch.device, threads: int) -> dict[str, Any]:
    if device.type == "cuda":
        return {
            "device": "cuda",
            "name": torch.cuda.get_device_name(device),
            "host": socket.gethostname(),
        }
    return {"device": "cpu", "name": cpu_name(), "threads": threads, "host": socket.gethostname()}


# -- state -------------------------------------------------------------------------------------


def _repair(run_dir: Path) -> None:
    """Finish or undo a state swap that was interrupted (see :func:`save_state`).

    Only the run's writer calls this (one slice of a run at a time): a reader could otherwise
    undo a swap that is under way.
    """
    old = run_dir.with_name(run_dir.name + ".old")
    if not run_dir.exists() and old.exists():
        old.rename(run_dir)
    elif old.exists():
        shutil.rmtree(old)
    for stale in run_dir.parent.glob(f".{run_dir.name}.next-*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``state.json`` (from a swap cut in half too), or None when it has not started.

    There is no migration of records: one that is not JSON or lacks one of
    :data:`RECORD_KEYS` (or of :data:`COMPUTE_KEYS` in ``compute``) was written by another
    version of lic or edited, and is refused rather than guessed at.

    Raises:
        CheckpointError: the record cannot be used, in one line naming why.
    """
    for folder in (run_dir, run_dir.with_name(run_dir.name + ".old")):
        path = folder / "state.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})"
            ) from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}: not a run record")
        missing = [key for key in RECORD_KEYS if key not in record]
        if isinstance(record.get("compute"), dict):
            missing += [f"compute.{key}" for key in COMPUTE_KEYS if key not in record["compute"]]
        if missing:
            raise CheckpointError(
                f"{path} lacks {', '.join(missing)} (written by another version of lic?): "
                f"run {run_dir.name!r} cannot be resumed from it"
            )
        return record
    return None


def _fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` (files created, renames) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_state(run_dir: Path, tensors: dict[str, dict], record: dict[str, Any]) -> None:
    """Write the run's files into a new folder, then swap it in with two renames.

    The files are serialised in memory first (their sizes checked against
    :data:`MAX_FILE_BYTES`), written and fsynced into ``.<run>.next-<pid>``; then the run's
    folder becomes ``<run>.old``, the new one takes its name and ``<run>.old`` is removed. A
    kill between any two of these steps leaves the previous state or the new one, whole
    (:func:`read_record` reads ``<run>.old`` too; the run's next writer repairs the swap). A
    save that fails (no space left, a file-size limit) puts the previous state back and
    removes the new folder.

    Raises:
        CheckpointError: the state cannot be written, in one line; the previous state is kept.
        UsageError: a file over :data:`MAX_FILE_BYTES`.
    """
    from lic.checkpoint import plain_bytes

    files = {filename: plain_bytes(payload) for filename, payload in tensors.items()}
    for filename, data in files.items():
        if len(data) > MAX_FILE_BYTES:
            raise UsageError(
                f"{filename} of run {run_dir.name} is {len(data)} bytes, over {MAX_FILE_BYTES}"
            )
    files["state.json"] = (json.dumps(record, indent=1) + "\n").encode()
    _swap_in(run_dir, files)


def _swap_in(run_dir: Path, files: dict[str, bytes]) -> None:
    """:func:`save_state`'s write-then-two-renames swap of a run's whole folder (after
    repairing an interrupted one)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    _repair(run_dir)
    staging = run_dir.with_name(f".{run_dir.name}.next-{os.getpid()}")
    old = run_dir.with_name(run_dir.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        for filename, data in files.items():
            with open(staging / filename, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(staging)
        if run_dir.exists():
            run_dir.rename(old)
        staging.rename(run_dir)
        _fsync_dir(run_dir.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            _repair(run_dir)  # the previous state back under the run's name
        raise CheckpointError(
            f"cannot save run {run_dir.name!r} in {run_dir.parent}: {exc.strerror or exc} "
            "(its previous state, if any, is kept)"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def merge_state(plan: Plan, returned: Path) -> list[tuple[str, int, int]]:
    """Take the runs of another copy of the state (a GPU command's) that got further.

    ``returned`` is a copy of the state folder (``<returned>/<plan>/<run>/``). A run is taken
    when its returned record has more steps than the local one (or the local one has not
    started), and swapped in whole like a save (:func:`save_state`), so runs trained here in
    the meantime, which the copy has at fewer steps, are kept. Partition the runs between the
    devices (``run --only``) so that no run trains on both at once.

    Returns:
        ``(run, local step, returned step)`` of every run taken, in plan order.

    Raises:
        UsageError: ``returned`` holds no state of this plan.
        CheckpointError: a returned record cannot be used.
    """
    root = returned / plan.name
    if not root.is_dir():
        raise UsageError(f"{returned} holds no state of plan {plan.name!r} (no {root})")
    taken = []
    for spec in plan.runs:
        theirs = read_record(root / spec.name)
        if theirs is None:
            continue
        ours = read_record(plan.run_dir(spec.name))
        ours_step = ours["step"] if ours is not None else 0
        if theirs["step"] <= ours_step:
            continue
        source = root / spec.name
        if not (source / "state.json").is_file():  # a swap cut in half there: its .old is whole
            source = root / f"{spec.name}.old"
        files = {p.name: p.read_bytes() for p in sorted(source.iterdir()) if p.is_file()}
        _swap_in(plan.run_dir(spec.name), files)
        taken.append((spec.name, ours_step, theirs["step"]))
    return taken


def load_tensors(run_dir: Path, filename: str, *keys: str) -> dict:
    """A state file of the run, read as plain data, that must hold ``keys``.

    Raises:
        CheckpointError: the file cannot be read or lacks one of ``keys``, in one line.
    """
    from lic.checkpoint import read_plain_dict

    return read_plain_dict(run_dir / filename, keys, "campaign state file")


def _load_into(module: nn.Module, state: dict[str, Tensor], source: Path) -> None:
    """``module.load_state_dict(state)``, with a state that does not fit refused in one line."""
    from lic.checkpoint import state_dict_mismatch

    mismatch = state_dict_mismatch(module.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{source} does not fit the run's codec: {mismatch}")
    module.load_state_dict(state)


def _ema_payload(ema: dict[str, Tensor], weights: dict[str, Tensor]) -> dict[str, Any]:
    """The EMA as its difference from the weights, in bf16 (half the bytes of float32).

    The difference is small next to the weights (the EMA trails them), so its bf16 rounding is
    about 0.4% of the difference: less than one EMA update moves it.
    """
    return {
        "format": "delta-bf16",
        "delta": {
            k: (v - weights[k]).to(torch.bfloat16) for k, v in ema.items() if v.is_floating_point()
        },
        "exact": {k: v for k, v in ema.items() if not v.is_floating_point()},
    }


#: ``ema.pt`` of a finished ``keep: ema`` run: the EMA weights alone (:func:`_final_payload`).
FINAL_FORMAT = "final-fp16"


def _final_payload(ema: dict[str, Tensor]) -> dict[str, Any]:
    """The EMA weights in float16 where that rounds by at most 2^-10 (relative), else as they are."""

    def compact(value: Tensor) -> Tensor:
        if not value.is_floating_point():
            return value
        half = value.half()
        error = (half.float() - value).abs().max() if value.numel() else torch.tensor(0.0)
        scale = value.abs().max() if value.numel() else torch.tensor(1.0)
        return half if torch.isfinite(half).all() and error <= scale * 2**-10 else value

    return {"format": FINAL_FORMAT, "weights": {k: compact(v) for k, v in ema.items()}}


def is_compacted(run_dir: Path) -> bool:
    """Whether the run was kept as its EMA weights alone (``keep: ema``, target reached)."""
    return not (run_dir / "weights.pt").exists() and (run_dir / "ema.pt").exists()


def is_record_only(run_dir: Path) -> bool:
    """Whether the run was kept as its record alone (``keep: record``): its weights are in git."""
    return (run_dir / "state.json").exists() and not any(
        (run_dir / name).exists() for name in ("ema.pt", "weights.pt")
    )


def _git(run_dir: Path, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(run_dir), *args], capture_output=True, text=text, check=False
    )


def is_committed(run_dir: Path) -> bool:
    """Whether the run's files are tracked by git and unchanged since the last commit."""
    tracked = _git(run_dir, "ls-files", "--", ".")
    status = _git(run_dir, "status", "--porcelain", "--", ".")
    if tracked.returncode or status.returncode:
        return False  # not in a git work tree, or no git
    names = {Path(line).name for line in tracked.stdout.split()}
    return {"state.json", "ema.pt"} <= names and not status.stdout.strip()


def state_at(run_dir: Path, commit: str, into: Path) -> None:
    """Write into ``into`` the run's state files as ``commit`` of its git history held them."""
    prefix = _git(run_dir, "rev-parse", "--show-prefix").stdout.strip()
    for name in STATE_FILES:
        shown = _git(run_dir, "show", f"{commit}:{prefix}{name}", text=False)
        if shown.returncode == 0:
            (into / name).write_bytes(shown.stdout)


def _restore_from_history(run_dir: Path, into: Path) -> None:
    """Write into ``into`` the run's files as the last commit that still held its weights.

    Raises:
        CheckpointError: no git history with them, or they are not the record's final step.
    """
    missing = (
        f"run {run_dir.name!r} is kept as its record alone (keep: record), and its weights are "
        "not in this checkout's git history"
    )
    prefix = _git(run_dir, "rev-parse", "--show-prefix").stdout.strip()
    if _git(run_dir, "cat-file", "-e", f"HEAD:{prefix}ema.pt").returncode == 0:
        commit = "HEAD"  # dropped since the last commit
    else:  # the parent of the commit that dropped them
        dropped = _git(run_dir, "rev-list", "-1", "HEAD", "--", "ema.pt")
        if dropped.returncode or not dropped.stdout.strip():
            raise CheckpointError(f"{missing} (a full clone of the repository has them)")
        commit = dropped.stdout.strip() + "^"
    state_at(run_dir, commit, into)
    restored, record = read_record(into), read_record(run_dir)
    if restored is None or not (into / "ema.pt").exists() or restored["step"] != record["step"]:
        raise CheckpointError(f"{missing} at its final step {record['step']} (commit {commit})")


def load_ema(run_dir: Path) -> dict[str, Tensor]:
    """The run's EMA weights (float32 state dict), rebuilt from ``ema.pt`` and ``weights.pt``.

    ``ema.pt`` of the first campaign format, a full float32 state dict, loads as it is; that of
    a finished ``keep: ema`` run holds the weights alone; a ``keep: record`` run's come from
    the last commit that held them (checked to be its final step).
    """
    if is_record_only(run_dir):
        with tempfile.TemporaryDirectory() as tmp:
            _restore_from_history(run_dir, Path(tmp))
            return load_ema(Path(tmp))
    payload = load_tensors(run_dir, "ema.pt")
    if payload.get("format") == FINAL_FORMAT:
        payload = load_tensors(run_dir, "ema.pt", "weights")
        return {k: v.float() if v.is_floating_point() else v for k, v in payload["weights"].items()}
    if payload.get("format") != "delta-bf16":
        return payload  # a full float32 state dict
    payload = load_tensors(run_dir, "ema.pt", "delta", "exact")
    weights = load_tensors(run_dir, "weights.pt", "codec")["codec"]
    ema = {k: weights[k] + delta.float() for k, delta in payload["delta"].items()}
    return {k: ema.get(k, payload["exact"].get(k)) for k in weights}


def compact_finished(plan: Plan) -> list[tuple[str, str]]:
    """Keep finished runs as their plan's ``keep`` says; returns ``(run, what was kept)``, what
    being ``"EMA weights"`` or ``"record"``.

    A finished ``keep: ema`` or ``keep: record`` run that still holds what continuing needs
    (weights, EMA, optimizer: it reached its target before the plan said so) is first kept as
    its EMA weights alone, what :meth:`RunTrainer.save` writes for it when it finishes. A
    ``keep: record`` run whose EMA weights are committed (:func:`is_committed`) is then kept as
    its ``state.json`` alone; until they are, it keeps them (they would be lost otherwise), and
    while a run still needs them (as its teacher before it finishes, or as its starting point
    before it starts): a copy without the git history (a GPU command's) can then still train
    that run. All through :func:`save_state`.
    """
    progress = run_progress(plan)
    needed = {s.teacher for s in plan.runs if progress[s.name] < s.steps} | {
        s.init for s in plan.runs if progress[s.name] == 0
    }
    done = []
    for spec in plan.runs:
        run_dir = plan.run_dir(spec.name)
        if spec.keep == "all" or not run_dir.is_dir():
            continue
        _repair(run_dir)
        record = read_record(run_dir)
        if record is None or record["step"] < spec.steps or is_record_only(run_dir):
            continue
        if not is_compacted(run_dir):
            save_state(run_dir, {"ema.pt": _final_payload(load_ema(run_dir))}, record)
            done.append((spec.name, "EMA weights"))
        elif spec.keep == "record" and spec.name not in needed and is_committed(run_dir):
            save_state(run_dir, {}, record)
            done.append((spec.name, "record"))
    return done


def state_bytes(plan: Plan, run: str | None = None) -> int:
    """Bytes of the plan's campaign state on disk (what the repository tracks), or of one run's."""
    return _tree_bytes(plan.state_dir / plan.name if run is None else plan.run_dir(run))


def _tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file itself; 0 if it is missing); files that
    vanish while they are counted (a writer swapping its state in) count as 0."""
    total = 0
    for p in path.rglob("*") if path.is_dir() else [path]:
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


def _state_owner(entry: str) -> str:
    """The run a top-level entry of the state folder belongs to: ``<run>``, ``<run>.old`` (a swap
    under way) or ``.<run>.next-<pid>`` (a save being written), see :func:`save_state`."""
    if entry.startswith(".") and ".next-" in entry:
        return entry[1:].rsplit(".next-", 1)[0]
    return entry.removesuffix(".old")


def reserved_state_bytes(plan: Plan, running: Iterable[str]) -> int:
    """What the plan's state holds once the running runs have saved: the files of every other
    run as they are on disk, and for each running run the larger of its expected size
    (:func:`expected_state_bytes`) and what it holds now (its folder, a swap's ``.old`` and a save
    being staged).

    A running run's files are counted on their own and never below its expected size, so a
    save caught half-written (its staging folder partly written, then renamed in) cannot make
    the total look smaller than it will be: the campaign's state budget holds under any timing.
    """
    running = set(running)
    root = plan.state_dir / plan.name
    held: dict[str, int] = dict.fromkeys(running, 0)
    other = 0
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        owner = _state_owner(entry.name)
        if owner in running:
            held[owner] += _tree_bytes(entry)
        else:
            other += _tree_bytes(entry)
    return other + sum(
        max(expected_state_bytes(plan.run(name)), size) for name, size in held.items()
    )


def expected_state_bytes(spec: RunSpec) -> int:
    """Bytes a run's state takes while it trains: per parameter, 4 (float32 weights) + 2 (the
    EMA's bf16 difference) + 2 (Adam's bf16 second moments), 3% for buffers and the record
    (measured: 7.48 MB for ``student-small``, 13.2 MB for ``teacher-small``), and 10% more for
    the FEDS adapters."""
    from lic.codecs import create_codec

    parameters = sum(p.numel() for p in create_codec(spec.codec).parameters())
    return int(parameters * 8 * 1.03 * (1.1 if spec.teacher else 1.0))


def kodak_point(
    kodak: Path | None, export_path: Path, device: torch.device | str = "cpu"
) -> dict[str, float] | None:
    """Mean bpp and PSNR of a codec checkpoint over the Kodak images (listed as every dataset
    is, :func:`lic.files.list_images`), through real bitstreams.

    Learning curves only, never selection. None where there is no Kodak folder (a GPU command
    carries only training photos).
    """
    from lic import coding
    from lic.checkpoint import load_codec
    from lic.evaluation.metrics import psnr_rgb
    from lic.files import list_images
    from lic.imageio import load_image, tensor_to_pixels

    if kodak is None or not kodak.is_dir():
        return None
    paths = list_images(kodak)
    if not paths:
        return None
    codec = load_codec(export_path, device=device)
    bpps, psnrs = [], []
    for path in paths:
        image = load_image(path)
        pixels = image.pixels
        x = image.to_tensor().to(device)
        data = coding.encode(codec, x, quality=measurement_quality(codec))
        decoded = tensor_to_pixels(coding.decode(codec, data))
        bpps.append(8 * len(data) / (pixels.shape[0] * pixels.shape[1]))
        psnrs.append(psnr_rgb(pixels, decoded))
    return {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "images": len(paths)}


def unmeasured_runs(plan: Plan) -> list[str]:
    """Finished runs whose final evaluation has no Kodak point (trained where Kodak was not)."""
    names = []
    for spec, record in iter_records(plan):
        if record is None or record["step"] < spec.steps or not record["evals"]:
            continue
        last = record["evals"][-1]
        if last["step"] == record["step"] and "kodak" not in last:
            names.append(spec.name)
    return names


def measure_kodak(plan: Plan, run: str, work_dir: Path) -> dict[str, float]:
    """Add the Kodak point to a finished run's final evaluation, from its saved weights.

    A GPU command evaluates on the held-out photos it carries but has no Kodak; this measures
    the same exported EMA weights here and writes the point into the record's last evaluation
    (the run's files swapped in whole, like a save). Only finished runs: a running one's next
    slice would overwrite the record (and measures Kodak itself where Kodak is).

    Raises:
        UsageError: the run is unknown, unfinished, or there is no Kodak folder.
    """
    spec, run_dir = plan.run(run), plan.run_dir(run)
    record = read_record(run_dir)
    if record is None or record["step"] < spec.steps:
        step = 0 if record is None else record["step"]
        raise UsageError(
            f"run {run!r} is not finished ({step} of {spec.steps} steps): "
            "its next slice measures Kodak"
        )
    if not record["evals"] or record["evals"][-1]["step"] != record["step"]:
        raise UsageError(f"run {run!r} has no evaluation at its final step {record['step']}")
    point = kodak_point(plan.kodak_dir, export_run(plan, run, work_dir / f"{run}.ckpt"))
    if point is None:
        raise UsageError(f"no Kodak PNGs in {plan.kodak_dir}")
    _repair(run_dir)
    record = read_record(run_dir)  # as it is now, after the minute of coding
    record["evals"][-1]["kodak"] = point
    files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}
    files["state.json"] = (json.dumps(record, indent=1) + "\n").encode()
    _swap_in(run_dir, files)
    return point


def export_run(plan: Plan, run: str, path: Path) -> Path:
    """Write a run's saved EMA weights as a codec checkpoint (for ``lic encode``, evaluation).

    The same file a slice exports at its end, from the state alone: what a fresh clone has.

    Raises:
        UsageError: the run has not started.
    """
    from lic.checkpoint import save_codec
    from lic.codecs import create_codec

    spec, run_dir = plan.run(run), plan.run_dir(run)
    record = read_record(run_dir)
    if record is None or record["step"] == 0:
        raise UsageError(f"run {run!r} has no saved state in {run_dir}")
    codec = create_codec(record["codec"])
    _load_into(codec, load_ema(run_dir), run_dir / "ema.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_codec(
        codec,
        path,
        lmbda=record["lmbda"],
        metric="mse",
        steps=record["step"],
        experiment=f"campaign/{plan.name}/{spec.name}",
    )
    return path


def _float_state(module: nn.Module) -> dict[str, Tensor]:
    return {
        k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
        for k, v in module.state_dict().items()
    }


def _compact_adam(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Adam's step counts and second moments (bf16); first moments are not kept."""
    state = optimizer.state_dict()
    compact = {}
    for index, entry in state["state"].items():
        compact[index] = {
            "step": float(entry["step"]),
            "exp_avg_sq": entry["exp_avg_sq"].to(torch.bfloat16).cpu(),
        }
    return {"state": compact, "param_groups": len(state["param_groups"])}


def _restore_adam(optimizer: torch.optim.Optimizer, compact: dict[str, Any]) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(compact["state"]) and max(int(i) for i in compact["state"]) >= len(params):
        raise UsageError("saved optimizer state does not fit the parameters (codec changed?)")
    for index, entry in compact["state"].items():
        param = params[int(index)]
        if entry["exp_avg_sq"].shape != param.shape:
            raise UsageError("saved optimizer state does not fit the parameters (codec changed?)")
        optimizer.state[param] = {
            "step": torch.tensor(entry["step"]),
            "exp_avg": torch.zeros_like(param),
            "exp_avg_sq": entry["exp_avg_sq"].to(device=param.device, dtype=param.dtype),
        }


def new_record(spec: RunSpec) -> dict[str, Any]:
    return {
        "run": spec.name,
        "codec": spec.codec,
        "lmbda": spec.lmbda,
        "step": 0,
        "images_seen": 0,
        "compute": {"cpu_core_hours": 0.0, "gpu_hours": 0.0},
        "slices": [],
        "evals": [],
    }


def cpu_seconds_per_step(plan: Plan, run: str) -> float | None:
    """What one step of ``run`` costs on a CPU, in core-seconds: its CPU slices' training time
    times their threads, over their steps; for a run trained only on a GPU, the cost of the run
    it starts from (``init``); None where neither has a CPU slice."""
    record = read_record(plan.run_dir(run))
    cpu = [
        part
        for part in (record or {}).get("slices", [])
        if part.get("device") != "cuda" and part["to_step"] > part["from_step"]
    ]
    if cpu:
        seconds = sum(part["train_seconds"] * part.get("threads", 1) for part in cpu)
        return seconds / sum(part["to_step"] - part["from_step"] for part in cpu)
    init = plan.run(run).init
    return cpu_seconds_per_step(plan, init) if init else None


def cpu_share(record: dict[str, Any]) -> float | None:
    """The CPU time a run's training processes had, over the core time they held (wall time ×
    threads, what ``cpu_core_hours`` counts), across its CPU slices that record both; None
    where none does. Below one: other work shared the cores (or threads waited)."""
    parts = [
        part
        for part in record.get("slices", [])
        if part.get("device") != "cuda" and "cpu_seconds" in part and part["train_seconds"] > 0
    ]
    held = sum(part["train_seconds"] * part.get("threads", 1) for part in parts)
    return sum(part["cpu_seconds"] for part in parts) / held if held else None


def core_hours(
    record: dict[str, Any], measured: dict[str, Any], cost: float | None
) -> float | None:
    """CPU core-hours a run had spent at a measurement, GPU steps counted at ``cost``
    (core-seconds per step, :func:`cpu_seconds_per_step`) rather than as GPU hours: a GPU
    hour of a GPU shared by several runs is not a core-hour. None where there were GPU steps
    and no cost to count them at."""
    gpu_steps = sum(
        max(0, min(part["to_step"], measured["step"]) - part["from_step"])
        for part in record["slices"]
        if part.get("device") == "cuda"
    )
    if gpu_steps and cost is None:
        return None
    return measured["cpu_core_hours"] + gpu_steps * (cost or 0.0) / 3600


def run_progress(plan: Plan) -> dict[str, int]:
    """Steps each run of the plan has reached (0 when not started)."""
    progress = {}
    for spec in plan.runs:
        record = read_record(plan.run_dir(spec.name))
        progress[spec.name] = record["step"] if record else 0
    return progress


def runnable(plan: Plan, progress: dict[str, int] | None = None) -> list[RunSpec]:
    """Runs below their target whose prerequisites have reached theirs, in plan order."""
    progress = run_progress(plan) if progress is None else progress
    return [
        spec
        for spec in plan.runs
        if progress[spec.name] < spec.steps
        and all(progress[run] >= steps for run, steps in spec.after.items())
    ]


# -- one slice of one run ----------------------------------------------------------------------


class _Stop:
    """Set by SIGTERM/SIGINT: the slice ends after the current step, with its state saved."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum, frame):
            cls.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


#: A hyper-latent channel is *live* when it costs more than this many bits per crop on average.
LIVE_Z_BITS = 0.5


def measurement_quality(codec: nn.Module) -> float | None:
    """The quality a run's learning curve measures: for a variable-rate codec the one whose λ
    is the middle level of the zoo's eight (quality 5 of ``*-vr``, λ 0.025), so that codecs
    with other levels (``student-medium-vr10``: its quality 7) stay comparable; None for a
    fixed-rate codec."""
    if not codec.variable_rate:
        return None
    from lic.codecs.zoo import VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE

    middle = codec.level_lmbdas(VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE)[
        VARIABLE_RATE_LEVELS // 2
    ]
    return codec.check_quality(round(codec.quality_for(middle), 4))


@torch.no_grad()
def measure_crops(
    codec: nn.Module, crops: Tensor, loss: nn.Module, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """RD loss, bpp and PSNR of ``codec`` on fixed crops, one at a time in eval mode (rounded
    latents), and the hyperprior's health: ``bpp_z``, the hyper-latent's bits per pixel, and
    ``live_z_channels``, how many of its channels carry bits (:data:`LIVE_Z_BITS`). Both near 0
    mean the hyperprior has collapsed: the first latent slice is coded without side information.
    ``ceiling_psnr`` is the PSNR of the transforms alone, nothing rounded
    (:meth:`~lic.codecs.codec.ChannelARCodec.reconstruct_unquantized`): what ever finer
    quantisation tends to.
    A variable-rate codec is measured at :func:`measurement_quality` (``loss`` at its λ).
    """
    codec.eval()
    totals = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "bpp_z": 0.0, "ceiling_mse": 0.0}
    z_bits: Tensor | float = 0.0
    quality = measurement_quality(codec)
    lmbda = codec.lmbda_at(quality) if codec.variable_rate else None
    for index in range(crops.shape[0]):
        x = crops[index : index + 1].to(device)
        out = codec(x, quality=quality, exact=False)
        terms = loss(out, x, lmbda)
        totals["loss"] += float(terms.loss)
        totals["bpp"] += float(terms.bpp)
        totals["mse"] += float(terms.mse)
        ceiling = codec.reconstruct_unquantized(x, quality)
        totals["ceiling_mse"] += float(torch.mean((ceiling - x) ** 2))
        bits = -torch.log2(out.likelihoods["z"].clamp_min(1e-9))
        totals["bpp_z"] += float(bits.sum()) / (x.shape[-2] * x.shape[-1])
        z_bits = z_bits + bits.sum(dim=(0, 2, 3))
    n = crops.shape[0]
    mse = totals["mse"] / n
    return {
        "loss": totals["loss"] / n,
        "bpp": totals["bpp"] / n,
        "psnr": 10 * math.log10(1 / max(mse, 1e-12)),
        "bpp_z": totals["bpp_z"] / n,
        "live_z_channels": int((z_bits / n > LIVE_Z_BITS).sum()),
        "ceiling_psnr": 10 * math.log10(1 / max(totals["ceiling_mse"] / n, 1e-12)),
    }


class RunTrainer:
    """Loads one run's state, trains it, measures it and saves it.

    Args:
        plan: the campaign plan.
        spec: the run.
        device: where to train.
        threads: CPU threads (recorded as the run's core count on CPU).
        seed: base of the run's random stream (mixed with the step, so a resumed run draws
            new crops rather than repeating the last slice's).
    """

    def __init__(
        self, plan: Plan, spec: RunSpec, device: torch.device, threads: int = 1, seed: int = 0
    ) -> None:
        from timm.utils import ModelEmaV3

        from lic.codecs import create_codec
        from lic.training.losses import RateDistortionLoss
        from lic.training.module import split_parameters

        self.plan, self.spec, self.device, self.threads = plan, spec, device, threads
        self.run_dir = plan.run_dir(spec.name)
        if self.run_dir.parent.is_dir():
            _repair(self.run_dir)
        self.record = read_record(self.run_dir) or new_record(spec)
        if "slices_open" in self.record:  # the last slice was killed after a periodic save
            self.record["slices"].append(self.record.pop("slices_open"))
        if self.record["codec"] != spec.codec:
            raise UsageError(
                f"run {spec.name!r} was trained as {self.record['codec']}, the plan says {spec.codec}"
            )
        self.codec = create_codec(spec.codec).to(device)
        self.adapters: nn.Module | None = None
        self.teacher: nn.Module | None = None
        self.schedule = None
        if spec.teacher:
            self._setup_distillation()
        kept = "EMA weights" if is_compacted(self.run_dir) else "record"
        if self.record["step"] > 0 and (kept == "EMA weights" or is_record_only(self.run_dir)):
            raise UsageError(
                f"run {spec.name!r} was kept as its {kept} alone when it reached its target "
                f"(keep: {spec.keep}): it cannot continue to {spec.steps} steps"
            )
        if self.record["step"] > 0:
            source = self.run_dir / "weights.pt"
            keys = ("codec", "adapters") if self.adapters is not None else ("codec",)
            weights = load_tensors(self.run_dir, "weights.pt", *keys)
            _load_into(self.codec, weights["codec"], source)
            if self.adapters is not None:
                _load_into(self.adapters, weights["adapters"], source)
        elif spec.init:
            grown: list[str] = []
            init_dir = plan.run_dir(spec.init)
            init_record = read_record(init_dir)
            state = load_ema(init_dir)
            if spec.codec.endswith("-vr") and init_record["codec"] == spec.codec[: -len("-vr")]:
                # a variable-rate run starts from its fixed-rate network; gains as initialised
                missing, unexpected = self.codec.load_state_dict(state, strict=False)
                if unexpected or set(missing) != {"log_gain", "log_inverse_gain"}:
                    raise UsageError(f"run {spec.name!r} cannot start from {spec.init!r}")
            elif init_record["codec"] != spec.codec:
                from lic.codecs.grow import load_grown, registered_lmbdas

                # a deeper codec (or one with more rate levels) grown from the trained one:
                # added residual blocks start as the identity, added levels at the gains the
                # trained codec extrapolates (lic.codecs.grow): the run starts where its init
                # stopped
                try:
                    source = registered_lmbdas(init_record["codec"])
                    grown = load_grown(self.codec, state, source)
                except ValueError as error:
                    raise UsageError(
                        f"run {spec.name!r} cannot start from {spec.init!r}: {error}"
                    ) from None
            else:
                _load_into(self.codec, state, init_dir / "ema.pt")
            self.record["init"] = {"run": spec.init, "step": init_record["step"]}
            blocks = [name for name in grown if not name.startswith("level ")]
            levels = [int(name.split()[1]) for name in grown if name.startswith("level ")]
            if blocks:
                self.record["init"]["grown_blocks"] = blocks
            if levels:
                self.record["init"]["grown_levels"] = levels
        self.transform_dtype = autocast_dtype(spec.precision, device)
        self.codec.transform_autocast = self.transform_dtype
        if spec.channels_last:
            self.codec.to(memory_format=torch.channels_last)
        self.ema = ModelEmaV3(self.codec, decay=spec.ema_decay, use_warmup=True)
        if self.record["step"] > 0:
            _load_into(self.ema.module, load_ema(self.run_dir), self.run_dir / "ema.pt")
        self.loss = RateDistortionLoss(spec.lmbda)
        main, aux = split_parameters(self.codec)
        if self.adapters is not None:
            main += list(self.adapters.parameters())
        self.main_params = main
        self.optimizer = torch.optim.Adam(main, lr=spec.lr)
        self.aux_optimizer = torch.optim.Adam(aux, lr=1e-3)
        if self.record["step"] > 0:
            optim = load_tensors(self.run_dir, "optim.pt", "main", "aux")
            try:
                _restore_adam(self.optimizer, optim["main"])
                self.aux_optimizer.load_state_dict(optim["aux"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"{self.run_dir / 'optim.pt'}: optimizer state does not fit the run "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
                ) from None
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + self.record["step"])

    def _setup_distillation(self) -> None:
        from lic.codecs import create_codec
        from lic.distill import Distiller, PhaseSchedule, build_term, default_terms

        spec = self.spec
        teacher_dir = self.plan.run_dir(spec.teacher)
        teacher_record = read_record(teacher_dir)
        self.teacher = create_codec(teacher_record["codec"]).to(self.device)
        _load_into(self.teacher, load_ema(teacher_dir), teacher_dir / "ema.pt")
        self.teacher.eval().requires_grad_(False)
        if math.isclose(teacher_record["lmbda"], spec.lmbda, rel_tol=1e-6) is False:
            raise UsageError(
                f"run {spec.name!r} (λ={spec.lmbda}) distils from a teacher trained at λ={teacher_record['lmbda']}"
            )
        self.teacher_step = teacher_record["step"]
        self.schedule = PhaseSchedule(list(spec.phases))
        terms = default_terms(spec.taps, spec.channel_temperature)
        for name, options in spec.terms.items():
            terms[name] = build_term(name, **(options or {}))
        self.distiller = Distiller(
            terms,
            self.schedule.phases,
            self.codec.feature_channels(),
            self.teacher.feature_channels(),
        ).to(self.device)
        self.adapters = self.distiller.adapters  # the terms' only parameters

    # -- training -------------------------------------------------------------------------

    def _distillation(self, batch: Tensor, output) -> tuple[Tensor | float, dict[str, float]]:
        from lic.distill import needs_teacher

        if self.schedule is None:
            return 0.0, {}
        phase = self.schedule.phase_at(self.record["step"])
        if not needs_teacher(phase):
            return 0.0, {}
        with torch.no_grad():
            self.teacher.transform_autocast = self.transform_dtype
            quality = {"quality": self.quality} if self.quality is not None else {}
            teacher_out = self.teacher(batch, exact=False, **quality)
        total, terms = self.distiller(phase, batch, output, teacher_out)
        return total, {k: v.detach().item() for k, v in terms.items()}

    def step(self, images: ResidentImages) -> dict[str, float] | None:
        """One training step; returns its terms, or None if the loss was not finite (skipped)."""
        spec, step = self.spec, self.record["step"]
        for group in self.optimizer.param_groups:
            group["lr"] = spec.lr_at(step)
        batch = images.sample(spec.batch, spec.crop_at(step), self.generator)
        if spec.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        self.codec.train()
        self.quality, lmbda = None, None
        if self.codec.variable_rate:  # one quality per batch, uniform over the range
            low, high = self.codec.quality_range
            draw = float(torch.rand((), generator=self.generator))
            self.quality = self.codec.check_quality(low + (high - low) * draw)
            lmbda = self.codec.lmbda_at(self.quality)
        output = self.codec(batch, quality=self.quality)
        terms = self.loss(output, batch, lmbda)
        extra, extra_logs = self._distillation(batch, output)
        aux_loss = self.codec.aux_loss()
        total = terms.loss + extra + aux_loss
        if not torch.isfinite(total):
            self.record.setdefault("nonfinite_steps", 0)
            self.record["nonfinite_steps"] += 1
            return None
        self.optimizer.zero_grad(set_to_none=True)
        self.aux_optimizer.zero_grad(set_to_none=True)
        total.backward()
        if spec.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.main_params, spec.clip_max_norm)
        self.optimizer.step()
        self.aux_optimizer.step()
        self.record["step"] = step + 1
        self.record["images_seen"] += spec.batch
        self.ema.update(self.codec, step=step + 1)
        values = {"loss": terms.loss, "bpp": terms.bpp, "psnr": terms.psnr}
        return {k: v.detach().item() for k, v in values.items()} | extra_logs

    # -- measuring ------------------------------------------------------------------------

    def evaluate_crops(self, crops: Tensor, ema: bool = True) -> dict[str, float]:
        """:func:`measure_crops` of the EMA weights or (``ema=False``) of the raw weights being
        trained (eval mode, float32; a variable-rate codec at its middle quality)."""
        codec = self.ema.module if ema else self.codec
        precision, codec.transform_autocast = codec.transform_autocast, None
        try:
            return measure_crops(codec, crops, self.loss, self.device)
        finally:
            codec.transform_autocast = precision

    def export(self, path: Path) -> Path:
        """Write the EMA weights as a codec checkpoint (coding tables updated), for lic encode."""
        from lic.checkpoint import save_codec
        from lic.codecs import create_codec

        codec = create_codec(self.spec.codec)
        codec.load_state_dict(_float_state(self.ema.module))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_codec(
            codec,
            path,
            lmbda=self.spec.lmbda,
            metric=self.loss.metric,
            steps=self.record["step"],
            experiment=f"campaign/{self.plan.name}/{self.spec.name}",
        )
        return path

    def evaluate_kodak(self, export_path: Path) -> dict[str, float] | None:
        """Mean bpp and PSNR over the Kodak folder through real bitstreams (not for selection)."""
        return kodak_point(self.plan.kodak_dir, export_path, self.device)

    # -- saving ---------------------------------------------------------------------------

    def save(self) -> None:
        if self.spec.keep != "all" and self.record["step"] >= self.spec.steps:
            final = {"ema.pt": _final_payload(_float_state(self.ema.module))}
            save_state(self.run_dir, final, self.record)
            return
        weights = {"codec": _float_state(self.codec)}
        if self.adapters is not None:
            weights["adapters"] = _float_state(self.adapters)
        tensors = {
            "weights.pt": weights,
            "ema.pt": _ema_payload(_float_state(self.ema.module), weights["codec"]),
            "optim.pt": {
                "main": _compact_adam(self.optimizer),
                "aux": self.aux_optimizer.state_dict(),
            },
        }
        save_state(self.run_dir, tensors, self.record)


def _add_compute(
    record: dict[str, Any], device: torch.device, threads: int, seconds: float
) -> None:
    if device.type == "cuda":
        record["compute"]["gpu_hours"] += seconds / 3600
    else:
        record["compute"]["cpu_core_hours"] += seconds * threads / 3600


def train_slice(
    plan: Plan,
    run: str,
    seconds: float,
    device: str = "cpu",
    threads: int = 1,
    save_every: float = 300.0,
    max_steps: int | None = None,
    evaluate: bool = True,
    export_dir: Path | None = None,
) -> dict[str, Any]:
    """Train run ``run`` for about ``seconds`` (or ``max_steps`` more steps), then save and measure.

    The state is saved every ``save_every`` seconds, at the end of training (before measuring,
    so that a failure or kill while measuring loses no step) and with the measurements, and on
    SIGTERM/SIGINT after the current step. Returns the run's record.
    """
    from lic.codecs.timing import synchronize

    spec = plan.run(run)
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device")
    if torch_device.type == "cpu":
        torch.set_num_threads(threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    _Stop.install()
    started = time.time()
    trainer = RunTrainer(plan, spec, torch_device, threads, seed=spec.seed)
    train_paths, held_paths = training_split(plan)
    images = ResidentImages(train_paths, torch_device)
    largest = max(side for _, side in spec.crops)
    if largest > images.min_side():
        raise UsageError(
            f"run {run!r} crops {largest} px, more than the smallest training photo ({images.min_side()} px)"
        )
    setup_seconds = time.time() - started
    record = trainer.record
    first_step = record["step"]
    segment = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **hardware(torch_device, threads),
        "precision": str(trainer.transform_dtype or "float32").replace("torch.", ""),
        "from_step": first_step,
    }
    if trainer.teacher is not None:
        segment["teacher_step"] = trainer.teacher_step
    deadline = started + seconds
    last_save = time.time()
    train_seconds = 0.0
    # CPU time this process spent in those steps (all its threads): below the wall time ×
    # threads that ``cpu_core_hours`` counts when other work shared the cores
    cpu_seconds = 0.0
    running: dict[str, float] = {}  # each term's sum over the steps that logged it
    logged: dict[str, int] = {}
    log.info(
        "run %s: step %d -> %d, %.0f s, %s", run, first_step, spec.steps, seconds, segment["name"]
    )

    def checkpoint() -> None:
        nonlocal train_seconds
        _add_compute(record, torch_device, threads, train_seconds)
        record["slices_open"] = {
            **segment,
            "to_step": record["step"],
            "train_seconds": train_seconds,
            "cpu_seconds": cpu_seconds,
        }
        trainer.save()
        _add_compute(record, torch_device, threads, -train_seconds)  # re-added at the end

    while record["step"] < spec.steps and time.time() < deadline and not _Stop.requested:
        if max_steps is not None and record["step"] - first_step >= max_steps:
            break
        tick, cpu_tick = time.time(), time.process_time()
        terms = trainer.step(images)
        synchronize(torch_device)
        train_seconds += time.time() - tick
        cpu_seconds += time.process_time() - cpu_tick
        if terms is not None:
            for key, value in terms.items():  # a phase's terms are logged in that phase only
                running[key] = running.get(key, 0.0) + value
                logged[key] = logged.get(key, 0) + 1
        if time.time() - last_save > save_every:
            checkpoint()
            last_save = time.time()

    _add_compute(record, torch_device, threads, train_seconds)
    segment |= {
        "to_step": record["step"],
        "train_seconds": round(train_seconds, 3),  # ms: a short slice (tests) is not 0
        "cpu_seconds": round(cpu_seconds, 3),
        "setup_seconds": round(setup_seconds, 1),
    }
    record.pop("slices_open", None)
    if record["step"] > first_step:
        record["slices"].append(segment)
        if evaluate:  # the steps are safe before the minute of measuring (a kill, a failure)
            trainer.save()
        measured: dict[str, Any] = {
            "step": record["step"],
            "images_seen": record["images_seen"],
            "cpu_core_hours": record["compute"]["cpu_core_hours"],
            "gpu_hours": record["compute"]["gpu_hours"],
            "train_running": {k: v / logged[k] for k, v in running.items()},
        }
        if evaluate:
            tick = time.time()
            held = ResidentImages(held_paths)
            held_crops = held.center_crops(plan.eval_crop, plan.eval_images)
            measured["heldout"] = trainer.evaluate_crops(held_crops)
            measured["heldout_raw"] = trainer.evaluate_crops(
                held_crops, ema=False
            )  # what the EMA buys
            measured["train_eval"] = trainer.evaluate_crops(
                images.center_crops(plan.eval_crop, plan.eval_images)
            )
            export = trainer.export((export_dir or plan.work_dir) / f"{run}.ckpt")
            kodak = trainer.evaluate_kodak(export)
            if kodak is not None:
                measured["kodak"] = kodak
            measured["eval_seconds"] = round(time.time() - tick, 1)
        record["evals"].append(measured)
    trainer.save()
    log.info("run %s: saved at step %d", run, record["step"])
    return record


def _photo_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"training folder not found: {folder}")
    paths = list_images(folder)  # the one listing rule of training and evaluation
    if not paths:
        raise UsageError(f"no photos in {folder}")
    return paths


def iter_records(plan: Plan) -> Iterator[tuple[RunSpec, dict[str, Any] | None]]:
    for spec in plan.runs:
        yield spec, read_record(plan.run_dir(spec.name))


__all__ = [
    "MAX_FILE_BYTES",
    "STATE_BUDGET_BYTES",
    "Plan",
    "ResidentImages",
    "RunSpec",
    "RunTrainer",
    "compact_finished",
    "core_hours",
    "cpu_seconds_per_step",
    "cpu_share",
    "expected_state_bytes",
    "export_run",
    "iter_records",
    "kodak_point",
    "load_ema",
    "load_plan",
    "measure_kodak",
    "reserved_state_bytes",
    "run_progress",
    "runnable",
    "split_holdout",
    "state_at",
    "state_bytes",
    "train_slice",
    "training_split",
    "unmeasured_runs",
]
