"""Distillation terms by name, and the :class:`Distiller` that weighs them phase by phase.

A term compares the student's forward result with the frozen teacher's on the same batch and
returns a scalar that is zero when the student matches the teacher where the term looks, and
positive otherwise. Terms are registered by name (:func:`register_term`); a recipe lists the
terms it configures (``distill.terms``) and every phase gives each term its weight
(``weights: {feature: 1.0}``). Adding a term is one class with ``@register_term("name")`` and a
recipe entry.

The terms lic ships:

``feature``
    FEDS phase 1: normalised MSE between adapted student features and the teacher's
    (:class:`~lic.distill.losses.FeatureAlignmentLoss`).
``channel``
    FEDS phase 2: the entropy-weighted channel loss. The channel weights come from the
    teacher's *conditional* bits (its entropy model's likelihoods: later slices are cheap because
    earlier slices predict them) or from each channel's *marginal* entropy (a histogram of the
    teacher's rounded latent over the batch: what a channel costs on its own). The student side
    is the adapted latent (``align: adapter``) or the student's own latent (``align: identity``:
    the leading channels of both latents, which the channel-wise autoregressive model codes
    first, from the hyperprior alone), so that the learnable adapter cannot absorb the term.
``cwd``
    Channel-wise distillation (Shu et al., ICCV 2021): per channel, a spatial softmax with
    temperature τ of teacher and adapted student, and τ²·KL(teacher ‖ student), averaged over
    channels and images.
``output``
    Output-level distillation: the student's reconstruction against the teacher's, normalised
    by the teacher's own distortion (1 = the student is as far from the teacher as the teacher
    is from the original).
``entropy``
    Entropy-parameter distillation: the student's per-slice means and log-scales against the
    teacher's, for the slices both have (adapter or identity), normalised MSE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lic.distill.adapters import FeatureAdapters
from lic.distill.losses import EPS, FeatureAlignmentLoss, channel_bits, channel_weights
from lic.distill.schedule import Phase

#: The features FEDS aligns by default: analysis stages, the latent, synthesis stages.
DEFAULT_TAPS = ("g_a.0", "g_a.1", "g_a.2", "y", "g_s.0", "g_s.1", "g_s.2")

#: Registered term classes by name.
TERMS: dict[str, type[DistillTerm]] = {}


def register_term(name: str) -> Callable[[type[DistillTerm]], type[DistillTerm]]:
    """Class decorator: make a :class:`DistillTerm` available to recipes as ``name``."""

    def register(cls: type[DistillTerm]) -> type[DistillTerm]:
        if name in TERMS and TERMS[name] is not cls:
            raise ValueError(f"distillation term {name!r} is already registered")
        TERMS[name] = cls
        cls.term_name = name
        return cls

    return register


def build_term(name: str, **options: Any) -> DistillTerm:
    """An instance of the term registered as ``name`` (for plans that name terms, not classes)."""
    if name not in TERMS:
        raise ValueError(f"unknown distillation term {name!r}; registered: {sorted(TERMS)}")
    return TERMS[name](**options)


@dataclass
class DistillInputs:
    """What a term sees at one step.

    Attributes:
        images: the batch, ``(B, 3, H, W)``.
        student: the student's forward result (``x_hat``, ``likelihoods``, ``features``).
        teacher: the frozen teacher's forward result on the same batch.
        adapters: 1×1 adapters from student to teacher widths, for the taps terms asked for.
    """

    images: Tensor
    student: Any
    teacher: Any
    adapters: FeatureAdapters

    def student_feature(self, tap: str) -> Tensor:
        """The student's feature at ``tap`` in float32 (bf16 sums lose what the terms measure)."""
        return self.student.features[tap].float()

    def teacher_feature(self, tap: str) -> Tensor:
        return self.teacher.features[tap].float()

    def adapted(self, tap: str) -> Tensor:
        """The student's feature at ``tap`` mapped to the teacher's width."""
        return self.adapters(tap, self.student_feature(tap))


class DistillTerm(nn.Module):
    """One distillation term: ``forward(inputs) -> (value, logs)``.

    Subclasses say which taps they need adapted (:meth:`adapted_taps`, given both codecs'
    widths) and return a scalar plus anything worth logging (under ``distill/<name>/...``).
    """

    term_name: str = ""

    def adapted_taps(
        self, student_channels: Mapping[str, int], teacher_channels: Mapping[str, int]
    ) -> list[str]:
        return []

    def forward(self, inputs: DistillInputs) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


def _check_align(align: str) -> str:
    if align not in ("adapter", "identity"):
        raise ValueError(f"align must be 'adapter' or 'identity', not {align!r}")
    return align


@register_term("feature")
class FeatureTerm(DistillTerm):
    """Feature alignment at ``taps`` (FEDS phase 1)."""

    def __init__(self, taps: Sequence[str] = DEFAULT_TAPS) -> None:
        super().__init__()
        self.taps = list(taps)
        self.loss = FeatureAlignmentLoss()

    def adapted_taps(self, student_channels, teacher_channels) -> list[str]:
        return list(self.taps)

    def forward(self, inputs: DistillInputs) -> tuple[Tensor, dict[str, Tensor]]:
        adapted = {tap: inputs.adapted(tap) for tap in self.taps}
        return self.loss(adapted, {tap: inputs.teacher_feature(tap) for tap in self.taps}), {}


def marginal_channel_bits(latent: Tensor, max_abs: int = 255) -> Tensor:
    """Bits per channel if each channel were coded alone with its own histogram.

    The latent is rounded (values clamped to ±``max_abs``) and, per channel, the empirical
    distribution of the integers over the batch gives the entropy ``H_c`` in bits per element;
    the channel's marginal bits are ``H_c`` times its number of elements. Unlike
    :func:`~lic.distill.losses.channel_bits` (the entropy model's conditional bits) this ignores
    what the hyperprior and the earlier slices already say about the channel.
    """
    symbols = latent.detach().float().round().clamp(-max_abs, max_abs).long() + max_abs
    channels = symbols.shape[1]
    flat = symbols.transpose(0, 1).reshape(channels, -1)
    counts = torch.zeros(channels, 2 * max_abs + 1, device=latent.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
    p = counts / flat.shape[1]
    entropy = -(p * torch.log2(p.clamp_min(1e-12))).sum(dim=1)
    return entropy * flat.shape[1]


def effective_channels(weights: Tensor) -> Tensor:
    """``1 / Σ w²``: how many channels the weights effectively spread over (weights sum to one)."""
    return 1.0 / weights.pow(2).sum().clamp_min(EPS)


@register_term("channel")
class ChannelTerm(DistillTerm):
    r"""The entropy-weighted channel loss (FEDS phase 2).

    .. math::

        L = \sum_c w_c \frac{\lVert s_c - y^T_c \rVert^2}{\lVert y^T_c \rVert^2 + \epsilon}

    with ``w`` from :func:`~lic.distill.losses.channel_weights` over the teacher's bits per
    channel (``source``), and ``s`` the adapted student latent or the student's own.

    Args:
        source: ``conditional`` (the teacher entropy model's bits) or ``marginal``
            (:func:`marginal_channel_bits`).
        temperature: softmax temperature relative to the mean bits per channel.
        top_k: the ``k`` most informative channels only, instead of a softmax.
        align: ``adapter`` (a learnable 1×1 map to the teacher's width) or ``identity`` (the
            first ``min(C_S, C_T)`` channels of both latents, weights renormalised over them).

    Logs ``effective_channels`` (``1/Σw²``) every step.
    """

    def __init__(
        self,
        source: str = "conditional",
        temperature: float | None = 1.0,
        top_k: int | None = None,
        align: str = "adapter",
    ) -> None:
        super().__init__()
        if source not in ("conditional", "marginal"):
            raise ValueError(
                f"channel weights come from 'conditional' or 'marginal' bits, not {source!r}"
            )
        self.source = source
        self.temperature = temperature
        self.top_k = top_k
        self.align = _check_align(align)

    def adapted_taps(self, student_channels, teacher_channels) -> list[str]:
        return ["y"] if self.align == "adapter" else []

    def teacher_bits(self, inputs: DistillInputs) -> Tensor:
        if self.source == "conditional":
            return channel_bits(inputs.teacher.likelihoods["y"])
        return marginal_channel_bits(inputs.teacher.features["y"])

    def forward(self, inputs: DistillInputs) -> tuple[Tensor, dict[str, Tensor]]:
        target = inputs.teacher_feature("y")
        bits = self.teacher_bits(inputs)
        if self.align == "adapter":
            student = inputs.adapted("y")
        else:
            student = inputs.student_feature("y")
            shared = min(student.shape[1], target.shape[1])
            student, target, bits = student[:, :shared], target[:, :shared], bits[:shared]
        weights = channel_weights(bits, self.temperature, self.top_k)
        error = (student - target).pow(2).sum(dim=(0, 2, 3))
        energy = target.pow(2).sum(dim=(0, 2, 3))
        loss = (weights * error / (energy + EPS)).sum()
        return loss, {"effective_channels": effective_channels(weights)}


@register_term("cwd")
class ChannelDistributionTerm(DistillTerm):
    r"""Channel-wise distillation (Shu et al., ICCV 2021).

    .. math::

        L = \frac{\tau^2}{N C} \sum_{n,c} \mathrm{KL}\big(\mathrm{softmax}(f^T_{n,c}/\tau) \,\big\|\,
        \mathrm{softmax}(A(f^S)_{n,c}/\tau)\big)

    where the softmax runs over the spatial positions of one channel: each channel becomes a
    distribution of where it is active, and the student learns where the teacher's channels
    respond rather than their exact values. Averaged over ``taps``.
    """

    def __init__(self, taps: Sequence[str] = ("y",), temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("the cwd temperature must be positive")
        self.taps = list(taps)
        self.temperature = temperature

    def adapted_taps(self, student_channels, teacher_channels) -> list[str]:
        return list(self.taps)

    def forward(self, inputs: DistillInputs) -> tuple[Tensor, dict[str, Tensor]]:
        tau, terms = self.temperature, []
        for tap in self.taps:
            student = inputs.adapted(tap).flatten(2) / tau
            teacher = inputs.teacher_feature(tap).flatten(2) / tau
            log_p_teacher = F.log_softmax(teacher, dim=-1)
            log_p_student = F.log_softmax(student, dim=-1)
            kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
            terms.append(tau * tau * kl.mean())
        return torch.stack(terms).mean(), {}


@register_term("output")
class OutputTerm(DistillTerm):
    """The student's reconstruction against the teacher's, relative to the teacher's error."""

    def forward(self, inputs: DistillInputs) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_x_hat = inputs.teacher.x_hat.float()
        gap = (inputs.student.x_hat.float() - teacher_x_hat).pow(2).mean()
        teacher_error = (inputs.images.float() - teacher_x_hat).pow(2).mean()
        return gap / (teacher_error + EPS), {}


@register_term("entropy")
class EntropyParameterTerm(DistillTerm):
    """The student's per-slice Gaussian means and log-scales against the teacher's.

    Compared for the slices both codecs have (``entropy.{i}.mean`` / ``entropy.{i}.scale``);
    scales in the log domain (they span orders of magnitude). Each tensor's error is normalised
    by the teacher tensor's energy, as in the feature loss.

    Args:
        align: ``adapter`` (1×1 maps per slice) or ``identity`` (the first ``min`` channels of
            each slice; equal widths compare directly).
    """

    def __init__(self, align: str = "adapter") -> None:
        super().__init__()
        self.align = _check_align(align)

    @staticmethod
    def shared_taps(names: Iterable[str], other: Iterable[str]) -> list[str]:
        other = set(other)
        return [t for t in names if t.startswith("entropy.") and t in other]

    def adapted_taps(self, student_channels, teacher_channels) -> list[str]:
        if self.align == "identity":
            return []
        return self.shared_taps(student_channels, teacher_channels)

    def forward(self, inputs: DistillInputs) -> tuple[Tensor, dict[str, Tensor]]:
        taps = self.shared_taps(inputs.student.features, inputs.teacher.features)
        terms = []
        for tap in taps:
            student, target = inputs.student_feature(tap), inputs.teacher_feature(tap)
            if tap.endswith(".scale"):
                student, target = student.clamp_min(1e-6).log(), target.clamp_min(1e-6).log()
            if self.align == "adapter":
                student = inputs.adapters(tap, student)
            shared = min(student.shape[1], target.shape[1])
            student, target = student[:, :shared], target[:, :shared]
            terms.append((student - target).pow(2).sum() / (target.pow(2).sum() + EPS))
        return torch.stack(terms).mean(), {}


class Distiller(nn.Module):
    """The distillation part of a student's objective: named terms, their adapters, phases.

    ``loss(phase) = Σ_t w_t(phase) · term_t`` over the terms that phase weighs (a term with no
    weight in a phase is not computed; a phase that weighs none does not need the teacher).
    Only terms that some phase weighs are kept, so configuring a term costs nothing until a
    recipe gives it a weight.

    Args:
        terms: the configured terms by name (instances, e.g. from a recipe).
        phases: every phase the run will go through (to check names and drop unused terms).
        student_channels, teacher_channels: ``feature_channels()`` of both codecs (the
            configuration's widths: no forward pass needed).
    """

    def __init__(
        self,
        terms: Mapping[str, DistillTerm],
        phases: Sequence[Phase],
        student_channels: Mapping[str, int],
        teacher_channels: Mapping[str, int],
    ) -> None:
        super().__init__()
        used = {name for phase in phases for name in phase.term_weights()}
        missing = used - set(terms)
        if missing:
            raise ValueError(
                f"phases weigh distillation terms that are not configured: {sorted(missing)} "
                f"(configured: {sorted(terms)}; registered: {sorted(TERMS)})"
            )
        self.terms = nn.ModuleDict({name: term for name, term in terms.items() if name in used})
        taps: list[str] = []
        for term in self.terms.values():
            taps += term.adapted_taps(student_channels, teacher_channels)
        taps = list(dict.fromkeys(taps))
        unknown = [t for t in taps if t not in student_channels or t not in teacher_channels]
        if unknown:
            raise ValueError(
                f"unknown feature taps {sorted(unknown)}; available: {sorted(student_channels)}"
            )
        self.adapters = FeatureAdapters(
            {t: student_channels[t] for t in taps}, {t: teacher_channels[t] for t in taps}
        )

    @staticmethod
    def needs_teacher(phase: Phase) -> bool:
        return bool(phase.term_weights())

    def forward(
        self, phase: Phase, images: Tensor, student: Any, teacher: Any
    ) -> tuple[Tensor | float, dict[str, Tensor]]:
        """``Σ w_t · term_t`` for ``phase``, and what to log (``distill/<term>``, ...)."""
        inputs = DistillInputs(images, student, teacher, self.adapters)
        total: Tensor | float = 0.0
        logs: dict[str, Tensor] = {}
        for name, weight in phase.term_weights().items():
            value, extra = self.terms[name](inputs)
            total = total + weight * value
            logs[f"distill/{name}"] = value
            logs.update({f"distill/{name}/{key}": v for key, v in extra.items()})
        return total, logs


def default_terms(
    taps: Sequence[str] = DEFAULT_TAPS, temperature: float | None = 1.0, top_k: int | None = None
) -> dict[str, DistillTerm]:
    """FEDS's two terms as lic first shipped them: feature alignment and the conditional,
    adapter-aligned channel loss."""
    return {
        "feature": FeatureTerm(taps),
        "channel": ChannelTerm("conditional", temperature, top_k, "adapter"),
    }


__all__ = [
    "DEFAULT_TAPS",
    "TERMS",
    "ChannelDistributionTerm",
    "ChannelTerm",
    "DistillInputs",
    "DistillTerm",
    "Distiller",
    "EntropyParameterTerm",
    "FeatureTerm",
    "OutputTerm",
    "build_term",
    "default_terms",
    "effective_channels",
    "marginal_channel_bits",
    "register_term",
]
