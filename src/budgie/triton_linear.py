# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""The feed-forward modules' first linear layer with its SiLU as one Triton GEMM, for the short
inputs of latency mode.

Why: at batch 1 the conformer's 48 feed-forward up-projections (M = frames <= ~400 rows, 1024
-> 4096) are cuBLAS GEMMs followed each by a SiLU kernel that reads and writes the [M, 4096]
result again: ~3 us of a ~13 us pair on an H100, latency rather than bandwidth. cuBLAS has no
SiLU epilogue, so here the product, its bias and SiLU run in one kernel (tensor cores, float32
sums). Rounding follows the eager pair: the biased product rounded to the 16-bit dtype (the
GEMM's output), SiLU computed in float32 from it and rounded again. Larger inputs keep cuBLAS,
whose kernels are hard to beat there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

# Up to this many rows (encoder frames x batch) the fused kernel is used.
MAX_ROWS = 512


@dataclass(frozen=True)
class LinearTiles:
    """Rows, columns and reduction block per program, warps, pipeline stages."""

    rows: int = 64
    columns: int = 128
    depth: int = 64
    warps: int = 4
    stages: int = 3


TILES = LinearTiles()


@triton.jit
def _linear_silu_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    M, N, K, stride_x,
    HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    # out [M, N] = SiLU(x [M, K] @ w [N, K]^T + b), the product's rounding as the GEMM's.
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    row_ok = rows < M
    col_ok = cols < N
    ks = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        k_ok = (k0 + ks) < K
        x = tl.load(
            x_ptr + rows[:, None].to(tl.int64) * stride_x + (k0 + ks)[None, :],
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        w_t = tl.load(
            w_ptr + cols[None, :].to(tl.int64) * K + (k0 + ks)[:, None],
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(x, w_t, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    dt = out_ptr.dtype.element_ty
    y = acc.to(dt).to(tl.float32)
    out = (y * tl.sigmoid(y)).to(dt)
    at = out_ptr + rows[:, None].to(tl.int64) * N + cols[None, :]
    tl.store(at, out, mask=row_ok[:, None] & col_ok[None, :])


def linear_silu(
    x: Tensor, weight: Tensor, bias: Tensor | None, tiles: LinearTiles | None = None
) -> Tensor:
    """SiLU(F.linear(x, weight, bias)) for 16-bit x [..., K] and weight [N, K]."""
    tiles = tiles or TILES
    k = x.shape[-1]
    rows = x.reshape(-1, k)
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    n = weight.shape[0]
    out = torch.empty(rows.shape[0], n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(rows.shape[0], tiles.rows), triton.cdiv(n, tiles.columns))
    _linear_silu_kernel[grid](
        rows, weight.contiguous(), bias if bias is not None else weight, out,
        rows.shape[0], n, k, rows.stride(0),
        HAS_BIAS=bias is not None, BM=tiles.rows, BN=tiles.columns, BK=tiles.depth,
        num_warps=tiles.warps, num_stages=tiles.stages,
    )  # fmt: skip
    return out.view(*x.shape[:-1], n)
