"""Encoder-side latent refinement: spend encoding time to lower the rate–distortion cost.

The analysis transform ``g_a`` is *amortized*: one network maps every image to its latent.
What it gives is rarely the latent that codes that particular image best, and the gap (the
amortization gap) is largest where the network is least trained. Refinement, as in
semi-amortized inference for learned codecs (Campos et al., "Content adaptive optimization for
neural image compression", CVPRW 2019; Yang et al., "Improving inference for neural image
compression", NeurIPS 2020), starts from ``g_a``'s latent ``y`` and ``h_a``'s hyper-latent
``z`` and takes gradient steps on the two tensors themselves, for this one image, to lower the
objective the codec was trained for::

    J = λ · 255² · MSE(x, x̂) + bits / pixels        (λ: the codec's, or its λ at ``quality``)

The decoder, its weights and the file format are untouched: any lic decoder reads the result,
and decoding costs what it always did.

Choices (ours; measured in README.md, "Encoder-side refinement"):

- **The relaxation** is straight-through rounding (``ChannelARCodec.decode_relaxed``):
  ``ŷ`` and ``ẑ`` are rounded exactly as the encoder rounds them, so ``J`` is evaluated on what
  the decoder will see, and gradients pass the rounding unchanged. Yang et al. find stochastic
  Gumbel annealing better over thousands of steps; with the tens of steps a CPU can afford per
  image, the rounded objective measured the gain directly and needed no temperature schedule.
- **The gradient** is that of the same distortion plus the bits of the *unrounded* latents
  (:attr:`RelaxedCoding.smooth_bits`): the straight-through gradient of the rounded bits is
  blind within a bin, and did worse in a measurement (a 256×384 Kodak crop at quality 7, 20
  steps: −6.8% against −7.6% of ``J``); the cost that picks the kept step is always the
  rounded one.
- **Adam** on ``(y, z)`` at a learning rate that grows with ``sqrt(λ)``
  (:data:`LR_PER_SQRT_LMBDA`), held for every step by default. Annealing it (``schedule=
  "cosine"``) measured within the spread between photos at 20 steps, and about 0.7 points of
  ``J`` better at 60 on three held-out photos (``scripts/refine_sweep.py``); more steps gained
  more than either.
- **The best step is kept**, per image, judged by the relaxed ``J``; step 0 is ``g_a``'s
  latent, so refinement never returns a latent whose relaxed cost is higher than the amortized
  one. The relaxed bits are the entropy models' float likelihoods, within a fraction of a
  percent of the coded size.
- **Cost:** each step is one pass of the entropy model and ``g_s`` forwards and backwards,
  about twice a decode; ``steps`` steps make encoding roughly ``2·steps`` times slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: Default number of Adam steps for ``lic encode --refine`` without a count.
DEFAULT_STEPS = 20
#: The default learning rate is ``LR_PER_SQRT_LMBDA · sqrt(λ)``, in latent units (one
#: quantisation bin is 1): 0.004 at λ 0.0018, 0.03 at λ 0.09. Measured on the shipped codec: a
#: rate that helps at high λ makes the cost climb after a few steps at low λ, where every
#: flipped bin costs more distortion than the bits it saves (README, "Encoder-side refinement").
LR_PER_SQRT_LMBDA = 0.1
#: Learning-rate schedules over the ``steps``: ``"constant"``, or ``"cosine"`` (from the rate
#: down towards 0 by the last step; ``torch.optim.lr_scheduler.CosineAnnealingLR``).
SCHEDULES = ("constant", "cosine")
DEFAULT_SCHEDULE = "constant"


@dataclass(frozen=True)
class Refinement:
    """How to refine: ``steps`` Adam steps (0: no refinement) at learning rate ``lr`` (default:
    :data:`LR_PER_SQRT_LMBDA` · sqrt(λ)), held or annealed as ``schedule`` says."""

    steps: int = DEFAULT_STEPS
    lr: float | None = None
    schedule: str = DEFAULT_SCHEDULE

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"refinement steps must be a whole number >= 0, got {self.steps!r}")
        if self.lr is not None and not (0 < self.lr < float("inf")):
            raise ValueError(f"refinement learning rate must be positive, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"refinement schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )

    def learning_rate(self, lmbda: float) -> float:
        """The Adam learning rate at ``lmbda``."""
        return self.lr if self.lr is not None else LR_PER_SQRT_LMBDA * lmbda**0.5


@dataclass(frozen=True)
class RefineResult:
    """Refined latents (each image's best step) and the relaxed cost ``J`` (mean over the
    batch) before (``costs[0]``: the amortized latents) and after each step."""

    y: Tensor
    z: Tensor
    costs: list[float]


def objective_lmbda(codec: nn.Module, quality: float | None) -> float:
    """The λ refinement optimises for: a variable-rate codec's λ at ``quality``, else the λ
    its checkpoint records.

    Raises:
        ValueError: a checkpoint that records no λ, or one trained for another metric than MSE
            (refinement optimises the MSE objective).
    """
    metadata = getattr(codec, "metadata", {}) or {}
    metric = metadata.get("metric")
    if metric not in (None, "mse"):
        raise ValueError(f"refinement optimises MSE; this codec was trained for {metric}")
    if getattr(codec, "variable_rate", False):
        return float(codec.lmbda_at(codec.check_quality(quality)))
    lmbda = metadata.get("lmbda")
    if lmbda is None:
        raise ValueError("this checkpoint records no λ, which refinement needs")
    return float(lmbda)


def rd_cost(
    codec: nn.Module, x: Tensor, y: Tensor, z: Tensor, quality: float | None, lmbda: float
) -> tuple[Tensor, Tensor]:
    """Relaxed ``J`` of coding ``x`` with latents ``(y, z)``, one value per image ``(B,)``: as
    coded (rounded latents' bits) and smooth (the same distortion, the unrounded latents' bits;
    what refinement differentiates)."""
    relaxed = codec.decode_relaxed(y, z, quality)
    height, width = x.shape[-2:]
    mse = (relaxed.x_hat[..., :height, :width] - x).square().flatten(1).mean(1)
    distortion, pixels = lmbda * 255**2 * mse, height * width
    return distortion + relaxed.bits / pixels, distortion + relaxed.smooth_bits / pixels


def refine_latents(
    codec: nn.Module,
    x: Tensor,
    quality: float | None = None,
    refinement: Refinement = Refinement(),
) -> RefineResult:
    """Latents for ``x`` (``(B, 3, H, W)`` in ``[0, 1]``) refined by ``refinement.steps`` Adam
    steps on the relaxed rate–distortion cost; ready for ``codec.compress(x, latents=...)``.

    The codec's weights are left as they were (no gradient is kept for them, and its training
    mode is restored). Images of a batch are refined together but independently (the cost is
    a sum over images).
    """
    lmbda = objective_lmbda(codec, quality)
    quality = codec.check_quality(quality)
    was_training = codec.training
    codec.eval()
    try:
        y0, z0 = codec.latents(x, quality)
        y = y0.clone().requires_grad_(True)
        z = z0.clone().requires_grad_(True)
        best_y, best_z = y0.clone(), z0.clone()
        best_cost = torch.full((x.shape[0],), float("inf"), device=x.device)
        costs: list[float] = []
        optimizer = torch.optim.Adam([y, z], lr=refinement.learning_rate(lmbda))
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=refinement.steps)
            if refinement.schedule == "cosine" and refinement.steps
            else None
        )
        frozen = [p for p in codec.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            for step in range(refinement.steps + 1):
                # grad mode set here, so that a caller's no_grad does not stop refinement; the
                # last cost is only judged
                with torch.set_grad_enabled(step < refinement.steps):
                    coded, smooth = rd_cost(codec, x, y, z, quality, lmbda)
                    loss = smooth.sum()
                coded = coded.detach()
                costs.append(float(coded.mean()))
                better = coded < best_cost
                best_cost = torch.where(better, coded, best_cost)
                best_y[better] = y.detach()[better]
                best_z[better] = z.detach()[better]
                if step == refinement.steps:
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
        finally:
            for p in frozen:
                p.requires_grad_(True)
    finally:
        codec.train(was_training)
    return RefineResult(best_y, best_z, costs)


#: Adam's learning rate for :func:`fit_synthesis_input`, in latent units. Measured on the
#: shipped default (two 256² Kodak crops): 0.02 gained 1.8–2.4 dB over ``g_a``'s latent in 300
#: steps, most of it in the first 50.
SYNTHESIS_LR = 0.02


@dataclass(frozen=True)
class SynthesisFit:
    """What ``g_s`` renders from ``g_a``'s unrounded latent (``start``: the transforms'
    ceiling) and from the best latent found for the image (``best``), with the MSE of each
    step against the image (``mses[0]``: the start), mean over the batch."""

    start: Tensor
    best: Tensor
    mses: list[float]


def fit_synthesis_input(
    codec: nn.Module,
    x: Tensor,
    steps: int,
    quality: float | None = None,
    lr: float = SYNTHESIS_LR,
) -> SynthesisFit:
    """The best reconstruction the synthesis transform can render of ``x``, whatever latent it
    is sent: Adam on ``g_s``'s input to lower the MSE alone, from ``g_a``'s latent (times the
    gain and inverse gain at ``quality`` for a variable-rate codec), nothing rounded and no
    rate counted; the best step is kept per image.

    A diagnostic of where a codec's top rates stop, not a coding mode: when the coded PSNR at
    the top quality meets the ceiling ``g_s(g_a(x))`` (:meth:`reconstruct_unquantized`) but
    ``g_s`` can render far better images than that, the analysis transform is what limits
    them (encoder-side refinement, or a stronger ``g_a``, can lift them with the same
    decoder); when ``g_s`` cannot, the synthesis is (``scripts/transform_ceiling.py
    --synthesis``).
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"synthesis steps must be a whole number >= 0, got {steps!r}")
    was_training = codec.training
    codec.eval()
    try:
        with torch.no_grad():  # the analysis as reconstruct_unquantized runs it
            u, gains, size, padding = codec._analyse(x, codec.check_quality(quality), {})
            if gains is not None:
                u = u * gains[1]
        u.requires_grad_(True)
        optimizer = torch.optim.Adam([u], lr=lr)
        best = start = None
        best_mse = torch.full((x.shape[0],), float("inf"), device=x.device)
        mses: list[float] = []
        for step in range(steps + 1):
            # grad mode set here, so that a caller's no_grad does not stop the fit
            with torch.set_grad_enabled(step < steps):
                x_hat = codec._crop(codec.g_s(u), size, padding)
                mse = (x_hat - x).square().flatten(1).mean(1)
            x_hat, per_image = x_hat.detach(), mse.detach()
            mses.append(float(per_image.mean()))
            if start is None:
                start, best = x_hat.clone(), x_hat.clone()
            better = per_image < best_mse
            best_mse = torch.where(better, per_image, best_mse)
            best[better] = x_hat[better]
            if step == steps:
                break
            # only u's gradient: the codec's weights get none, and keep whatever they had
            (grad,) = torch.autograd.grad(mse.sum(), [u])
            u.grad = grad
            optimizer.step()
    finally:
        codec.train(was_training)
    return SynthesisFit(start, best, mses)
