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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from torch import Tensor, nn

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
    """

    strings: dict[str, list[bytes]]
    shapes: dict[str, tuple[int, ...]]
    image_size: tuple[int, int]
    padding: tuple[int, int, int, int]

    @property
    def batch_size(self) -> int:
        return len(self.strings["y"])


def _padded(string: bytes, symbols: int) -> bytes:
    """A rANS string with zero bytes behind it, for decoding strings from elsewhere.

    CompressAI's decoder reads 32-bit words without bounds checks: 8 bytes to start, at most one
    word per symbol, and more only for escape-coded (bypass) values. An honest string is never
    read past its end; a truncated or forged one would be, so it gets one zero word per symbol
    plus slack. Zero words keep the decoder's state small, which makes further bypass reads
    unlikely; decoding ends after the known number of symbols whatever the bytes say.
    """
    return bytes(string) + bytes(4 * symbols + 1024)


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
        swin_depths: Swin-V2 blocks in each inner stage (0: none).
        num_heads: attention heads of the Swin-V2 blocks.
        window_size: attention window of the Swin-V2 blocks.
        hyper_channels: channels of the hyper-latent ``z``.
        context_hidden: width of the slice mean/scale/LRP transforms.
        max_support_slices: previous slices each slice conditions on (-1: all).
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
        swin_depths: int | Sequence[int] = 0,
        num_heads: int = 4,
        window_size: int = 8,
        hyper_channels: int = 128,
        context_hidden: int = 128,
        max_support_slices: int = -1,
    ) -> None:
        super().__init__()
        n, m, h = channels, latent_channels, hyper_channels
        blocks, depths = _three(res_blocks), _three(swin_depths)
        stages = [transform_stage(n, b, d, num_heads, window_size) for b, d in zip(blocks, depths)]
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
            ValueError: wrong latent names, shapes or padding for the image size, or string
                counts that differ between latents.
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

    def _coding_tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        gc = self.context.gaussian_conditional
        return (
            gc.quantized_cdf.tolist(),
            gc.cdf_length.reshape(-1).int().tolist(),
            gc.offset.reshape(-1).int().tolist(),
        )

    # -- the three entry points ------------------------------------------------------------

    def forward(self, x: Tensor, exact: bool | None = None) -> CodecOutput:
        """Reconstruction, likelihoods and tapped features.

        In training mode ``y`` and ``z`` get additive uniform noise for the likelihoods and a
        straight-through rounding for the reconstruction; in eval mode both are rounded
        exactly as :meth:`compress` rounds them, so the reconstructions agree.

        Args:
            x: images ``(B, 3, H, W)`` in ``[0, 1]``.
            exact: compute the entropy parameters in fixed point as :meth:`compress` does
                (no gradient flows through them). Default: in eval mode only. A frozen
                teacher that only needs features can pass ``False`` to save time.
        """
        exact = (not self.training) if exact is None else exact
        arithmetic = arithmetic_for(exact)
        image_size = (x.shape[-2], x.shape[-1])
        x, padding = self._pad(x)
        features: dict[str, Tensor] = {}
        y = self._transform(self.g_a, x, "g_a", features)
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
        x_hat = self._transform(self.g_s, y_hat, "g_s", features)
        return CodecOutput(
            x_hat=self._crop(x_hat, image_size, padding),
            likelihoods={"y": torch.cat(y_likelihoods, dim=1), "z": z_likelihoods},
            features=features,
        )

    @torch.no_grad()
    def compress(self, x: Tensor, stopwatch: Stopwatch | None = None) -> Compressed:
        """Entropy-code a batch of images in ``[0, 1]`` into one rANS string per image and latent.

        Requires up-to-date coding tables (:meth:`update`, done by ``save_codec``). A
        ``stopwatch`` receives the time spent in entropy coding (section ``"entropy"``).
        """
        image_size = (x.shape[-2], x.shape[-1])
        x, padding = self._pad(x)
        y = self.g_a(x)
        z = self.h_a(y)
        with section(stopwatch, "entropy"):
            z_strings = self.entropy_bottleneck.compress(z)
            z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        hyper_means, hyper_scales = self._hyper(z_hat, FIXED_POINT)

        gc = self.context.gaussian_conditional
        y_slices = self.context.split(y)
        coded: list[tuple[Tensor, Tensor]] = []

        def quantize(i: int, mean: Tensor, scale: Tensor) -> Tensor:
            symbols = gc.quantize(y_slices[i], "symbols", mean)
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
        )

    @torch.no_grad()
    def decompress(self, compressed: Compressed, stopwatch: Stopwatch | None = None) -> Tensor:
        """Decode what :meth:`compress` produced into images in ``[0, 1]``, cropped back.

        A ``stopwatch`` receives the time spent in entropy decoding (section ``"entropy"``).

        Strings from elsewhere are untrusted: the shapes are checked against the image size
        first, and every string is handed to the rANS decoder with zero padding behind it
        (see :func:`_padded`), so a string that ends too early cannot make the decoder read
        past its buffer.

        Raises:
            ValueError: latent names, shapes or padding that this codec cannot have written.
        """
        self.check_compressed(compressed)
        z_shape = tuple(compressed.shapes["z"])
        y_shape = tuple(compressed.shapes["y"])
        device = next(self.parameters()).device
        z_symbols = self.entropy_bottleneck.channels * z_shape[0] * z_shape[1]
        y_symbols = self.context.slice_channels * self.context.num_slices * y_shape[0] * y_shape[1]
        with section(stopwatch, "entropy"):
            z_strings = [_padded(s, z_symbols) for s in compressed.strings["z"]]
            z_hat = self.entropy_bottleneck.decompress(z_strings, z_shape).to(device)
            cdfs, cdf_lengths, offsets = self._coding_tables()
            decoders = []
            for string in compressed.strings["y"]:
                decoder = RansDecoder()
                decoder.set_stream(_padded(string, y_symbols))
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
        x_hat = torch.nan_to_num(self.g_s(y_hat), nan=0.0).clamp_(0, 1)
        return self._crop(x_hat, compressed.image_size, compressed.padding)
