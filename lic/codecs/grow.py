"""Start a deeper codec from the weights of a shallower one, computing the same function.

A codec with more residual blocks in a stage (for instance ``student-medium-deep-ga``, whose
analysis transform has three blocks where ``student-medium`` has one) takes every weight the
two share from the trained codec; each block the trained codec lacks starts as the identity,
its last convolution zeroed, so the grown codec's output is the trained codec's, bit for bit
up to float rounding, and training continues from there instead of from scratch (function-
preserving growth, as in Net2Net, Chen et al. 2016, with the zero-initialised residual branch
of Fixup / ReZero). The zeroed convolution still receives gradients at the first step, so the
new blocks start learning at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lic.codecs.layers import ResidualBlock


def load_grown(codec: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    """Load ``state`` into ``codec``, starting the residual blocks it lacks as the identity.

    Every tensor of ``state`` must fit a tensor of ``codec`` (same name and shape), and every
    tensor of ``codec`` that ``state`` lacks must belong to a :class:`ResidualBlock` that
    ``state`` lacks entirely; anything else is a ValueError naming the first offender. The
    added blocks keep their initial first convolution and get a zero last convolution.

    Returns:
        The names of the added blocks (empty when ``state`` fits ``codec`` exactly).
    """
    own = codec.state_dict()
    unexpected = [key for key in state if key not in own]
    if unexpected:
        raise ValueError(f"the weights have {unexpected[0]!r}, which the grown codec lacks")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"{key!r} is {tuple(value.shape)} in the weights, {tuple(own[key].shape)} in "
                "the grown codec: only added residual blocks can be grown"
            )
    added = {
        name: module
        for name, module in codec.named_modules()
        if isinstance(module, ResidualBlock)
        and not any(f"{name}.{key}" in state for key in module.state_dict())
    }
    covered = {f"{name}.{key}" for name, block in added.items() for key in block.state_dict()}
    missing = [key for key in own if key not in state and key not in covered]
    if missing:
        raise ValueError(f"the weights lack {missing[0]!r}, which is not in an added block")
    codec.load_state_dict(state, strict=False)
    with torch.no_grad():
        for block in added.values():
            block.body[-1].weight.zero_()
            block.body[-1].bias.zero_()
    return list(added)
