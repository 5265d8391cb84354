"""The two distillation terms of FEDS.

Both compare a student tensor, mapped by a 1×1 adapter to the teacher's width, with the frozen
teacher's tensor at the same tap. Both are zero exactly when the adapted student equals the
teacher, and positive otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EPS = 1e-8


class FeatureAlignmentLoss(nn.Module):
    r"""Normalised mean squared error between adapted student and teacher features.

    .. math::

        L_{feat} = \frac{1}{|T|} \sum_{t \in T} \frac{\lVert A_t(s_t) - f_t \rVert_2^2}{\lVert f_t \rVert_2^2 + \epsilon}

    over the tapped features ``T`` (analysis and synthesis stages, the latent). Dividing by the
    teacher feature's energy makes taps of very different magnitudes (pixels-scale synthesis
    features, a latent of ±10) count alike, and makes the loss independent of feature scale.
    """

    def forward(self, adapted: dict[str, Tensor], teacher: dict[str, Tensor]) -> Tensor:
        terms = []
        for tap, student_feature in adapted.items():
            target = teacher[tap]
            terms.append((student_feature - target).pow(2).sum() / (target.pow(2).sum() + EPS))
        return torch.stack(terms).mean()


def channel_bits(likelihoods: Tensor) -> Tensor:
    """Bits the teacher spends on each latent channel over the batch: ``Σ_{b,h,w} -log2 p``."""
    return -torch.log2(likelihoods.clamp_min(1e-9)).sum(dim=(0, 2, 3))


def channel_weights(
    bits: Tensor, temperature: float | None = 1.0, top_k: int | None = None
) -> Tensor:
    r"""Weights over channels from the teacher's bits per channel; they sum to one.

    - temperature ``τ``: :math:`w = \mathrm{softmax}(b / (τ \bar b))`, with :math:`\bar b` the mean
      bits per channel, so τ is scale-free: τ → ∞ gives uniform weights, small τ concentrates on
      the costliest channels.
    - ``top_k``: the ``k`` channels with most bits share the weight in proportion to their bits;
      the rest get none.

    Either way the weight never decreases as a channel's bits increase.
    """
    bits = bits.detach().float()
    if top_k is not None:
        k = min(top_k, bits.numel())
        weights = torch.zeros_like(bits)
        values, index = bits.topk(k)
        weights[index] = values.clamp_min(EPS) / values.clamp_min(EPS).sum()
        return weights
    if temperature is None or temperature <= 0:
        raise ValueError("channel weighting needs a positive temperature or a top_k")
    return torch.softmax(bits / (temperature * bits.mean().clamp_min(EPS)), dim=0)


class EntropyWeightedChannelLoss(nn.Module):
    r"""Channel-wise latent distillation weighted by the teacher's information per channel.

    .. math::

        L_{ch} = \sum_c w_c \, \frac{\lVert A(\hat y^S)_c - y^T_c \rVert_2^2}{\lVert y^T_c \rVert_2^2 + \epsilon},
        \qquad w = \mathrm{weights}(\text{bits}^T)

    where ``bits^T_c`` are the bits the teacher's entropy model assigns to channel ``c`` on the
    current batch (:func:`channel_bits`) and ``w`` comes from :func:`channel_weights`.

    Why: a learned latent is very unequal. A few channels carry most of the information (and of
    the rate); many are nearly deterministic given the hyperprior and cost almost nothing. An
    unweighted latent MSE spends the student's limited capacity equally on both; weighting by
    the teacher's bits makes the student copy first what the teacher found worth paying for.
    Each channel's error is normalised by its own energy so that weights, not magnitudes,
    decide what counts.

    Args:
        temperature: softmax temperature relative to the mean bits per channel.
        top_k: use only the ``k`` most informative channels instead of a softmax.
    """

    def __init__(self, temperature: float | None = 1.0, top_k: int | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.top_k = top_k

    def forward(
        self, adapted_latent: Tensor, teacher_latent: Tensor, teacher_likelihoods: Tensor
    ) -> Tensor:
        weights = channel_weights(channel_bits(teacher_likelihoods), self.temperature, self.top_k)
        error = (adapted_latent - teacher_latent).pow(2).sum(dim=(0, 2, 3))
        energy = teacher_latent.pow(2).sum(dim=(0, 2, 3))
        return (weights * error / (energy + EPS)).sum()
