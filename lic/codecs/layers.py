"""Building blocks of the analysis and synthesis transforms.

All modules take and return NCHW tensors. :class:`SwinV2Stage` wraps timm's
``SwinTransformerV2Block`` (which works on NHWC) so that attention stages can be interleaved
with convolutions.

timm is imported only when a Swin stage is built: the convolutional students (the shipped
default codec among them) then load without it, which keeps ``lic encode`` / ``lic decode``
about a second faster to start. (Importing lic first makes timm's torchvision import work on
CPU torch, see :mod:`lic._compat`.)
"""

from __future__ import annotations

from torch import Tensor, nn


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """Convolution that divides the spatial size by ``stride`` exactly (for multiples of it)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)


def deconv(
    in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2
) -> nn.ConvTranspose2d:
    """Transposed convolution that multiplies the spatial size by ``stride`` exactly."""
    return nn.ConvTranspose2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding=kernel_size // 2,
        output_padding=stride - 1,
    )


class ResidualBlock(nn.Module):
    """``x + conv3x3(act(conv3x3(act(x))))``: the pre-activation residual block used between
    resampling convolutions (as in ELIC and TCM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(0.01),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.01),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SwinV2Stage(nn.Module):
    """A stack of Swin-Transformer V2 blocks (timm) on NCHW feature maps.

    Blocks alternate between regular and shifted windows. ``dynamic_mask=True`` makes timm build
    the shifted-window attention mask from the actual input size, so any feature-map size works
    (timm pads to a window multiple internally and crops back).

    Args:
        channels: feature width; must be divisible by ``num_heads``.
        depth: number of blocks.
        num_heads: attention heads per block.
        window_size: side of the square attention window.
    """

    def __init__(self, channels: int, depth: int, num_heads: int, window_size: int) -> None:
        from timm.models.swin_transformer_v2 import SwinTransformerV2Block

        super().__init__()
        # input_resolution only decides whether timm shrinks the window for small inputs; with
        # the dynamic mask the real size is taken per call, so a size above the window keeps
        # the configured window and shift.
        resolution = (2 * window_size, 2 * window_size)
        self.blocks = nn.Sequential(
            *(
                SwinTransformerV2Block(
                    dim=channels,
                    input_resolution=resolution,
                    num_heads=num_heads,
                    window_size=window_size,
                    shift_size=0 if i % 2 == 0 else window_size // 2,
                    dynamic_mask=True,
                )
                for i in range(depth)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


def transform_stage(
    channels: int, res_blocks: int, swin_depth: int, num_heads: int, window_size: int
) -> nn.Sequential:
    """Residual blocks followed by an optional Swin-V2 stage, at constant width."""
    layers: list[nn.Module] = [ResidualBlock(channels) for _ in range(res_blocks)]
    if swin_depth > 0:
        layers.append(SwinV2Stage(channels, swin_depth, num_heads, window_size))
    return nn.Sequential(*layers)
