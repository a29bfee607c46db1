# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""Relative-position self-attention of a conformer layer as one Triton kernel.

Why: the fused layer (triton_encoder.py) ran attention as five kernels after the QKV GEMM:
the query terms, a position GEMM writing [H, B*T, 2T] scores, the rel-shift into a [B, H, T, T]
bias, cuDNN's SDPA reading that bias, and the head merge. At batch 1 those are five
latency-bound launches per layer (~28 us of a 3.2 ms encoder pass on an H100); at batch 64 the
two score tensors are hundreds of MB of memory traffic. Here one program takes a block of
queries of one (batch row, head) through all keys with an online softmax (flash attention),
and computes the position term on the fly:

- the content term (q + u) k^T and the position term (q + v) p^T both on tensor cores; for a
  block of BM queries and BN keys the position rows needed are a band of BM + BN - 1 rows of
  the projected table (column T-1-i+j of the eager scores), so one [BM, BW] product gives all
  of them and ``tl.gather`` picks each (query, key) pair's diagonal: the rel-shift without
  ever writing the scores;
- the result goes straight to [B, T, H*d_k] (the merged heads) with padded query rows zeroed.

Rounding follows the eager module (encoder.RelPositionMultiHeadAttention with SDPA): q + u and
q + v rounded to the 16-bit dtype, the position score rounded to it, then scaled and rounded
again (the bias tensor's dtype), padded keys filled with -INF_VAL in that dtype, the softmax in
float32 and its probabilities rounded for the product with v. The sums run in another order
than cuBLAS' and cuDNN's, so a value may differ by a 16-bit step.

Used by triton_encoder.fused_attention for batches of up to 4 rows: alone (in a micro) it beat
the five kernels at every batch, but inside the encoder at batch 32-64 it did not (see
triton_encoder.FLASH_MAX_BATCH).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from budgie.encoder import INF_VAL, RelPositionMultiHeadAttention

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E)


@dataclass(frozen=True)
class AttentionTiles:
    """Queries per program, keys per inner iteration, warps and pipeline stages."""

    query_rows: int = 32
    key_block: int = 32
    warps: int = 4
    stages: int = 2


# The fastest of 40-60 tilings on an H100 in CUDA graphs (bf16, d_model 1024, 8 heads;
# benchmarks/results/gpu_attention_micro_h100_2026-11-24_masked.json): at batch 1, 16 queries
# per program and 64 keys per step (11.4 us at 250 frames, 23.2 us at 384 with the padding mask,
# vs 28.4 and 42.8 us for the five kernels it replaced); at batch 32-64 x 375-384 frames 32 and
# 64 (0.47 vs 0.60 ms, 0.71 vs 1.09 ms masked, 0.67 vs 1.50 ms); 64-query blocks lost everywhere
# (gpu_attention_micro_h100_2026-11-24.json) and the times move with the pipeline stages.
SMALL_TILES = AttentionTiles(query_rows=16, key_block=64)
LARGE_TILES = AttentionTiles(query_rows=32, key_block=64)
# Below this many 32-query programs the GPU (132 SMs on an H100) is not filled twice over:
# smaller query blocks give more programs.
FILLING_PROGRAMS = 256


def tiles_for(batch: int, heads: int, frames: int) -> AttentionTiles:
    """The tiling for an input shape: small query blocks where programs would be too few."""
    programs = batch * heads * triton.cdiv(frames, LARGE_TILES.query_rows)
    return SMALL_TILES if programs < FILLING_PROGRAMS else LARGE_TILES


@triton.jit
def _relative_attention_kernel(
    qkv_ptr, u_ptr, v_ptr, pos_ptr, valid_ptr, out_ptr,
    T, H, D, P, pos_head_stride, pos_row_stride, scale, fill,
    HAS_MASK: tl.constexpr, DK: tl.constexpr, BDK: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    # qkv [B, T, 3D] (q, k, v side by side, D = H * DK), pos [H, P, DK] (strided rows: the
    # projected positions T-1, T-2, ...), out [B, T, D].
    block = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    head = bh % H
    dtype = out_ptr.dtype.element_ty
    i0 = block * BM
    a = tl.arange(0, BM)
    i = i0 + a
    i_ok = i < T
    d = tl.arange(0, BDK)
    d_ok = d < DK
    row = 3 * D
    base = qkv_ptr + b.to(tl.int64) * T * row + head * DK
    q_mask = i_ok[:, None] & d_ok[None, :]
    q = tl.load(base + i[:, None] * row + d[None, :], mask=q_mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + head * DK + d, mask=d_ok, other=0.0).to(tl.float32)
    v_bias = tl.load(v_ptr + head * DK + d, mask=d_ok, other=0.0).to(tl.float32)
    q_u = (q + u[None, :]).to(dtype)
    q_v = (q + v_bias[None, :]).to(dtype)
    pos_base = pos_ptr + head.to(tl.int64) * pos_head_stride
    c = tl.arange(0, BN)
    w = tl.arange(0, BW)
    diagonal = c[None, :] - a[:, None] + (BM - 1)  # (query a, key c) -> its row in the band
    filled = (tl.zeros([BM, BN], dtype=tl.float32) + fill).to(dtype).to(tl.float32)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BDK], dtype=tl.float32)
    for j0 in range(0, T, BN):
        j = j0 + c
        j_ok = j < T
        kv_mask = j_ok[:, None] & d_ok[None, :]
        k_t_mask = d_ok[:, None] & j_ok[None, :]
        k_t = tl.load(base + D + j[None, :] * row + d[:, None], mask=k_t_mask, other=0.0)
        s = tl.dot(q_u, k_t)
        # position rows T-1-i+j for this block: the band from the last query and first key
        r = (T - 1 - (i0 + BM - 1) + j0) + w
        r_ok = (r >= 0) & (r < P) & (w < BM + BN - 1)
        band_at = pos_base + r[None, :] * pos_row_stride + d[:, None]
        band_t = tl.load(band_at, mask=d_ok[:, None] & r_ok[None, :], other=0.0)
        z = tl.dot(q_v, band_t).to(dtype).to(tl.float32)  # the position GEMM's output
        bias = (tl.gather(z, diagonal, axis=1) * scale).to(dtype).to(tl.float32)
        if HAS_MASK:
            key_ok = tl.load(valid_ptr + b * T + j, mask=j_ok, other=0) != 0
            bias = tl.where(key_ok[None, :], bias, filled)
        s = tl.where(j_ok[None, :], (s * scale + bias) * LOG2E, float("-inf"))  # base 2
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        values = tl.load(base + 2 * D + j[:, None] * row + d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(dtype), values)
        m_i = m_new
    out = acc / l_i[:, None]
    if HAS_MASK:  # padded query rows: NeMo zeroes them
        query_ok = tl.load(valid_ptr + b * T + i, mask=i_ok, other=0) != 0
        out = tl.where(query_ok[:, None], out, 0.0)
    out_at = out_ptr + (b.to(tl.int64) * T + i)[:, None] * D + head * DK + d[None, :]
    tl.store(out_at, out.to(dtype), mask=q_mask)


def relative_attention(
    attn: RelPositionMultiHeadAttention,
    qkv: Tensor,
    positions: Tensor,
    valid: Tensor | None,
    tiles: AttentionTiles | None = None,
) -> Tensor:
    """qkv [B, T, 3D] (16-bit, from the concatenated QKV weights), positions [1, H, P, d_k]
    (encoder.layer_positions: P >= 2T-1 rows for positions T-1, T-2, ...), valid [B, T] or
    None -> the attention output with merged heads [B, T, D], before linear_out. ``tiles``:
    by default ``tiles_for`` the shape."""
    b, t, three_d = qkv.shape
    d = three_d // 3
    if qkv.stride(2) != 1 or qkv.stride(1) != three_d or qkv.stride(0) != t * three_d:
        qkv = qkv.contiguous()
    pos = positions[0]
    if pos.stride(2) != 1:
        pos = pos.contiguous()
    out = torch.empty(b, t, d, dtype=qkv.dtype, device=qkv.device)
    tiles = tiles or tiles_for(b, attn.h, t)
    rows, keys = tiles.query_rows, tiles.key_block
    grid = (triton.cdiv(t, rows), b * attn.h)
    _relative_attention_kernel[grid](
        qkv, attn.pos_bias_u, attn.pos_bias_v, pos, valid if valid is not None else qkv, out,
        t, attn.h, d, pos.shape[1], pos.stride(0), pos.stride(1),
        1.0 / math.sqrt(attn.d_k), -INF_VAL,
        HAS_MASK=valid is not None, DK=attn.d_k, BDK=max(16, triton.next_power_of_2(attn.d_k)),
        BM=rows, BN=keys, BW=triton.next_power_of_2(rows + keys - 1),
        num_warps=tiles.warps, num_stages=tiles.stages,
    )  # fmt: skip
    return out
