"""The fused subsampling kernels (triton_subsampling.py) against the eager module in 16 bits.

Runs where Triton can run: on CUDA, or on the CPU with TRITON_INTERPRET=1 (set before Python
starts); skipped elsewhere (the project's CI has no Triton). The kernel rounds where the eager
module rounds but sums in another order, so 16-bit results are compared as in
test_triton_encoder: one 16-bit step apart on few values (the interpreter truncates where the
GPU rounds: there on many).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not (torch.cuda.is_available() or INTERPRET):
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from budgie import triton_subsampling  # noqa: E402
from budgie.encoder import ConformerEncoder, ConvSubsampling, time_mask  # noqa: E402
from budgie.triton_subsampling import first_conv, fused_stages, relu_mask_depthwise  # noqa: E402
from conftest import SynthModels  # noqa: E402
from test_triton_encoder import OFF_BY_A_STEP  # noqa: E402

DEVICE = torch.device("cpu" if INTERPRET else "cuda")
# One fused stage: within 3 16-bit steps (the interpreter truncates where the GPU rounds, at
# several rounding points in a row: more there). Two chained stages: a step in the first
# stage's output moves the second one's 256-term 1x1 sum, so more steps on more values.
STEPS = 8 if INTERPRET else 3
CHAINED_STEPS = 8


def close_half(
    want: torch.Tensor, got: torch.Tensor, share: float = OFF_BY_A_STEP, steps: float = STEPS
) -> None:
    """As test_triton_encoder.close_half, with ``steps`` 16-bit steps allowed."""
    assert want.dtype == got.dtype and want.shape == got.shape
    diff = (want.float() - got.float()).abs()
    typical = want.float().pow(2).mean().sqrt()
    step = torch.maximum(want.float().abs(), typical) * 2**-7
    assert bool((diff <= steps * step).all()), float((diff / step).max())
    assert float((diff > 0).float().mean()) <= share


LENGTHS = [[37, 37], [37, 20, 1]]  # odd frame counts: the last output sees the zero padding


@pytest.fixture(params=[torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def encoder(request: pytest.FixtureRequest, synth_models: SynthModels) -> ConformerEncoder:
    encoder = copy.deepcopy(synth_models.model("tiny").network.encoder).to(DEVICE)
    encoder.set_matmul_dtype(request.param)
    sub = encoder.pre_encode
    with torch.no_grad():  # biases large enough that ReLU cuts and masks matter
        for conv in sub.conv:
            if not isinstance(conv, torch.nn.Conv2d):
                continue
            assert isinstance(conv, torch.nn.Conv2d) and conv.bias is not None
            conv.bias.uniform_(-0.5, 0.5)
    return encoder


def features_for(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), 128, max(lengths), generator=gen)
    return features.to(DEVICE), torch.tensor(lengths, device=DEVICE)


def reference(
    sub: ConvSubsampling, features: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eager module's rounding points with float32 sums, up to its last depthwise
    convolution (what the kernels compute, up to the order of the 9-term sums)."""
    convs = [m for m in sub.conv if isinstance(m, torch.nn.Conv2d)]
    dt = convs[0].weight.dtype
    x = features.transpose(1, 2).unsqueeze(1).to(dt).float()
    for conv in convs[:-1]:
        assert conv.bias is not None
        bias = conv.bias.float()[:, None, None]
        if conv.kernel_size != (1, 1):  # the pad mask before each time-mixing convolution
            x = x * time_mask(lengths, x.shape[2])[:, None, :, None]
            lengths = (lengths - 1) // 2 + 1
        groups = conv.in_channels if conv.groups > 1 else 1
        x = F.conv2d(x, conv.weight.float(), None, conv.stride, conv.padding, 1, groups)
        x = (x.to(dt).float() + bias).to(dt).float()
        if conv.groups == 1:  # ReLU after the first convolution and each 1x1 (not depthwise)
            x = x.clamp(min=0)
    return x.to(dt), lengths


def eager(sub: ConvSubsampling, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The module's own layers up to the last depthwise convolution, masked as in forward."""
    dt = sub.out.weight.dtype
    x = features.transpose(1, 2).unsqueeze(1).to(dt)
    for layer in list(sub.conv)[:-2]:
        if isinstance(layer, torch.nn.Conv2d) and layer.kernel_size != (1, 1):
            x = x * time_mask(lengths, x.shape[2])[:, None, :, None].to(dt)
            lengths = (lengths - 1) // 2 + 1
        x = layer(x)
    return x


@pytest.mark.parametrize("lengths", LENGTHS)
def test_fused_stages_match_the_eager_layers(encoder: ConformerEncoder, lengths: list[int]) -> None:
    sub = encoder.pre_encode
    assert sub.num_halvings == 3  # two fused depthwise stages
    features, lens = features_for(lengths)
    with torch.no_grad():
        got, got_lengths = fused_stages(sub, features, lens)
        want, want_lengths = reference(sub, features, lens)
        module = eager(sub, features, lens)
    assert got.dtype == sub.out.weight.dtype and got.shape == want.shape == module.shape
    assert torch.equal(got_lengths, want_lengths)
    assert got_lengths.tolist() == [-(-n // 8) for n in lengths]
    close_half(want.contiguous(), got, share=1.0, steps=CHAINED_STEPS)
    close_half(module.contiguous(), got, share=1.0, steps=CHAINED_STEPS)


@pytest.mark.parametrize("lengths", LENGTHS)
def test_one_fused_stage_matches_the_rounding_points(
    encoder: ConformerEncoder, lengths: list[int]
) -> None:
    """relu_mask_depthwise on a given convolution output: only the order of the 9-term sum
    differs from the float32 reference, so few values are a step off."""
    sub = encoder.pre_encode
    conv1, depthwise = sub.conv[0], sub.conv[2]
    assert isinstance(conv1, torch.nn.Conv2d) and isinstance(depthwise, torch.nn.Conv2d)
    assert conv1.bias is not None and depthwise.bias is not None
    dt = conv1.weight.dtype
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(len(lengths), conv1.out_channels, max(lengths), 64, generator=gen)
    y = y.to(DEVICE, dt)
    lens = torch.tensor(lengths, device=DEVICE)
    with torch.no_grad():
        got = relu_mask_depthwise(y, lens, conv1.bias, depthwise)
        z = (y.float() + conv1.bias.float()[:, None, None]).to(dt).float().clamp(min=0)
        z = z * time_mask(lens, z.shape[2])[:, None, :, None]
        w = depthwise.weight.float()
        want = F.conv2d(z, w, None, 2, 1, 1, depthwise.in_channels).to(dt).float()
        want = (want + depthwise.bias.float()[:, None, None]).to(dt)
    close_half(want, got)


def test_padding_and_masked_frames_do_not_leak(encoder: ConformerEncoder) -> None:
    """Frames past an input's length (set to anything) change none of its outputs."""
    sub = encoder.pre_encode
    features, lens = features_for([37, 20])
    noisy = features.clone()
    noisy[1, :, 20:] = 100.0
    with torch.no_grad():
        clean, _ = fused_stages(sub, features, lens)
        got, _ = fused_stages(sub, noisy, lens)
    assert torch.equal(clean, got)
    assert got.shape[2] == 5 and got[1, :, 3:].abs().sum() > 0  # the depthwise bias is there


@pytest.mark.parametrize("lengths", LENGTHS)
def test_encoder_with_the_fused_first_stage(encoder: ConformerEncoder, lengths: list[int]) -> None:
    """The whole encoder with and without the fused stage: the same lengths, outputs within
    16-bit noise (a step in the first stage moves the rest a little)."""
    features, lens = features_for(lengths, seed=1)
    with torch.no_grad():
        want, want_lengths = encoder(features, lens, True)
        got, got_lengths = encoder(features, lens, True, None, fused_stages)
    assert torch.equal(got_lengths, want_lengths)
    valid = time_mask(want_lengths, want.shape[1])
    err = (got - want).abs()[valid].max()
    assert float(err) <= 0.05 * float(want[valid].abs().max()), float(err)
    assert not torch.equal(got, want) or INTERPRET  # the fused path really ran (GPU rounding)


@pytest.mark.parametrize("lengths", [*LENGTHS, [70, 9]])
def test_first_conv_matches_the_masked_convolution(
    encoder: ConformerEncoder, lengths: list[int]
) -> None:
    """The first convolution from the float32 features: the eager cast, pad mask and
    convolution (float32 sums, one rounding), over several blocks of channels and frames."""
    first = encoder.pre_encode.conv[0]
    assert isinstance(first, torch.nn.Conv2d)
    features, lens = features_for(lengths, seed=3)
    dt = first.weight.dtype
    x = features.transpose(1, 2).unsqueeze(1).to(dt).float()
    x = x * time_mask(lens, x.shape[2])[:, None, :, None]
    want = F.conv2d(x, first.weight.float(), None, 2, 1).to(dt)
    with torch.inference_mode():
        got = first_conv(features, lens, first.weight)
    close_half(want, got)
    noisy = features.clone()
    noisy[1, :, lengths[1] :] = 1e3  # what lies past a length never reaches the output
    with torch.inference_mode():
        assert torch.equal(first_conv(noisy, lens, first.weight), got)


def test_fused_stages_with_either_first_convolution(
    encoder: ConformerEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cuDNN's first convolution and the kernel give the fused stages the same input."""
    features, lens = features_for([37, 20, 1], seed=4)
    with torch.inference_mode():
        got, got_lengths = fused_stages(encoder.pre_encode, features, lens)
        monkeypatch.setattr(triton_subsampling, "FIRST_CONV", False)
        want, want_lengths = fused_stages(encoder.pre_encode, features, lens)
    assert torch.equal(got_lengths, want_lengths)
    close_half(want, got, share=1.0, steps=CHAINED_STEPS)
