"""fp16 overflow: rows whose encoder output is not finite become error records, not garbage.

fp16 runs at bf16's speed with three more mantissa bits (on the calibrated full-size model its
tokens equal fp32's, benchmarks/results/gpu_precision_h100_2026-11-24_recipe.json), but its
range ends at 65504: a checkpoint whose activations go past it gives inf/NaN. The pipeline
flags such rows (``limits.overflowed_rows``) and reports them as TranscriptionErrors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from budgie.errors import AudioError
from budgie.limits import FP16_OVERFLOW, overflowed_rows
from budgie.results import Transcript, TranscriptionError
from conftest import SynthModels


def test_overflowed_rows_looks_at_valid_frames_only() -> None:
    encoded = torch.zeros(4, 6, 3)
    encoded[0, 2, 1] = float("inf")  # a valid frame
    encoded[1, 5, 0] = float("nan")  # past row 1's length: padding
    encoded[3, 0, 2] = float("-inf")
    lengths = torch.tensor([6, 4, 6, 1])
    assert overflowed_rows(encoded, lengths).tolist() == [True, False, False, True]
    assert not overflowed_rows(encoded[:, :0], torch.zeros(4, dtype=torch.long)).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_overflow_gives_error_records(synth_models: SynthModels) -> None:
    from budgie.api import load_model

    path = synth_models.checkpoint("tiny").path
    rng = np.random.default_rng(4)
    inputs = [(rng.standard_normal(16000 + 900 * i) * 0.2).astype(np.float32) for i in range(5)]
    model = load_model(path, device="cuda", dtype="fp16")
    for _ in range(3):  # eager first use, capture, graphs
        assert all(isinstance(r, Transcript) for r in model.transcribe(inputs, batch_size=2))
    broken = load_model(path, device="cuda", dtype="fp16")
    with torch.no_grad():  # hidden activations ~1e5: past fp16's range
        broken.network.encoder.layers[0].feed_forward1.linear1.weight.mul_(1e5)
    for _ in range(3):
        results = broken.transcribe(inputs, batch_size=2)
        assert all(isinstance(r, TranscriptionError) for r in results)
        assert all(FP16_OVERFLOW in r.error for r in results if isinstance(r, TranscriptionError))
    with pytest.raises(AudioError, match="fp16"):
        broken.transcribe(inputs[0])
