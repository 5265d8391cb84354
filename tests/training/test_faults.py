"""Training under faults, on both paths (Lightning's ``lic-train`` and the campaign).

- a training image that becomes unreadable after the dataset was listed: skipped with one
  warning and counted; more than half of them unreadable stops the run in one line;
- a checkpoint or state write that runs out of space (a file-size limit: the write fails with
  EFBIG, as it would with ENOSPC on a full disk): one line, a non-zero exit, and the previous
  checkpoint or state intact, loadable and resumed from;
- a checkpoint or state written by an older lic: resumed where a migration is documented,
  otherwise refused in one line naming what is missing or different.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lic.errors import CheckpointError, ImageError, LicError
from lic.files import list_images
from lic.train import train
from lic.training import campaign as cp
from lic.training.data import ImageDataModule, ImageFolder
from tests.conftest import REPO
from tests.training.conftest import compose_train, small_run_overrides
from tests.training.test_campaign import PLAN, SCRIPT

# -- helpers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """No file this process writes may grow beyond ``limit`` bytes (RLIMIT_FSIZE).

    A write past the limit fails with EFBIG, as one on a full disk fails with ENOSPC; SIGXFSZ,
    which would kill the process instead, is ignored meanwhile.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message and len(message) < 500, message
    for fragment in fragments:
        assert fragment in message, message


def _copy_photos(image_folder: Path, tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    shutil.copytree(image_folder, root)
    return root


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


# -- 1. images that become unreadable mid-run --------------------------------------------------


def test_an_image_unreadable_mid_run_is_skipped_once_and_counted(
    image_folder, tmp_path, caplog
) -> None:
    root = _copy_photos(image_folder, tmp_path)
    dataset = ImageFolder(root, crop_size=64)
    assert len(dataset) == 12
    deleted = dataset.paths[4]
    truncated = next(p for p in dataset.paths[5:] if p.suffix == ".png")
    deleted.unlink()
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])  # its header still reads fine
    with caplog.at_level(logging.WARNING, logger="lic.training.data"):
        for _ in range(3):
            for index in range(len(dataset)):
                assert dataset[index].shape == (3, 64, 64)
    assert dataset.unreadable == {deleted, truncated}
    messages = [r.getMessage() for r in caplog.records]
    assert sum(deleted.name in m for m in messages) == 1, messages
    assert sum(truncated.name in m for m in messages) == 1, messages
    assert "2 of 12 images" in messages[-1]


def test_too_many_unreadable_images_stop_in_one_line(image_folder, tmp_path) -> None:
    root = _copy_photos(image_folder, tmp_path)
    dataset = ImageFolder(root, crop_size=64)
    cached = ImageFolder(root, crop_size=64, cache=True)
    cached[11]  # decoded and kept in memory before the file goes
    for path in [*dataset.paths[:5], dataset.paths[11]]:
        path.unlink()
    for index in range(len(dataset)):
        assert dataset[index].shape == (3, 64, 64)  # half of them unreadable: it goes on
    assert len(dataset.unreadable) == 6
    assert cached[11].shape == (3, 64, 64) and not cached.unreadable  # served from memory
    dataset.paths[6].unlink()
    with pytest.raises(ImageError) as info:
        dataset[6]
    _one_line(str(info.value), "7 of 12 images", str(root), "FileNotFoundError")


def test_a_worker_error_reaches_the_user_as_one_line(image_folder, tmp_path) -> None:
    """A data-loading worker's error comes back with the worker's traceback in its message;
    the line shown to the user is the original one."""
    from lic.errors import message_line

    root = _copy_photos(image_folder, tmp_path)
    dataset = ImageFolder(root, crop_size=64)
    for path in dataset.paths:
        path.unlink()
    with pytest.raises(ImageError) as info:
        next(iter(DataLoader(dataset, batch_size=2, num_workers=1)))
    assert "Traceback" in str(info.value)  # what torch makes of it
    _one_line(message_line(info.value), "7 of 12 images", "became unreadable")
    assert message_line(LicError("plain")) == "plain"


def test_lightning_training_goes_on_when_an_image_vanishes(
    image_folder, tmp_path, monkeypatch, caplog
) -> None:
    root = _copy_photos(image_folder, tmp_path)
    gone: list[Path] = []
    setup = ImageDataModule.setup

    def setup_then_delete(self, stage=None) -> None:
        setup(self, stage)
        gone.append(self.train_set.paths[3])  # not the validation image (the first)
        gone[0].unlink()

    monkeypatch.setattr(ImageDataModule, "setup", setup_then_delete)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="lic.training.data"):
        train(compose_train(small_run_overrides(root, run, steps=6)))  # one epoch: all drawn
    assert _step(run / "checkpoints" / "last.ckpt") == 6
    assert (run / "codec.ckpt").is_file()
    warned = [r.getMessage() for r in caplog.records if gone[0].name in r.getMessage()]
    assert len(warned) == 1 and "1 of 12 images" in warned[0]


def test_campaign_photos_unreadable_at_load_are_skipped(image_folder, tmp_path, caplog) -> None:
    root = _copy_photos(image_folder, tmp_path)
    paths = list_images(root)
    paths[2].unlink()
    paths[5].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with caplog.at_level(logging.WARNING, logger="lic.training.campaign"):
        images = cp.ResidentImages(paths)
    assert len(images) == 10 and len(images.names) == 10
    assert images.unreadable == [paths[2], paths[5]]
    assert sum(paths[2].name in r.getMessage() for r in caplog.records) == 1
    for path in paths[:7]:
        path.unlink(missing_ok=True)
    with pytest.raises(ImageError) as info:
        cp.ResidentImages(paths)
    _one_line(str(info.value), "7 of 12 training photos")


# -- 2. a checkpoint or state write that runs out of space -------------------------------------


def test_save_codec_out_of_space_keeps_the_previous_file(tiny_checkpoint, tmp_path) -> None:
    import lic

    path = tmp_path / "codec.ckpt"
    shutil.copy(tiny_checkpoint, path)
    before = path.read_bytes()
    with file_size_limit(len(before) // 2), pytest.raises(CheckpointError) as info:
        lic.save_codec(lic.create_codec("student-tiny"), path)
    _one_line(str(info.value), f"cannot write {path}", "File too large")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["codec.ckpt"]  # no temporary file left
    assert lic.load_codec(path).fingerprint == lic.load_codec(tiny_checkpoint).fingerprint


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_lic_train_out_of_space_exits_in_one_line_and_resumes_later(image_folder, tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_train(small_run_overrides(image_folder, run, steps=2)))
    checkpoints = run / "checkpoints"
    last = checkpoints / "last.ckpt"
    before = last.read_bytes()
    limit = len(before) // 2  # logs and configs fit; a checkpoint does not

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [
        sys.executable,
        "-m",
        "lic.train",
        *small_run_overrides(image_folder, run, steps=4),
    ]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, errors
    _one_line(errors[0], "lic-train: error: cannot write", "step4.ckpt", "File too large")
    assert last.read_bytes() == before  # the step-2 checkpoint, untouched
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step2.ckpt"]
    train(compose_train(small_run_overrides(image_folder, run, steps=4)))  # space again
    assert _step(last) == 4


@pytest.fixture()
def setup(tmp_path: Path, image_folder: Path) -> tuple[Path, Path, Path]:
    """A shared folder (photos, a two-image 'kodak'), a plan file and a state folder."""
    shared = tmp_path / "shared"
    (shared / "photos").mkdir(parents=True)
    (shared / "kodak").mkdir()
    for photo in sorted(p for p in image_folder.iterdir() if p.is_file()):
        shutil.copy(photo, shared / "photos" / photo.name)
    plan = tmp_path / "t.yaml"
    plan.write_text(PLAN)
    return plan, shared, tmp_path / "state"


def _campaign_script():
    spec = importlib.util.spec_from_file_location("campaign_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_campaign_worker_out_of_space_keeps_the_state(setup, capsys) -> None:
    plan_path, shared, state = setup
    plan = cp.load_plan(plan_path, shared, state)
    cp.train_slice(plan, "scratch", seconds=120, max_steps=1, evaluate=False)
    run_dir = plan.run_dir("scratch")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    argv = [
        *("--plan", str(plan_path), "--shared", str(shared), "--state-dir", str(state)),
        *("worker", "--run", "scratch", "--seconds", "120", "--max-steps", "1", "--no-eval"),
    ]
    script = _campaign_script()
    capsys.readouterr()
    with file_size_limit(len(before["weights.pt"]) // 2):
        code = script.main(argv)
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    _one_line(errors[0], "campaign: error: cannot save run 'scratch'", "File too large")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["scratch"]
    assert cp.train_slice(plan, "scratch", seconds=120, max_steps=1, evaluate=False)["step"] == 2


def _failing_rename(target: str) -> Callable:
    """``Path.rename`` that fails once, for the first rename onto a path named ``target``."""
    rename, failed = Path.rename, []

    def fail_once(self: Path, destination):
        if Path(destination).name == target and not failed:
            failed.append(destination)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return rename(self, destination)

    return fail_once


def _failing_write(filename: str) -> Callable:
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if Path(path).name == filename and "w" in mode:
            handle.write(b"partial")
            handle.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return handle

    return fake_open


@pytest.mark.parametrize(
    "failure",
    ["write weights.pt", "write state.json", "rename to run.old", "rename to run"],
)
def test_a_failed_state_save_leaves_the_previous_state(tmp_path, monkeypatch, failure) -> None:
    """Whichever step of the save fails, the previous state is what stays, whole."""
    run_dir = tmp_path / "state" / "run"
    spec = cp.RunSpec("run", "student-tiny", 0.013, 10)
    record = cp.new_record(spec) | {"step": 1}
    cp.save_state(run_dir, {"weights.pt": {"codec": {"w": torch.ones(3)}}}, record)
    action, name = failure.split(" ", 1)
    name = name.removeprefix("to ")
    if action == "write":
        monkeypatch.setattr(cp, "open", _failing_write(name), raising=False)
    else:
        monkeypatch.setattr(Path, "rename", _failing_rename(name))
    with pytest.raises(CheckpointError) as info:
        cp.save_state(
            run_dir, {"weights.pt": {"codec": {"w": torch.zeros(3)}}}, record | {"step": 2}
        )
    _one_line(str(info.value), "cannot save run 'run'", "No space left on device")
    monkeypatch.undo()
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["run"]
    assert cp.read_record(run_dir)["step"] == 1
    assert torch.equal(cp.load_tensors(run_dir, "weights.pt")["codec"]["w"], torch.ones(3))


# -- 3. checkpoints and states written by an older lic -----------------------------------------


@pytest.fixture(scope="module")
def trained_run(image_folder, tmp_path_factory) -> Path:
    """A Lightning run of two steps: its ``last.ckpt`` is what the variants below alter."""
    run = tmp_path_factory.mktemp("older") / "run"
    train(compose_train(small_run_overrides(image_folder, run, steps=2)))
    return run / "checkpoints" / "last.ckpt"


def _without_rate_arguments(payload: dict) -> None:
    for key in ("rate_levels", "rate_range"):
        payload["hyper_parameters"]["codec_config"].pop(key)


@pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")  # another run folder
@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.pop("lic_nonfinite_in_a_row"),  # before non-finite steps were counted
        _without_rate_arguments,  # before variable-rate codecs
    ],
    ids=["no-nonfinite-count", "config-before-variable-rate"],
)
def test_an_older_training_checkpoint_with_a_migration_resumes(
    trained_run, image_folder, tmp_path, change
) -> None:
    payload = torch.load(trained_run, map_location="cpu", weights_only=True)
    change(payload)
    old = tmp_path / "old.ckpt"
    torch.save(payload, old)
    run = tmp_path / "run"
    overrides = small_run_overrides(image_folder, run, steps=3) + [f"resume={old}"]
    train(compose_train(overrides))
    assert _step(run / "checkpoints" / "last.ckpt") == 3  # continued at step 2, not restarted


def _as_variable_rate(payload: dict) -> None:
    """As if written by a variable-rate codec that did not store its gains yet."""
    payload["hyper_parameters"]["codec"] = "student-tiny-vr"
    payload["hyper_parameters"]["codec_config"]["rate_levels"] = 8


REFUSED = {
    "no-weight": (
        lambda p: p["state_dict"].pop("codec.g_s.3.bias"),
        [],
        "missing codec.g_s.3.bias",
    ),
    "no-gains": (_as_variable_rate, ["codec=student-tiny-vr"], "missing codec.log_gain"),
    "no-optimizer": (lambda p: p.pop("optimizer_states"), [], "lacks optimizer_states"),
    "no-schedule": (lambda p: p.pop("lr_schedulers"), [], "lacks lr_schedulers"),
    "no-loops": (lambda p: p.pop("loops"), [], "lacks loops"),
    "no-version": (lambda p: p.pop("pytorch-lightning_version"), [], "pytorch-lightning_version"),
    "no-hparams": (lambda p: p.pop("hyper_parameters"), [], "lacks hyper_parameters"),
    "other-config": (
        lambda p: p["hyper_parameters"]["codec_config"].update(window_size=4),
        [],
        "window_size 4 in the checkpoint, 8 here",
    ),
    "other-codec": (
        lambda p: p["hyper_parameters"].update(codec="teacher-tiny"),
        [],
        "holds a 'teacher-tiny' run",
    ),
    "other-lambda": (lambda p: p["hyper_parameters"].update(lmbda=0.0067), [], "lambda 0.0067"),
    "not-a-dict": (None, [], "not a Lightning training checkpoint"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_an_older_training_checkpoint_is_refused_in_one_line(
    trained_run, image_folder, tmp_path, name
) -> None:
    change, overrides, fragment = REFUSED[name]
    payload = torch.load(trained_run, map_location="cpu", weights_only=True)
    if change is None:
        payload = [payload]
    else:
        change(payload)
    old = tmp_path / "old.ckpt"
    torch.save(payload, old)
    run = tmp_path / "run"
    cfg = compose_train(
        small_run_overrides(image_folder, run, steps=3) + [f"resume={old}", *overrides]
    )
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    _one_line(str(info.value), str(old), fragment)
    assert not (run / "checkpoints").exists()  # refused before anything was trained


@pytest.fixture(scope="module")
def campaign_state(image_folder, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Plan, shared folder and a state folder where run ``scratch`` has trained one step."""
    root = tmp_path_factory.mktemp("campaign")
    shared = root / "shared"
    (shared / "photos").mkdir(parents=True)
    for photo in sorted(p for p in image_folder.iterdir() if p.is_file()):
        shutil.copy(photo, shared / "photos" / photo.name)
    plan = root / "t.yaml"
    plan.write_text(PLAN)
    cp.train_slice(
        cp.load_plan(plan, shared, root / "state"), "scratch", 120, max_steps=1, evaluate=False
    )
    return plan, shared, root / "state"


def _edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run_dir: Path) -> None:
        record = json.loads((run_dir / name).read_text())
        change(record)
        (run_dir / name).write_text(json.dumps(record))

    return edit


def _edit_tensors(name: str, change: Callable[[dict], dict]) -> Callable[[Path], None]:
    """Rewrite ``name`` as ``change`` makes it (``change`` returns the new payload)."""

    def edit(run_dir: Path) -> None:
        payload = torch.load(run_dir / name, weights_only=True)
        torch.save(change(payload), run_dir / name)

    return edit


def _drop(key: str, within: str | None = None) -> Callable[[dict], dict]:
    def change(payload: dict) -> dict:
        (payload[within] if within else payload).pop(key)
        return payload

    return change


def _full_float_ema(run_dir: Path) -> None:
    """The first campaign format: ``ema.pt`` a float32 state dict, not a bf16 difference."""
    torch.save(cp.load_ema(run_dir), run_dir / "ema.pt")


OLDER_STATES = {
    "record-without-images-seen": (
        _edit_json("state.json", lambda r: r.pop("images_seen")),
        "lacks images_seen",
    ),
    "record-without-compute-hours": (
        _edit_json("state.json", lambda r: r["compute"].pop("gpu_hours")),
        "lacks compute.gpu_hours",
    ),
    "record-unparsable": (
        lambda d: (d / "state.json").write_text('<<<<<<< HEAD\n{"step": 1}\n'),
        "not valid JSON",
    ),
    "weights-a-bare-state-dict": (
        _edit_tensors("weights.pt", lambda p: p["codec"]),
        "weights.pt: the campaign state file lacks codec",
    ),
    "weights-without-an-entry": (
        _edit_tensors("weights.pt", _drop("g_s.3.bias", within="codec")),
        "missing g_s.3.bias",
    ),
    "optimizer-without-aux": (_edit_tensors("optim.pt", _drop("aux")), "aux"),
    "ema-full-float32": (_full_float_ema, None),  # a migration: it loads
}


@pytest.mark.parametrize("name", sorted(OLDER_STATES))
def test_an_older_campaign_state_resumes_or_is_refused_in_one_line(
    campaign_state, tmp_path, name
) -> None:
    plan_path, shared, state = campaign_state
    copy = tmp_path / "state"
    shutil.copytree(state, copy)
    plan = cp.load_plan(plan_path, shared, copy)
    change, fragment = OLDER_STATES[name]
    change(plan.run_dir("scratch"))
    if fragment is None:
        record = cp.train_slice(plan, "scratch", 120, max_steps=1, evaluate=False)
        assert record["step"] == 2
        return
    with pytest.raises(CheckpointError) as info:
        cp.train_slice(plan, "scratch", 120, max_steps=1, evaluate=False)
    _one_line(str(info.value), "scratch", fragment)


def test_the_record_keys_are_what_a_new_record_holds() -> None:
    record = cp.new_record(cp.RunSpec("r", "student-tiny", 0.01, 1))
    assert set(record) == set(cp.RECORD_KEYS)
    assert set(record["compute"]) == set(cp.COMPUTE_KEYS)
