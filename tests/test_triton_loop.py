"""LoopDecoder (one persistent kernel per batch) against the step machines: the same hypotheses.

Runs where Triton can run: on CUDA (many programs meeting at grid barriers), or on the CPU with
TRITON_INTERPRET=1 (one program: the interpreter runs programs one after another). Elsewhere the
module is skipped. The loop kernel uses the step kernels' tiles, so with the same tiling its
tokens, frames, durations and step counts must equal TritonStepDecoder's exactly, and the torch
StepDecoder's (a float32 near-tie aside, which these inputs do not have); the prediction after
the last emission, which every LSTM layer's state feeds, must agree to float32 rounding.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from budgie.gpu_decoding import StepDecoder, decode_with_steps
from budgie.model import ParakeetTDT
from budgie.triton_decoding import TritonStepDecoder
from budgie.triton_loop import LOOP_MAX_BATCH, LoopConfig, LoopDecoder
from conftest import SynthModels
from decoder_machines import (
    BATCHES,
    MAX_SYMBOLS,
    hits_the_cap,
    network,
    other_depth,
    outcome,
    random_enc_proj,
    rounded_weights,
)
from test_triton_decoding import DEVICES

# LoopConfigs tested: the default; narrow tiles (on the GPU more tiles than programs, so each
# program walks several); look-ahead windows of 2 and 4 frames (blanks walked within them).
CONFIGS = {
    "default": LoopConfig(),
    "narrow": LoopConfig(block_n=4, block_h=2, block_j=2),
    "window2": LoopConfig(window=2),
    "window4": LoopConfig(window=4),
}


def step_machines(
    net: ParakeetTDT,
    batch: int,
    frames: int,
    device: str,
    dtype: torch.dtype,
    config: LoopConfig | None = None,
) -> tuple[StepDecoder, TritonStepDecoder, LoopDecoder]:
    """The torch machine (on weights rounded to ``dtype``), the Triton step machine and the
    loop machine (reading ``dtype`` weights), with the same tiling."""
    dev = torch.device(device)
    durations = net.cfg.decoding.durations
    parts = (net.decoder, net.joint)
    rounded = rounded_weights(net, dtype) if dtype != torch.float32 else net
    ref = StepDecoder(rounded.decoder, rounded.joint, batch, frames, durations, MAX_SYMBOLS, dev)
    config = config or LoopConfig()
    tri = TritonStepDecoder(
        *parts, batch, frames, durations, MAX_SYMBOLS, dev, config, weight_dtype=dtype
    )
    loop = LoopDecoder(*parts, batch, frames, durations, MAX_SYMBOLS, dev, config, dtype)
    return ref, tri, loop


@pytest.mark.parametrize("tiling", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_loop_decodes_as_the_step_machines(
    synth_models: SynthModels, device: str, dtype: torch.dtype, tiling: str
) -> None:
    """Several batches in a row on one machine (nothing of a decode may leak into the next):
    rows of different lengths, an empty row, a batch where nothing is emitted, the max-symbols
    cap; in bf16 the weights are read rounded, as the step machine reads them."""
    net = network(synth_models, device)
    frames = 20
    config = CONFIGS[tiling]
    ref, tri, loop = step_machines(net, 4, frames, device, dtype, config)
    if device == "cuda":
        assert loop.programs > 1  # the grid barriers are really exercised
    emitted, capped = 0, False
    for lengths, scale, seed in BATCHES:
        enc, lens = random_enc_proj(net, lengths, max(lengths), scale, seed, device)
        want = outcome(decode_with_steps(ref, enc, lens, None))
        assert outcome(decode_with_steps(tri, enc, lens, None)) == want
        assert outcome(decode_with_steps(loop, enc, lens, None)) == want, (lengths, seed)
        rows = len(lengths)
        torch.testing.assert_close(
            loop.pred_proj[:rows], ref.pred_proj[:rows], rtol=1e-4, atol=1e-5
        )
        assert [h[3] > 0 for h in want] == [n > 0 for n in lengths]
        emitted += sum(len(h[0]) for h in want)
        capped = capped or hits_the_cap(want)
    assert emitted >= 20 and capped


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("device", DEVICES)
def test_loop_decodes_other_depths(synth_models: SynthModels, device: str, layers: int) -> None:
    """One LSTM layer (its own phase before the projection) and three (a layer whose input
    comes from memory): the torch machine's hypotheses."""
    decoder, net = other_depth(network(synth_models, device), layers)
    dev = torch.device(device)
    args = (decoder, net.joint, 4, 20, net.cfg.decoding.durations, MAX_SYMBOLS, dev)
    ref, loop = StepDecoder(*args), LoopDecoder(*args)
    emitted = 0
    for lengths, scale, seed in BATCHES:
        enc, lens = random_enc_proj(net, lengths, max(lengths), scale, seed, device)
        want = outcome(decode_with_steps(ref, enc, lens, None))
        assert outcome(decode_with_steps(loop, enc, lens, None)) == want, (lengths, seed)
        rows = len(lengths)  # the prediction after the last emission: every layer's state feeds it
        torch.testing.assert_close(
            loop.pred_proj[:rows], ref.pred_proj[:rows], rtol=1e-4, atol=1e-5
        )
        emitted += sum(len(h[0]) for h in want)
    assert emitted >= 20


@pytest.mark.parametrize("device", DEVICES)
def test_nothing_to_decode(synth_models: SynthModels, device: str) -> None:
    """Rows of length 0 only: the kernel ends at once with empty hypotheses."""
    net = network(synth_models, device)
    _, _, loop = step_machines(net, 2, 8, device, torch.float32)
    enc, lens = random_enc_proj(net, [0, 0], 8, 1.5, 0, device)
    assert outcome(decode_with_steps(loop, enc, lens, None)) == [([], [], [], 0)] * 2


def test_batch_limit(synth_models: SynthModels) -> None:
    net = network(synth_models, "cpu")
    durations = net.cfg.decoding.durations
    args = (net.decoder, net.joint, LOOP_MAX_BATCH + 1, 8, durations, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match=f"at most {LOOP_MAX_BATCH} rows"):
        LoopDecoder(*args)
    machine = LoopDecoder(*args[:2], 2, 8, *args[4:])
    enc, lens = random_enc_proj(net, [9, 3, 1], 9, 1.5, 0, "cpu")
    with pytest.raises(ValueError, match="exceeds"):
        machine.reset(enc, lens)
    with pytest.raises(ValueError, match="power of two, not 3"):
        LoopDecoder(*args[:2], 2, 8, *args[4:], LoopConfig(window=3))
