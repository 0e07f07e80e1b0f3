"""Per-run stage timer (SPEC §0 stage names).

On CPU: wall clock. On CUDA: a pair of CUDA events per stage, recorded on the current stream with
no host synchronization inside or between stages; the elapsed times are read (one synchronize)
when ``ms`` is first asked for. State lives in the ``StageTimer`` instance (one per run).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    def __init__(self, device: torch.device):
        self.device = device
        self._cpu_ms: dict[str, float] = {}
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block; a repeated name accumulates."""
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, start, end))
            return
        began = time.perf_counter()
        try:
            yield
        finally:
            self._cpu_ms[name] = self._cpu_ms.get(name, 0.0) + (time.perf_counter() - began) * 1e3

    @property
    def ms(self) -> dict[str, float]:
        """Milliseconds per stage, in first-timed order."""
        if self._events:
            self._events[-1][2].synchronize()
            for name, start, end in self._events:
                self._cpu_ms[name] = self._cpu_ms.get(name, 0.0) + start.elapsed_time(end)
            self._events.clear()
        return dict(self._cpu_ms)
