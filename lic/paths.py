"""Where lic finds things: the shared material, datasets, and the layout of training runs.

One home for each location, so that the command line, scripts, tests and recipes agree.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def source_checkout() -> Path | None:
    """The source checkout lic runs from (the folder holding ``lic/`` and ``pyproject.toml``).

    None when lic runs as an installed package (a wheel in ``site-packages``).
    """
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "lic").is_dir() else None


def shared_dir() -> Path:
    """The project's shared material (training photos, Kodak, reference curves). One rule:

    1. ``$LIC_SHARED`` when it is set;
    2. else, running from a source checkout, ``shared`` beside that checkout
       (``<checkout>/../shared``), whatever the working directory;
    3. else (an installed lic) ``../shared`` from the working directory.

    Scripts, tests and recipes (``${lic.shared:}``, see :func:`register_resolvers`) all use it.
    """
    if os.environ.get("LIC_SHARED"):
        return Path(os.environ["LIC_SHARED"])
    checkout = source_checkout()
    return checkout.parent / "shared" if checkout is not None else Path("../shared")


def portable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as recorded in files that travel (checkpoint metadata, manifests).

    A path inside :func:`shared_dir` is written ``<shared>/datasets/train``, so that no file
    records where the shared folder happened to be on the machine that wrote it; any other
    path is written as given.
    """
    try:
        relative = Path(path).resolve().relative_to(shared_dir().resolve())
    except ValueError:
        return str(path)
    return f"<shared>/{relative.as_posix()}"


def recorded_path(path: str | os.PathLike[str]) -> str:
    """How an input file is named in results and reports: never a path of this machine.

    Shipped default weights as ``lic/weights/...``; the shared material as
    :func:`portable_path` writes it; a file under the working directory relative to it; any
    other absolute path (a temporary export, say) by its file name alone.
    """
    from lic.pretrained import WEIGHTS_DIR

    resolved = Path(path).resolve()
    if resolved.is_relative_to(WEIGHTS_DIR):
        return f"lic/weights/{resolved.relative_to(WEIGHTS_DIR).as_posix()}"
    shared = portable_path(resolved)
    if shared.startswith("<shared>/"):
        return shared
    if resolved.is_relative_to(Path.cwd().resolve()):
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    return Path(path).name if Path(path).is_absolute() else str(path)


def data_root() -> Path:
    """Where ``lic datasets download`` puts datasets by default: ``$LIC_DATA``, else ``datasets``."""
    return Path(os.environ.get("LIC_DATA", "datasets"))


#: Where ``lic-train`` keeps its runs, relative to the working directory (recipe ``run_dir``).
RUNS_DIR = Path("runs")
#: A run folder is named for its rate point: ``lmbda_<λ>``.
LMBDA_PREFIX = "lmbda_"
#: The exported codec checkpoint of a run (``ExportCodec``), what ``lic encode`` takes.
CODEC_FILE = "codec.ckpt"
#: Bits per pixel and PSNR of the validation images through real bitstreams, beside the export.
REAL_BITS_FILE = "real-bits.json"


@dataclass(frozen=True)
class RunDir:
    """One training run's folder, ``<runs>/<name>/lmbda_<λ>/``, and the files found in it.

    ``lic-train`` writes there: ``codec.ckpt`` and ``real-bits.json`` at the end, Lightning
    checkpoints in ``checkpoints/`` (``last.ckpt`` resumes), ``weights-by-rank.json``, the
    composed recipe in ``.hydra/config.yaml``, and ``logs/``, ``tensorboard/``;
    ``scripts/train_default.py`` adds ``train.log``.
    """

    path: Path

    @property
    def lmbda(self) -> float:
        """The rate point, read from the folder name."""
        return float(self.path.name.removeprefix(LMBDA_PREFIX))

    @property
    def codec(self) -> Path:
        return self.path / CODEC_FILE

    @property
    def real_bits(self) -> Path:
        return self.path / REAL_BITS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def weights_by_rank(self) -> Path:
        return self.path / "weights-by-rank.json"

    @property
    def config(self) -> Path:
        """The recipe the run was composed from, as Hydra saved it (interpolations unresolved)."""
        return self.path / ".hydra" / "config.yaml"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"


def run_dir(name: str, lmbda: float, runs: str | os.PathLike[str] = RUNS_DIR) -> RunDir:
    """The folder of run ``name`` at ``lmbda`` under ``runs`` (default ``runs/``)."""
    return RunDir(Path(runs) / name / f"{LMBDA_PREFIX}{lmbda}")


def run_dirs(name: str, runs: str | os.PathLike[str] = RUNS_DIR) -> list[RunDir]:
    """Every rate point of run ``name`` under ``runs`` that has a folder, lowest λ first."""
    found = (RunDir(p) for p in (Path(runs) / name).glob(f"{LMBDA_PREFIX}*") if p.is_dir())
    return sorted(found, key=lambda run: run.lmbda)


def register_resolvers() -> None:
    """Register lic's OmegaConf resolvers; call it before composing a recipe (idempotent).

    - ``${lic.shared:}``: :func:`shared_dir`, so recipes find the shared material by the same
      rule as everything else.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("lic.shared"):
        OmegaConf.register_new_resolver("lic.shared", lambda: str(shared_dir()))


def recipes_dir() -> Path:
    """The Hydra recipe folder that ``lic-train`` composes from (``config_path``).

    In order:

    1. ``$LIC_RECIPES``, if set and not empty;
    2. the repository's top-level ``recipes/`` when lic runs from a source checkout (an
       editable install included), so edits there take effect at once;
    3. the copy installed with the package (``lic/recipes/``, from the wheel).

    A recipe folder of one's own is added on top with Hydra's standard options rather than by
    replacing this one: ``lic-train --config-dir DIR experiment=mine`` (or
    ``hydra.searchpath=[file://DIR]``); its groups and experiments extend those found here.
    """
    override = os.environ.get("LIC_RECIPES")
    if override:
        return Path(override)
    checkout = source_checkout()
    if checkout is not None and (checkout / "recipes" / "train.yaml").is_file():
        return checkout / "recipes"
    return Path(__file__).resolve().parent / "recipes"


def device_tree_bytes(repo: str | os.PathLike[str]) -> int:
    """Bytes a device command sends of ``repo``: tracked files and untracked ones git does not
    ignore (what the GPU slice and the GPU checks must fit beside what they carry)."""
    repo = Path(repo)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    files = (repo / name.decode() for name in listed if name)
    return sum(path.stat().st_size for path in files if path.is_file())
