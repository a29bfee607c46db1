# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""The dw_striding subsampling's elementwise passes fused into its depthwise convolutions, for
16-bit encoders.

Why: the first convolution (1 -> C channels, 3x3, stride 2) writes a [B, C, T/2, F/2] tensor,
the largest of the whole encoder (3 GB in bf16 for 64 clips of 30 s), and the eager module then
reads and writes it again for its bias, ReLU and pad mask before the depthwise convolution
(3x3, stride 2) shrinks it by 4; the next halving repeats this after a 1x1 convolution. These
passes were ~25 % of the encoder's kernel time at batch 64 and ~0.4 ms of 3.3 at batch 1 on an
H100 (benchmarks/results/gpu_profile_h100_2026-11-24_steady_b64.json). Here each convolution
before a depthwise one is cuDNN's without its bias, and one kernel reads its output once: bias,
ReLU, pad mask, the depthwise convolution and its bias. (Recomputing the first convolution
inside the kernel instead, never writing the large tensor, ran 10x slower than eager:
gpu_profile_h100_2026-11-24_first_stage_recompute.json.)

Numbers follow the eager module's rounding points in the weights' 16-bit dtype (the bias added
to the rounded convolution, rounded again; the depthwise sum rounded, its bias added in the
dtype); the 9-term depthwise sum is float32 in another order than torch's kernel, so a value
can differ by one 16-bit step where the eager one sits on a rounding boundary. Used by
cuda_runner in bf16/fp16 CUDA graphs (``fused`` of ConvSubsampling.forward); float32 keeps
the eager, NeMo-exact module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor, nn

from budgie.encoder import ConvSubsampling, subsampled_length, time_mask

# Output frames per program (x all output frequencies, one channel) and warps: the fastest of
# 11 tilings on an H100 (benchmarks/results/gpu_subsampling_micro_h100_2026-11-24*.json; time
# grew with the frames per program from 4 on): at batch 64 x 30 s 2.35 ms for the first stage
# and 0.97 for the second vs 15.2 and 3.8 for the eager passes; at batch 1 x 20 s 0.06 + 0.06
# vs 0.18 + 0.13.
TIME_BLOCK = 4
NUM_WARPS = 1
# The first 3x3 convolution as a Triton kernel (reading the float32 features directly) instead
# of the layout change, rounding, pad mask and cuDNN's implicit-GEMM convolution; its tiling
# (channels and output frames per program, warps): the best of 7 on an H100, bit-identical to
# the cuDNN path: 2.13 vs 5.15 ms at batch 64 x 30 s, 0.09 vs 0.27 ms at batch 1 x 20 s
# (benchmarks/results/gpu_subsampling_micro_h100_2026-11-24_first_conv.json); in the encoder
# 4.5 vs 9.4 ms (+ the cast and mask passes) per 160 files (gpu_profile_..._first_conv.json).
FIRST_CONV = True
FIRST_CHANNELS, FIRST_FRAMES, FIRST_WARPS = 32, 2, 4


@triton.jit
def _first_conv_kernel(
    x_ptr, len_ptr, w_ptr, out_ptr,
    T, F, C, T2, F2,
    BC: tl.constexpr, BT: tl.constexpr, BF: tl.constexpr,
):  # fmt: skip
    """out[b, c, t2, f2] = sum over 3x3 of w[c, i, j] * x[b, 2 f2 - 1 + j, 2 t2 - 1 + i], no
    bias: the first convolution (1 -> C channels, stride 2, padding 1) of features x [B, F, T]
    (float32, rounded to the weights' dtype as the eager module's cast does; frames past the
    length zero, as its pad mask makes them). Each program loads its 9 input taps once and
    uses them for BC channels: the output is the encoder's largest tensor, so its writes set
    the pace."""
    b = tl.program_id(2)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    t2 = tl.program_id(0) * BT + tl.arange(0, BT)
    f2 = tl.arange(0, BF)
    n = tl.load(len_ptr + b)
    dt = out_ptr.dtype.element_ty
    c_ok = cs < C
    base = b.to(tl.int64) * F * T
    acc = tl.zeros([BC, BT, BF], dtype=tl.float32)
    for i in tl.static_range(3):
        t = 2 * t2 - 1 + i
        t_ok = (t >= 0) & (t < T) & (t < n)
        for j in tl.static_range(3):
            f = 2 * f2 - 1 + j
            ok = t_ok[:, None] & ((f >= 0) & (f < F))[None, :]
            x = tl.load(x_ptr + base + f[None, :] * T + t[:, None], mask=ok, other=0.0)
            x = x.to(dt).to(tl.float32)
            w = tl.load(w_ptr + cs * 9 + i * 3 + j, mask=c_ok, other=0.0).to(tl.float32)
            acc += w[:, None, None] * x[None, :, :]
    planes = (b.to(tl.int64) * C + cs) * T2 * F2
    at = out_ptr + planes[:, None, None] + (t2[:, None] * F2 + f2[None, :])[None, :, :]
    inside = ((t2 < T2)[:, None] & (f2 < F2)[None, :])[None, :, :]
    tl.store(at, acc.to(dt), mask=c_ok[:, None, None] & inside)


@triton.jit
def _relu_mask_depthwise_kernel(
    y_ptr, len_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr,
    C, T2, F2, T4, F4,
    BT: tl.constexpr, BF: tl.constexpr,
):  # fmt: skip
    """out[b, c, t4, f4] = b2 + sum over 3x3 of w2 * z, z = relu(y + b1) on the valid frames
    of y (a convolution's output without its bias b1), 0 past them and outside: the depthwise
    convolution with stride 2 and padding 1."""
    c = tl.program_id(1)
    b = tl.program_id(2)
    t4 = tl.program_id(0) * BT + tl.arange(0, BT)
    f4 = tl.arange(0, BF)
    n2 = tl.load(len_ptr + b)  # valid frames of y
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


def relu_mask_depthwise(y: Tensor, lengths: Tensor, bias: Tensor, depthwise: nn.Conv2d) -> Tensor:
    """depthwise(mask(relu(y + bias))) with the depthwise bias, for y [B, C, T, F] (16-bit) whose
    first ``lengths`` frames are valid; [B, C, T/2, F/2] out."""
    assert depthwise.bias is not None
    y = y.contiguous()
    batch, channels, t2, f2 = y.shape
    t4, f4 = (t2 - 1) // 2 + 1, (f2 - 1) // 2 + 1
    out = torch.empty(batch, channels, t4, f4, device=y.device, dtype=y.dtype)
    grid = (triton.cdiv(t4, TIME_BLOCK), channels, batch)
    _relu_mask_depthwise_kernel[grid](
        y, lengths, bias, depthwise.weight, depthwise.bias, out,
        channels, t2, f2, t4, f4,
        BT=TIME_BLOCK, BF=triton.next_power_of_2(f4), num_warps=NUM_WARPS,
    )  # fmt: skip
    return out


def first_conv(features: Tensor, lengths: Tensor, weight: Tensor) -> Tensor:
    """The first 3x3/2 convolution without its bias, of features [B, F, T] (float32) whose
    first ``lengths`` frames are valid: [B, C, T/2, F/2] in the weights' dtype."""
    features = features.float().contiguous()
    batch, freqs, frames = features.shape
    channels = weight.shape[0]
    t2, f2 = (frames - 1) // 2 + 1, (freqs - 1) // 2 + 1
    out = torch.empty(batch, channels, t2, f2, device=features.device, dtype=weight.dtype)
    grid = (triton.cdiv(t2, FIRST_FRAMES), triton.cdiv(channels, FIRST_CHANNELS), batch)
    _first_conv_kernel[grid](
        features, lengths, weight.contiguous(), out, frames, freqs, channels, t2, f2,
        BC=FIRST_CHANNELS, BT=FIRST_FRAMES, BF=triton.next_power_of_2(f2),
        num_warps=FIRST_WARPS,
    )  # fmt: skip
    return out


def fused_stages(
    module: ConvSubsampling, features: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor]:
    """ConvSubsampling's layers up to its last depthwise convolution (the pad masks before each
    strided one included): features [B, F, T] float32 -> [B, C, T', F'] in the weights' dtype,
    and the lengths after every halving. Each convolution before a depthwise one (the first
    3x3, then the 1x1 ones) is cuDNN's without its bias; the kernel does the rest in one pass
    over its output. Left to the module: the last 1x1 convolution and its ReLU."""
    convs = [m for m in module.conv if isinstance(m, nn.Conv2d)]  # conv, (dw, pw) per halving
    first = convs[0]
    if FIRST_CONV and first.kernel_size == (3, 3) and first.in_channels == 1:
        y = first_conv(features, lengths, first.weight)
    else:
        x = features.transpose(1, 2).unsqueeze(1).to(first.weight.dtype)  # [B, 1, T, F]
        x = x * time_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
        y = F.conv2d(x, first.weight, None, first.stride, first.padding)
    lengths = subsampled_length(lengths, 1)
    producer = first
    for k, depthwise in enumerate(convs[1::2]):
        assert producer.bias is not None
        y = relu_mask_depthwise(y, lengths, producer.bias, depthwise)
        lengths = subsampled_length(lengths, 1)
        if 2 * k + 3 < len(convs) - 1:  # the next 1x1 convolution feeds another depthwise one
            producer = convs[2 * k + 2]
            y = F.conv2d(y, producer.weight, None)
    return y, lengths
