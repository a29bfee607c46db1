"""What the GPU kernel micro-benchmarks share: timing a call inside a CUDA graph (as the
encoder's graphs run it: no launch costs) and the record's header."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch

REPLAYED = 10  # calls captured per graph; a time is one replay divided by this


def graph_timed(fn: Callable[[], object], reps: int = 10) -> float:
    """Median milliseconds per call of ``fn`` captured REPLAYED times in a CUDA graph."""
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPLAYED):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times: list[float] = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)) / REPLAYED)
    return sorted(times)[len(times) // 2]


def gpu_record() -> dict[str, Any]:
    """A result record's header: device, date, command; its runs go under "runs"."""
    return {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "runs": [],
    }
