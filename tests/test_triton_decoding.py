"""TritonStepDecoder against StepDecoder: the same buffers after every step, the same transcripts.

Runs where Triton can run: on CUDA, or on the CPU with TRITON_INTERPRET=1 (Triton's interpreter,
set before Python starts). Elsewhere (the project's CI has no Triton) the module is skipped.
Integer state must be equal; floats may differ by summation order (Triton's reductions are not
cuBLAS's), so they are compared with a tolerance. Each scenario also checks, on the reference,
that it really exercises the rules it is meant to cover (blank with duration 0, the max-symbols
cap, a row of length 0, rows finishing at different steps), so a change of the synthetic weights
cannot make it vacuous.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
import torch

pytest.importorskip("triton")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not (torch.cuda.is_available() or INTERPRET):
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from budgie.gpu_decoding import GraphedStepDecoder, StepDecoder, decode_with_steps  # noqa: E402
from budgie.model import ParakeetTDT  # noqa: E402
from budgie.triton_decoding import TritonConfig, TritonStepDecoder  # noqa: E402
from conftest import SynthModels  # noqa: E402
from decoder_machines import (  # noqa: E402
    MAX_SYMBOLS,
    network,
    outcome,
    random_enc_proj,
    rounded_weights,
)

# The interpreter runs on host memory (and cannot be captured in a CUDA graph): CPU tensors only.
DEVICES = ["cpu"] if INTERPRET else ["cuda"]
# The default tiling, a coarse one (fewer, larger programs; 2 rows per program so a batch of 3
# spans two row blocks with a partial one), and the default with _select_kernel.
CONFIGS = {
    "default": TritonConfig(),
    "coarse": TritonConfig(block_b=2, block_n=64, block_h=16, block_j=32, tile=8192),
    "selected": TritonConfig(select_rows=1),  # the argmaxes in their own kernel at any batch
}
INT_STATE = ("out", "count", "steps", "time", "on_frame", "last_frame")
FLOAT_STATE = ("h", "c", "pred_proj")


@dataclass
class Coverage:
    """What the reference machine did in a scenario."""

    blank_duration_0: int = 0
    capped: int = 0
    emitted: int = 0
    finished_at: dict[int, int] = field(default_factory=dict)  # row -> step it went inactive


def machines(
    net: ParakeetTDT, batch: int, frames: int, device: str, config: TritonConfig
) -> tuple[StepDecoder, TritonStepDecoder]:
    dev = torch.device(device)
    durations = net.cfg.decoding.durations
    ref = StepDecoder(net.decoder, net.joint, batch, frames, durations, MAX_SYMBOLS, dev)
    tri = TritonStepDecoder(
        net.decoder, net.joint, batch, frames, durations, MAX_SYMBOLS, dev, config
    )
    return ref, tri


def observe(ref: StepDecoder, cover: Coverage, step: int) -> None:
    """Run one reference step, recording which rules it applied."""
    active = ref.time < ref.lengths
    frame = torch.minimum(ref.time, (ref.lengths - 1).clamp(min=0))
    logits = ref.joint.logits(ref.enc_proj[ref.rows, frame], ref.pred_proj)
    label = logits[:, : ref.num_labels].argmax(dim=-1)
    duration_index = logits[:, ref.num_labels :].argmax(dim=-1)
    blank0 = active & (label == ref.blank) & (ref.durations[duration_index] == 0)
    cover.blank_duration_0 += int(blank0.sum())
    time, count = ref.time.clone(), ref.count.clone()
    ref.step()
    emit = ref.count > count
    duration = ref.out[ref.rows, count.clamp(max=ref.capacity - 1), 2]
    cover.capped += int((emit & (ref.time == time + duration + 1)).sum())
    cover.emitted += int(emit.sum())
    for row in torch.nonzero(active & (ref.time >= ref.lengths)).flatten().tolist():
        cover.finished_at[row] = step


def assert_same_state(
    ref: StepDecoder, tri: TritonStepDecoder, step: int, tol: float = 1e-5
) -> None:
    for name in INT_STATE:
        want, got = getattr(ref, name), getattr(tri, name)
        assert torch.equal(want, got), f"step {step}: {name}\n{want}\n{got}"
    for name in FLOAT_STATE:
        want, got = getattr(ref, name), getattr(tri, name)
        err = float((want - got).abs().max())
        assert torch.allclose(want, got, rtol=tol, atol=tol), f"step {step}: {name} {err}"


# (lengths, enc_proj scale, seed): chosen so that each covers every rule (asserted below).
SCENARIOS = [([16], 1.5, 3), ([16, 7, 0], 1.5, 0)]


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize(("lengths", "scale", "seed"), SCENARIOS)
@pytest.mark.parametrize("device", DEVICES)
def test_every_step_matches_the_torch_step(
    synth_models: SynthModels,
    device: str,
    lengths: list[int],
    scale: float,
    seed: int,
    config: str,
) -> None:
    net = network(synth_models, device)
    frames = max(lengths)
    ref, tri = machines(net, len(lengths), frames, device, CONFIGS[config])
    enc, lens = random_enc_proj(net, lengths, frames, scale, seed, device)
    cover = Coverage()
    with torch.inference_mode():
        ref.reset(enc, lens)
        tri.reset(enc, lens)
        step = 0
        while ref.any_active() or step < 2 + max(cover.finished_at.values(), default=0):
            observe(ref, cover, step)  # runs on after the end: idle steps must match too
            tri.step()
            assert_same_state(ref, tri, step)
            step += 1
        assert not tri.any_active()
    assert cover.blank_duration_0 > 0 and cover.capped > 0 and cover.emitted >= 4, cover
    assert sorted(cover.finished_at) == [row for row, n in enumerate(lengths) if n > 0]
    if len(lengths) > 1:
        assert len(set(cover.finished_at.values())) > 1, cover  # rows end at different steps


@pytest.mark.parametrize("device", DEVICES)
def test_full_decode_gives_the_torch_hypotheses(synth_models: SynthModels, device: str) -> None:
    """decode_with_steps on two batches in a row (the machine is reused: reset must suffice),
    with the network's own max_symbols; on CUDA also through GraphedStepDecoder."""
    net = network(synth_models, device)
    batch, frames = 4, 20
    dev = torch.device(device)
    ref = StepDecoder.for_network(net, batch, frames, dev)
    tri = TritonStepDecoder.for_network(net, batch, frames, dev)
    assert isinstance(tri, TritonStepDecoder) and tri.max_symbols == ref.max_symbols
    if INTERPRET:  # fewer, larger programs: the interpreter runs them one by one
        cfg = net.cfg.decoding
        coarse = CONFIGS["coarse"]
        tri = TritonStepDecoder(
            net.decoder, net.joint, batch, frames, cfg.durations, cfg.max_symbols, dev, coarse
        )
    graphed = GraphedStepDecoder(tri) if device == "cuda" else None
    for lengths, seed in (([20, 9, 0, 13], 1), ([5, 20], 2)):
        enc, lens = random_enc_proj(net, lengths, max(lengths), 1.5, seed, device)
        want = decode_with_steps(ref, enc, lens, None)
        got = decode_with_steps(tri, enc, lens, graphed)
        assert outcome(got) == outcome(want)
        assert sum(len(h.token_ids) for h in want) >= 10
        assert all(h.steps > 0 for h, n in zip(want, lengths, strict=True) if n > 0)


@pytest.mark.parametrize(
    ("batch", "rows"), [(1, 1), (3, 4), (8, 8), (32, 8)]
)  # rows per program: a power of two, at most block_b
def test_rows_per_program(batch: int, rows: int) -> None:
    assert TritonConfig().rows(batch) == rows


@pytest.mark.parametrize(
    ("rows", "outputs", "k", "block"), [(1, 4, 1280, 1024), (8, 4, 1280, 128), (8, 8, 8, 8)]
)
def test_reduction_block_fits_the_tile(rows: int, outputs: int, k: int, block: int) -> None:
    assert TritonConfig().block_k(rows, outputs, k) == block


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_weights_decode_as_the_rounded_float32_network(
    synth_models: SynthModels, device: str
) -> None:
    """weight_dtype=bf16: the same as the torch machine on bf16-rounded weights, and (on these
    inputs) not the same as with the float32 weights, so the bf16 copy is really used."""
    net = network(synth_models, device)
    lengths, frames = [16, 9], 16
    dev = torch.device(device)
    durations = net.cfg.decoding.durations
    rounded = rounded_weights(net, torch.bfloat16)
    ref = StepDecoder(rounded.decoder, rounded.joint, 2, frames, durations, MAX_SYMBOLS, dev)
    tri = TritonStepDecoder(
        net.decoder, net.joint, 2, frames, durations, MAX_SYMBOLS, dev, CONFIGS["coarse"],
        weight_dtype=torch.bfloat16,
    )  # fmt: skip
    assert tri.w_out.dtype == tri.w_lstm[0].dtype == torch.bfloat16
    enc, lens = random_enc_proj(net, lengths, frames, 1.5, 0, device)
    with torch.inference_mode():
        ref.reset(enc, lens)
        tri.reset(enc, lens)
        step = 0
        while ref.any_active():
            ref.step()
            tri.step()
            assert_same_state(ref, tri, step, tol=1e-4)  # larger sums of rounded terms
            step += 1
    exact = StepDecoder(net.decoder, net.joint, 2, frames, durations, MAX_SYMBOLS, dev)
    with torch.inference_mode():
        want_fp32 = decode_with_steps(exact, enc, lens, None)
    assert outcome(tri.hypotheses(2)) != outcome(want_fp32) or not torch.allclose(
        tri.h, exact.h, rtol=1e-5, atol=1e-5
    )


# Tensor-core tiling at the tiny model's sizes: several hidden and output blocks, several slices
# of the reduction, and (at 20 rows) two row blocks of 16, the second mostly masked.
TENSOR_CORES = TritonConfig(
    block_b=16, block_n=16, block_h=16, block_j=16, dot_k=16, tensor_cores=True
)


# Triton's interpreter (numpy has no bfloat16) gets bf16 tl.dot wrong: bf16 runs on CUDA only.
TENSOR_CORE_DTYPES = [torch.float16] if INTERPRET else [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", TENSOR_CORE_DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_tensor_core_steps_match_the_rounded_float32_network(
    synth_models: SynthModels, device: str, dtype: torch.dtype
) -> None:
    """tensor_cores: every step as the torch machine on weights rounded to ``dtype`` (the
    activations keep ~16 bits through the split products), over rows of different lengths."""
    net = network(synth_models, device)
    lengths = [16, 9, 0, 12, 16, 3, 7, 16, 1, 14, 16, 5, 11, 16, 8, 2, 16, 13, 6, 10]
    frames, batch = 16, len(lengths)
    dev = torch.device(device)
    durations = net.cfg.decoding.durations
    rounded = rounded_weights(net, dtype)
    ref = StepDecoder(rounded.decoder, rounded.joint, batch, frames, durations, MAX_SYMBOLS, dev)
    tri = TritonStepDecoder(
        net.decoder, net.joint, batch, frames, durations, MAX_SYMBOLS, dev, TENSOR_CORES,
        weight_dtype=dtype,
    )  # fmt: skip
    assert tri.config.rows(batch) == 16 and tri.w_lstm[0].dtype == dtype
    enc, lens = random_enc_proj(net, lengths, frames, 1.5, 4, device)
    cover = Coverage()
    with torch.inference_mode():
        ref.reset(enc, lens)
        tri.reset(enc, lens)
        step = 0
        while ref.any_active():
            observe(ref, cover, step)
            tri.step()
            assert_same_state(ref, tri, step, tol=1e-4)
            step += 1
        assert not tri.any_active()
    assert cover.emitted >= batch and cover.capped > 0, cover


def test_large_batches_of_16_bit_weights_default_to_tensor_cores() -> None:
    assert TritonConfig.for_batch(16, torch.bfloat16).tensor_cores
    assert TritonConfig.for_batch(64, torch.float16).tensor_cores
    assert TritonConfig.for_batch(8, torch.bfloat16).tensor_cores
    assert not TritonConfig.for_batch(4, torch.bfloat16).tensor_cores
    assert not TritonConfig.for_batch(64, torch.float32).tensor_cores
    with pytest.raises(ValueError, match="tensor_cores"):
        TritonConfig(block_h=8, tensor_cores=True)
