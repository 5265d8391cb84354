"""A stopwatch that codecs report into, to split coding time into its parts."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch


class Stopwatch:
    """Accumulates wall time per named section; synchronises CUDA around each section."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start


def section(stopwatch: Stopwatch | None, name: str) -> contextlib.AbstractContextManager:
    """``stopwatch.section(name)``, or a no-op without a stopwatch."""
    return stopwatch.section(name) if stopwatch is not None else contextlib.nullcontext()
