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

The fixed-point copy of a network is built once and kept in :data:`CACHE` (a
:class:`FixedPointCache`), outside the module: a codec pickles, deep-copies and saves as its
weights alone, whatever it has coded. An entry is used only while the module's weights are
exactly those it was built from (see :class:`FixedPointCache` for the rule).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import cache, partial
from itertools import pairwise

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
    """A stack of convolutions and GELUs (nested ``nn.Sequential`` allowed), in fixed point.

    Holds only tensors and module-level functions, so it pickles; it keeps no reference to the
    module it was built from (a snapshot: later changes to the weights do not reach it).
    """

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
            self.steps.append(partial(lookup, "gelu"))
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


@dataclass
class _Entry:
    """A fixed-point network and the float weights it was built from."""

    weights: list[Tensor]
    network: FixedPointSequential


def _same_weights(snapshot: list[Tensor], parameters: list[Tensor]) -> bool:
    return len(snapshot) == len(parameters) and all(
        s.device == p.device and s.dtype == p.dtype and s.shape == p.shape and torch.equal(s, p)
        for s, p in zip(snapshot, parameters)
    )


class FixedPointCache:
    """Fixed-point copies of modules, built on first use and rebuilt when their weights change.

    The rule: the copy of ``module`` is reused only while every parameter of ``module`` equals,
    bit for bit and on the same device and dtype, the snapshot of the weights it was built from
    (checked with ``torch.equal`` on every :meth:`get`: one read of the weights, small next to
    the convolutions it saves). Whatever changes the weights — an optimizer step,
    ``load_state_dict``, an in-place edit under ``no_grad``, ``to()``/``cuda()``/``double()``,
    a DDP broadcast — therefore rebuilds it; ``train()``/``eval()`` change no weight and keep
    it. No hook, no private tensor counter: the weights themselves are the key. (The layers'
    structure — kinds, strides, paddings — is taken as fixed, as in any trained codec.) The
    snapshot costs one more float32 copy of those weights, next to their float64 copy.

    Entries are keyed by weak references to the modules and nothing is stored on a module, so
    the cache never keeps a module alive, never travels with a pickled, saved or copied codec
    (the copy is a new object and builds its own entries on first use), and an entry goes when
    its module does. Pickling the cache itself gives an empty one: entries are derived data.
    """

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()

    def get(self, module: nn.Module) -> FixedPointSequential:
        """The fixed-point version of ``module``'s current weights."""
        parameters = [p.detach() for p in module.parameters()]
        entry = self._entries.get(module)
        if entry is None or not _same_weights(entry.weights, parameters):
            network = FixedPointSequential(module)
            entry = _Entry(weights=[p.clone() for p in parameters], network=network)
            self._entries[module] = entry
        return entry.network

    def discard(self, module: nn.Module) -> None:
        """Forget ``module``'s copy (to free its memory; correctness never needs this)."""
        self._entries.pop(module, None)

    def clear(self) -> None:
        """Forget every copy."""
        self._entries.clear()

    def __contains__(self, module: nn.Module) -> bool:
        return module in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


#: The cache :func:`fixed_point` uses.
CACHE = FixedPointCache()


def fixed_point(module: nn.Module) -> FixedPointSequential:
    """The fixed-point version of ``module``'s current weights, from :data:`CACHE`.

    Built once and rebuilt only when the weights change (see :class:`FixedPointCache`).
    """
    return CACHE.get(module)


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
