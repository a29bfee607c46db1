"""In what order a list of inputs is loaded, batched, run and turned into text.

Three kinds of threads share the work of ``Model.transcribe`` on a list: loader threads
decode audio one window ahead (``input_order``, ``input_windows``), the calling thread runs
the model batch by batch (``BatchFlow``), and one text thread turns decoded batches into
Transcripts. They share one interpreter lock, which decides the order below: the text thread's
pure-Python work, run while the calling thread packs the next batch's audio, made that packing
up to 7x slower on the GPU hosts (the packing threads waited out the lock's 5 ms switch
interval at every numpy call), and the GPU waited for it
(benchmarks/results/gpu_throughput_timeline_h100_2026-11-24_*.json).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Generic, TypeVar

import numpy as np

# Audio decoding threads, and how many inputs are decoded ahead (bounds memory on long lists).
LOAD_THREADS = min(8, os.cpu_count() or 1)
MIN_WINDOW = 64

Started = TypeVar("Started")
Decoded = TypeVar("Decoded")
Batch = TypeVar("Batch")


def size_hint(source: object) -> int:
    """A cheap stand-in for an input's duration, known before decoding it: file size, bytes,
    samples. Unreadable paths give 0 (their error is reported when they are loaded)."""
    if isinstance(source, np.ndarray):
        return int(source.size)
    if isinstance(source, bytes):
        return len(source)
    try:
        return os.stat(source).st_size  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return 0


def input_order(inputs: Sequence[object], batch_size: int) -> list[int]:
    """The order inputs are loaded and batched in: as given for batch 1; by size for batches,
    so even the first batch (formed before the rest is decoded) holds similar lengths."""
    if batch_size == 1:
        return list(range(len(inputs)))
    return sorted(range(len(inputs)), key=lambda i: size_hint(inputs[i]))


def input_windows(count: int, batch_size: int) -> list[range]:
    """Consecutive windows of positions in ``input_order``: audio of a window is decoded
    while the previous one runs.
    The first window is one batch, so the GPU starts after one batch of files, not a window;
    later ones hold several batches (sorting by length inside a window keeps padding small)."""
    window = max(MIN_WINDOW, batch_size * 4)
    bounds = [0, min(count, batch_size if batch_size > 1 else window)]
    while bounds[-1] < count:
        bounds.append(min(count, bounds[-1] + window))
    return [range(a, b) for a, b in pairwise(bounds)] if count else []


class BatchFlow(Generic[Batch, Started, Decoded]):
    """The calling thread's order of work over consecutive batches.

    ``start`` launches a batch (host packing, then asynchronous GPU work); ``end`` waits for
    its decode; ``hand_over`` gives a decoded batch to the text thread. A batch for which
    ``overlaps`` is true is ended only after the next batch has been started, so its decode
    runs alongside that batch's frontend and encoder. Decoded batches are handed over only
    after the next ``start`` has returned: the text thread then runs while this thread waits
    for the GPU, not while it packs audio.
    """

    def __init__(
        self,
        start: Callable[[Batch], Started],
        overlaps: Callable[[Started], bool],
        end: Callable[[Started], Decoded],
        hand_over: Callable[[Started, Decoded], None],
    ) -> None:
        self._start, self._overlaps, self._end, self._hand_over = start, overlaps, end, hand_over
        self._in_flight: Started | None = None
        self._decoded: list[tuple[Started, Decoded]] = []

    def push(self, batch: Batch) -> None:
        started = self._start(batch)
        self._release()
        self.end_in_flight()
        if self._overlaps(started):
            self._in_flight = started
        else:
            self._decoded.append((started, self._end(started)))

    def drain(self) -> None:
        """End the batch in flight and hand everything over (at the end)."""
        self.end_in_flight()
        self._release()

    def end_in_flight(self) -> None:
        """Wait for the batch in flight, before this thread blocks on something other than
        the GPU (the next window's audio): its decode need not wait for that. It is handed
        over with the next batch's, after the next start: while loader threads still
        decode, the text thread would compete with them and then with that start."""
        if self._in_flight is not None:
            started, self._in_flight = self._in_flight, None
            self._decoded.append((started, self._end(started)))

    def _release(self) -> None:
        decoded, self._decoded = self._decoded, []
        for started, result in decoded:
            self._hand_over(started, result)
