"""In what order a list of inputs is loaded, batched, run and turned into text.

Three kinds of threads share the work of ``Model.transcribe`` on a list: loader threads
decode audio one window ahead (``WindowedLoader``, in ``input_order`` and ``input_windows``),
the calling thread runs the model batch by batch, and one text thread turns decoded batches
into Transcripts.

The calling thread's order (``Model._run``), when phases are not synced one by one: launch
batch k (copy, frontend, encoder), stage batch k+1 (pack its samples into pinned memory)
while the GPU works, hand batch k-1 to the text thread, then wait for batch k's decode. The
threads share one interpreter lock, which is why the hand-over comes after the staging: the
text thread's pure-Python work, run while the calling thread packed audio, made that packing
up to 7x slower on the GPU hosts (the packing threads waited out the lock's 5 ms switch
interval at numpy calls) while the GPU waited for it; handed over after the packing, it runs
while the calling thread waits for the GPU (benchmarks/results/gpu_throughput_timeline_h100_*.json).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import Generic, TypeVar

import numpy as np

from budgie.results import TranscriptionError

# Audio decoding threads, and how many inputs are decoded ahead (bounds memory on long lists).
LOAD_THREADS = min(8, os.cpu_count() or 1)
MIN_WINDOW = 64
# Batched inputs go longest first: the run then ends on its shortest batch, whose decode and
# text are what is left to do once the GPU has finished (False: shortest first, for A/B runs).
LONGEST_FIRST = True
# With ``hold_next``, the next window is submitted once the consumer is back from a window's
# first batch, not before that batch is handed out (``WindowedLoader.batches`` says why; False:
# before, for A/B runs).
LOAD_AFTER_FIRST_BATCH = True

Source = TypeVar("Source")


@dataclass
class Loaded:
    """An input decoded by a loader thread: its position in the input list and its samples."""

    index: int
    source: str
    samples: np.ndarray  # float32, or int16 PCM (audio.load_samples)
    load_ms: float


LoadMany = Callable[[list[tuple[int, Source]]], list[Loaded | TranscriptionError]]


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
    """The order inputs are loaded and batched in: as given for batch 1; by size for batches
    (``LONGEST_FIRST``), so even the first batch (formed before the rest is decoded) holds
    similar lengths."""
    if batch_size == 1:
        return list(range(len(inputs)))
    return sorted(range(len(inputs)), key=lambda i: size_hint(inputs[i]), reverse=LONGEST_FIRST)


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


class WindowedLoader(Generic[Source]):
    """Batches of loaded inputs in ``input_order``: ``load_many`` runs as one task per worker
    of ``pool`` about one window ahead of the batches being handed out (or in the calling
    thread without a pool)."""

    def __init__(
        self,
        inputs: Sequence[Source],
        batch_size: int,
        load_many: LoadMany[Source],
        pool: ThreadPoolExecutor | None,
        workers: int,
    ) -> None:
        self.inputs, self.batch_size, self.load_many = inputs, batch_size, load_many
        self.pool, self.workers = pool, workers
        order = input_order(inputs, batch_size)
        self.windows = [[order[i] for i in w] for w in input_windows(len(inputs), batch_size)]

    def batches(
        self, failed: Callable[[TranscriptionError, int], None], hold_next: bool = True
    ) -> Iterator[list[Loaded]]:
        """Batches in order (sorted by length within a window when batch_size > 1, as
        ``input_order`` sorts the windows); each input that failed to load goes to ``failed``
        with its index as it is met.

        With ``hold_next`` the next window is submitted when the consumer comes back after a
        window's first batch, not before handing that batch out: a consumer that packs the
        batch into pinned memory while the GPU waits does so holding the interpreter lock, and
        eight loader threads beside it made the first batch's packing 21 ms instead of 3 ms on
        an H100 host (``benchmarks/gpu_throughput_timeline.py``). Without it the next window is
        submitted at once, for a consumer that finishes each batch before asking for the next
        (its loading then overlaps that work)."""
        pending = self._submit(self.windows[0]) if self.windows else []
        for number, window in enumerate(self.windows):
            current = self._collect(pending)
            upcoming = self.windows[number + 1] if number + 1 < len(self.windows) else None
            if upcoming is not None and not (hold_next and LOAD_AFTER_FIRST_BATCH):
                pending, upcoming = self._submit(upcoming), None
            loaded: list[Loaded] = []
            for index, item in zip(window, current, strict=True):
                if isinstance(item, TranscriptionError):
                    failed(item, index)
                else:
                    loaded.append(item)
            if self.batch_size > 1:
                loaded.sort(key=lambda item: len(item.samples), reverse=LONGEST_FIRST)
            for start in range(0, len(loaded), self.batch_size):
                yield loaded[start : start + self.batch_size]
                if upcoming is not None:  # decode the next window while this one runs
                    pending, upcoming = self._submit(upcoming), None
            if upcoming is not None:  # every input of this window failed to load
                pending = self._submit(upcoming)

    def _submit(self, window: list[int]) -> list[Future[list[Loaded | TranscriptionError]]]:
        items = [(i, self.inputs[i]) for i in window]
        if self.pool is None:  # load here, without a thread to start and hand samples back from
            done: Future[list[Loaded | TranscriptionError]] = Future()
            done.set_result(self.load_many(items))
            return [done]
        # One task per loader thread, strided so each gets long and short inputs: a future per
        # input cost the calling thread ~100 GIL hand-offs per window.
        return [
            self.pool.submit(self.load_many, items[k :: self.workers])
            for k in range(min(self.workers, len(items)))
        ]

    @staticmethod
    def _collect(
        futures: list[Future[list[Loaded | TranscriptionError]]],
    ) -> list[Loaded | TranscriptionError]:
        """The loaded window, in window order (task k holds inputs k, k + n, k + 2n, ...)."""
        parts = [future.result() for future in futures]
        count = sum(len(part) for part in parts)
        return [parts[i % len(parts)][i // len(parts)] for i in range(count)]
