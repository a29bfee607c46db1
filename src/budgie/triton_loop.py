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
   bookkeeping needs no barrier; program 0 records the emitted labels. The logits alternate
   between two buffers: after a step without emissions a program may start the next joint phase
   while a slower one still reads the argmaxes. A step where no row
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

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from budgie.gpu_decoding import OneLaunchDecoder
from budgie.transducer import Decoder, Joint
from budgie.triton_decoding import TritonConfig, TritonStepDecoder
from budgie.triton_tiles import (
    _advance,
    _argmax_rows,
    _duration,
    _joint_tile,
    _lstm_tile,
    _project_tile,
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


@triton.jit(do_not_specialize=["B", "T", "LOGITS_SIZE"])  # one kernel for every batch and length
def _decode_loop_kernel(
    enc_ptr, len_ptr, start_pred_ptr, start_h_ptr, start_c_ptr,
    w_out_ptr, b_out_ptr, w_pred_ptr, b_pred_ptr, embed_ptr, w_lstm_ptr, b_lstm_ptr, dur_ptr,
    logits_base, pred_ptr, h_ptr, c_ptr, out_ptr, count_ptr, steps_ptr, time_ptr, counter_ptr,
    B, T, J, H, N, NL, ND, L, BLANK, CAP, MAX_SYMBOLS, LOGITS_SIZE,
    BB: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr, BJ: tl.constexpr,
    BK_JOINT: tl.constexpr, BK_LSTM: tl.constexpr, BK_PROJ: tl.constexpr,
    BL: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr,
    W: tl.constexpr,
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
    passed = 1
    _grid_sync(counter_ptr, passed, P)

    frames = tl.load(len_ptr + rows, mask=row_ok, other=0)
    time = tl.zeros([BB], dtype=tl.int64)
    count = tl.zeros([BB], dtype=tl.int64)
    steps = tl.zeros([BB], dtype=tl.int64)
    on_frame = tl.zeros([BB], dtype=tl.int64)
    last_frame = tl.full([BB], -1, dtype=tl.int64)
    old = 0  # which state buffer holds the current h, c
    joints = 0  # joint phases so far: the logits alternate between two buffers
    active = row_ok & (time < frames)
    while tl.max(active.to(tl.int32), axis=0) > 0:
        # (after a step without emissions no barrier separates a program's next joint phase
        # from slower programs still taking the argmaxes: they read the other buffer)
        logits_ptr = logits_base + (joints % 2) * LOGITS_SIZE
        joints += 1
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


def resident_programs(device: torch.device) -> int:
    """Programs that are surely resident at once: one per SM on CUDA; 1 in the interpreter."""
    if device.type != "cuda":
        return 1
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


class LoopDecoder(OneLaunchDecoder, TritonStepDecoder):
    """The Triton step machine's weights and buffers, decoding a loaded batch of up to
    LOOP_MAX_BATCH rows to its end in one launch of the loop kernel (OneLaunchDecoder's
    contract)."""

    max_batch = LOOP_MAX_BATCH

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
        # (two buffers, alternating per joint phase)
        self.window_logits = torch.zeros(2, batch * config.window, self.num_outputs, device=device)
        self.h_pair = torch.zeros(2, layers, batch, hidden, device=device)
        self.c_pair = torch.zeros_like(self.h_pair)
        tiles = max(
            triton.cdiv(self.num_outputs, config.block_n),
            triton.cdiv(hidden, config.block_h),
            triton.cdiv(self.enc_proj.shape[2], config.block_j),
        )
        self.programs = min(tiles, config.programs or resident_programs(device))
        if device.type != "cuda":
            self.programs = 1  # the interpreter runs programs one by one
        self.counter = torch.zeros(1, dtype=torch.int32, device=device)  # barrier arrivals

    def step(self) -> None:
        """Decode the loaded batch to its end (one kernel launch; no host sync)."""
        inputs = self.take_inputs()
        if inputs is None:
            return
        enc_proj, lengths = inputs
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
            b, t, hidden, pred_hidden, outputs, labels, outputs - labels, layers,
            self.blank, self.capacity, self.max_symbols, self.window_logits[0].numel(),
            BB=bb, BN=cfg.block_n, BH=cfg.block_h, BJ=cfg.block_j,
            BK_JOINT=cfg.block_k(bb * cfg.window, cfg.block_n, hidden),
            BK_LSTM=cfg.block_k(bb, cfg.block_h, 2 * pred_hidden),
            BK_PROJ=cfg.block_k(bb, cfg.block_j, pred_hidden),
            BL=min(triton.next_power_of_2(labels), max(16, 8192 // bb)),
            BD=triton.next_power_of_2(outputs - labels),
            BC=max(16, 1024 // bb),
            W=cfg.window,
            num_warps=cfg.num_warps,
        )  # fmt: skip
