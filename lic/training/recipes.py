"""What the Hydra recipes (``recipes/``) need from Python: the codec group and the composer.

The ``codec`` group has no YAML files: every registered codec is an option, stored in Hydra's
ConfigStore as ``{_target_: lic.codecs.create_codec, name: <codec>}``. A codec registered with
:func:`lic.codecs.register_codec` is therefore a recipe option as soon as
:func:`register_recipes` runs (``lic-train`` runs it at start-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from lic.codecs import list_codecs
from lic.paths import recipes_dir, register_resolvers


def register_recipes() -> None:
    """Store every registered codec as an option of the recipes' ``codec`` group, and register
    lic's OmegaConf resolvers (:func:`lic.paths.register_resolvers`). Idempotent."""
    register_resolvers()
    store = ConfigStore.instance()
    for name in list_codecs():
        store.store(
            group="codec", name=name, node={"_target_": "lic.codecs.create_codec", "name": name}
        )


def compose_recipe(
    overrides: Sequence[str] = (), config_name: str = "train", recipes: Path | None = None
) -> DictConfig:
    """Compose a recipe as ``lic-train`` would, without running it.

    Args:
        overrides: command-line style overrides, e.g. ``["experiment=quick"]``.
        config_name: the primary config.
        recipes: the recipe folder (default: :func:`lic.paths.recipes_dir`).
    """
    from hydra import compose, initialize_config_dir

    register_recipes()
    with initialize_config_dir(config_dir=str(recipes or recipes_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))
