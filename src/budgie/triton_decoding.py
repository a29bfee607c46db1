# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""The GPU decoder step of gpu_decoding.py in 2 + L Triton kernels (L = LSTM layers).

Why: at batch 1 a ``StepDecoder.step`` is about 13 dependent kernels even after torch.compile,
and their launch latencies, not the arithmetic, set its cost (~68 us on an H100 with CUDA graphs,
benchmarks/results/gpu_compare_h100_2026-11-24.json). Here a step is:

1. ``_joint_kernel``: logits = relu(enc_proj[b, frame_b] + pred_proj[b]) @ W_out^T + bias, the
   output rows split over programs.
2. ``_lstm_kernel`` (layer 0): every program takes the argmaxes of its rows itself (reading the
   logits is cheaper than a launch), so it knows which rows emit and which label to embed; the
   programs of the first hidden block also record (label, duration, emit) for step 4 (with
   many rows per program ``_select_kernel`` does this once per row block first). The
   programs then compute the 4 gate rows of their hidden units (so the cell update is local)
   into scratch h/c buffers, since other programs still read the old state.
3. ``_lstm_kernel`` (layers 1..L-1): the same cell on the previous layer's new h.
4. ``_project_kernel``: the first program per batch block does all of the step's bookkeeping
   (out slot, count, on_frame, last_frame, steps, the max-symbols cap, time); then pred_proj of
   the emitting rows and the copy of their new h/c into the state.

A program whose rows all did not emit returns before touching a weight (early exit), so a blank
step costs one joint GEMV plus three near-empty launches. Semantics are exactly
``StepDecoder.step``'s: the same buffers after every step, integers equal, floats equal up to
rounding (summation order, b_ih + b_hh summed once, tanh(x) as 2 sigmoid(2x) - 1), so a token
can only differ at an argmax near-tie. Buffers are preallocated and nothing syncs with the
host, so a run of steps is CUDA-graph capturable (GraphedStepDecoder with compile=False).
Activations, state and sums are float32; the weight matrices are float32, or a 16-bit model's
dtype (``for_network``: NeMo runs the decoder in bf16 under autocast), copied and packed at
construction; from ``TENSOR_CORE_BATCH`` rows on in 16 bits the products run on tensor cores.
The tiles the kernels are made of live in triton_tiles.py (shared with triton_loop.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from budgie.gpu_decoding import StepDecoder
from budgie.model import ParakeetTDT
from budgie.transducer import Decoder, Joint
from budgie.triton_tiles import (
    _advance,
    _argmax_rows,
    _duration,
    _joint_tile,
    _lstm_tile,
    _project_tile,
)


@dataclass(frozen=True)
class TritonConfig:
    """Tiling. A program handles ``block_b`` rows and ``block_n`` joint outputs, ``block_h``
    hidden units (x4 gate rows) of an LSTM layer, or ``block_j`` prediction projections; its
    [rows, outputs, k] product tile has about ``tile`` elements (registers per thread)."""

    # Defaults: the fastest tiling at batch 1 and 8 on an H100 (16 and 60 us per speech-like
    # step; benchmarks/results/gpu_decoder_micro_h100_2026-11-24.json).
    block_b: int = 8
    block_n: int = 4
    block_h: int = 2
    block_j: int = 2
    tile: int = 4096
    num_warps: int = 4
    # From this many rows per program on, one extra kernel takes the argmaxes once per row block
    # (at batch 32, every LSTM program reading 8 rows of logits cost more than the launch).
    select_rows: int = 8
    # Rows per program of _select_kernel: few, so that many programs share a batch's argmaxes
    # (32 rows per program took 33 us per step at batch 64 on an H100, in 2 programs).
    select_block: int = 2
    # Products on tensor cores (tl.dot) for 16-bit weights: every block (rows included, padded
    # with masked rows) at least 16 wide, the reduction in slices of ``dot_k``.
    tensor_cores: bool = False
    dot_k: int = 64

    def __post_init__(self) -> None:
        blocks = (self.block_b, self.block_n, self.block_h, self.block_j, self.dot_k)
        if self.tensor_cores and min(blocks) < 16:
            raise ValueError(f"tensor_cores needs every block >= 16, got {self}")

    def rows(self, batch: int) -> int:
        rows = min(int(triton.next_power_of_2(batch)), self.block_b)
        return max(16, rows) if self.tensor_cores else rows

    def block_k(self, rows: int, outputs: int, k: int) -> int:
        if self.tensor_cores:
            return int(max(16, min(triton.next_power_of_2(k), self.dot_k)))
        return int(min(triton.next_power_of_2(k), max(16, self.tile // (rows * outputs))))

    @classmethod
    def for_batch(cls, batch: int, weight_dtype: torch.dtype) -> TritonConfig:
        """The default tiling for a machine: from ``TENSOR_CORE_BATCH`` rows on with 16-bit
        weights the tensor-core one (the CUDA-core products cost ~90 us per LSTM layer at
        batch 64), else the CUDA-core one tuned for small batches."""
        if batch >= TENSOR_CORE_BATCH and weight_dtype in (torch.bfloat16, torch.float16):
            return LARGE_BATCH
        return cls()


# Tensor-core tiling from TENSOR_CORE_BATCH rows on (see TritonConfig.for_batch). Speech-like
# step times on an H100 in bf16, CUDA-core vs tensor cores: 56 vs 40 us at batch 8 (16 rows,
# half masked), 52 vs 26 at 16, 111 vs 41 at 32, 186 vs 47 at 64 (the fastest of 11 tilings
# at every batch: benchmarks/results/gpu_decoder_micro_h100_2026-11-24_tc*.json).
LARGE_BATCH = TritonConfig(
    block_b=16, block_n=32, block_h=32, block_j=32, num_warps=4, tensor_cores=True, dot_k=128
)
TENSOR_CORE_BATCH = 8


@triton.jit
def _joint_kernel(
    enc_ptr, pred_ptr, w_ptr, bias_ptr, time_ptr, len_ptr, logits_ptr,
    B, T, J, N,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    row_ok = rows < B
    time = tl.load(time_ptr + rows, mask=row_ok, other=0)
    frames = tl.load(len_ptr + rows, mask=row_ok, other=0)
    frame = tl.minimum(time, tl.maximum(frames - 1, 0))
    enc_rows = (rows.to(tl.int64) * T + frame) * J
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    _joint_tile(
        enc_ptr, enc_rows, pred_ptr, rows, rows, row_ok, w_ptr, bias_ptr, logits_ptr, cols, J, N,
        BB, BN, BK, DOT,
    )  # fmt: skip


@triton.jit
def _select_rows(
    logits_ptr, time_ptr, len_ptr, dur_ptr, sel_ptr, rows, row_ok, store, N, NL, ND, BLANK,
    BB: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """The step's choice for a block of rows: (label, emit); with ``store`` also records
    (label, duration, emit) in sel for the later kernels."""
    time = tl.load(time_ptr + rows, mask=row_ok, other=0)
    frames = tl.load(len_ptr + rows, mask=row_ok, other=0)
    label = _argmax_rows(logits_ptr, rows, row_ok, N, NL, BB, BL)
    emit = row_ok & (time < frames) & (label != BLANK)
    if store:
        index = _argmax_rows(logits_ptr + NL, rows, row_ok, N, ND, BB, BD)
        dur = _duration(dur_ptr, index, label, row_ok, BLANK)
        tl.store(sel_ptr + rows * 3, label.to(tl.int64), mask=row_ok)
        tl.store(sel_ptr + rows * 3 + 1, dur, mask=row_ok)
        tl.store(sel_ptr + rows * 3 + 2, emit.to(tl.int64), mask=row_ok)
    return label, emit


@triton.jit
def _select_kernel(
    logits_ptr, time_ptr, len_ptr, dur_ptr, sel_ptr, B, N, NL, ND, BLANK,
    BB: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """The step's choices once per block of rows (for many rows: see TritonConfig.select_rows)."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    _select_rows(
        logits_ptr, time_ptr, len_ptr, dur_ptr, sel_ptr, rows, rows < B, True, N, NL, ND, BLANK,
        BB, BL, BD,
    )  # fmt: skip


@triton.jit
def _lstm_kernel(
    logits_ptr, time_ptr, len_ptr, dur_ptr, embed_ptr, x_ptr, h_ptr, c_ptr, w_ptr, b_ptr,
    h_out_ptr, c_out_ptr, sel_ptr,
    B, H, N, NL, ND, BLANK,
    FIRST: tl.constexpr, SELECTED: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr,
    BK: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    row_ok = rows < B
    if FIRST and not SELECTED:  # take the argmaxes here (program 0 records them)
        label, emit = _select_rows(
            logits_ptr, time_ptr, len_ptr, dur_ptr, sel_ptr, rows, row_ok,
            tl.program_id(0) == 0, N, NL, ND, BLANK, BB, BL, BD,
        )  # fmt: skip
    else:  # _select_kernel (or layer 0) recorded them
        emit = tl.load(sel_ptr + rows * 3 + 2, mask=row_ok, other=0) != 0
        label = tl.load(sel_ptr + rows * 3, mask=row_ok, other=0).to(tl.int32)
    if FIRST:
        x_rows = label.to(tl.int64) * H  # layer 0 input: the label's embedding row
        x_base = embed_ptr
    else:
        x_rows = rows.to(tl.int64) * H  # the previous layer's new h
        x_base = x_ptr
    if tl.max(emit.to(tl.int32), axis=0) == 0:
        return
    hs = tl.program_id(0) * BH + tl.arange(0, BH)
    _lstm_tile(
        x_base, x_rows, h_ptr, c_ptr, w_ptr, b_ptr, h_out_ptr, c_out_ptr, rows, row_ok, emit, hs,
        H, False, BB, BH, BK, DOT,
    )  # fmt: skip


@triton.jit
def _bookkeeping(
    rows, row_ok, sel_ptr, time_ptr, len_ptr, steps_ptr, count_ptr, on_frame_ptr,
    last_frame_ptr, out_ptr, CAP, MAX_SYMBOLS,
):  # fmt: skip
    """The step's integer updates for the rows of one block, from and to the buffers."""
    label = tl.load(sel_ptr + rows * 3, mask=row_ok, other=0)
    dur = tl.load(sel_ptr + rows * 3 + 1, mask=row_ok, other=0)
    emit = tl.load(sel_ptr + rows * 3 + 2, mask=row_ok, other=0) != 0
    time = tl.load(time_ptr + rows, mask=row_ok, other=0)
    frames = tl.load(len_ptr + rows, mask=row_ok, other=0)
    active = time < frames
    steps = tl.load(steps_ptr + rows, mask=row_ok, other=0)
    tl.store(steps_ptr + rows, steps + active.to(tl.int64), mask=row_ok)
    count = tl.load(count_ptr + rows, mask=row_ok, other=0)
    slot = out_ptr + (rows.to(tl.int64) * CAP + tl.minimum(count, CAP - 1)) * 3
    tl.store(slot, label, mask=row_ok)
    tl.store(slot + 1, time, mask=row_ok)
    tl.store(slot + 2, dur, mask=row_ok)
    on_frame = tl.load(on_frame_ptr + rows, mask=row_ok, other=0)
    last_frame = tl.load(last_frame_ptr + rows, mask=row_ok, other=0)
    time, count, on_frame, last_frame = _advance(
        label, dur, emit, active, time, frames, count, on_frame, last_frame, MAX_SYMBOLS
    )
    tl.store(count_ptr + rows, count, mask=row_ok)
    tl.store(on_frame_ptr + rows, on_frame, mask=row_ok)
    tl.store(last_frame_ptr + rows, last_frame, mask=row_ok)
    tl.store(time_ptr + rows, time, mask=row_ok)


@triton.jit
def _project_kernel(
    w_ptr, bias_ptr, pred_ptr, h_new_ptr, c_new_ptr, h_ptr, c_ptr,
    sel_ptr, time_ptr, len_ptr, steps_ptr, count_ptr, on_frame_ptr, last_frame_ptr, out_ptr,
    B, H, J, L, CAP, MAX_SYMBOLS,
    BB: tl.constexpr, BJ: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    row_ok = rows < B
    if tl.program_id(0) == 0:
        _bookkeeping(
            rows, row_ok, sel_ptr, time_ptr, len_ptr, steps_ptr, count_ptr, on_frame_ptr,
            last_frame_ptr, out_ptr, CAP, MAX_SYMBOLS,
        )  # fmt: skip
    emit = tl.load(sel_ptr + rows * 3 + 2, mask=row_ok, other=0) != 0
    if tl.max(emit.to(tl.int32), axis=0) == 0:
        return
    js = tl.program_id(0) * BJ + tl.arange(0, BJ)
    top = h_new_ptr + (L - 1) * B * H  # the new output of the top layer
    _project_tile(w_ptr, bias_ptr, top, pred_ptr, rows, emit, js, H, J, BB, BJ, BK, DOT)
    # Commit: the programs share the copy of the emitting rows' new (h, c), all layers.
    stride = tl.num_programs(0) * BC
    for s0 in range(tl.program_id(0) * BC, L * H, stride):
        cols = s0 + tl.arange(0, BC)
        offs = (cols // H)[None, :] * (B * H) + rows[:, None] * H + (cols % H)[None, :]
        m = emit[:, None] & (cols < L * H)[None, :]
        tl.store(h_ptr + offs, tl.load(h_new_ptr + offs, mask=m), mask=m)
        tl.store(c_ptr + offs, tl.load(c_new_ptr + offs, mask=m), mask=m)


class Launch(NamedTuple):
    """One kernel launch of a step, with every argument bound to the machine's buffers."""

    kernel: Any
    grid: tuple[int, int]
    args: tuple[Any, ...]
    consts: dict[str, Any]


class TritonStepDecoder(StepDecoder):
    """A StepDecoder whose ``step`` runs as 2 + L Triton kernels (see the module doc)."""

    def __init__(
        self,
        decoder: Decoder,
        joint: Joint,
        batch: int,
        max_frames: int,
        durations: tuple[int, ...],
        max_symbols: int,
        device: torch.device,
        config: TritonConfig | None = None,
        weight_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(decoder, joint, batch, max_frames, durations, max_symbols, device)
        self.config = config or TritonConfig.for_batch(batch, weight_dtype)
        if self.config.tensor_cores and weight_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError("tensor_cores needs 16-bit weights (bf16 or fp16)")
        wd = weight_dtype
        out = joint.joint_net[2]
        assert isinstance(out, torch.nn.Linear)
        with torch.no_grad():
            self.w_out = out.weight.detach().to(device, wd).contiguous()
            self.b_out = out.bias.detach().to(device, torch.float32).contiguous()
            self.w_pred = joint.pred.weight.detach().to(device, wd).contiguous()
            self.b_pred = joint.pred.bias.detach().to(device, torch.float32).contiguous()
            embed = decoder.prediction.embed.weight
            self.embed = embed.detach().to(device, torch.float32).contiguous()
            # Per layer: [w_ih | w_hh] as one [4H, 2H] matrix and b_ih + b_hh, the layers
            # stacked in one tensor (the decode loop kernel takes them all).
            self.w_lstm_all = torch.stack(
                [torch.cat((w_ih, w_hh), dim=1) for w_ih, w_hh, _, _ in self.lstm.layers]
            ).to(device, wd)
            self.b_lstm_all = torch.stack(
                [b_ih + b_hh for _, _, b_ih, b_hh in self.lstm.layers]
            ).to(device, torch.float32)
            self.w_lstm, self.b_lstm = list(self.w_lstm_all), list(self.b_lstm_all)
        if wd != torch.float32:  # the start state from the same rounded weights
            self._start = self.rounded_start(wd)
        self.num_outputs = self.w_out.shape[0]
        self.logits = torch.zeros(batch, self.num_outputs, device=device)
        self.sel = torch.zeros(batch, 3, dtype=torch.long, device=device)  # label, duration, emit
        self.h_new = torch.zeros_like(self.h)
        self.c_new = torch.zeros_like(self.c)
        self._launches = self._plan()

    def _plan(self) -> list[Launch]:
        """The step's kernel launches, fixed for the machine's life (graph capture needs that)."""
        cfg, b = self.config, self.batch
        bb = cfg.rows(b)
        row_blocks = triton.cdiv(b, bb)
        hidden, layers, pred_hidden = self.enc_proj.shape[2], self.h.shape[0], self.h.shape[2]
        outputs, labels = self.num_outputs, self.num_labels
        label_block = min(triton.next_power_of_2(labels), max(16, 2048 // bb))
        selected = bb >= cfg.select_rows
        dot = cfg.tensor_cores
        args: tuple[Any, ...] = (self.enc_proj, self.pred_proj, self.w_out, self.b_out)
        args += (self.time, self.lengths, self.logits, b, self.max_frames, hidden, outputs)
        consts: dict[str, Any] = dict(BB=bb, BN=cfg.block_n, DOT=dot)
        consts["BK"] = cfg.block_k(bb, cfg.block_n, hidden)
        plan = [
            Launch(_joint_kernel, (triton.cdiv(outputs, cfg.block_n), row_blocks), args, consts)
        ]
        if selected:
            args = (self.logits, self.time, self.lengths, self.durations, self.sel, b, outputs)
            args += (labels, outputs - labels, self.blank)
            sb = min(cfg.select_block, bb)
            consts = dict(BB=sb, BD=triton.next_power_of_2(outputs - labels))
            consts["BL"] = min(triton.next_power_of_2(labels), max(16, 4096 // sb))
            plan.append(Launch(_select_kernel, (triton.cdiv(b, sb), 1), args, consts))
        for layer in range(layers):
            args = (self.logits, self.time, self.lengths, self.durations, self.embed)
            args += (self.h_new[max(layer - 1, 0)], self.h[layer], self.c[layer])
            args += (self.w_lstm[layer], self.b_lstm[layer], self.h_new[layer], self.c_new[layer])
            args += (self.sel, b, pred_hidden, outputs, labels, outputs - labels, self.blank)
            consts = dict(FIRST=layer == 0, SELECTED=selected, BB=bb, BH=cfg.block_h, DOT=dot)
            consts["BK"] = cfg.block_k(bb, cfg.block_h, 2 * pred_hidden)
            consts["BL"] = label_block
            consts["BD"] = triton.next_power_of_2(outputs - labels)
            grid = (triton.cdiv(pred_hidden, cfg.block_h), row_blocks)
            plan.append(Launch(_lstm_kernel, grid, args, consts))
        args = (self.w_pred, self.b_pred, self.pred_proj, self.h_new, self.c_new, self.h, self.c)
        args += (self.sel, self.time, self.lengths, self.steps, self.count, self.on_frame)
        args += (self.last_frame, self.out, b, pred_hidden, hidden, layers, self.capacity)
        args += (self.max_symbols,)
        consts = dict(BB=bb, BJ=cfg.block_j, BC=max(16, 1024 // bb), DOT=dot)
        consts["BK"] = cfg.block_k(bb, cfg.block_j, pred_hidden)
        grid = (triton.cdiv(hidden, cfg.block_j), row_blocks)
        plan.append(Launch(_project_kernel, grid, args, consts))
        return plan

    @classmethod
    def network_options(cls, network: ParakeetTDT) -> dict[str, Any]:
        """The weight matrices in the encoder's matmul dtype: in bf16 the prediction network and
        joint read bf16 weights (NeMo runs them in bf16 under autocast), summing in float32."""
        return {"weight_dtype": network.encoder.matmul_dtype}

    def step(self) -> None:
        """One joint evaluation per row, with every consequence applied in place."""
        for launch in self._launches:
            launch.kernel[launch.grid](
                *launch.args, **launch.consts, num_warps=self.config.num_warps
            )
