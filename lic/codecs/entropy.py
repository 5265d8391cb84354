"""Channel-wise autoregressive mean–scale Gaussian entropy model with latent residual prediction.

Minnen & Singh, "Channel-wise autoregressive entropy models for learned image compression",
ICIP 2020. The latent ``y`` is split into ``num_slices`` groups of channels; slice ``i`` is
modelled by a Gaussian whose mean and scale come from the hyperprior and from the already
decoded slices ``0..i-1``. After quantisation a latent residual prediction (LRP) corrects the
quantisation error of the slice from the same context::

    hyper_means, hyper_scales ─┬─────────────────┬───────────────┐
                               │                 │               │
    ŷ_0 .. ŷ_{i-1} ──────────┬─┴─> mean_i ──> μ_i │               │
                             └───> scale_i ──> σ_i               │
                                   quantise y_i with (μ_i, σ_i) ─> ŷ_i
                                   ŷ_i += ½·tanh(lrp_i(μ-context, ŷ_i))

:meth:`SliceContextModel.run` is the only implementation of that loop. ``forward``,
``compress`` and ``decompress`` of the codec differ only in the quantiser they hand it, so the
encoder and the decoder cannot drift apart. The float loop that training optimises and the
fixed-point loop that codes are the same loop too, run with another :class:`Arithmetic`:

- :data:`FLOAT` (:class:`FloatArithmetic`): float32 with gradients, for training and for the
  fast forward of a frozen teacher;
- :data:`FIXED_POINT` (:class:`FixedPointArithmetic`): integer-valued float64
  (:mod:`lic.codecs.exact`), for coding and evaluation, so that the means, scales and scale
  indexes are the same integers on every thread count and device.

An arithmetic says only how values are represented (to and from real float32), how a network
is evaluated and how the LRP correction ``ŷ + ½·tanh(lrp)`` is added; the slice order, the
contexts each network sees and the use of its outputs live in the loop alone. That the two
arithmetics compute the same functions to within rounding is checked on the shipped weights
(``tests/codecs/test_arithmetics.py``: real bits against the float rate estimate, and the
reconstructions).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
from compressai.entropy_models import GaussianConditional
from torch import Tensor, nn

from lic.codecs import exact as fx

#: Called for slice ``i`` with its predicted mean and scale; returns the quantised slice.
SliceQuantizer = Callable[[int, Tensor, Tensor], Tensor]


class Arithmetic(Protocol):
    """How the slice loop computes: the representation of values and the operations on them.

    Values in the loop ("working values") are in the arithmetic's representation; the
    quantiser and the caller see real float32 values.
    """

    def scope(self) -> AbstractContextManager:
        """Context the loop runs in (``torch.no_grad()`` where gradients cannot flow)."""
        ...

    def from_real(self, x: Tensor) -> Tensor:
        """Real values to working values."""
        ...

    def to_real(self, v: Tensor) -> Tensor:
        """Working values to real float32 values."""
        ...

    def apply(self, network: nn.Module, v: Tensor) -> Tensor:
        """``network`` (convolutions and activations) evaluated on working values."""
        ...

    def refine(self, y_hat: Tensor, lrp: Tensor) -> Tensor:
        """The latent residual prediction step ``ŷ + ½·tanh(lrp)`` on working values."""
        ...


class FloatArithmetic:
    """Float32, differentiable: working values are the real values themselves."""

    def scope(self) -> AbstractContextManager:
        return nullcontext()

    def from_real(self, x: Tensor) -> Tensor:
        return x

    def to_real(self, v: Tensor) -> Tensor:
        return v

    def apply(self, network: nn.Module, v: Tensor) -> Tensor:
        return network(v)

    def refine(self, y_hat: Tensor, lrp: Tensor) -> Tensor:
        return y_hat + 0.5 * torch.tanh(lrp)


class FixedPointArithmetic:
    """Exact fixed point (:mod:`lic.codecs.exact`), without gradients.

    Working values are integer-valued float64 tensors ``q`` standing for ``q / 2**12``;
    networks run through their cached fixed-point copies, tanh is a table lookup, and the
    halving rounds down, so every step is exact and the same on any device.
    """

    def scope(self) -> AbstractContextManager:
        return torch.no_grad()

    def from_real(self, x: Tensor) -> Tensor:
        return fx.to_fixed(x)

    def to_real(self, v: Tensor) -> Tensor:
        return fx.to_real(v)

    def apply(self, network: nn.Module, v: Tensor) -> Tensor:
        return fx.fixed_point(network)(v)

    def refine(self, y_hat: Tensor, lrp: Tensor) -> Tensor:
        half_tanh = torch.floor(fx.lookup("tanh", lrp) / 2)
        return (y_hat + half_tanh).clamp_(-fx.LIMIT, fx.LIMIT)


#: Training arithmetic.
FLOAT = FloatArithmetic()
#: Coding arithmetic.
FIXED_POINT = FixedPointArithmetic()


def arithmetic_for(exact: bool) -> Arithmetic:
    """:data:`FIXED_POINT` if ``exact``, else :data:`FLOAT`."""
    return FIXED_POINT if exact else FLOAT


@dataclass
class SliceParameters:
    """Entropy parameters the loop predicted for one slice."""

    mean: Tensor
    scale: Tensor


def _context_transform(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(hidden, hidden // 2, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(hidden // 2, out_channels, 3, padding=1),
    )


class SliceContextModel(nn.Module):
    """Per-slice mean, scale and LRP transforms plus the Gaussian conditional used to code them.

    Args:
        latent_channels: channels of ``y`` (M); must be divisible by ``num_slices``.
        num_slices: number of channel groups coded one after the other.
        hidden: width of the context transforms.
        max_support_slices: how many previous slices each slice sees (-1: all).
    """

    def __init__(
        self, latent_channels: int, num_slices: int, hidden: int, max_support_slices: int = -1
    ) -> None:
        super().__init__()
        if latent_channels % num_slices:
            raise ValueError(
                f"latent_channels={latent_channels} is not divisible by num_slices={num_slices}"
            )
        self.num_slices = num_slices
        self.slice_channels = latent_channels // num_slices
        self.max_support_slices = max_support_slices
        support = [self._support(i) * self.slice_channels for i in range(num_slices)]
        m, s = latent_channels, self.slice_channels
        self.mean_transforms = nn.ModuleList(_context_transform(m + c, hidden, s) for c in support)
        self.scale_transforms = nn.ModuleList(_context_transform(m + c, hidden, s) for c in support)
        self.lrp_transforms = nn.ModuleList(
            _context_transform(m + c + s, hidden, s) for c in support
        )
        self.gaussian_conditional = GaussianConditional(None)

    def _support(self, index: int) -> int:
        return index if self.max_support_slices < 0 else min(index, self.max_support_slices)

    def scale_indexes(self, scale: Tensor) -> Tensor:
        """Index of the coding table entry nearest to each scale, in the log domain.

        CompressAI's ``build_indexes`` takes the first table entry at or above the scale, which
        codes every symbol with a slightly too wide Gaussian; the nearest entry in log-scale is
        unbiased (the table is log-spaced). The index is found by comparing the scale, in fixed
        point, with the geometric midpoints of the table: exact comparisons, no logarithm whose
        last bit could differ between devices. Scales from the exact loop are fixed-point
        values already, so encoder and decoder always agree.
        """
        thresholds = fx.scale_thresholds(self.gaussian_conditional.scale_table, scale.device)
        index = torch.bucketize(fx.to_fixed(scale), thresholds, right=True)
        return index.to(torch.int32)

    def split(self, y: Tensor) -> list[Tensor]:
        """``y`` cut into its slices, in coding order."""
        return list(y.chunk(self.num_slices, dim=1))

    def run(
        self,
        hyper_means: Tensor,
        hyper_scales: Tensor,
        quantize: SliceQuantizer,
        arithmetic: Arithmetic = FLOAT,
    ) -> tuple[Tensor, list[SliceParameters]]:
        """Predict, quantise and refine every slice in order.

        Args:
            hyper_means: mean context from the hyper-synthesis, ``(B, M, h, w)``, as working
                values of ``arithmetic`` (fixed point for :data:`FIXED_POINT`).
            hyper_scales: scale context from the hyper-synthesis, ``(B, M, h, w)``; likewise.
            quantize: returns the quantised slice ``i`` given its mean and scale (adds noise,
                rounds and records symbols, or decodes symbols, depending on the caller).
                It always receives and returns real (float32) values.
            arithmetic: how to compute (:data:`FLOAT` or :data:`FIXED_POINT`; the latter
                without gradients).

        Returns:
            The reconstructed latent ``ŷ`` (float32) and the entropy parameters of each slice
            (real float32 values).
        """
        a = arithmetic
        decoded: list[Tensor] = []
        parameters: list[SliceParameters] = []
        with a.scope():
            for i in range(self.num_slices):
                support = decoded[: self._support(i)]
                mean_context = torch.cat([hyper_means, *support], dim=1)
                mean = a.to_real(a.apply(self.mean_transforms[i], mean_context))
                scale_context = torch.cat([hyper_scales, *support], dim=1)
                scale = a.to_real(a.apply(self.scale_transforms[i], scale_context))
                y_hat_slice = a.from_real(quantize(i, mean, scale))
                lrp_context = torch.cat([mean_context, y_hat_slice], dim=1)
                lrp = a.apply(self.lrp_transforms[i], lrp_context)
                decoded.append(a.refine(y_hat_slice, lrp))
                parameters.append(SliceParameters(mean=mean, scale=scale))
            return a.to_real(torch.cat(decoded, dim=1)), parameters
