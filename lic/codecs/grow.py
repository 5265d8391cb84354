"""Start a deeper codec, or one with more rate levels, from the weights of a trained one,
computing the same function.

A codec with more residual blocks in a stage (for instance ``student-medium-deep-ga``, whose
analysis transform has three blocks where ``student-medium`` has one) takes every weight the
two share from the trained codec; each block the trained codec lacks starts as the identity,
its last convolution zeroed, so the grown codec's output is the trained codec's, bit for bit
up to float rounding, and training continues from there instead of from scratch (function-
preserving growth, as in Net2Net, Chen et al. 2016, with the zero-initialised residual branch
of Fixup / ReZero). The zeroed convolution still receives gradients at the first step, so the
new blocks start learning at once.

A variable-rate codec with more trained levels (for instance ``student-medium-vr10``, two levels
below ``student-medium-vr``'s eight, at the same λ spacing) grows the same way: the trained
levels' gains go to the levels of the same λ, so every quality the trained codec had codes as
before under its new number, and each added level starts from the gains the trained codec
would extrapolate there (its log-linear interpolation carried past its end). Those extrapolated
gains already code sensibly (the default's two extrapolated levels below quality 1 code Kodak
at 0.133 and 0.094 bpp, 27.1 and 25.8 dB, against 0.187 bpp, 28.3 dB, at quality 1, estimated
bpp); training then fits them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lic.codecs.layers import ResidualBlock

#: The per-level tensors of a variable-rate codec (one row per trained λ).
GAIN_KEYS = ("log_gain", "log_inverse_gain")


def load_grown(
    codec: nn.Module,
    state: Mapping[str, Tensor],
    source_lmbdas: Sequence[float] | None = None,
) -> list[str]:
    """Load ``state`` into ``codec``, starting the residual blocks and rate levels it lacks as
    the trained codec would compute them.

    Every tensor of ``state`` must fit a tensor of ``codec`` (same name and shape), and every
    tensor of ``codec`` that ``state`` lacks must belong to a :class:`ResidualBlock` that
    ``state`` lacks entirely; anything else is a ValueError naming the first offender. The
    added blocks keep their initial first convolution and get a zero last convolution.

    The gains of a variable-rate codec may have more rows (levels) than ``state``'s; then
    ``source_lmbdas``, the trained codec's λ per level, must be given and must be consecutive
    levels of ``codec``'s own (:attr:`~lic.codecs.codec.ChannelARCodec.trained_lmbdas`, to 1e-4
    relative), and each added level starts at the extrapolated gains (module docstring).

    Returns:
        The names of the added blocks, then ``level N`` for each added rate level (quality
        numbers of ``codec``); empty when ``state`` fits ``codec`` exactly.
    """
    from lic.checkpoint import CODING_TABLE_SUFFIXES

    own = codec.state_dict()
    unexpected = [key for key in state if key not in own]
    if unexpected:
        raise ValueError(f"the weights have {unexpected[0]!r}, which the grown codec lacks")
    state, levels = _grow_levels(codec, state, source_lmbdas)
    for key, value in state.items():
        # a saved codec's coding tables have the size its weights gave them: loading resizes
        if own[key].shape != value.shape and not key.endswith(CODING_TABLE_SUFFIXES):
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
    return list(added) + [f"level {index + 1}" for index in levels]


def _grow_levels(
    codec: nn.Module, state: Mapping[str, Tensor], source_lmbdas: Sequence[float] | None
) -> tuple[Mapping[str, Tensor], list[int]]:
    """``state`` with its gain rows placed at the levels of ``codec`` that share their λ and
    the other levels extrapolated; the indices of those added levels. ``state`` unchanged (and
    no levels) when its gains already have ``codec``'s shape."""
    own = codec.state_dict()
    if not all(k in state and k in own for k in GAIN_KEYS):
        return state, []
    trained, target = state[GAIN_KEYS[0]].shape[0], own[GAIN_KEYS[0]].shape[0]
    if trained == target:
        return state, []
    if (
        trained < 2
        or target < trained
        or state[GAIN_KEYS[0]].shape[1:] != own[GAIN_KEYS[0]].shape[1:]
    ):
        raise ValueError(
            f"the weights' gains are {tuple(state[GAIN_KEYS[0]].shape)}, the grown codec's "
            f"{tuple(own[GAIN_KEYS[0]].shape)}: only added rate levels can be grown"
        )
    if source_lmbdas is None or len(source_lmbdas) != trained:
        raise ValueError(
            f"growing {trained} rate levels to {target} needs the {trained} trained λ "
            "(source_lmbdas)"
        )
    lmbdas = codec.trained_lmbdas
    offset = next(
        (
            start
            for start in range(target - trained + 1)
            if all(
                math.isclose(lmbdas[start + i], v, rel_tol=1e-4)
                for i, v in enumerate(source_lmbdas)
            )
        ),
        None,
    )
    if offset is None:
        raise ValueError(
            f"the trained levels (λ {source_lmbdas[0]:.5g}–{source_lmbdas[-1]:.5g}) are not "
            f"consecutive levels of the grown codec's (λ {lmbdas[0]:.5g}–{lmbdas[-1]:.5g})"
        )
    grown = dict(state)
    for key in GAIN_KEYS:
        rows = state[key]
        # level i of the grown codec is trained level (i - offset); outside 0..trained-1 the
        # codec's own log-linear interpolation of its first (last) two levels, carried on
        index = torch.arange(target, dtype=rows.dtype)[:, None] - offset
        low = rows[0] + index * (rows[1] - rows[0])
        high = rows[-1] + (index - (trained - 1)) * (rows[-1] - rows[-2])
        out = torch.where(index < 0, low, high)
        out[offset : offset + trained] = rows
        grown[key] = out
    added = [i for i in range(target) if not offset <= i < offset + trained]
    return grown, added


def registered_lmbdas(name: str) -> list[float] | None:
    """The λ of each trained level of the registered codec ``name`` (None: a fixed-rate codec),
    from its configuration, without building it: what :func:`load_grown` needs as
    ``source_lmbdas`` for weights of that codec."""
    from lic.codecs.codec import ChannelARCodec
    from lic.codecs.registry import resolve_config

    config = resolve_config(name)
    if not config.get("rate_levels"):
        return None
    return ChannelARCodec.level_lmbdas(config["rate_levels"], config["rate_range"])
