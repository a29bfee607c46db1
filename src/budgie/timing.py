"""Phase timers that tell the truth on asynchronous devices.

On CUDA a kernel launch returns before the work is done, so a host clock read right after it
measures the launch, not the work. ``PhaseClock`` synchronizes the device at each phase boundary
when ``sync`` is set (the default): the phases then add up to the total and each one is the
time its work really took. Throughput runs may turn ``sync`` off; per-phase figures are then
launch times and only ``total_ms`` is meaningful (benchmark records say which mode was used).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class PhaseClock:
    def __init__(self, device: torch.device, sync: bool = True) -> None:
        self.sync = sync and device.type == "cuda"
        self.device = device
        self.ms: dict[str, float] = {}

    def _barrier(self) -> None:
        if self.sync:
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._barrier()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._barrier()
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000.0
