"""Phase timers that tell the truth on asynchronous devices.

On CUDA a kernel launch returns before the work is done, so a host clock read right after it
measures the launch, not the work. With ``sync`` set (the default) ``PhaseClock`` makes each
phase end when both sides are done with it: the host has returned from the phase's code and
the device has finished the work queued in it. Phases then add up to the wall-clock total, and
each is the time from the end of the previous phase to its own end.

How the device side is observed: by default (``OVERLAP_PHASES``) a CUDA event is recorded at
each phase end, and the events are read once, when the phase times are asked for. The host
goes on launching the next phase while the device still works on this one, as it would
untimed, so timing costs no idle gaps: at batch 1 the encoder graph is launched while the
frontend runs, and the decoder while the encoder runs. Event times are mapped onto the host
clock through one event recorded right after a synchronization at the first phase's start.
With ``OVERLAP_PHASES = False`` the clock synchronizes the device at every phase boundary
instead (what it did before; kept for A/B measurements): each phase then also pays for its
launches while the device idles.

Throughput runs may turn ``sync`` off; per-phase figures are then host times of the launches
and only ``total_ms`` is meaningful (benchmark records say which mode was used).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

# Device phases timed by events without stalling the host between them (see the module doc).
OVERLAP_PHASES = True


class PhaseEnd(NamedTuple):
    """Where a phase ended: on the host clock (seconds) and, when it queued device work, the
    device's finish of that work mapped onto the same clock."""

    name: str
    host_s: float
    device_s: float | None


def settle_phases(origin_s: float, ends: list[PhaseEnd]) -> dict[str, float]:
    """Milliseconds per phase from consecutive phase ends: a phase is done when the host and
    the device are both done with it (and never before the phase before it), and lasts from
    the previous phase's end. The phases sum to the last end minus ``origin_s``."""
    ms: dict[str, float] = {}
    previous = origin_s
    for end in ends:
        done = max(previous, end.host_s, end.device_s if end.device_s is not None else previous)
        ms[end.name] = ms.get(end.name, 0.0) + (done - previous) * 1000.0
        previous = done
    return ms


class PhaseClock:
    def __init__(self, device: torch.device, sync: bool = True) -> None:
        self.sync = sync and device.type == "cuda"
        self.device = device
        self._ms: dict[str, float] = {}
        self._origin: tuple[float, torch.cuda.Event] | None = None
        self._ends: list[tuple[str, float, torch.cuda.Event]] = []

    @property
    def ms(self) -> dict[str, float]:
        """Milliseconds per phase name (phases of one name add up)."""
        if self._ends:
            self._settle()
        return self._ms

    def _event(self) -> torch.cuda.Event:
        """An event at this point of the clock's device's current stream."""
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(self.device))
        return event

    def _settle(self) -> None:
        assert self._origin is not None
        origin_s, origin_event = self._origin
        self._ends[-1][2].synchronize()
        ends = [
            PhaseEnd(name, host_s, origin_s + origin_event.elapsed_time(event) / 1000.0)
            for name, host_s, event in self._ends
        ]
        for name, value in settle_phases(origin_s, ends).items():
            self._ms[name] = self._ms.get(name, 0.0) + value
        self._origin = None  # a later phase starts from a fresh synchronization
        self._ends.clear()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.sync:
            start = time.perf_counter()
            try:
                yield
            finally:
                self._add(name, start)
            return
        if not OVERLAP_PHASES:
            torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            try:
                yield
            finally:
                torch.cuda.synchronize(self.device)
                self._add(name, start)
            return
        if self._origin is None:
            torch.cuda.synchronize(self.device)
            self._origin = (time.perf_counter(), self._event())
        try:
            yield
        finally:
            self._ends.append((name, time.perf_counter(), self._event()))

    def _add(self, name: str, start: float) -> None:
        self._ms[name] = self._ms.get(name, 0.0) + (time.perf_counter() - start) * 1000.0
