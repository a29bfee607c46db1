"""In what order a list of inputs is loaded, batched, run and turned into text.

Three kinds of threads share the work of ``Model.transcribe`` on a list: loader threads
decode audio one window ahead (``input_order``, ``input_windows``), the calling thread runs
the model batch by batch, and one text thread turns decoded batches into Transcripts.

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
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

# Audio decoding threads, and how many inputs are decoded ahead (bounds memory on long lists).
LOAD_THREADS = min(8, os.cpu_count() or 1)
MIN_WINDOW = 64


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
