"""The GPU frontend's host side: waveforms packed into pinned memory, one transfer, and a
CUDA graph per (batch, samples, sample dtype) bucket that turns them into log-mel features.

Why pinned memory and one transfer: a batch of 64 clips of 20 s is ~80 MB of float32 samples
(half of it as int16 PCM); pageable copies and a zeroing kernel per batch cost more than the
frontend's arithmetic. ``PinnedStaging`` keeps one page-locked buffer that grows as needed and
is only refilled once the GPU has finished reading it. ``capture_graph`` is shared with the
encoder's graphs (cuda_runner.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from budgie.audio import PCM16_SCALE
from budgie.model import ParakeetTDT

# Batches of at least this many samples (~60 s of audio) are packed into pinned memory by
# FILL_THREADS threads.
PARALLEL_FILL_SAMPLES = 1_000_000
FILL_THREADS = min(8, os.cpu_count() or 1)


def capture_graph(graph: torch.cuda.CUDAGraph, fn: Callable[[], object]) -> None:
    """Run ``fn`` once on a side stream (warm-up: compiles, allocations), then capture it."""
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph), torch.inference_mode():
        fn()


def waveform_floats(audio: Tensor) -> Tensor:
    """The frontend's input as float32: int16 PCM scaled by 2^-15 on the device (exactly the
    host's ``to_float32``), float32 as it is."""
    if audio.dtype == torch.int16:
        return audio.float() * float(PCM16_SCALE)
    return audio


class FrontendGraph:
    """Waveforms -> log-mel features for one (batch, samples, sample dtype) bucket. Samples past
    an input's length are zero and masked, so its valid frames equal the unbucketed computation.
    int16 batches (16-bit PCM files) travel as int16 and are scaled inside the graph."""

    def __init__(self, network: ParakeetTDT, batch: int, samples: int, dtype: torch.dtype) -> None:
        device = next(network.parameters()).device
        self.audio = torch.zeros(batch, samples, device=device, dtype=dtype)
        self.num_samples = torch.zeros(batch, device=device, dtype=torch.long)
        self.counts = torch.zeros(batch, dtype=torch.long, pin_memory=True)  # host side of it
        self.graph = torch.cuda.CUDAGraph()

        def frontend() -> None:
            audio = waveform_floats(self.audio)
            self.features, self.lengths = network.preprocessor(audio, self.num_samples)

        capture_graph(self.graph, frontend)

    def pack(
        self, rows: list[np.ndarray], staging: PinnedStaging, pool: ThreadPoolExecutor | None
    ) -> Tensor:
        """The rows laid out in pinned memory as the graph's padded input (zero tails, zero
        unused rows): the host's part, done while the GPU may still work on another batch."""
        batch, samples = self.audio.shape
        padded = staging.hold(batch * samples, self.audio.dtype).view(batch, samples)
        pack_padded(rows, padded.numpy(), pool)
        return padded

    def launch(
        self, padded: Tensor, rows: list[np.ndarray], staging: PinnedStaging
    ) -> tuple[Tensor, Tensor]:
        """The packed samples copied in one transfer, their lengths in another, then the
        replay; nothing waits and no kernel runs before it."""
        batch = self.audio.shape[0]
        # (staging.hold waited for the last copies, this buffer's among them)
        self.counts.numpy()[:] = [len(r) for r in rows] + [0] * (batch - len(rows))
        self.audio.copy_(padded, non_blocking=True)
        self.num_samples.copy_(self.counts, non_blocking=True)
        staging.release()
        self.graph.replay()
        return self.features[: len(rows)], self.lengths[: len(rows)]


def pack_padded(
    rows: list[np.ndarray], out: np.ndarray, pool: ThreadPoolExecutor | None = None
) -> None:
    """Row i into out[i, :len], zeros after it and in the rows past the last. Large batches
    are filled by ``pool``'s threads (numpy releases the GIL): one thread filled pinned memory
    at ~5 GB/s on the device hosts, 8 ms of a batch of 32 clips' 12 ms frontend
    (benchmarks/results/gpu_frontend_profile_h100_2026-11-24.json)."""

    def fill(every: range) -> None:
        for i in every:
            n = len(rows[i])
            out[i, :n] = rows[i]
            out[i, n:] = 0

    if pool is not None and len(rows) > 1 and sum(len(r) for r in rows) >= PARALLEL_FILL_SAMPLES:
        # One task per thread, strided over the (length-sorted) rows: a task per row cost
        # the calling thread a GIL hand-off per row.
        tasks = min(FILL_THREADS, len(rows))
        list(pool.map(fill, [range(k, len(rows), tasks) for k in range(tasks)]))
    else:
        fill(range(len(rows)))
    out[len(rows) :] = 0


class PinnedStaging:
    """A reusable page-locked host buffer for host-to-GPU copies of audio.

    ``hold`` waits until the copies issued from the previous hold have finished, so the buffer
    is never overwritten while the GPU still reads it; it grows (doubling) as needed. Its bytes
    are viewed as the dtype asked for (int16 or float32 samples).
    """

    def __init__(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)
        self._copied: torch.cuda.Event | None = None

    def hold(self, numel: int, dtype: torch.dtype = torch.float32) -> Tensor:
        if self._copied is not None:
            self._copied.synchronize()
        nbytes = numel * dtype.itemsize
        if self._buffer.numel() < nbytes:
            size = max(nbytes, 2 * self._buffer.numel())
            self._buffer = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        return self._buffer[:nbytes].view(dtype)

    def release(self) -> None:
        """Mark the end of the copies from the held buffer (on the current stream)."""
        self._copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._copied.record()
