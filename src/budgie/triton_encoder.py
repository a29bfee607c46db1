# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""A conformer layer in mixed precision with its elementwise chains fused into Triton kernels.

Why: in bf16 on an H100 the GEMMs of a layer are a minority of its kernels. Around them the
eager layer runs LayerNorm in float32, casts its output for the next GEMM, scales and adds the
residual, and in the convolution module runs GLU, the pad mask, two transposes, the depthwise
convolution, a cast, SiLU and another cast: ~30 memory-bound kernels per layer, which set the
time at batch 1 (launches) and cost a large share at batch 64 (memory traffic). Here they are:

- ``_add_layer_norm_kernel``: residual + scale * branch output, then LayerNorm, written in the
  next GEMM's dtype (5 per layer; the first without the add);
- ``_glu_depthwise_kernel``: GLU, pad mask, depthwise convolution (BatchNorm folded), SiLU, in
  time-major layout (no transposes).

The GEMMs and attention stay torch's (cuBLAS, SDPA). Numbers follow the eager layer's
rounding points (bf16 where it rounds to bf16, float32 elsewhere); accumulation order differs,
so a value can differ by one bf16 step where the eager result sits on a rounding boundary.
Used by cuda_runner for CUDA graphs in bf16/fp16 (``run_layer`` of ConformerEncoder.forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor, nn

from budgie.encoder import ConformerLayer, ConvolutionModule, FeedForward, LayerRunner

ROWS_PER_PROGRAM = 4  # LayerNorm rows per program
TIME_BLOCK = 16  # frames per program of the depthwise kernel
CHANNEL_BLOCK = 128  # channels per program of the depthwise kernel


@triton.jit
def _add_layer_norm_kernel(
    x_ptr, o_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
    N, D, scale, eps,
    HAS_ADD: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BD)
    m = (rows < N)[:, None] & (cols < D)[None, :]
    at = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + at, mask=m, other=0.0).to(tl.float32)
    if HAS_ADD:
        x = x + scale * tl.load(o_ptr + at, mask=m, other=0.0).to(tl.float32)
        tl.store(r_ptr + at, x, mask=m)
    mean = tl.sum(x, axis=1) / D
    centered = tl.where(m, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    y = centered * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(y_ptr + at, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _glu_depthwise_kernel(
    g_ptr, valid_ptr, w_ptr, b_ptr, out_ptr,
    T, D,
    K: tl.constexpr, HAS_MASK: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    # g [B, T, 2D] (GLU input, time-major) -> out [B, T, D] = SiLU(depthwise(GLU(g)) + bias).
    batch = tl.program_id(2)
    ts = tl.program_id(0) * BT + tl.arange(0, BT)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    c_ok = cs < D
    acc = tl.zeros([BT, BC], dtype=tl.float32)
    for k in tl.static_range(K):
        src = ts + (k - (K - 1) // 2)
        ok = (src >= 0) & (src < T)
        if HAS_MASK:
            ok = ok & (tl.load(valid_ptr + batch * T + src, mask=ok, other=0) != 0)
        m = ok[:, None] & c_ok[None, :]
        at = (batch * T + src).to(tl.int64)[:, None] * (2 * D) + cs[None, :]
        a = tl.load(g_ptr + at, mask=m, other=0.0).to(tl.float32)
        gate = tl.load(g_ptr + at + D, mask=m, other=0.0).to(tl.float32)
        glu = (a * tl.sigmoid(gate)).to(g_ptr.dtype.element_ty).to(tl.float32)
        acc += glu * tl.load(w_ptr + cs * K + k, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    acc += tl.load(b_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    conv = acc.to(out_ptr.dtype.element_ty).to(tl.float32)  # the convolution's output dtype
    out = (conv * tl.sigmoid(conv)).to(out_ptr.dtype.element_ty)
    at = (batch * T + ts).to(tl.int64)[:, None] * D + cs[None, :]
    tl.store(out_ptr + at, out, mask=(ts < T)[:, None] & c_ok[None, :])


def add_layer_norm(
    x: Tensor, branch: Tensor | None, scale: float, norm: nn.LayerNorm, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(x + scale * branch, LayerNorm of it in ``dtype``); without a branch, x is returned."""
    d = x.shape[-1]
    rows = x.numel() // d
    y = torch.empty(x.shape, dtype=dtype, device=x.device)
    residual = x if branch is None else torch.empty_like(x)
    grid = (triton.cdiv(rows, ROWS_PER_PROGRAM),)
    _add_layer_norm_kernel[grid](
        x, x if branch is None else branch, norm.weight, norm.bias, residual, y,
        rows, d, scale, norm.eps,
        HAS_ADD=branch is not None, BR=ROWS_PER_PROGRAM, BD=triton.next_power_of_2(d),
    )  # fmt: skip
    return residual, y


def glu_depthwise_silu(conv: ConvolutionModule, g: Tensor, valid: Tensor | None) -> Tensor:
    """g [B, T, 2D] after pointwise_conv1 -> SiLU(depthwise(GLU(g), padded frames zeroed))."""
    if not isinstance(conv.batch_norm, nn.Identity):
        raise ValueError("fold the BatchNorm into the depthwise convolution first")
    b, t, d2 = g.shape
    d = d2 // 2
    dw = conv.depthwise_conv
    k = dw.weight.shape[-1]
    bias = dw.bias if dw.bias is not None else torch.zeros(d, dtype=g.dtype, device=g.device)
    out = torch.empty(b, t, d, dtype=g.dtype, device=g.device)
    grid = (triton.cdiv(t, TIME_BLOCK), triton.cdiv(d, CHANNEL_BLOCK), b)
    _glu_depthwise_kernel[grid](
        g, valid if valid is not None else g, dw.weight, bias, out, t, d,
        K=k, HAS_MASK=valid is not None, BT=TIME_BLOCK, BC=CHANNEL_BLOCK,
    )  # fmt: skip
    return out


def _feed_forward(ff: FeedForward, y: Tensor) -> Tensor:
    out: Tensor = ff.linear2(F.silu(ff.linear1(y)))
    return out


def _convolution(conv: ConvolutionModule, y: Tensor, valid: Tensor | None) -> Tensor:
    w1 = conv.pointwise_conv1.weight.squeeze(-1)
    g = F.linear(y, w1, conv.pointwise_conv1.bias)
    h = glu_depthwise_silu(conv, g, valid)
    return F.linear(h, conv.pointwise_conv2.weight.squeeze(-1), conv.pointwise_conv2.bias)


def fused_layer(
    layer: ConformerLayer, x: Tensor, positions: Tensor, valid: Tensor | None
) -> Tensor:
    """ConformerLayer.forward with the fused kernels (x float32 [B, T, D], weights in a
    16-bit dtype, BatchNorm folded)."""
    dt = layer.feed_forward1.linear1.weight.dtype
    _, y = add_layer_norm(x, None, 1.0, layer.norm_feed_forward1, dt)
    x, y = add_layer_norm(x, _feed_forward(layer.feed_forward1, y), 0.5, layer.norm_self_att, dt)
    x, y = add_layer_norm(x, layer.self_attn(y, positions, valid), 1.0, layer.norm_conv, dt)
    x, y = add_layer_norm(x, _convolution(layer.conv, y, valid), 1.0, layer.norm_feed_forward2, dt)
    branch = _feed_forward(layer.feed_forward2, y)
    _, out = add_layer_norm(x, branch, 0.5, layer.norm_out, torch.float32)
    return out


def fused_layer_runner() -> LayerRunner:
    return fused_layer
