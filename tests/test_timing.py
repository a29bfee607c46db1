"""Phase clocks: how host and device phase ends combine, and (on CUDA) that device work queued
in a phase is charged to that phase without synchronizing between phases."""

from __future__ import annotations

import time

import pytest
import torch

from budgie import timing
from budgie.timing import PhaseClock, PhaseEnd, settle_phases


def test_settle_charges_device_work_to_the_phase_that_queued_it() -> None:
    # The host launched the encoder at 1.1 s while the frontend's work ran until 1.3 s; the
    # encoder's work ended at 2.0 s, long after the host returned at 1.15 s.
    ms = settle_phases(
        1.0,
        [
            PhaseEnd("preprocess", 1.1, 1.3),
            PhaseEnd("encode", 1.15, 2.0),
            PhaseEnd("decode", 2.5, 2.4),
        ],
    )
    assert ms == pytest.approx({"preprocess": 300.0, "encode": 700.0, "decode": 500.0})
    assert sum(ms.values()) == pytest.approx(1500.0)  # = last end - origin


def test_settle_host_only_phases_and_repeated_names() -> None:
    ms = settle_phases(
        0.0,
        [PhaseEnd("a", 0.010, None), PhaseEnd("b", 0.025, 0.020), PhaseEnd("a", 0.030, None)],
    )
    assert ms == pytest.approx({"a": 15.0, "b": 15.0})


def test_settle_never_runs_backwards() -> None:
    # A device end earlier than the previous phase's end (no work queued) costs nothing.
    ms = settle_phases(0.0, [PhaseEnd("a", 0.010, 0.050), PhaseEnd("b", 0.020, 0.030)])
    assert ms == pytest.approx({"a": 50.0, "b": 0.0})


def test_cpu_clock_times_the_host() -> None:
    clock = PhaseClock(torch.device("cpu"))
    with clock.phase("work"):
        time.sleep(0.02)
    assert 15.0 < clock.ms["work"] < 500.0


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
@pytest.mark.parametrize("overlap", [True, False])
def test_cuda_phases_charge_queued_work(monkeypatch: pytest.MonkeyPatch, overlap: bool) -> None:
    """A phase that only queues ~15-20 ms of device work gets that time, the next (host-only)
    phase does not, and the phases add up to the wall time."""
    monkeypatch.setattr(timing, "OVERLAP_PHASES", overlap)
    device = torch.device("cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    clock = PhaseClock(device)
    with clock.phase("queue"):
        torch.cuda._sleep(30_000_000)  # ~15-20 ms of GPU clock cycles
    with clock.phase("host"):
        time.sleep(0.002)
    ms = dict(clock.ms)
    wall = (time.perf_counter() - start) * 1000.0
    assert ms["queue"] > 5.0
    assert ms["host"] < ms["queue"]
    assert sum(ms.values()) <= wall + 0.5
