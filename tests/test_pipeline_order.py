"""Model._run's order of work over batches, on the CPU (budgie.batching says why).

A stand-in for CudaRunner runs the same network on the CPU and logs the calls Model makes, and
the text thread's work is logged too: a decoded batch must reach the text thread only after
the next batch has been started (its packing then does not share the interpreter lock with
the text thread), every batch once and in order, with the transcripts of a plain run.
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
        self.started = 0

    def preprocess(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
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


@pytest.mark.parametrize("batch_size", [1, 3])
def test_text_follows_the_next_start(
    logged: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, batch_size: int
) -> None:
    model, runner = logged
    inputs = clip_files(tmp_path, batching.MIN_WINDOW + 2 * batch_size + 1, corrupt={5, 40})
    got = model.transcribe(inputs, batch_size=batch_size)
    batches = runner.started
    assert batches >= (len(inputs) - 2) // batch_size  # two inputs are corrupt
    assert [n for kind, n in runner.log if kind == "decode"] == list(range(1, batches + 1))
    assert [n for kind, n in runner.log if kind == "text"] == list(range(1, batches + 1))
    for number in range(1, batches):
        assert runner.log.index(("text", number)) > runner.log.index(("start", number + 1))
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
