# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""The first stage of the dw_striding subsampling in one Triton kernel, for 16-bit encoders.

Why: the first convolution (1 -> C channels, 3x3, stride 2) writes a [B, C, T/2, F/2] tensor,
the largest of the whole encoder (3 GB in bf16 for 64 clips of 30 s), and the eager module then
reads and writes it again for its bias, ReLU and pad mask before the depthwise convolution
(3x3, stride 2) shrinks it by 4. Those passes were ~25 % of the encoder's kernel time at batch
64 and ~0.4 ms of 3.3 at batch 1 on an H100 (benchmarks/results/
gpu_profile_h100_2026-11-24_steady_b64.json). Here each program computes the first
convolution's outputs on the fly for a tile of the depthwise convolution's outputs (each is
needed by ~2.25 of them: recomputing is cheaper than the memory traffic) and writes only the
[B, C, T/4, F/4] result.

Numbers follow the eager module's rounding points in the weights' 16-bit dtype: the features
rounded to it, the first convolution's sum rounded and its bias added in it, then ReLU and the
pad mask; the depthwise sum rounded and its bias added in it. Sums are float32 in another order
than cuDNN's, so a value can differ by one 16-bit step where the eager one sits on a rounding
boundary. Used by cuda_runner in bf16/fp16 CUDA graphs (``first_stage`` of
ConvSubsampling.forward); float32 keeps the eager, NeMo-exact module.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from budgie.encoder import ConvSubsampling, subsampled_length

CHANNEL_BLOCK = 32  # channels per program
TIME_BLOCK = 4  # output frames per program (x all output frequencies)


@triton.jit
def _first_stage_kernel(
    x_ptr, len_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr,
    C, F, T, T2, F2, T4, F4,
    BC: tl.constexpr, BT: tl.constexpr, BF: tl.constexpr,
):  # fmt: skip
    """out[b, c, t4, f4] = b2 + sum over 3x3 of w2 * mask(relu(b1 + sum over 3x3 of w1 * x)),
    x = features[b, f, t] (zero past the input's length and outside), both convolutions with
    stride 2 and padding 1."""
    b = tl.program_id(2)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    c_ok = cs < C
    p = tl.arange(0, BT * BF)
    t4 = tl.program_id(0) * BT + p // BF
    f4 = p % BF
    n = tl.load(len_ptr + b)  # valid input frames
    n2 = (n - 1) // 2 + 1  # valid frames after the first convolution
    dt = out_ptr.dtype.element_ty
    x_row = x_ptr + b.to(tl.int64) * F * T
    b1 = tl.load(b1_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)
    acc = tl.zeros([BC, BT * BF], dtype=tl.float32)
    for i2 in tl.static_range(3):
        for j2 in tl.static_range(3):
            t2 = 2 * t4 - 1 + i2
            f2 = 2 * f4 - 1 + j2
            y_ok = (t2 >= 0) & (t2 < T2) & (t2 < n2) & (f2 >= 0) & (f2 < F2)
            y = tl.zeros([BC, BT * BF], dtype=tl.float32)
            for i1 in tl.static_range(3):
                for j1 in tl.static_range(3):
                    t = 2 * t2 - 1 + i1
                    f = 2 * f2 - 1 + j1
                    x_ok = (t >= 0) & (t < T) & (t < n) & (f >= 0) & (f < F)
                    xv = tl.load(x_row + f * T + t, mask=x_ok, other=0.0)
                    xv = xv.to(dt).to(tl.float32)  # the eager module casts the features
                    w = tl.load(w1_ptr + cs * 9 + i1 * 3 + j1, mask=c_ok, other=0.0)
                    y += w.to(tl.float32)[:, None] * xv[None, :]
            y = y.to(dt).to(tl.float32) + b1[:, None]
            y = tl.maximum(y.to(dt).to(tl.float32), 0.0)
            y = tl.where(y_ok[None, :], y, 0.0)
            w = tl.load(w2_ptr + cs * 9 + i2 * 3 + j2, mask=c_ok, other=0.0)
            acc += w.to(tl.float32)[:, None] * y
    b2 = tl.load(b2_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)
    out = acc.to(dt).to(tl.float32) + b2[:, None]
    at = out_ptr + ((b.to(tl.int64) * C + cs[:, None]) * T4 + t4[None, :]) * F4 + f4[None, :]
    tl.store(at, out.to(dt), mask=c_ok[:, None] & ((t4 < T4) & (f4 < F4))[None, :])


def first_stage(
    module: ConvSubsampling, features: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor]:
    """ConvSubsampling's first convolution, ReLU and depthwise convolution (with the pad masks
    before each): features [B, F, T] float32 -> [B, C, T/4, F/4] in the weights' dtype, and
    the lengths after both halvings."""
    conv1, depthwise = module.conv[0], module.conv[2]
    assert isinstance(conv1, nn.Conv2d) and isinstance(depthwise, nn.Conv2d)
    assert conv1.bias is not None and depthwise.bias is not None
    batch, freq, frames = features.shape
    channels = conv1.out_channels
    t2, f2 = (frames - 1) // 2 + 1, (freq - 1) // 2 + 1
    t4, f4 = (t2 - 1) // 2 + 1, (f2 - 1) // 2 + 1
    x = features.float().contiguous()
    out = torch.empty(batch, channels, t4, f4, device=x.device, dtype=conv1.weight.dtype)
    block_f = triton.next_power_of_2(f4)
    grid = (triton.cdiv(t4, TIME_BLOCK), triton.cdiv(channels, CHANNEL_BLOCK), batch)
    _first_stage_kernel[grid](
        x, lengths, conv1.weight, conv1.bias, depthwise.weight, depthwise.bias, out,
        channels, freq, frames, t2, f2, t4, f4,
        BC=CHANNEL_BLOCK, BT=TIME_BLOCK, BF=block_f, num_warps=4,
    )  # fmt: skip
    return out, subsampled_length(lengths, 2)
