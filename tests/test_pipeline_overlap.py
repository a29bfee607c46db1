"""Model._run's overlapped decodes (throughput mode on CUDA), on the CPU.

A stand-in for CudaRunner runs the same network on the CPU and logs the order of the calls
Model makes: a batch that may overlap is started (frontend, encoder, decoder input queued),
the next batch is started, and only then is the first one decoded. The CUDA side of it (the
decode stream, events, record_stream) is exercised on the device by the GPU tests and
benchmarks; here the scheduling is: every batch decoded exactly once, in order, overlapped
where allowed, and the transcripts equal those of the serial path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from budgie import batching
from budgie.audio import stack_padded
from budgie.batching import BatchFlow
from budgie.cpu_decoding import CpuDecoder
from budgie.decoding import Hypothesis
from budgie.pipeline import Model
from budgie.results import Transcript, TranscriptionError
from conftest import SynthModels


class LoggingRunner:
    """CudaRunner's interface as Model uses it, computed on the CPU; batches are numbered in
    the order they are preprocessed."""

    def __init__(self, model: Model, decoder: CpuDecoder, overlap_above: int) -> None:
        self.network = model.network
        self.decoder = decoder
        self.overlap_above = overlap_above
        self.log: list[tuple[str, int]] = []
        self.started = 0
        self.rows: dict[int, int] = {}  # batch number -> rows

    def preprocess(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        self.started += 1
        self.log.append(("start", self.started))
        self.rows[self.started] = len(rows)
        audio = torch.from_numpy(stack_padded(rows))
        out: tuple[torch.Tensor, torch.Tensor] = self.network.preprocessor(
            audio, torch.tensor([len(r) for r in rows])
        )
        return out

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> Any:
        return self.network.encoder(features, lengths)

    def overlaps(self, rows: int) -> bool:
        return rows > self.overlap_above

    def queue_decode(self, encoded: torch.Tensor, lengths: torch.Tensor) -> Any:
        self.log.append(("queue", self.started))
        return (self.started, encoded, lengths)

    def finish_decode(self, pending: Any) -> tuple[list[Hypothesis], list[int]]:
        number, encoded, lengths = pending
        self.log.append(("finish", number))
        return self.decoder.decode(encoded, lengths, False), lengths.tolist()

    def decode(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
        self.log.append(("decode", self.started))
        return self.decoder.decode(encoded, lengths, False)


@pytest.fixture
def overlapped(synth_models: SynthModels) -> Any:
    """The shared tiny model with a LoggingRunner for the test's duration."""
    model = synth_models.model("tiny")
    decoder = model.cpu_decoder
    assert decoder is not None

    def attach(overlap_above: int, sync_phases: bool = False) -> LoggingRunner:
        runner = LoggingRunner(model, decoder, overlap_above)
        model.cuda_runner, model.cpu_decoder = runner, None  # type: ignore[assignment]
        model.sync_phases = sync_phases
        return runner

    yield model, attach
    model.cuda_runner, model.cpu_decoder, model.sync_phases = None, decoder, True


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


def check_schedule(log: list[tuple[str, int]], batches: int, overlapped: set[int]) -> None:
    """Each batch decoded once and in order; an overlapped batch is decoded after a later batch
    was started (or at the end, or before waiting for audio), the others before it."""
    decoded = [n for kind, n in log if kind in ("finish", "decode")]
    assert decoded == list(range(1, batches + 1))
    for number in range(1, batches + 1):
        at = log.index(next(e for e in log if e[1] == number and e[0] in ("finish", "decode")))
        next_start = ("start", number + 1)
        if number in overlapped:
            assert ("queue", number) in log and ("finish", number) in log
        else:
            assert ("decode", number) in log
            if next_start in log:
                assert at < log.index(next_start)


@pytest.mark.parametrize("batch_size", [3, 4])
def test_overlapped_batches_give_the_serial_transcripts(
    overlapped: Any, tmp_path: Path, batch_size: int
) -> None:
    model, attach = overlapped
    inputs = clip_files(tmp_path, batching.MIN_WINDOW + 2 * batch_size + 1, corrupt={5, 40})
    serial = attach(overlap_above=1, sync_phases=True)  # timed phases: nothing overlaps
    want = model.transcribe(inputs, batch_size=batch_size)
    assert not any(kind == "queue" for kind, _ in serial.log)
    runner = attach(overlap_above=1)
    got = model.transcribe(inputs, batch_size=batch_size)
    assert [r.source for r in got] == inputs
    for a, b in zip(got, want, strict=True):
        assert type(a) is type(b)
        if isinstance(a, Transcript):
            assert a.token_ids == b.token_ids
            assert a.batch_size == b.batch_size
        else:
            assert isinstance(a, TranscriptionError) and a.error == b.error
    queued = {n for kind, n in runner.log if kind == "queue"}
    assert queued == {n for n, rows in runner.rows.items() if rows > 1}
    assert len(queued) < runner.started  # a one-row batch is among them (70/71 inputs)
    check_schedule(runner.log, runner.started, queued)
    # Most overlapped batches were decoded after the next one started.
    after_next = [
        n
        for n in queued
        if ("start", n + 1) in runner.log
        and runner.log.index(("start", n + 1)) < runner.log.index(("finish", n))
    ]
    assert len(after_next) >= len(queued) - 2  # window boundaries may decode early


def test_single_rows_and_confidence_do_not_overlap(overlapped: Any, tmp_path: Path) -> None:
    model, attach = overlapped
    inputs = clip_files(tmp_path, 6, corrupt=set())
    runner = attach(overlap_above=1)
    model.transcribe(inputs, batch_size=1)
    assert [kind for kind, _ in runner.log].count("queue") == 0
    check_schedule(runner.log, runner.started, set())
    runner = attach(overlap_above=1)
    model.transcribe(inputs, batch_size=3, confidence=True)
    assert [kind for kind, _ in runner.log].count("queue") == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_decode_stream_gives_the_serial_transcripts(synth_models: SynthModels, dtype: str) -> None:
    """On the GPU: batches decoded on the decode stream while the next batch encodes (and
    once graphs are captured, the encoder graph's outputs are overwritten by the next batch)
    give the transcripts of the serial path, pass by pass (eager first use, capture, graphs:
    in bf16 the eager and the fused layers round differently)."""
    from budgie.api import load_model

    rng = np.random.default_rng(12)
    inputs = [(rng.standard_normal(800 * (3 + i % 17)) * 0.2).astype(np.float32) for i in range(45)]

    def passes(overlap: bool) -> list[list[list[int] | None]]:
        model = load_model(synth_models.checkpoint("tiny").path, device="cuda", dtype=dtype)
        model.sync_phases = not overlap
        out = []
        for _ in range(3):
            results = model.transcribe(inputs, batch_size=8)
            out.append([r.token_ids if isinstance(r, Transcript) else None for r in results])
        runner = model.cuda_runner
        assert runner is not None and (runner._decode_stream is not None) == overlap
        return out

    want = passes(overlap=False)
    assert all(None not in ids for ids in want) and sum(len(i or []) for i in want[2]) > 0
    assert passes(overlap=True) == want


def test_batch_flow_order() -> None:
    """Overlapping batches end after the next start; decoded batches are handed over only
    after the next start has returned (or at a drain), in batch order."""
    log: list[str] = []
    flow: BatchFlow[int, int, str] = BatchFlow(
        lambda b: log.append(f"start{b}") or b,  # type: ignore[func-returns-value]
        lambda b: b not in (3, 5),  # decoded right away (e.g. loop-kernel batches)
        lambda b: log.append(f"end{b}") or f"hyps{b}",  # type: ignore[func-returns-value]
        lambda b, hyps: log.append(f"text{b}:{hyps}"),
    )
    for batch in (1, 2, 3, 4):
        flow.push(batch)
    assert log == [
        "start1",
        "start2",
        "end1",
        "start3",
        "text1:hyps1",
        "end2",
        "end3",
        "start4",
        "text2:hyps2",
        "text3:hyps3",
    ]
    flow.end_in_flight()  # e.g. before waiting for audio: no hand-over yet
    assert log[-1] == "end4"
    flow.push(5)
    assert log[-3:] == ["start5", "text4:hyps4", "end5"]  # batch 5 does not overlap
    flow.drain()
    assert log[-1] == "text5:hyps5"
    flow.drain()  # nothing left
    assert len(log) == 15
