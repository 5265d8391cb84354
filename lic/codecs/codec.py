"""The learned codec: analysis/synthesis transforms, hyperprior and channel-wise AR slices.

Dataflow (CompressAI naming)::

    x ─pad─> g_a ─> y ─> h_a ─> z ─[EntropyBottleneck]─> ẑ ─> h_s ─> (hyper means, hyper scales)
                    │                                                  │
                    └──────────── SliceContextModel.run(...) <─────────┘
                                          │
                                          ŷ ─> g_s ─crop─> x̂

``g_a`` and ``g_s`` are four resampling stages each (×2 per stage, ×16 in all); stages 0–2
carry residual blocks and optionally Swin-V2 attention. ``h_a``/``h_s`` resample by another ×4,
so inputs are padded to a multiple of 64 and the reconstruction is cropped back.

The teacher, the students and their tiny variants are all this class with different
arguments; see :mod:`lic.codecs.zoo`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from torch import Tensor, nn

from lic import rans
from lic.codecs.entropy import FIXED_POINT, Arithmetic, SliceContextModel, arithmetic_for
from lic.codecs.layers import conv, deconv, transform_stage
from lic.codecs.timing import Stopwatch, section


@dataclass
class CodecOutput:
    """What ``forward`` returns.

    Attributes:
        x_hat: reconstruction, ``(B, 3, H, W)``, not clamped (training needs the gradient).
        likelihoods: per latent name (``"y"``, ``"z"``), same shape as that latent.
        features: named intermediate tensors for distillation: ``g_a.0``–``g_a.2`` (analysis
            stages), ``y``, ``g_s.0``–``g_s.2`` (synthesis stages), ``entropy.{i}.mean`` and
            ``entropy.{i}.scale`` for each slice ``i``.
    """

    x_hat: Tensor
    likelihoods: dict[str, Tensor]
    features: dict[str, Tensor]


@dataclass(frozen=True)
class Compressed:
    """What ``compress`` returns and ``decompress`` takes: everything a bitstream holds.

    Attributes:
        strings: per latent name, one byte string per image of the batch.
        shapes: per latent name, its spatial shape (shared by the batch).
        image_size: original ``(height, width)`` before padding.
        padding: ``(left, right, top, bottom)`` pixels added before the analysis transform.
        quality: the quality a variable-rate codec coded at (None for fixed-rate codecs).
    """

    strings: dict[str, list[bytes]]
    shapes: dict[str, tuple[int, ...]]
    image_size: tuple[int, int]
    padding: tuple[int, int, int, int]
    quality: float | None = None

    @property
    def batch_size(self) -> int:
        return len(self.strings["y"])


@dataclass
class RelaxedCoding:
    """What :meth:`ChannelARCodec.decode_relaxed` returns.

    Attributes:
        x_hat: reconstruction of the padded images from the rounded latents, not clamped.
        bits: bits of each image ``(B,)``: likelihoods of the rounded latents (straight-through).
        smooth_bits: bits of each image ``(B,)`` at the unrounded latents (for gradients).
    """

    x_hat: Tensor
    bits: Tensor
    smooth_bits: Tensor


def _round_ste(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _three(value: int | Sequence[int]) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(values) != 3:
        raise ValueError(f"expected one value per transform stage (3), got {list(values)}")
    return values  # type: ignore[return-value]


class ChannelARCodec(CompressionModel):
    """Hyperprior codec with a channel-wise autoregressive slice model (Minnen & Singh 2020).

    Args:
        channels: width N of the analysis/synthesis transforms.
        latent_channels: channels M of the latent ``y``.
        num_slices: slices of ``y`` coded one after the other.
        res_blocks: residual blocks in each of the three inner stages (int or 3 values).
        analysis_res_blocks: residual blocks in the inner stages of ``g_a`` alone (None: as
            ``res_blocks``). A deeper analysis than synthesis is an *asymmetric* codec: the
            encoder pays for the extra blocks, the decoder does not (EVC, Wang et al. 2023,
            found encoder capacity cheap where decoding time is what counts). A deeper variant
            can start from the weights of a shallower one (:func:`lic.codecs.grow.load_grown`).
        swin_depths: Swin-V2 blocks in each inner stage (0: none).
        num_heads: attention heads of the Swin-V2 blocks.
        window_size: attention window of the Swin-V2 blocks.
        hyper_channels: channels of the hyper-latent ``z``.
        context_hidden: width of the slice mean/scale/LRP transforms.
        max_support_slices: previous slices each slice conditions on (-1: all).
        rate_levels: 0 for a fixed-rate codec (one λ); ``L >= 2`` for a variable-rate codec
            trained at ``L`` λ log-spaced over ``rate_range`` (see "Variable rate" below).
        rate_range: the lowest and highest λ of a variable-rate codec.

    **Variable rate** (Cui et al., "Asymmetric gained deep image compression with continuous
    rate adaptation", CVPR 2021): one gain vector ``g_l`` and one inverse gain ``g'_l`` over the
    latent channels per trained level ``l``. The encoder codes ``y ⊙ g(q)`` where the entropy
    model (hyperprior and slices, unchanged) sees it as its latent; the decoder's ``ŷ`` is
    multiplied by ``g'(q)`` before synthesis. A larger gain means a finer effective quantisation
    step. The quality ``q ∈ [1, L]`` (1: lowest rate) is continuous: between two levels the
    gains are interpolated geometrically (linearly in the log domain, as in the paper). Gains
    start at ``sqrt(λ_l / λ_mid)`` (the MSE-optimal step scales with ``λ^-1/2``) and are
    learned. Entropy coding stays exact at every quality: the fixed-point slice loop is the
    same, and the gains act outside it.
    """

    #: Inputs are padded to a multiple of this (g_a ×16, h_a ×4).
    downsampling = 64
    #: Training speed-up: the dtype ``forward`` runs the analysis and synthesis transforms in
    #: under autocast (``torch.bfloat16`` on CPUs with bf16 instructions and on GPUs), or None
    #: for float32. Only ``g_a`` and ``g_s`` are affected: ``y`` and ``x_hat`` come back as
    #: float32, and the hyperprior, the slice model, likelihoods and the rate stay in float32.
    #: ``compress``/``decompress`` ignore it (coding is always float32 + fixed point).
    transform_autocast: torch.dtype | None = None

    def __init__(
        self,
        channels: int = 128,
        latent_channels: int = 192,
        num_slices: int = 4,
        res_blocks: int | Sequence[int] = 1,
        analysis_res_blocks: int | Sequence[int] | None = None,
        swin_depths: int | Sequence[int] = 0,
        num_heads: int = 4,
        window_size: int = 8,
        hyper_channels: int = 128,
        context_hidden: int = 128,
        max_support_slices: int = -1,
        rate_levels: int = 0,
        rate_range: Sequence[float] = (0.0018, 0.18),
    ) -> None:
        super().__init__()
        n, m, h = channels, latent_channels, hyper_channels
        blocks, depths = _three(res_blocks), _three(swin_depths)
        analysis = blocks if analysis_res_blocks is None else _three(analysis_res_blocks)
        stages = [
            transform_stage(n, b, d, num_heads, window_size) for b, d in zip(analysis, depths)
        ]
        self.g_a = nn.Sequential(
            nn.Sequential(conv(3, n), nn.GELU(), stages[0]),
            nn.Sequential(conv(n, n), nn.GELU(), stages[1]),
            nn.Sequential(conv(n, n), nn.GELU(), stages[2]),
            conv(n, m),
        )
        stages = [transform_stage(n, b, d, num_heads, window_size) for b, d in zip(blocks, depths)]
        self.g_s = nn.Sequential(
            nn.Sequential(deconv(m, n), nn.GELU(), stages[2]),
            nn.Sequential(deconv(n, n), nn.GELU(), stages[1]),
            nn.Sequential(deconv(n, n), nn.GELU(), stages[0]),
            deconv(n, 3),
        )
        self.h_a = nn.Sequential(
            conv(m, h, kernel_size=3, stride=1),
            nn.GELU(),
            conv(h, h),
            nn.GELU(),
            conv(h, h),
        )
        self.h_s = nn.Sequential(
            deconv(h, h),
            nn.GELU(),
            deconv(h, h * 3 // 2),
            nn.GELU(),
            conv(h * 3 // 2, 2 * m, kernel_size=3, stride=1),
        )
        self.entropy_bottleneck = EntropyBottleneck(h)
        self.context = SliceContextModel(m, num_slices, context_hidden, max_support_slices)
        self.rate_levels = int(rate_levels)
        if self.rate_levels:
            low, high = (float(v) for v in rate_range)
            if self.rate_levels < 2 or not 0 < low < high:
                raise ValueError(
                    f"a variable-rate codec needs rate_levels >= 2 and 0 < low < high λ, got "
                    f"{rate_levels} levels over {list(rate_range)}"
                )
            self._log_lmbdas = torch.tensor(
                [math.log(v) for v in self.level_lmbdas(self.rate_levels, (low, high))]
            )
            start = 0.5 * (self._log_lmbdas - self._log_lmbdas[self.rate_levels // 2])
            self.log_gain = nn.Parameter(start[:, None].repeat(1, m))
            self.log_inverse_gain = nn.Parameter(-start[:, None].repeat(1, m))

    # -- variable rate ---------------------------------------------------------------------

    @property
    def variable_rate(self) -> bool:
        """Whether one set of weights codes at any quality (``rate_levels`` > 0)."""
        return self.rate_levels > 0

    @staticmethod
    def level_lmbdas(levels: int, rate_range: Sequence[float]) -> list[float]:
        """The λ of each trained level of a variable-rate codec: ``levels`` values log-spaced
        from the lowest to the highest λ of ``rate_range`` (quality 1 first)."""
        low, high = (math.log(float(v)) for v in rate_range)
        logs = torch.linspace(low, high, int(levels))  # float32, as the codec has always used
        return [math.exp(float(v)) for v in logs]

    @property
    def trained_lmbdas(self) -> list[float]:
        """The λ of each trained level (quality 1 first); empty for a fixed-rate codec."""
        return [math.exp(float(v)) for v in self._log_lmbdas] if self.variable_rate else []

    @property
    def quality_range(self) -> tuple[float, float]:
        """The qualities a variable-rate codec takes: ``(1, L)``."""
        return 1.0, float(self.rate_levels)

    @property
    def default_quality(self) -> float | None:
        """The quality used when none is given: the middle level (None: fixed rate)."""
        return float(self.rate_levels // 2 + 1) if self.variable_rate else None

    def check_quality(self, quality: float | None) -> float | None:
        """``quality`` if this codec can code at it, else a ValueError saying why.

        Fixed-rate codecs take no quality; variable-rate codecs take a finite number in
        :attr:`quality_range` (None: :attr:`default_quality`), returned rounded to float32, the
        precision a ``.lic`` file records, so that encoder and decoder use the same gains.
        """
        if not self.variable_rate:
            if quality is not None:
                raise ValueError(f"{self.codec_name} is a fixed-rate codec: it takes no quality")
            return None
        if quality is None:
            return self.default_quality
        low, high = self.quality_range
        try:
            value = float(quality)
        except (TypeError, ValueError):
            value = math.nan
        if not low <= value <= high:  # NaN fails too
            raise ValueError(f"quality must be a number from {low:g} to {high:g}, got {quality!r}")
        return struct.unpack(">f", struct.pack(">f", value))[0]  # as files store it: float32

    def _level(self, quality: float) -> tuple[int, float]:
        position = quality - 1.0
        index = min(math.floor(position), self.rate_levels - 2)
        return index, position - index

    def lmbda_at(self, quality: float) -> float:
        """The λ a variable-rate codec is trained for at ``quality`` (log-linear in between)."""
        index, t = self._level(self.check_quality(quality))
        log_lmbda = (1 - t) * self._log_lmbdas[index] + t * self._log_lmbdas[index + 1]
        return float(math.exp(log_lmbda))

    def quality_for(self, lmbda: float) -> float:
        """The quality whose λ is ``lmbda`` (clamped to the trained range)."""
        logs = self._log_lmbdas
        position = (math.log(lmbda) - float(logs[0])) / float(logs[1] - logs[0])
        return min(max(position + 1.0, 1.0), float(self.rate_levels))

    def _gains(self, quality: float | None) -> tuple[Tensor, Tensor] | None:
        """Gain and inverse gain ``(1, M, 1, 1)`` at ``quality``; None for fixed-rate codecs."""
        quality = self.check_quality(quality)
        if quality is None:
            return None
        index, t = self._level(quality)
        log_gain = (1 - t) * self.log_gain[index] + t * self.log_gain[index + 1]
        log_inverse = (1 - t) * self.log_inverse_gain[index] + t * self.log_inverse_gain[index + 1]
        return log_gain.exp()[None, :, None, None], log_inverse.exp()[None, :, None, None]

    # -- shared pieces ---------------------------------------------------------------------

    def _pad(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        bottom = -height % self.downsampling
        right = -width % self.downsampling
        padding = (0, right, 0, bottom)
        return (F.pad(x, padding, mode="replicate") if right or bottom else x), padding

    @staticmethod
    def _crop(x: Tensor, image_size: tuple[int, int], padding: tuple[int, int, int, int]) -> Tensor:
        left, _, top, _ = padding
        height, width = image_size
        return x[..., top : top + height, left : left + width]

    @staticmethod
    def _tap(transform: nn.Sequential, x: Tensor, name: str, features: dict[str, Tensor]) -> Tensor:
        """Run a four-stage transform, recording the output of every stage but the last."""
        *stages, last = transform
        for index, stage in enumerate(stages):
            x = stage(x)
            features[f"{name}.{index}"] = x
        return last(x)

    def _transform(
        self, transform: nn.Sequential, x: Tensor, name: str, features: dict[str, Tensor]
    ) -> Tensor:
        """:meth:`_tap` under :attr:`transform_autocast` (when set), returning float32."""
        if self.transform_autocast is None:
            return self._tap(transform, x, name, features)
        with torch.autocast(x.device.type, dtype=self.transform_autocast):
            out = self._tap(transform, x, name, features)
        return out.float()

    def _analyse(
        self, x: Tensor, quality: float | None, features: dict[str, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, tuple[int, int], tuple[int, int, int, int]]:
        """``g_a`` of the padded images (under :attr:`transform_autocast`, stages tapped into
        ``features``), times the gain at ``quality``; with the gains, the image size and the
        padding that undo it."""
        gains = self._gains(quality)
        image_size = (x.shape[-2], x.shape[-1])
        x, padding = self._pad(x)
        y = self._transform(self.g_a, x, "g_a", features)
        if gains is not None:
            y = y * gains[0]
        return y, gains, image_size, padding

    def _hyper(self, z_hat: Tensor, arithmetic: Arithmetic) -> tuple[Tensor, Tensor]:
        """Hyper means and scales, as working values of ``arithmetic`` (for the slice loop)."""
        with arithmetic.scope():
            params = arithmetic.apply(self.h_s, arithmetic.from_real(z_hat))
        means, scales = params.chunk(2, dim=1)
        return means, scales

    def feature_channels(self) -> dict[str, int]:
        """Channels of every tensor ``forward`` records in ``features``, from the configuration."""
        n = self.g_a[0][0].out_channels
        m = self.context.slice_channels * self.context.num_slices
        channels = {f"g_a.{i}": n for i in range(3)} | {"y": m} | {f"g_s.{i}": n for i in range(3)}
        for i in range(self.context.num_slices):
            channels[f"entropy.{i}.mean"] = channels[f"entropy.{i}.scale"] = (
                self.context.slice_channels
            )
        return channels

    def expected_shapes(
        self, image_size: tuple[int, int]
    ) -> tuple[tuple[int, int, int, int], dict]:
        """Padding and latent shapes this codec produces for an image of ``(height, width)``."""
        height, width = image_size
        padding = (0, -width % self.downsampling, 0, -height % self.downsampling)
        padded = (height + padding[3], width + padding[1])
        shapes = {
            "y": (padded[0] // 16, padded[1] // 16),
            "z": (padded[0] // self.downsampling, padded[1] // self.downsampling),
        }
        return padding, shapes

    def check_compressed(self, compressed: Compressed) -> None:
        """Refuse a :class:`Compressed` this codec could not have written (before any work).

        Raises:
            ValueError: wrong latent names, shapes or padding for the image size, string
                counts that differ between latents, or a quality this codec does not take.
        """
        height, width = compressed.image_size
        if height < 1 or width < 1:
            raise ValueError(f"empty image size {height}x{width}")
        padding, shapes = self.expected_shapes((height, width))
        if set(compressed.strings) != set(shapes) or set(compressed.shapes) != set(shapes):
            raise ValueError(f"latents {sorted(compressed.strings)} are not {sorted(shapes)}")
        for name, shape in shapes.items():
            if tuple(compressed.shapes[name]) != shape:
                raise ValueError(
                    f"latent {name} has shape {tuple(compressed.shapes[name])}, "
                    f"expected {shape} for a {height}x{width} image"
                )
        if tuple(compressed.padding) != padding:
            raise ValueError(f"padding {tuple(compressed.padding)} is not {padding}")
        counts = {len(strings) for strings in compressed.strings.values()}
        if len(counts) != 1 or not counts.pop():
            raise ValueError("latents hold different numbers of strings")
        if self.variable_rate and compressed.quality is None:
            raise ValueError(f"{self.codec_name} is variable-rate: the file must give a quality")
        self.check_quality(compressed.quality)

    def _coding_tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        gc = self.context.gaussian_conditional
        return (
            gc.quantized_cdf.tolist(),
            gc.cdf_length.reshape(-1).int().tolist(),
            gc.offset.reshape(-1).int().tolist(),
        )

    # -- the three entry points ------------------------------------------------------------

    def forward(
        self, x: Tensor, exact: bool | None = None, quality: float | None = None
    ) -> CodecOutput:
        """Reconstruction, likelihoods and tapped features.

        In training mode ``y`` and ``z`` get additive uniform noise for the likelihoods and a
        straight-through rounding for the reconstruction; in eval mode both are rounded
        exactly as :meth:`compress` rounds them, so the reconstructions agree.

        Args:
            x: images ``(B, 3, H, W)`` in ``[0, 1]``.
            exact: compute the entropy parameters in fixed point as :meth:`compress` does
                (no gradient flows through them). Default: in eval mode only. A frozen
                teacher that only needs features can pass ``False`` to save time.
            quality: for a variable-rate codec, the quality to code at (default: the middle).
        """
        exact = (not self.training) if exact is None else exact
        arithmetic = arithmetic_for(exact)
        features: dict[str, Tensor] = {}
        y, gains, image_size, padding = self._analyse(x, quality, features)
        features["y"] = y
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        z_offset = self.entropy_bottleneck._get_medians()
        z_hat = _round_ste(z - z_offset) + z_offset
        hyper_means, hyper_scales = self._hyper(z_hat, arithmetic)

        y_slices = self.context.split(y)
        y_likelihoods: list[Tensor] = []

        def quantize(i: int, mean: Tensor, scale: Tensor) -> Tensor:
            _, likelihood = self.context.gaussian_conditional(y_slices[i], scale, mean)
            y_likelihoods.append(likelihood)
            return _round_ste(y_slices[i] - mean) + mean

        y_hat, parameters = self.context.run(hyper_means, hyper_scales, quantize, arithmetic)
        for i, p in enumerate(parameters):
            features[f"entropy.{i}.mean"] = p.mean
            features[f"entropy.{i}.scale"] = p.scale
        if gains is not None:
            y_hat = y_hat * gains[1]
        x_hat = self._transform(self.g_s, y_hat, "g_s", features)
        return CodecOutput(
            x_hat=self._crop(x_hat, image_size, padding),
            likelihoods={"y": torch.cat(y_likelihoods, dim=1), "z": z_likelihoods},
            features=features,
        )

    @torch.no_grad()
    def reconstruct_unquantized(self, x: Tensor, quality: float | None = None) -> Tensor:
        """``g_s(g_a(x))`` with nothing rounded: the transforms' ceiling.

        What the decoder would give if the latent were sent exactly (a variable-rate codec at
        ``quality``'s gain and inverse gain): the limit that ever finer quantisation tends to.
        When a variable-rate codec's top qualities code close to this PSNR, more bits cannot
        help them; the analysis and synthesis transforms, not the quantiser or the entropy
        model, are what limit them. (A synthesis trained on rounded latents can code slightly
        past it at its own quantisation step: it has learned to expect integers.)
        """
        features: dict[str, Tensor] = {}
        y, gains, image_size, padding = self._analyse(x, quality, features)
        if gains is not None:
            y = y * gains[1]
        x_hat = self._transform(self.g_s, y, "g_s", features)
        return self._crop(x_hat, image_size, padding)

    @torch.no_grad()
    def latents(self, x: Tensor, quality: float | None = None) -> tuple[Tensor, Tensor]:
        """The latents ``(y, z)`` :meth:`compress` codes for ``x``: ``g_a`` of the padded
        images (times the gain at ``quality``) and ``h_a`` of that; the starting point of
        encoder-side refinement (:mod:`lic.codecs.refine`)."""
        y = self.g_a(self._pad(x)[0])
        gains = self._gains(quality)
        if gains is not None:
            y = y * gains[0]
        return y, self.h_a(y)

    def decode_relaxed(self, y: Tensor, z: Tensor, quality: float | None = None) -> RelaxedCoding:
        """Differentiable stand-in for coding ``(y, z)`` and decoding them.

        ``y`` and ``z`` are rounded as :meth:`compress` rounds them (``z`` around the
        bottleneck's medians, each slice of ``y`` around its predicted mean), with a
        straight-through gradient, and the synthesis sees the rounded ``ŷ``. Two bit counts
        come back: ``bits``, the entropy models' discrete likelihoods of the rounded values
        (float arithmetic, within a fraction of a percent of the coded size), and
        ``smooth_bits``, the same likelihoods at the unrounded values, whose gradient says
        where the density is (as in training, where the likelihoods see ``y`` plus noise):
        the straight-through gradient of ``bits`` is blind inside a quantisation bin.
        """
        bottleneck = self.entropy_bottleneck
        offset = bottleneck._get_medians()
        z_hat = _round_ste(z - offset) + offset

        def z_bits(values: Tensor) -> Tensor:
            # EntropyBottleneck's density takes (channels, 1, values).
            channels, batch = values.shape[1], values.shape[0]
            likelihood, _, _ = bottleneck._likelihood(
                values.transpose(0, 1).reshape(channels, 1, -1)
            )
            likelihood = bottleneck.likelihood_lower_bound(likelihood)
            return -torch.log2(likelihood).reshape(channels, batch, -1).sum((0, 2))

        bits, smooth_bits = z_bits(z_hat), z_bits(z)
        hyper_means, hyper_scales = self._hyper(z_hat, arithmetic_for(False))
        gc = self.context.gaussian_conditional
        y_slices = self.context.split(y)

        def y_bits(values: Tensor, scale: Tensor, mean: Tensor) -> Tensor:
            likelihood = gc.likelihood_lower_bound(gc._likelihood(values, scale, mean))
            return -torch.log2(likelihood).flatten(1).sum(1)

        def quantize(i: int, mean: Tensor, scale: Tensor) -> Tensor:
            nonlocal bits, smooth_bits
            y_hat = _round_ste(y_slices[i] - mean) + mean
            bits = bits + y_bits(y_hat, scale, mean)
            smooth_bits = smooth_bits + y_bits(y_slices[i], scale, mean)
            return y_hat

        y_hat, _ = self.context.run(hyper_means, hyper_scales, quantize, arithmetic_for(False))
        gains = self._gains(quality)
        if gains is not None:
            y_hat = y_hat * gains[1]
        x_hat = self._transform(self.g_s, y_hat, "g_s", {})
        return RelaxedCoding(x_hat=x_hat, bits=bits, smooth_bits=smooth_bits)

    @torch.no_grad()
    def compress(
        self,
        x: Tensor,
        stopwatch: Stopwatch | None = None,
        quality: float | None = None,
        latents: tuple[Tensor, Tensor] | None = None,
    ) -> Compressed:
        """Entropy-code a batch of images in ``[0, 1]`` into one rANS string per image and latent.

        Requires up-to-date coding tables (:meth:`update`, done by ``save_codec``). A
        ``stopwatch`` receives the time spent in entropy coding (section ``"entropy"``). A
        variable-rate codec codes at ``quality`` (default: the middle level) and records it.
        ``latents`` codes these ``(y, z)`` instead of :meth:`latents` of ``x`` (refined ones,
        :mod:`lic.codecs.refine`); the decoder cannot tell the difference.
        """
        quality = self.check_quality(quality)
        image_size = (x.shape[-2], x.shape[-1])
        padding, shapes = self.expected_shapes(image_size)
        if latents is None:
            y, z = self.latents(x, quality)
        else:
            y, z = latents
            for name, latent in (("y", y), ("z", z)):
                if latent.shape[0] != x.shape[0] or tuple(latent.shape[-2:]) != shapes[name]:
                    raise ValueError(
                        f"latent {name} of shape {tuple(latent.shape)} does not belong to "
                        f"images of shape {tuple(x.shape)}"
                    )
        with section(stopwatch, "entropy"):
            z_strings = self.entropy_bottleneck.compress(z)
            z_hat = rans.decompress_bottleneck(self.entropy_bottleneck, z_strings, z.shape[-2:])
        hyper_means, hyper_scales = self._hyper(z_hat, FIXED_POINT)

        gc = self.context.gaussian_conditional
        y_slices = self.context.split(y)
        coded: list[tuple[Tensor, Tensor]] = []
        low, high = rans.symbol_range(*self._coding_tables()[1:])

        def quantize(i: int, mean: Tensor, scale: Tensor) -> Tensor:
            symbols = gc.quantize(y_slices[i], "symbols", mean).clamp_(low, high)
            coded.append((symbols, self.context.scale_indexes(scale)))
            return gc.dequantize(symbols, mean)

        self.context.run(hyper_means, hyper_scales, quantize, FIXED_POINT)
        y_strings = []
        with section(stopwatch, "entropy"):
            cdfs, cdf_lengths, offsets = self._coding_tables()
            for b in range(x.shape[0]):
                encoder = BufferedRansEncoder()
                for symbols, indexes in coded:
                    encoder.encode_with_indexes(
                        symbols[b].reshape(-1).tolist(),
                        indexes[b].reshape(-1).tolist(),
                        cdfs,
                        cdf_lengths,
                        offsets,
                    )
                y_strings.append(encoder.flush())
        return Compressed(
            strings={"y": y_strings, "z": list(z_strings)},
            shapes={"y": tuple(y.shape[-2:]), "z": tuple(z.shape[-2:])},
            image_size=image_size,
            padding=padding,
            quality=quality,
        )

    @torch.no_grad()
    def decompress(self, compressed: Compressed, stopwatch: Stopwatch | None = None) -> Tensor:
        """Decode what :meth:`compress` produced into images in ``[0, 1]``, cropped back.

        A ``stopwatch`` receives the time spent in entropy decoding (section ``"entropy"``).

        Strings from elsewhere are untrusted: the shapes are checked against the image size
        first, and every string is read by :mod:`lic.rans`, never by CompressAI's unchecked
        decoder: each read is checked against the string's end, bypass counts no encoder
        writes are refused, a string must be consumed exactly, and symbols outside the coding
        tables' range are clamped to it before synthesis.

        Raises:
            ValueError: latent names, shapes or padding that this codec cannot have written.
            lic.rans.RansError: a string that no encoder wrote (a corrupt payload).
        """
        self.check_compressed(compressed)
        gains = self._gains(compressed.quality)
        z_shape = tuple(compressed.shapes["z"])
        device = next(self.parameters()).device
        with section(stopwatch, "entropy"):
            z_hat = rans.decompress_bottleneck(
                self.entropy_bottleneck, compressed.strings["z"], z_shape
            ).to(device)
            cdfs, cdf_lengths, offsets = self._coding_tables()
            decoders = []
            for string in compressed.strings["y"]:
                decoder = rans.RansDecoder(clamp=True)
                decoder.set_stream(string)
                decoders.append(decoder)
        hyper_means, hyper_scales = self._hyper(z_hat, FIXED_POINT)
        gc = self.context.gaussian_conditional

        def quantize(i: int, mean: Tensor, scale: Tensor) -> Tensor:
            indexes = self.context.scale_indexes(scale)
            with section(stopwatch, "entropy"):
                symbols = [
                    torch.tensor(
                        decoder.decode_stream(
                            indexes[b].reshape(-1).tolist(), cdfs, cdf_lengths, offsets
                        ),
                        dtype=torch.int32,
                    )
                    for b, decoder in enumerate(decoders)
                ]
                symbols_tensor = torch.stack(symbols).reshape(mean.shape).to(mean.device)
            return gc.dequantize(symbols_tensor, mean)

        y_hat, _ = self.context.run(hyper_means, hyper_scales, quantize, FIXED_POINT)
        for decoder in decoders:
            decoder.check_end()
        if gains is not None:
            y_hat = y_hat * gains[1]
        x_hat = torch.nan_to_num(self.g_s(y_hat), nan=0.0).clamp_(0, 1)
        return self._crop(x_hat, compressed.image_size, compressed.padding)
