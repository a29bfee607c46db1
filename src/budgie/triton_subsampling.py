# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""The first stage of the dw_striding subsampling with its elementwise passes fused, for
16-bit encoders.

Why: the first convolution (1 -> C channels, 3x3, stride 2) writes a [B, C, T/2, F/2] tensor,
the largest of the whole encoder (3 GB in bf16 for 64 clips of 30 s), and the eager module then
reads and writes it again for its bias, ReLU and pad mask before the depthwise convolution
(3x3, stride 2) shrinks it by 4: ~25 % of the encoder's kernel time at batch 64 and ~0.4 ms of
3.3 at batch 1 on an H100 (benchmarks/results/gpu_profile_h100_2026-11-24_steady_b64.json).
Here cuDNN's convolution (without its bias) writes that tensor once and one kernel reads it
once: bias, ReLU, pad mask and the depthwise convolution with its bias. (Recomputing the first
convolution inside the kernel instead, never writing the tensor, ran 10x slower than eager:
gpu_profile_h100_2026-11-24_first_stage_recompute.json.)

Numbers follow the eager module's rounding points in the weights' 16-bit dtype (the bias added
to the rounded convolution, rounded again; the depthwise sum rounded, its bias added in the
dtype); the 9-term depthwise sum is float32 in another order than torch's kernel, so a value
can differ by one 16-bit step where the eager one sits on a rounding boundary. Used by
cuda_runner in bf16/fp16 CUDA graphs (``first_stage`` of ConvSubsampling.forward); float32
keeps the eager, NeMo-exact module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor, nn

from budgie.encoder import ConvSubsampling, subsampled_length, time_mask

TIME_BLOCK = 16  # output frames per program (x all output frequencies, one channel)


@triton.jit
def _relu_mask_depthwise_kernel(
    y_ptr, len_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr,
    C, T2, F2, T4, F4,
    BT: tl.constexpr, BF: tl.constexpr,
):  # fmt: skip
    """out[b, c, t4, f4] = b2 + sum over 3x3 of w2 * z, z = relu(y + b1) on the valid frames
    of y (the first convolution's output without its bias), 0 past them and outside: the
    depthwise convolution with stride 2 and padding 1."""
    c = tl.program_id(1)
    b = tl.program_id(2)
    t4 = tl.program_id(0) * BT + tl.arange(0, BT)
    f4 = tl.arange(0, BF)
    n = tl.load(len_ptr + b)
    n2 = (n - 1) // 2 + 1  # valid frames of y
    dt = out_ptr.dtype.element_ty
    plane = (b.to(tl.int64) * C + c) * T2 * F2
    b1 = tl.load(b1_ptr + c).to(tl.float32)
    acc = tl.zeros([BT, BF], dtype=tl.float32)
    for i in tl.static_range(3):
        t2 = 2 * t4 - 1 + i
        t_ok = (t2 >= 0) & (t2 < T2) & (t2 < n2)
        for j in tl.static_range(3):
            f2 = 2 * f4 - 1 + j
            ok = t_ok[:, None] & ((f2 >= 0) & (f2 < F2))[None, :]
            y = tl.load(y_ptr + plane + t2[:, None] * F2 + f2[None, :], mask=ok, other=0.0)
            z = tl.maximum((y.to(tl.float32) + b1).to(dt).to(tl.float32), 0.0)
            z = tl.where(ok, z, 0.0)  # masked frames are 0 after the bias too
            acc += tl.load(w2_ptr + c * 9 + i * 3 + j).to(tl.float32) * z
    out = acc.to(dt).to(tl.float32) + tl.load(b2_ptr + c).to(tl.float32)
    at = out_ptr + plane // (T2 * F2) * T4 * F4 + t4[:, None] * F4 + f4[None, :]
    tl.store(at, out.to(dt), mask=(t4 < T4)[:, None] & (f4 < F4)[None, :])


def first_stage(
    module: ConvSubsampling, features: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor]:
    """ConvSubsampling's first convolution, ReLU and depthwise convolution (with the pad masks
    before each): features [B, F, T] float32 -> [B, C, T/4, F/4] in the weights' dtype, and
    the lengths after both halvings. The first convolution is cuDNN's, without its bias; the
    kernel does the rest in one pass over its output."""
    conv1, depthwise = module.conv[0], module.conv[2]
    assert isinstance(conv1, nn.Conv2d) and isinstance(depthwise, nn.Conv2d)
    assert conv1.bias is not None and depthwise.bias is not None
    x = features.transpose(1, 2).unsqueeze(1).to(conv1.weight.dtype)  # [B, 1, T, F]
    x = x * time_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
    y = F.conv2d(x, conv1.weight, None, conv1.stride, conv1.padding).contiguous()
    batch, channels, t2, f2 = y.shape
    t4, f4 = (t2 - 1) // 2 + 1, (f2 - 1) // 2 + 1
    out = torch.empty(batch, channels, t4, f4, device=y.device, dtype=y.dtype)
    grid = (triton.cdiv(t4, TIME_BLOCK), channels, batch)
    _relu_mask_depthwise_kernel[grid](
        y, lengths, conv1.bias, depthwise.weight, depthwise.bias, out,
        channels, t2, f2, t4, f4,
        BT=TIME_BLOCK, BF=triton.next_power_of_2(f4), num_warps=4,
    )  # fmt: skip
    return out, subsampled_length(lengths, 2)
