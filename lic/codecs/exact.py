"""Exact, order-independent evaluation of the entropy-parameter networks.

The decoder must reproduce the encoder's Gaussian means and scales *exactly*: one scale index or
mean that differs desynchronises the rANS decoder and the rest of the image decodes to garbage.
Floating-point convolutions do not guarantee that: the summation order changes with the number
of threads, the batch size, the library and the device, and so do the last bits of the result.

Here the hyper-synthesis ``h_s`` and the slice mean/scale/LRP transforms run in fixed point:

- every activation is an integer ``q`` standing for ``q / 2**FRACTION_BITS``, clamped to
  ``±LIMIT`` (``±4096`` in real units; real activations are orders of magnitude smaller);
- every weight is rounded to ``2**-w`` with ``w`` chosen per layer so that, for any input
  within the clamp, every partial sum of a convolution is an integer below ``2**52``;
- the convolutions then run in float64 on integer-valued tensors: each product and partial sum
  is an integer that float64 represents exactly, so the result is the same integer in any
  summation order, on any number of threads, on CPU or CUDA;
- results are rescaled by a power of two and rounded (exact operations), and GELU and tanh are
  looked up in tables computed once, on the CPU, with Python's ``math`` (the same table whatever
  device evaluates the network).

Outside the tables' range GELU and tanh are the identity/zero and ±1 to within far less than one
fixed-point step, so the lookups are exact too. The price is float64 arithmetic for the (small)
entropy-parameter networks; the analysis and synthesis transforms stay in float32.
"""

from __future__ import annotations

import math
from itertools import pairwise
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Fixed-point resolution of activations: ``q`` stands for ``q / 2**FRACTION_BITS``.
FRACTION_BITS = 12
ONE = float(2**FRACTION_BITS)
#: Activations are clamped to ``±LIMIT`` (fixed-point units), i.e. ±4096 in real units.
LIMIT = float(2**24)
_EXACT_BOUND = 2.0**52
_MAX_WEIGHT_BITS = 20
_MIN_WEIGHT_BITS = 8
#: Lookup tables cover ``[-TABLE_RANGE, TABLE_RANGE]`` in real units.
TABLE_RANGE = 8


def to_fixed(x: Tensor) -> Tensor:
    """Real values to fixed point (float64 integers), rounded and clamped; NaN becomes 0."""
    return torch.round(torch.nan_to_num(x.double() * ONE, nan=0.0)).clamp_(-LIMIT, LIMIT)


def to_real(q: Tensor) -> Tensor:
    """Fixed point to float32; exact, since ``|q| <= 2**24``."""
    return (q / ONE).float()


@cache
def _table(name: str, device: torch.device) -> Tensor:
    """The lookup table of ``name``, computed on the CPU with ``math``, then moved."""
    functions = {
        "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
        "tanh": math.tanh,
    }
    function = functions[name]
    steps = TABLE_RANGE * int(ONE)
    values = [float(round(function(k / ONE) * ONE)) for k in range(-steps, steps + 1)]
    return torch.tensor(values, dtype=torch.float64).to(device)


def lookup(name: str, q: Tensor) -> Tensor:
    """``gelu`` or ``tanh`` of fixed-point ``q``, exactly (see the module docstring)."""
    span = TABLE_RANGE * ONE
    inside = _table(name, q.device)[(q.clamp(-span, span) + span).long()]
    if name == "gelu":
        above, below = q, torch.zeros_like(q)
    else:
        above, below = torch.full_like(q, ONE), torch.full_like(q, -ONE)
    return torch.where(q > span, above, torch.where(q < -span, below, inside))


class FixedPointConv:
    """A ``Conv2d`` or ``ConvTranspose2d`` evaluated exactly on fixed-point inputs."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        weight = layer.weight.detach().double()
        bias = layer.bias.detach().double() if layer.bias is not None else None
        # Largest possible |output| per unit of input: the L1 norm of the weights feeding one
        # output channel (for a transposed convolution, an upper bound over kernel positions).
        dims = (0, 2, 3) if self.transposed else (1, 2, 3)
        for bits in range(_MAX_WEIGHT_BITS, _MIN_WEIGHT_BITS - 1, -1):
            scale = 2.0**bits
            weight_q = torch.round(weight * scale)
            bias_q = torch.round(bias * scale * ONE) if bias is not None else None
            bound = float(weight_q.abs().sum(dim=dims).max()) * LIMIT
            bound += float(bias_q.abs().max()) if bias_q is not None else 0.0
            if bound < _EXACT_BOUND:
                break
        else:
            raise ValueError(f"weights of {layer} are too large for exact fixed-point evaluation")
        self.weight_bits = bits
        self.scale = scale
        self.weight, self.bias = weight_q, bias_q
        self.kwargs = {
            "stride": layer.stride,
            "padding": layer.padding,
            "dilation": layer.dilation,
            "groups": layer.groups,
        }
        if self.transposed:
            self.kwargs["output_padding"] = layer.output_padding

    def __call__(self, q: Tensor) -> Tensor:
        weight = self.weight.to(q.device)
        bias = self.bias.to(q.device) if self.bias is not None else None
        op = F.conv_transpose2d if self.transposed else F.conv2d
        out = op(q, weight, bias, **self.kwargs)
        return torch.floor(out / self.scale + 0.5).clamp_(-LIMIT, LIMIT)


class FixedPointSequential:
    """A stack of convolutions and GELUs (nested ``nn.Sequential`` allowed), in fixed point."""

    def __init__(self, module: nn.Module) -> None:
        self.steps: list = []
        self._add(module)

    def _add(self, module: nn.Module) -> None:
        if isinstance(module, nn.Sequential):
            for child in module:
                self._add(child)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            self.steps.append(FixedPointConv(module))
        elif isinstance(module, nn.GELU) and module.approximate == "none":
            self.steps.append(lambda q: lookup("gelu", q))
        elif isinstance(module, nn.ReLU):
            self.steps.append(torch.relu)
        elif isinstance(module, nn.Identity):
            pass
        else:
            raise TypeError(f"no exact fixed-point version of {type(module).__name__}")

    def __call__(self, q: Tensor) -> Tensor:
        for step in self.steps:
            q = step(q)
        return q


def fixed_point(module: nn.Module) -> FixedPointSequential:
    """The fixed-point version of ``module``, built once and rebuilt only when its weights change.

    The cache key is each parameter's storage and version counter: an optimizer step,
    ``load_state_dict`` or a move to another device all change it.
    """
    key = tuple((p.data_ptr(), p._version) for p in module.parameters())
    cached = module.__dict__.get("_lic_fixed_point")
    if cached is None or cached[0] != key:
        cached = (key, FixedPointSequential(module))
        module.__dict__["_lic_fixed_point"] = cached
    return cached[1]


@cache
def _thresholds(table: tuple[float, ...], device: torch.device) -> Tensor:
    midpoints = [math.sqrt(a * b) * ONE for a, b in pairwise(table)]
    return torch.tensor(midpoints, dtype=torch.float64).to(device)


def scale_thresholds(scale_table: Tensor, device: torch.device) -> Tensor:
    """Fixed-point boundaries between neighbouring coding-table scales (geometric midpoints).

    A fixed-point scale ``q`` codes with table entry ``#{thresholds <= q}``: the entry nearest
    in the log domain, found by exact comparisons. Computed once per table and device.
    """
    return _thresholds(tuple(float(v) for v in scale_table.reshape(-1).tolist()), device)
