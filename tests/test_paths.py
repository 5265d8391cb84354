"""Where lic finds things: one rule for the shared material, one layout for run folders."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from lic import paths
from lic.paths import register_resolvers, run_dir, run_dirs, shared_dir
from tests.conftest import REPO


def test_shared_dir_is_lic_shared_else_beside_the_checkout_whatever_the_cwd(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LIC_SHARED", str(tmp_path / "elsewhere"))
    assert shared_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("LIC_SHARED")
    monkeypatch.chdir(tmp_path)
    assert paths.source_checkout() == REPO
    assert shared_dir() == REPO.parent / "shared"
    monkeypatch.setattr(paths, "source_checkout", lambda: None)  # an installed lic
    assert shared_dir() == Path("../shared")


def test_recipes_resolve_the_shared_dir_by_the_same_rule(tmp_path, monkeypatch) -> None:
    register_resolvers()
    register_resolvers()  # idempotent
    monkeypatch.setenv("LIC_SHARED", str(tmp_path))
    config = OmegaConf.create(
        {"shared_dir": "${lic.shared:}", "train": "${shared_dir}/datasets/train"}
    )
    assert config.train == f"{tmp_path}/datasets/train"


def test_run_folder_layout(tmp_path) -> None:
    run = run_dir("quick", 0.013)
    assert run.path == Path("runs/quick/lmbda_0.013") and run.lmbda == 0.013
    assert run.codec == run.path / "codec.ckpt" and run.real_bits == run.path / "real-bits.json"
    assert run.last_checkpoint == run.path / "checkpoints" / "last.ckpt"
    assert run.config == run.path / ".hydra" / "config.yaml"
    for lmbda in (0.013, 0.0018, 0.0067):
        run_dir("sweep", lmbda, tmp_path).path.mkdir(parents=True)
    (tmp_path / "sweep" / "notes.txt").write_text("not a run")
    assert [r.lmbda for r in run_dirs("sweep", tmp_path)] == [0.0018, 0.0067, 0.013]
    assert run_dirs("absent", tmp_path) == []


def test_paths_in_the_shared_folder_are_recorded_without_the_machine_s_location(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LIC_SHARED", str(tmp_path / "shared"))
    assert (
        paths.portable_path(tmp_path / "shared" / "datasets" / "train") == "<shared>/datasets/train"
    )
    assert paths.portable_path(tmp_path / "photos") == str(tmp_path / "photos")


def test_files_in_results_are_named_without_the_machine_s_location(tmp_path, monkeypatch) -> None:
    from lic.pretrained import WEIGHTS_DIR

    monkeypatch.setenv("LIC_SHARED", str(tmp_path / "shared"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert paths.recorded_path(WEIGHTS_DIR / "a.ckpt") == "lic/weights/a.ckpt"
    assert paths.recorded_path(tmp_path / "shared" / "k.json") == "<shared>/k.json"
    assert paths.recorded_path(tmp_path / "work" / "runs" / "c.ckpt") == "runs/c.ckpt"
    assert paths.recorded_path("runs/c.ckpt") == "runs/c.ckpt"
    assert paths.recorded_path(tmp_path / "elsewhere" / "x.ckpt") == "x.ckpt"  # a temporary export
    assert paths.recorded_path("../y.json") == "../y.json"  # relative: as given
