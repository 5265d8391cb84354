"""``feature_channels()`` states, from the configuration, the widths ``forward`` produces."""

from __future__ import annotations

import pytest
import torch

import lic
from lic.codecs import create_codec
from tests.codecs.test_registry import PAPER_SCALE


@pytest.mark.parametrize(
    "name", [n for n in lic.list_codecs() if n.removesuffix("-vr") not in PAPER_SCALE]
)
def test_feature_channels_are_the_widths_forward_produces(name: str) -> None:
    codec = create_codec(name).eval()
    with torch.no_grad():
        features = codec(torch.rand(1, 3, 64, 64), exact=False).features
    assert {tap: f.shape[1] for tap, f in features.items()} == codec.feature_channels()
