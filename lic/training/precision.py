"""Which reduced precision a device can train the transforms in (bf16 autocast), and its name."""

from __future__ import annotations

from pathlib import Path

import torch

from lic.errors import UsageError

PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype for :attr:`ChannelARCodec.transform_autocast`, or None for float32.

    ``auto`` picks bf16 on a CUDA device that supports it and on a CPU with bf16 instructions
    (elsewhere bf16 is emulated and slower than float32), float32 otherwise.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None
