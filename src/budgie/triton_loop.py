# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""A whole batch's TDT greedy decode in one persistent Triton kernel.

Why: TritonStepDecoder (triton_decoding.py) runs a step as 2 + L dependent kernels; inside a
CUDA graph each launch still costs ~3 us of latency, so a speech-like step takes ~16 us at
batch 1 and launches, not arithmetic, are the floor (the weights, ~15 MB in bf16, stay in
the H100's 50 MB L2). Here one launch does every step: its programs stay resident (at most one
per SM) and meet at grid-wide barriers (an atomic arrival counter) between the phases a step
needs in order:

1. joint: logits of the rows at their current frames, output columns split over programs;
2. every program takes the argmaxes itself and keeps the rows' integer state (time, count,
   on_frame, last_frame, steps) in registers, identical in all programs, so the step's
   bookkeeping needs no barrier; program 0 records the emitted labels. A step where no row
   emits ends here: one barrier per blank step. With ``LoopConfig.window`` = W > 1 the joint
   phase evaluates each row's next W frames, and a row keeps taking steps from those logits
   while it gets blanks (a blank leaves the prediction as it is) until it emits or leaves the
   window: a run of blanks then costs one phase;
3. one phase per LSTM layer, hidden units split over programs; h and c alternate between two
   buffers (a non-emitting row's old state is copied across), so no commit phase is needed;
4. the prediction projection of the emitting rows, split over programs.

The programs loop until every row is past its last frame; the host does not check anything in
between. The tiles are triton_decoding.py's: with the same tiling the arithmetic, and with it
every token, equals TritonStepDecoder's (tested); LoopConfig's default tiles are larger, which
sums in another order (a token can then differ only at an argmax near-tie, as between any two
float32 decoders). The kernel needs all of its programs resident at once: the grid is at most
the GPU's SM count, one program per SM. Triton's interpreter runs programs one after another, so
there (tests on the CPU) the grid is a single program.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from budgie.transducer import Decoder, Joint
from budgie.triton_decoding import TritonConfig, TritonStepDecoder
from budgie.triton_tiles import (
    _advance,
    _argmax_rows,
    _cell_update,
    _duration,
    _gate_products,
    _joint_tile,
    _lstm_tile,
    _project_tile,
    _tanh,
)

# Rows of a batch the loop kernel decodes: every program holds all rows' state in registers.
# At 8 rows it was slower than the graphed step kernels (117 vs 66 us per speech-like step
# in bf16), at 4 faster (21 vs 27): benchmarks/results/gpu_decoder_micro_h100_2026-11-24_loop.json.
LOOP_MAX_BATCH = 4


@dataclass(frozen=True)
class LoopConfig(TritonConfig):
    """TritonConfig's tiles, plus the number of programs (0: one per SM, capped by the most
    tiles a phase has). Every row of the batch is in one block (``block_b`` >= the batch)."""

    programs: int = 0
    block_b: int = LOOP_MAX_BATCH
    # Frames ahead whose joint a phase evaluates (a power of two): a row then takes its blank
    # steps inside that window without another phase. 1: one frame per phase. On the synthetic
    # models W = 4 made blank steps ~20 % cheaper and emitting ones ~10 % dearer, no net gain
    # (B=1 bf16 speech-like 8.8 vs 8.5-9.7 us; emission-heavy context 3.6 vs 3.2-3.6 ms;
    # benchmarks/results/gpu_decoder_micro_h100_2026-11-24_lookahead.json,
    # gpu_decode_context_h100_2026-11-24_lookahead.json), so off by default.
    window: int = 1
    # Layer 0's input products per label from a table (W_ih0 @ embedding, made once) and its
    # recurrent products made in the projection phase after an emission: an emitting step then
    # needs one phase for the first two LSTM layers instead of one each (see the module doc).
    # False: the phase per layer, kept to measure the difference.
    table: bool = True
    # Defaults: the fastest on an H100 (one joint tile of 8 outputs and one projection tile per
    # program, 8 hidden units per LSTM tile, a whole LSTM row per tile up to 2 rows: speech-like
    # 8.5-9.1 us per step at batch 1 in bf16 vs 14.8 for the graphed step kernels, 11.1 at 2,
    # 17.7 at 4; benchmarks/results/gpu_decoder_micro_h100_2026-11-24_loop.json and
    # ..._loop_tiles.json, "loop_tile32k").
    block_n: int = 8
    block_j: int = 8
    block_h: int = 8
    tile: int = 32768
    num_warps: int = 8


@triton.jit
def _grid_sync(counter_ptr, passed, P):
    """Grid-wide barrier number ``passed`` (1, 2, ...): arrive at the counter, then wait until
    every program has. The release/acquire pair makes every program's earlier stores visible to
    the loads after it (those loads bypass L1, see the tiles)."""
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while arrived < passed * P:
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _start_rows(dst_ptr, src_ptr, n, rows, row_ok, pid, P, BB: tl.constexpr, BC: tl.constexpr):
    """dst[row, 0..n) = src[0..n) for every valid row (the start state is the same for all)."""
    for s0 in range(pid * BC, n, P * BC):
        cols = s0 + tl.arange(0, BC)
        ok = cols < n
        value = tl.load(src_ptr + cols, mask=ok, other=0.0)[None, :] + tl.zeros(
            [BB, BC], tl.float32
        )
        tl.store(
            dst_ptr + rows[:, None] * n + cols[None, :], value, mask=row_ok[:, None] & ok[None, :]
        )


@triton.jit
def _table_cell(table_ptr, labels, hh_ptr, c_ptr, rows, m, ks, H):
    """Layer 0's new (h, c, old c) at units ``ks`` of the rows in mask ``m``: its gate sums are
    the label's row of the table (W_ih0 @ embedding, one row per label) plus hh (W_hh0 @ h0 +
    b0, made in the projection phase after the last emission), so no product is left here."""
    four = 4 * H
    t_at = table_ptr + labels.to(tl.int64)[:, None] * four + ks[None, :]
    s_at = hh_ptr + rows[:, None] * four + ks[None, :]
    i = tl.load(t_at, mask=m, other=0.0) + tl.load(s_at, mask=m, other=0.0, cache_modifier=".cg")
    f = tl.load(t_at + H, mask=m, other=0.0)
    f += tl.load(s_at + H, mask=m, other=0.0, cache_modifier=".cg")
    g = tl.load(t_at + 2 * H, mask=m, other=0.0)
    g += tl.load(s_at + 2 * H, mask=m, other=0.0, cache_modifier=".cg")
    o = tl.load(t_at + 3 * H, mask=m, other=0.0)
    o += tl.load(s_at + 3 * H, mask=m, other=0.0, cache_modifier=".cg")
    at = c_ptr + rows[:, None] * H + ks[None, :]
    c_old = tl.load(at, mask=m, other=0.0, cache_modifier=".cg")
    c = tl.sigmoid(f) * c_old + tl.sigmoid(i) * _tanh(g)
    return tl.sigmoid(o) * _tanh(c), c, c_old


@triton.jit
def _table_layer_tile(
    table_ptr, labels, hh_ptr, h_ptr, c_ptr, h_out_ptr, c_out_ptr, rows, row_ok, emit, hs, H
):
    """Layer 0's new state at units ``hs`` into the other buffer (old state for the rows that
    did not emit)."""
    m = row_ok[:, None] & (hs < H)[None, :]
    h, c, c_old = _table_cell(table_ptr, labels, hh_ptr, c_ptr, rows, m, hs, H)
    state = rows[:, None] * H + hs[None, :]
    h_old = tl.load(h_ptr + state, mask=m, other=0.0, cache_modifier=".cg")
    tl.store(c_out_ptr + state, tl.where(emit[:, None], c, c_old), mask=m)
    tl.store(h_out_ptr + state, tl.where(emit[:, None], h, h_old), mask=m)


@triton.jit
def _second_layer_tile(
    table_ptr, labels, hh_ptr, c0_ptr, h_ptr, c_ptr, w_ptr, b_ptr, h_out_ptr, c_out_ptr,
    rows, row_ok, emit, hs, H, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """Layer 1's cell at units ``hs``. Its input, layer 0's new h, is not read from memory but
    computed here from the table (a few loads per unit), so layer 0 needs no phase of its own."""
    h_ok = hs < H
    acc_i = tl.zeros([BB, BH], dtype=tl.float32)
    acc_f = tl.zeros([BB, BH], dtype=tl.float32)
    acc_g = tl.zeros([BB, BH], dtype=tl.float32)
    acc_o = tl.zeros([BB, BH], dtype=tl.float32)
    for k0 in range(0, 2 * H, BK):  # input [h0 new, h1 old] against the packed [w_ih, w_hh]
        ks = k0 + tl.arange(0, BK)
        in_x = emit[:, None] & (ks < H)[None, :]
        in_h = emit[:, None] & ((ks >= H) & (ks < 2 * H))[None, :]
        x, _, _ = _table_cell(table_ptr, labels, hh_ptr, c0_ptr, rows, in_x, ks, H)
        v = tl.where(in_x, x, 0.0)
        h_at = h_ptr + rows[:, None] * H + (ks - H)[None, :]
        v += tl.load(h_at, mask=in_h, other=0.0, cache_modifier=".cg")
        w_mask = h_ok[:, None] & (ks < 2 * H)[None, :]
        w_rows = w_ptr + hs[:, None] * (2 * H) + ks[None, :]
        acc_i, acc_f, acc_g, acc_o = _gate_products(
            v, w_rows, w_mask, 2 * H * H, acc_i, acc_f, acc_g, acc_o
        )
    _cell_update(
        acc_i, acc_f, acc_g, acc_o, b_ptr, h_ptr, c_ptr, h_out_ptr, c_out_ptr, rows, row_ok,
        emit, hs, H, True,
    )  # fmt: skip


@triton.jit
def _hh_tile(
    h_ptr, w_ptr, b_ptr, hh_ptr, rows, emit, hs, H,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """hh = W_hh0 @ h0 + b0 at units ``hs`` (x4 gates) of the emitting rows: layer 0's share of
    the next emission's gate sums, made in a phase that has little else to do."""
    h_ok = hs < H
    acc_i = tl.zeros([BB, BH], dtype=tl.float32)
    acc_f = tl.zeros([BB, BH], dtype=tl.float32)
    acc_g = tl.zeros([BB, BH], dtype=tl.float32)
    acc_o = tl.zeros([BB, BH], dtype=tl.float32)
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < H
        at = h_ptr + rows[:, None] * H + ks[None, :]
        v = tl.load(at, mask=emit[:, None] & k_ok[None, :], other=0.0, cache_modifier=".cg")
        w_rows = w_ptr + hs[:, None] * (2 * H) + H + ks[None, :]  # the w_hh half
        acc_i, acc_f, acc_g, acc_o = _gate_products(
            v, w_rows, h_ok[:, None] & k_ok[None, :], 2 * H * H, acc_i, acc_f, acc_g, acc_o
        )
    m = emit[:, None] & h_ok[None, :]
    out = hh_ptr + rows[:, None] * (4 * H) + hs[None, :]
    tl.store(out, acc_i + tl.load(b_ptr + hs, mask=h_ok, other=0.0)[None, :], mask=m)
    tl.store(out + H, acc_f + tl.load(b_ptr + H + hs, mask=h_ok, other=0.0)[None, :], mask=m)
    tl.store(
        out + 2 * H, acc_g + tl.load(b_ptr + 2 * H + hs, mask=h_ok, other=0.0)[None, :], mask=m
    )
    tl.store(
        out + 3 * H, acc_o + tl.load(b_ptr + 3 * H + hs, mask=h_ok, other=0.0)[None, :], mask=m
    )


@triton.jit(do_not_specialize=["B", "T"])  # one compiled kernel for every batch and length
def _decode_loop_kernel(
    enc_ptr, len_ptr, start_pred_ptr, start_h_ptr, start_c_ptr,
    w_out_ptr, b_out_ptr, w_pred_ptr, b_pred_ptr, embed_ptr, w_lstm_ptr, b_lstm_ptr, dur_ptr,
    logits_ptr, pred_ptr, h_ptr, c_ptr, out_ptr, count_ptr, steps_ptr, time_ptr, counter_ptr,
    table_ptr, hh_ptr, start_hh_ptr,
    B, T, J, H, N, NL, ND, L, BLANK, CAP, MAX_SYMBOLS,
    BB: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr, BJ: tl.constexpr,
    BK_JOINT: tl.constexpr, BK_LSTM: tl.constexpr, BK_PROJ: tl.constexpr, BK_HH: tl.constexpr,
    BL: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr,
    W: tl.constexpr, TABLE: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    P = tl.num_programs(0)
    rows = tl.arange(0, BB)
    row_ok = rows < B
    layer_size = B * H  # h, c: [2 (alternating), L, B, H]
    # Start state (the prediction after the start-of-sequence blank) into buffer 0.
    _start_rows(pred_ptr, start_pred_ptr, J, rows, row_ok, pid, P, BB, BC)
    for layer in range(L):
        at = layer * layer_size
        _start_rows(h_ptr + at, start_h_ptr + layer * H, H, rows, row_ok, pid, P, BB, BC)
        _start_rows(c_ptr + at, start_c_ptr + layer * H, H, rows, row_ok, pid, P, BB, BC)
    if TABLE:
        _start_rows(hh_ptr, start_hh_ptr, 4 * H, rows, row_ok, pid, P, BB, BC)
    passed = 1
    _grid_sync(counter_ptr, passed, P)

    frames = tl.load(len_ptr + rows, mask=row_ok, other=0)
    time = tl.zeros([BB], dtype=tl.int64)
    count = tl.zeros([BB], dtype=tl.int64)
    steps = tl.zeros([BB], dtype=tl.int64)
    on_frame = tl.zeros([BB], dtype=tl.int64)
    last_frame = tl.full([BB], -1, dtype=tl.int64)
    old = 0  # which state buffer holds the current h, c
    active = row_ok & (time < frames)
    while tl.max(active.to(tl.int32), axis=0) > 0:
        # The joint at each row's next W frames (logits row = row * W + frames ahead).
        if W == 1:  # (the reshapes below measured slower at W = 1)
            near, near_ok, near_time, near_frames, out_rows = rows, row_ok, time, frames, rows
        else:
            ahead = tl.arange(0, W)
            near = tl.reshape(rows[:, None] + ahead[None, :] * 0, [BB * W])
            near_ok = tl.reshape(row_ok[:, None] & (ahead >= 0)[None, :], [BB * W])
            near_time = tl.reshape(time[:, None] + ahead[None, :], [BB * W])
            near_frames = tl.reshape(frames[:, None] + ahead[None, :] * 0, [BB * W])
            out_rows = tl.reshape(rows[:, None] * W + ahead[None, :], [BB * W])
        frame = tl.minimum(near_time, tl.maximum(near_frames - 1, 0))
        enc_rows = (near.to(tl.int64) * T + frame) * J
        for tile in range(pid, tl.cdiv(N, BN), P):
            cols = tile * BN + tl.arange(0, BN)
            _joint_tile(
                enc_ptr, enc_rows, pred_ptr, near, out_rows, near_ok, w_out_ptr, b_out_ptr,
                logits_ptr, cols, J, N, BB * W, BN, BK_JOINT,
            )  # fmt: skip
        passed += 1
        _grid_sync(counter_ptr, passed, P)

        # Every row takes steps from these logits until it emits or leaves its window (blanks
        # do not change the prediction, so the joint at the frames ahead is already right).
        start = time
        walking = active
        emit = row_ok & (rows < 0)  # no row yet
        label = tl.zeros([BB], dtype=tl.int32)  # the label a row emitted
        while tl.max(walking.to(tl.int32), axis=0) > 0:
            at = rows.to(tl.int64) * W + (time - start)
            chosen = _argmax_rows(logits_ptr, at, walking, N, NL, BB, BL)
            index = _argmax_rows(logits_ptr + NL, at, walking, N, ND, BB, BD)
            dur = _duration(dur_ptr, index, chosen, walking, BLANK)
            emits = walking & (chosen != BLANK)
            if pid == 0:
                slot = out_ptr + (rows.to(tl.int64) * CAP + tl.minimum(count, CAP - 1)) * 3
                tl.store(slot, chosen.to(tl.int64), mask=walking)
                tl.store(slot + 1, time, mask=walking)
                tl.store(slot + 2, dur, mask=walking)
            steps += walking.to(tl.int64)
            time, count, on_frame, last_frame = _advance(
                chosen, dur, emits, walking, time, frames, count, on_frame, last_frame,
                MAX_SYMBOLS,
            )  # fmt: skip
            emit = emit | emits
            label = tl.where(emits, chosen, label)
            walking = walking & (chosen == BLANK) & (time < frames) & (time - start < W)

        if tl.max(emit.to(tl.int32), axis=0) > 0:
            new = 1 - old
            if TABLE:
                h_old, c_old = h_ptr + old * L * layer_size, c_ptr + old * L * layer_size
                h_new, c_new = h_ptr + new * L * layer_size, c_ptr + new * L * layer_size
                # Layer 0 from the table (stored for the next steps), layer 1 from it directly;
                # the last programs store layer 0, the first ones compute layer 1's tiles.
                for tile in range(P - 1 - pid, tl.cdiv(H, BH), P):
                    hs = tile * BH + tl.arange(0, BH)
                    _table_layer_tile(
                        table_ptr, label, hh_ptr, h_old, c_old, h_new, c_new, rows, row_ok, emit,
                        hs, H,
                    )  # fmt: skip
                if L > 1:
                    for tile in range(pid, tl.cdiv(H, BH), P):
                        hs = tile * BH + tl.arange(0, BH)
                        _second_layer_tile(
                            table_ptr, label, hh_ptr, c_old, h_old + layer_size, c_old + layer_size,
                            w_lstm_ptr + 8 * H * H, b_lstm_ptr + 4 * H, h_new + layer_size,
                            c_new + layer_size, rows, row_ok, emit, hs, H, BB, BH, BK_LSTM,
                        )  # fmt: skip
                passed += 1
                _grid_sync(counter_ptr, passed, P)
                for layer in range(2, L):  # deeper layers: one phase each, input from memory
                    state = layer * layer_size
                    for tile in range(pid, tl.cdiv(H, BH), P):
                        hs = tile * BH + tl.arange(0, BH)
                        w_at, b_at = w_lstm_ptr + layer * 8 * H * H, b_lstm_ptr + layer * 4 * H
                        _lstm_tile(
                            h_new + state - layer_size, rows.to(tl.int64) * H, h_old + state,
                            c_old + state, w_at, b_at, h_new + state, c_new + state, rows, row_ok,
                            emit, hs, H, True, BB, BH, BK_LSTM,
                        )  # fmt: skip
                    passed += 1
                    _grid_sync(counter_ptr, passed, P)
                # Layer 0's hh for the next emission (the first programs) and the prediction
                # projection (the last ones).
                for tile in range(pid, tl.cdiv(H, BH), P):
                    hs = tile * BH + tl.arange(0, BH)
                    _hh_tile(
                        h_new, w_lstm_ptr, b_lstm_ptr, hh_ptr, rows, emit, hs, H, BB, BH, BK_HH
                    )
                top = h_new + (L - 1) * layer_size
                for tile in range(P - 1 - pid, tl.cdiv(J, BJ), P):
                    js = tile * BJ + tl.arange(0, BJ)
                    _project_tile(
                        w_pred_ptr, b_pred_ptr, top, pred_ptr, rows, emit, js, H, J, BB, BJ,
                        BK_PROJ,
                    )  # fmt: skip
                passed += 1
                _grid_sync(counter_ptr, passed, P)
            else:
                for layer in range(L):
                    state = layer * layer_size
                    if layer == 0:  # input: the label's embedding row
                        x_base = embed_ptr
                        x_rows = label.to(tl.int64) * H
                    else:  # input: the layer below's new h
                        x_base = h_ptr + (new * L + layer - 1) * layer_size
                        x_rows = rows.to(tl.int64) * H
                    for tile in range(pid, tl.cdiv(H, BH), P):
                        hs = tile * BH + tl.arange(0, BH)
                        _lstm_tile(
                            x_base, x_rows, h_ptr + old * L * layer_size + state,
                            c_ptr + old * L * layer_size + state,
                            w_lstm_ptr + layer * 8 * H * H, b_lstm_ptr + layer * 4 * H,
                            h_ptr + new * L * layer_size + state,
                            c_ptr + new * L * layer_size + state,
                            rows, row_ok, emit, hs, H, True, BB, BH, BK_LSTM,
                        )  # fmt: skip
                    passed += 1
                    _grid_sync(counter_ptr, passed, P)
                top = h_ptr + (new * L + L - 1) * layer_size
                for tile in range(pid, tl.cdiv(J, BJ), P):
                    js = tile * BJ + tl.arange(0, BJ)
                    _project_tile(
                        w_pred_ptr, b_pred_ptr, top, pred_ptr, rows, emit, js, H, J, BB, BJ, BK_PROJ
                    )
                passed += 1
                _grid_sync(counter_ptr, passed, P)
            old = new
        active = row_ok & (time < frames)

    if pid == 0:
        tl.store(count_ptr + rows, count, mask=row_ok)
        tl.store(steps_ptr + rows, steps, mask=row_ok)
        tl.store(time_ptr + rows, time, mask=row_ok)


# Label tables per prediction network and weight dtype, shared by its machines (one per
# shape bucket): 1025 labels x 4 x 640 float32 values are 10.5 MB.
_TABLES: weakref.WeakKeyDictionary[Decoder, dict[tuple[torch.dtype, torch.device], torch.Tensor]]
_TABLES = weakref.WeakKeyDictionary()


@torch.inference_mode()
def _label_table(decoder: Decoder, embed: torch.Tensor, w_ih0: torch.Tensor) -> torch.Tensor:
    """W_ih0 @ embedding for every label, [labels, 4H] float32, from the weights as the kernel
    reads them (``w_ih0`` in its dtype), summed in float64 so that the table adds no rounding
    of its own beyond the final float32."""
    tables = _TABLES.setdefault(decoder, {})
    key = (w_ih0.dtype, w_ih0.device)
    if key not in tables:
        tables[key] = (embed.double() @ w_ih0.double().T).float().contiguous()
    return tables[key]


def resident_programs(device: torch.device) -> int:
    """Programs that are surely resident at once: one per SM on CUDA; 1 in the interpreter."""
    if device.type != "cuda":
        return 1
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


class LoopDecoder(TritonStepDecoder):
    """A step machine whose ``step`` decodes the loaded batch to its end in one launch.

    ``reset`` only records the inputs (no copies: the launch reads them where they are) and
    ``any_active`` is true until that one ``step``, so ``decode_with_steps`` without a graph
    runs exactly one launch. Batches of up to LOOP_MAX_BATCH rows."""

    max_batch = LOOP_MAX_BATCH
    runs_to_end = True

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
        if batch > self.max_batch:
            raise ValueError(f"the loop decoder takes at most {LOOP_MAX_BATCH} rows, not {batch}")
        config = config if isinstance(config, LoopConfig) else LoopConfig()
        if config.window < 1 or config.window & (config.window - 1):
            raise ValueError(f"the look-ahead window must be a power of two, not {config.window}")
        super().__init__(
            decoder, joint, batch, max_frames, durations, max_symbols, device, config, weight_dtype
        )
        self.config: LoopConfig = config
        start_pred, start_h, start_c = self._start
        self.start_pred = start_pred[0].contiguous()
        self.start_h = start_h[:, 0].contiguous()
        self.start_c = start_c[:, 0].contiguous()
        layers, _, hidden = self.h.shape
        # Logits of each row's next ``window`` frames.
        self.window_logits = torch.zeros(batch * config.window, self.num_outputs, device=device)
        self.h_pair = torch.zeros(2, layers, batch, hidden, device=device)
        self.c_pair = torch.zeros_like(self.h_pair)
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        tiles = max(
            triton.cdiv(self.num_outputs, config.block_n),
            triton.cdiv(hidden, config.block_h),
            triton.cdiv(self.enc_proj.shape[2], config.block_j),
        )
        self.programs = min(tiles, config.programs or resident_programs(device))
        if device.type != "cuda":
            self.programs = 1  # the interpreter runs programs one by one
        self.counter = torch.zeros(1, dtype=torch.int32, device=device)  # barrier arrivals
        self.table = _label_table(decoder, self.embed, self.w_lstm_all[0, :, :hidden])
        w_hh0, b0 = self.w_lstm_all[0, :, hidden:].double(), self.b_lstm_all[0].double()
        self.start_hh = (self.start_h[0].double() @ w_hh0.T + b0).float().contiguous()
        self.hh = torch.zeros(batch, 4 * hidden, device=device)  # W_hh0 @ h0 + b0 per row

    @torch.inference_mode()
    def reset(self, enc_proj: torch.Tensor, lengths: torch.Tensor) -> None:
        b, t, _ = enc_proj.shape
        if b > self.batch or t > self.max_frames:
            raise ValueError(f"batch {b}x{t} exceeds the machine's {self.batch}x{self.max_frames}")
        self._inputs = (enc_proj.float().contiguous(), lengths.to(torch.long).contiguous())

    def warm_up(self) -> None:
        """Compile and run the kernel once (one frame of zeros), so that a GPU it cannot run on
        fails here, where the caller can fall back, not in the middle of a transcription."""
        hidden = self.enc_proj.shape[2]
        enc = torch.zeros(1, 1, hidden, device=self.enc_proj.device)
        self.reset(enc, torch.ones(1, dtype=torch.long, device=enc.device))
        self.step()
        self.hypotheses(1)

    def any_active(self) -> bool:
        """True from ``reset`` until ``step`` has run the batch to its end."""
        return self._inputs is not None

    def step(self) -> None:
        """Decode the loaded batch to its end (one kernel launch; no host sync)."""
        if self._inputs is None:
            return
        enc_proj, lengths = self._inputs
        self._inputs = None
        b, t, hidden = enc_proj.shape
        cfg = self.config
        bb = int(triton.next_power_of_2(max(b, 1)))
        layers, _, pred_hidden = self.h.shape
        outputs, labels = self.num_outputs, self.num_labels
        self.counter.zero_()
        grid = (self.programs,)
        _decode_loop_kernel[grid](
            enc_proj, lengths, self.start_pred, self.start_h, self.start_c,
            self.w_out, self.b_out, self.w_pred, self.b_pred, self.embed,
            self.w_lstm_all, self.b_lstm_all, self.durations,
            self.window_logits, self.pred_proj, self.h_pair, self.c_pair,
            self.out, self.count, self.steps, self.time, self.counter,
            self.table, self.hh, self.start_hh,
            b, t, hidden, pred_hidden, outputs, labels, outputs - labels, layers,
            self.blank, self.capacity, self.max_symbols,
            BB=bb, BN=cfg.block_n, BH=cfg.block_h, BJ=cfg.block_j,
            BK_JOINT=cfg.block_k(bb * cfg.window, cfg.block_n, hidden),
            BK_LSTM=cfg.block_k(bb, cfg.block_h, 2 * pred_hidden),
            BK_PROJ=cfg.block_k(bb, cfg.block_j, pred_hidden),
            BK_HH=cfg.block_k(bb, cfg.block_h, pred_hidden),
            BL=min(triton.next_power_of_2(labels), max(16, 8192 // bb)),
            BD=triton.next_power_of_2(outputs - labels),
            BC=max(16, 1024 // bb),
            W=cfg.window,
            TABLE=cfg.table,
            num_warps=cfg.num_warps,
        )  # fmt: skip
