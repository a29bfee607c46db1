"""Model._run's order of work over batches (budgie.batching says why).

A stand-in for CudaRunner runs the same network on the CPU and logs the calls Model makes
(stage, launch, decode), and the text thread's work is logged too: each batch staged,
launched, decoded and turned into text once and in order; with phases not synced the next
batch is staged before this one's decode; a decoded batch reaches the text thread only after
the next staging; the transcripts are those of the plain CPU path. On CUDA, the look-ahead's
transcripts equal the synced path's.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import soundfile as sf
import torch

from budgie import batching
from budgie.audio import stack_padded
from budgie.cpu_decoding import CpuDecoder
from budgie.decoding import Hypothesis
from budgie.pipeline import Model
from budgie.results import Transcript, TranscriptionError
from conftest import SynthModels


class LoggingRunner:
    """CudaRunner's interface as Model uses it, computed on the CPU; batches are numbered in
    the order they are preprocessed."""

    def __init__(self, model: Model, decoder: CpuDecoder) -> None:
        self.network = model.network
        self.decoder = decoder
        self.log: list[tuple[str, int]] = []
        self.staged = self.started = 0

    def stage(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        self.staged += 1
        self.log.append(("stage", self.staged))
        return rows

    def launch(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        self.started += 1
        self.log.append(("start", self.started))
        audio = torch.from_numpy(stack_padded(rows))
        out: tuple[torch.Tensor, torch.Tensor] = self.network.preprocessor(
            audio, torch.tensor([len(r) for r in rows])
        )
        return out

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> Any:
        return self.network.encoder(features, lengths)

    def decode(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
        self.log.append(("decode", self.started))
        return self.decoder.decode(encoded, lengths, False)


@pytest.fixture
def logged(synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The shared tiny model with a LoggingRunner, and the text thread's batches logged."""
    model = synth_models.model("tiny")
    decoder = model.cpu_decoder
    assert decoder is not None
    runner = LoggingRunner(model, decoder)
    monkeypatch.setattr(model, "cuda_runner", runner)
    monkeypatch.setattr(model, "cpu_decoder", None)
    monkeypatch.setattr(model, "sync_phases", model.sync_phases)  # restored at teardown
    finish = model._finish_batch

    def logged_finish(batch: Any, inferred: Any, timestamps: bool) -> Any:
        runner.log.append(("text", sum(kind == "text" for kind, _ in runner.log) + 1))
        return finish(batch, inferred, timestamps)

    monkeypatch.setattr(model, "_finish_batch", logged_finish)
    return model, runner


def clip_files(tmp_path: Path, count: int, corrupt: set[int]) -> list[str]:
    rng = np.random.default_rng(11)
    paths = []
    for i in range(count):
        path = tmp_path / f"clip{i:03d}.wav"
        if i in corrupt:
            path.write_bytes(b"RIFF but not audio")
        else:
            pcm = rng.integers(-3000, 3000, 1600 * (1 + (i * 7) % 13), dtype=np.int64)
            sf.write(path, pcm.astype(np.int16), 16000, subtype="PCM_16")
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("look_ahead", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_staging_and_text_order(
    logged: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, batch_size: int, look_ahead: bool
) -> None:
    """With phases not synced, batch k+1 is staged before batch k is decoded (its packing
    overlaps k's GPU work); synced, after. Either way batch k reaches the text thread only
    after the staging that precedes batch k+1's decode."""
    model, runner = logged
    model.sync_phases = not look_ahead
    inputs = clip_files(tmp_path, batching.MIN_WINDOW + 2 * batch_size + 1, corrupt={5, 40})
    got = model.transcribe(inputs, batch_size=batch_size)
    log, batches = runner.log, runner.started
    assert batches >= (len(inputs) - 2) // batch_size  # two inputs are corrupt
    for kind in ("stage", "start", "decode", "text"):
        assert [n for k, n in log if k == kind] == list(range(1, batches + 1))
    for number in range(1, batches):
        staged_next, decoded = log.index(("stage", number + 1)), log.index(("decode", number))
        assert (staged_next < decoded) == look_ahead
        before = log[: log.index(("decode", number + 1))]
        last_stage = max(i for i, (k, _) in enumerate(before) if k == "stage")
        assert log.index(("text", number)) > last_stage
    monkeypatch.undo()  # the model's own CPU path
    want = model.transcribe(inputs, batch_size=batch_size)
    assert [r.source for r in got] == inputs
    for a, b in zip(got, want, strict=True):
        assert type(a) is type(b)
        if isinstance(a, Transcript):
            assert isinstance(b, Transcript) and a.token_ids == b.token_ids
        else:
            assert isinstance(a, TranscriptionError) and a.error == b.error
    assert sum(isinstance(r, TranscriptionError) for r in got) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_look_ahead_gives_the_synced_transcripts(synth_models: SynthModels, dtype: str) -> None:
    """On the GPU: staging the next batch into the pinned buffer while this one computes gives
    the transcripts of the synced path, pass by pass (eager first use, capture, graphs: in
    bf16 the eager and the fused layers round differently)."""
    from budgie.api import load_model

    rng = np.random.default_rng(12)
    inputs = [(rng.standard_normal(800 * (3 + i % 17)) * 0.2).astype(np.float32) for i in range(45)]
    inputs += [(row * 32767).astype(np.int16) for row in inputs[:20]]  # int16 batches too

    def passes(look_ahead: bool) -> list[list[list[int] | None]]:
        model = load_model(synth_models.checkpoint("tiny").path, device="cuda", dtype=dtype)
        model.sync_phases = not look_ahead
        return [
            [r.token_ids if isinstance(r, Transcript) else None for r in results]
            for results in (model.transcribe(inputs, batch_size=8) for _ in range(3))
        ]

    want = passes(look_ahead=False)
    assert all(None not in ids for ids in want) and sum(len(i or []) for i in want[2]) > 0
    assert passes(look_ahead=True) == want


@pytest.mark.parametrize("longest_first", [True, False])
def test_windowed_loader_batches(monkeypatch: pytest.MonkeyPatch, longest_first: bool) -> None:
    """Batches come out window by window, sorted by length inside a window (longest first by
    default), each input once; failures go to the callback with their index; a pool gets one
    task per worker per window."""
    from concurrent.futures import ThreadPoolExecutor

    from budgie.batching import Loaded, WindowedLoader

    monkeypatch.setattr(batching, "LONGEST_FIRST", longest_first)
    sizes = [(i * 37) % 101 + 1 for i in range(150)]
    inputs = [np.zeros(n, dtype=np.float32) for n in sizes]
    tasks: list[int] = []

    def load_many(items: list[tuple[int, np.ndarray]]) -> list[Loaded | TranscriptionError]:
        tasks.append(len(items))
        return [
            TranscriptionError(f"#{i}", "bad") if i % 10 == 3 else Loaded(i, f"#{i}", x, 0.0)
            for i, x in items
        ]

    failed: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        loader = WindowedLoader(inputs, 8, load_many, pool, 4)
        batches = list(loader.batches(lambda error, index: failed.append(index)))
    assert sorted(failed) == [i for i in range(150) if i % 10 == 3]
    seen = [item.index for batch in batches for item in batch]
    assert sorted(seen) == [i for i in range(150) if i % 10 != 3]
    assert all(len(batch) <= 8 for batch in batches)
    lengths = [len(item.samples) for batch in batches for item in batch]
    assert lengths == sorted(lengths, reverse=longest_first)  # windows follow input_order
    first = loader.windows[0]
    assert len(first) == 8  # the first window is one batch
    assert [item.index for item in batches[0]] == [i for i in first if i % 10 != 3]
    assert len(tasks) == 4 * len(loader.windows)  # one task per worker and window


class _InstantPool:
    """A pool that runs each task when it is submitted and logs the submission."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def submit(self, fn: Any, items: list[tuple[int, Any]]) -> Future[Any]:
        self.events.append(f"submit {min(i for i, _ in items)}")
        done: Future[Any] = Future()
        done.set_result(fn(items))
        return done


@pytest.mark.parametrize("hold_next", [True, False])
def test_windowed_loader_loads_the_next_window_after_the_first_batch(hold_next: bool) -> None:
    """With hold_next the next window is submitted only once the consumer is back from a
    window's first batch (it stages that batch without loader threads beside it), without it
    at once; a window whose inputs all failed still leads to the next one."""
    from budgie.batching import Loaded, WindowedLoader

    inputs = [np.zeros(1000 - i, dtype=np.float32) for i in range(90)]  # in input order
    events: list[str] = []
    broken: set[int] = set()

    def load_many(items: list[tuple[int, np.ndarray]]) -> list[Loaded | TranscriptionError]:
        return [
            TranscriptionError(f"#{i}", "bad") if i in broken else Loaded(i, f"#{i}", x, 0.0)
            for i, x in items
        ]

    loader = WindowedLoader(inputs, 8, load_many, cast(Any, _InstantPool(events)), 1)
    assert [len(w) for w in loader.windows] == [8, 64, 18]
    broken.update(loader.windows[1])
    failed: list[int] = []
    for batch in loader.batches(lambda error, index: failed.append(index), hold_next):
        events.append(f"batch {batch[0].index}")
    rest = ["submit 72", "batch 72", "batch 80", "batch 88"]
    if hold_next:
        assert events == ["submit 0", "batch 0", "submit 8", *rest]
    else:
        assert events == ["submit 0", "submit 8", "batch 0", *rest]
    assert sorted(failed) == sorted(loader.windows[1])
