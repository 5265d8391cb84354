"""CUDA tests: everything marked ``cuda`` is skipped, with the reason, where torch sees no GPU.

The tests live in this folder (``pytestmark = pytest.mark.cuda`` in each module); this hook
also covers a test marked ``cuda`` elsewhere as long as this folder is collected with it.
``python scripts/gpu_checks.py -o OUT`` runs them on a GPU and records the counts.
"""

from __future__ import annotations

import pytest
import torch

NO_CUDA = "no CUDA device"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cuda() -> torch.device:
    """The CUDA device the tests run on."""
    return torch.device("cuda")
