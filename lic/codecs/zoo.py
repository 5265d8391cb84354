"""Registered codec variants: the FEDS teacher, the students, and tiny versions for tests.

Paper scale follows the FEDS setup: a high-capacity teacher (Swin-V2 attention interleaved with
extra residual blocks, expanded latent M=320 in 5 slices) and a lightweight convolutional
student with the same entropy-model family. ``student-swin`` is a small attention student used
to show that distillation carries over to transformer students. The ``-tiny`` variants keep
every structural feature (attention, residual blocks, several slices) at widths that run the
test suite on two CPU cores.
"""

from __future__ import annotations

import math

from lic.codecs.codec import ChannelARCodec
from lic.codecs.registry import codec_spec, list_codecs, register_codec

register_codec(
    "teacher",
    ChannelARCodec,
    "FEDS teacher: Swin-V2 attention + extra residual blocks, M=320 in 5 slices",
    channels=192,
    latent_channels=320,
    num_slices=5,
    res_blocks=(3, 3, 3),
    swin_depths=(2, 2, 2),
    num_heads=6,
    window_size=8,
    hyper_channels=192,
    context_hidden=224,
)
register_codec(
    "student",
    ChannelARCodec,
    "lightweight convolutional student: N=128, M=192 in 4 slices, no attention",
    channels=128,
    latent_channels=192,
    num_slices=4,
    res_blocks=(1, 1, 1),
    swin_depths=(0, 0, 0),
    hyper_channels=128,
    context_hidden=120,
)
register_codec(
    "student-swin",
    ChannelARCodec,
    "small transformer student: one Swin-V2 block per stage, N=96, M=192 in 4 slices",
    channels=96,
    latent_channels=192,
    num_slices=4,
    res_blocks=(0, 0, 0),
    swin_depths=(1, 1, 1),
    num_heads=3,
    window_size=8,
    hyper_channels=128,
    context_hidden=128,
)
register_codec(
    "teacher-small",
    ChannelARCodec,
    "CPU-trainable teacher of the default model: Swin-V2 + residual blocks, N=32, M=80 in 5 slices",
    channels=32,
    latent_channels=80,
    num_slices=5,
    res_blocks=(1, 1, 1),
    swin_depths=(1, 1, 1),
    num_heads=2,
    window_size=4,
    hyper_channels=32,
    context_hidden=48,
)
register_codec(
    "student-small",
    ChannelARCodec,
    "the default (shipped) student: convolutional, N=32, M=64 in 4 slices",
    channels=32,
    latent_channels=64,
    num_slices=4,
    res_blocks=(1, 1, 1),
    swin_depths=(0, 0, 0),
    hyper_channels=32,
    context_hidden=32,
)
register_codec(
    "student-medium",
    ChannelARCodec,
    "the wider student for the top rates: `student-small`'s structure at N=48, M=128 in 4 "
    "slices (student-small saturates near 29.5 dB on Kodak whatever its λ)",
    channels=48,
    latent_channels=128,
    num_slices=4,
    res_blocks=(1, 1, 1),
    swin_depths=(0, 0, 0),
    hyper_channels=48,
    context_hidden=48,
)
register_codec(
    "student-medium-deep-ga",
    ChannelARCodec,
    "asymmetric `student-medium`: three residual blocks in the analysis transform's stages 2 "
    "and 3 (one in the synthesis), so the encoder is deeper and decoding costs the same; grows "
    "from `student-medium` weights (lic.codecs.grow)",
    **codec_spec("student-medium").kwargs,
    analysis_res_blocks=(1, 3, 3),
)
register_codec(
    "student-swin-small",
    ChannelARCodec,
    "CPU-trainable transformer student: `student-small`'s widths with one Swin-V2 block per "
    "stage in place of its residual blocks, N=32, M=64 in 4 slices",
    channels=32,
    latent_channels=64,
    num_slices=4,
    res_blocks=(0, 0, 0),
    swin_depths=(1, 1, 1),
    num_heads=2,
    window_size=4,
    hyper_channels=32,
    context_hidden=32,
)
register_codec(
    "teacher-tiny",
    ChannelARCodec,
    "test-size teacher: same structure as `teacher`, widths 32/40",
    channels=32,
    latent_channels=40,
    num_slices=5,
    res_blocks=(1, 1, 1),
    swin_depths=(2, 2, 2),
    num_heads=2,
    window_size=4,
    hyper_channels=32,
    context_hidden=32,
)
register_codec(
    "student-tiny",
    ChannelARCodec,
    "test-size student: same structure as `student`, widths 16/24",
    channels=16,
    latent_channels=24,
    num_slices=3,
    res_blocks=(1, 1, 1),
    swin_depths=(0, 0, 0),
    hyper_channels=16,
    context_hidden=16,
)
register_codec(
    "student-swin-tiny",
    ChannelARCodec,
    "test-size transformer student: same structure as `student-swin`, widths 16/24",
    channels=16,
    latent_channels=24,
    num_slices=3,
    res_blocks=(0, 0, 0),
    swin_depths=(1, 1, 1),
    num_heads=2,
    window_size=4,
    hyper_channels=16,
    context_hidden=16,
)

#: Trained levels of the variable-rate variants: λ log-spaced over the default codec's range.
VARIABLE_RATE_LEVELS = 8
VARIABLE_RATE_RANGE = (0.0018, 0.18)

# Every variant above also comes variable-rate, as `<name>-vr`: the same network plus one gain
# and one inverse gain per trained λ (ChannelARCodec, "Variable rate"); `--quality` 1 to 8.
for _name in list_codecs():
    _spec = codec_spec(_name)
    register_codec(
        f"{_name}-vr",
        ChannelARCodec,
        f"variable-rate `{_name}`: any quality from 1 to {VARIABLE_RATE_LEVELS} "
        f"(λ {VARIABLE_RATE_RANGE[0]}–{VARIABLE_RATE_RANGE[1]}) from one model",
        **_spec.kwargs,
        rate_levels=VARIABLE_RATE_LEVELS,
        rate_range=VARIABLE_RATE_RANGE,
    )


def levels_below(levels: int, rate_range: tuple[float, float], added: int) -> tuple[float, float]:
    """``rate_range`` extended by ``added`` levels below its lowest λ, at the spacing that
    ``levels`` levels have over it, so that the extended grid holds the original levels exactly
    (and a codec grown to it codes them as before, lic.codecs.grow)."""
    low, high = rate_range
    step = (math.log(high) - math.log(low)) / (levels - 1)
    return math.exp(math.log(low) - added * step), high


#: Levels the low-range default adds below λ 0.0018, where `student-medium-vr` codes about
#: 0.19 bpp on Kodak: two more reach about 0.1 bpp, the lowest rate the issue asks for.
LOW_RATE_LEVELS = 2
register_codec(
    "student-medium-vr10",
    ChannelARCodec,
    f"`student-medium-vr` with {LOW_RATE_LEVELS} more levels below λ {VARIABLE_RATE_RANGE[0]} "
    "(qualities 1 to 10 down to about 0.1 bpp on Kodak; its quality q+2 is the other's q); "
    "grows from `student-medium-vr` weights (lic.codecs.grow)",
    **codec_spec("student-medium").kwargs,
    rate_levels=VARIABLE_RATE_LEVELS + LOW_RATE_LEVELS,
    rate_range=levels_below(VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE, LOW_RATE_LEVELS),
)
