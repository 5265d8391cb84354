"""Timing: the device synchronisation every measurement needs, and a stopwatch that codecs
report into, to split coding time into its parts."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` to finish (CUDA runs asynchronously; CPU does not).

    Call it before reading a clock around device work, or the time measured is the launch's.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates wall time per named section; synchronises CUDA around each section."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - start


def section(stopwatch: Stopwatch | None, name: str) -> contextlib.AbstractContextManager:
    """``stopwatch.section(name)``, or a no-op without a stopwatch."""
    return stopwatch.section(name) if stopwatch is not None else contextlib.nullcontext()
