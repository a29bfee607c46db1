# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""Triton tiles shared by the decoder step kernels (triton_decoding.py) and the one-launch
decode loop (triton_loop.py): the joint, an LSTM cell, the prediction projection, argmaxes and
the step's integer bookkeeping, each on a block of rows. Sums and state are float32; weights
are read in their stored dtype (float32, or a 16-bit copy), and with DOT the products run on
tensor cores (``_split_dot``).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _split_dot(v, w_t, acc):
    """acc + v @ w_t on tensor cores for float32 activations ``v`` [M, K] and 16-bit weights
    ``w_t`` [K, N]: v is split into a 16-bit head and a 16-bit remainder, and each product of
    16-bit numbers is exact in the float32 sums, so the result keeps ~16 bits of v instead of 8
    (close to the CUDA-core path's float32 activations, which the tests compare against)."""
    head = v.to(w_t.dtype)
    rest = (v - head.to(tl.float32)).to(w_t.dtype)
    acc = tl.dot(head, w_t, acc)
    return tl.dot(rest, w_t, acc)


@triton.jit
def _weight_product(acc, v, w_ptr, outs, out_ok, ks, k_ok, K, DOT: tl.constexpr):
    """acc + v @ W[outs, ks]^T for activations v [rows, ks] (float32) and the row-major weight
    W (K columns): on tensor cores with DOT (a transposed [ks, outs] tile), else as a
    float32 broadcast product on CUDA cores."""
    if DOT:
        w_t_mask = k_ok[:, None] & out_ok[None, :]
        w_t = tl.load(w_ptr + outs[None, :] * K + ks[:, None], mask=w_t_mask, other=0.0)
        return _split_dot(v, w_t, acc)
    w_mask = out_ok[:, None] & k_ok[None, :]
    w = tl.load(w_ptr + outs[:, None] * K + ks[None, :], mask=w_mask, other=0.0)
    return acc + tl.sum(v[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)


@triton.jit
def _joint_tile(
    enc_ptr, enc_rows, pred_ptr, pred_rows, rows, row_ok, w_ptr, bias_ptr, logits_ptr, cols, J, N,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr = False,
):  # fmt: skip
    """logits[rows, cols] = relu(enc_proj row + pred_proj[pred_rows]) @ W_out[cols]^T +
    bias[cols] (the loop kernel's look-ahead puts several frames of one row in a tile).
    pred_proj is read past L1 (``.cg``): the decode loop kernel rewrites it between uses.
    DOT: on tensor cores (16-bit weights, BB, BN, BK >= 16)."""
    col_ok = cols < N
    acc = tl.zeros([BB, BN], dtype=tl.float32)
    for k0 in range(0, J, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < J
        m = row_ok[:, None] & k_ok[None, :]
        enc = tl.load(enc_ptr + enc_rows[:, None] + ks[None, :], mask=m, other=0.0)
        pred_at = pred_ptr + pred_rows[:, None] * J + ks[None, :]
        pred = tl.load(pred_at, mask=m, other=0.0, cache_modifier=".cg")
        hidden = tl.maximum(enc + pred, 0.0)
        acc = _weight_product(acc, hidden, w_ptr, cols, col_ok, ks, k_ok, J, DOT)
    acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
    out = logits_ptr + rows[:, None] * N + cols[None, :]
    tl.store(out, acc, mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _argmax_rows(ptr, rows, row_ok, stride, n, BB: tl.constexpr, BL: tl.constexpr):
    """First index of the maximum of ptr[row * stride + 0..n) per row (torch.argmax's ties),
    read past L1: in the decode loop kernel other programs wrote it."""
    best = tl.full([BB], float("-inf"), dtype=tl.float32)
    best_at = tl.zeros([BB], dtype=tl.int32)
    for l0 in range(0, n, BL):
        cols = l0 + tl.arange(0, BL)
        m = row_ok[:, None] & (cols < n)[None, :]
        at = ptr + rows[:, None] * stride + cols[None, :]
        v = tl.load(at, mask=m, other=float("-inf"), cache_modifier=".cg")
        v_max = tl.max(v, axis=1)
        v_at = tl.argmax(v, axis=1) + l0
        better = v_max > best  # strict: an earlier chunk keeps a tie
        best_at = tl.where(better, v_at, best_at)
        best = tl.where(better, v_max, best)
    return best_at


@triton.jit
def _lstm_tile(
    x_base, x_rows, h_ptr, c_ptr, w_ptr, b_ptr, h_out_ptr, c_out_ptr, rows, row_ok, emit, hs, H,
    KEEP: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT: tl.constexpr = False,
):  # fmt: skip
    """The LSTM cell for hidden units ``hs`` of the emitting rows: new h, c from the input rows
    (x_base + x_rows) and the old state, written to h_out/c_out. With KEEP the other valid rows
    get their old h, c there (the loop kernel's state buffers alternate). State and the input
    are read past L1 (other programs of the loop kernel wrote them). The old state and the bias
    are asked for before the products, so their loads overlap the weights' (in the loop kernel
    at batch 2 and 4 ~0.5-1 us less per emitting step than loading them after, at batch 1 no
    difference: benchmarks/results/gpu_decoder_micro_h100_2026-11-25_early_state_*.json, measured
    with a temporary flag for the late variant)."""
    h_ok = hs < H
    state = rows[:, None] * H + hs[None, :]
    state_ok = row_ok[:, None] & h_ok[None, :]
    c_old = tl.load(c_ptr + state, mask=state_ok, other=0.0, cache_modifier=".cg")
    if KEEP:
        h_old = tl.load(h_ptr + state, mask=state_ok, other=0.0, cache_modifier=".cg")
    b_i = tl.load(b_ptr + hs, mask=h_ok, other=0.0)[None, :]
    b_f = tl.load(b_ptr + H + hs, mask=h_ok, other=0.0)[None, :]
    b_g = tl.load(b_ptr + 2 * H + hs, mask=h_ok, other=0.0)[None, :]
    b_o = tl.load(b_ptr + 3 * H + hs, mask=h_ok, other=0.0)[None, :]
    acc_i = tl.zeros([BB, BH], dtype=tl.float32)
    acc_f = tl.zeros([BB, BH], dtype=tl.float32)
    acc_g = tl.zeros([BB, BH], dtype=tl.float32)
    acc_o = tl.zeros([BB, BH], dtype=tl.float32)
    for k0 in range(0, 2 * H, BK):  # input [x, h_old] against the packed [w_ih, w_hh]
        ks = k0 + tl.arange(0, BK)
        in_x = emit[:, None] & (ks < H)[None, :]
        in_h = emit[:, None] & ((ks >= H) & (ks < 2 * H))[None, :]
        x_at = x_base + x_rows[:, None] + ks[None, :]
        v = tl.load(x_at, mask=in_x, other=0.0, cache_modifier=".cg")
        h_at = h_ptr + rows[:, None] * H + (ks - H)[None, :]
        v += tl.load(h_at, mask=in_h, other=0.0, cache_modifier=".cg")
        gate = 2 * H * H  # elements per gate block of the packed weight
        if DOT:  # the four gates' [BK, BH] weight tiles on tensor cores
            w_t_mask = (ks < 2 * H)[:, None] & h_ok[None, :]
            w_t_rows = w_ptr + hs[None, :] * (2 * H) + ks[:, None]
            acc_i = _split_dot(v, tl.load(w_t_rows, mask=w_t_mask, other=0.0), acc_i)
            acc_f = _split_dot(v, tl.load(w_t_rows + gate, mask=w_t_mask, other=0.0), acc_f)
            acc_g = _split_dot(v, tl.load(w_t_rows + 2 * gate, mask=w_t_mask, other=0.0), acc_g)
            acc_o = _split_dot(v, tl.load(w_t_rows + 3 * gate, mask=w_t_mask, other=0.0), acc_o)
        else:
            w_mask = h_ok[:, None] & (ks < 2 * H)[None, :]
            w_rows = w_ptr + hs[:, None] * (2 * H) + ks[None, :]
            w = tl.load(w_rows, mask=w_mask, other=0.0).to(tl.float32)
            acc_i += tl.sum(v[:, None, :] * w[None, :, :], axis=2)
            w = tl.load(w_rows + gate, mask=w_mask, other=0.0).to(tl.float32)
            acc_f += tl.sum(v[:, None, :] * w[None, :, :], axis=2)
            w = tl.load(w_rows + 2 * gate, mask=w_mask, other=0.0).to(tl.float32)
            acc_g += tl.sum(v[:, None, :] * w[None, :, :], axis=2)
            w = tl.load(w_rows + 3 * gate, mask=w_mask, other=0.0).to(tl.float32)
            acc_o += tl.sum(v[:, None, :] * w[None, :, :], axis=2)
    i = tl.sigmoid(acc_i + b_i)
    f = tl.sigmoid(acc_f + b_f)
    g = _tanh(acc_g + b_g)
    o = tl.sigmoid(acc_o + b_o)
    m = emit[:, None] & h_ok[None, :]
    c = f * c_old + i * g
    h = o * _tanh(c)
    if KEEP:
        c = tl.where(emit[:, None], c, c_old)
        h = tl.where(emit[:, None], h, h_old)
        m = state_ok
    tl.store(c_out_ptr + state, c, mask=m)
    tl.store(h_out_ptr + state, h, mask=m)


@triton.jit
def _duration(dur_ptr, index, label, row_ok, BLANK):
    """The duration a step moves on by: the table's entry; a blank of duration 0 moves 1."""
    dur = tl.load(dur_ptr + index, mask=row_ok, other=0)
    return tl.where((label == BLANK) & (dur == 0), 1, dur)


@triton.jit
def _advance(label, dur, emit, active, time, frames, count, on_frame, last_frame, MAX_SYMBOLS):
    """StepDecoder.step's integer updates on a block of rows: (time, count, on_frame,
    last_frame) after the step, NeMo's max-symbols rule included."""
    count = count + emit.to(tl.int64)
    on_frame = tl.where(emit, tl.where(last_frame == time, on_frame + 1, 1), on_frame)
    last_frame = tl.where(emit, time, last_frame)
    new_time = time + dur * active.to(tl.int64)
    capped = emit & (new_time < frames) & (on_frame >= MAX_SYMBOLS) & (last_frame == new_time)
    return new_time + capped.to(tl.int64), count, on_frame, last_frame


@triton.jit
def _project_tile(
    w_ptr, bias_ptr, top_ptr, pred_ptr, rows, emit, js, H, J,
    BB: tl.constexpr, BJ: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr = False,
):  # fmt: skip
    """pred_proj[rows, js] of the emitting rows from the top LSTM layer's new h (top_ptr)."""
    j_ok = js < J
    acc = tl.zeros([BB, BJ], dtype=tl.float32)
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < H
        top_at = top_ptr + rows[:, None] * H + ks[None, :]
        v = tl.load(top_at, mask=emit[:, None] & k_ok[None, :], other=0.0, cache_modifier=".cg")
        acc = _weight_product(acc, v, w_ptr, js, j_ok, ks, k_ok, H, DOT)
    acc += tl.load(bias_ptr + js, mask=j_ok, other=0.0)[None, :]
    tl.store(pred_ptr + rows[:, None] * J + js[None, :], acc, mask=emit[:, None] & j_ok[None, :])
