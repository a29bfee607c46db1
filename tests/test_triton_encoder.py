"""The fused-kernel conformer layer (triton_encoder.py) against the eager layer in bf16.

Runs where Triton can run: on CUDA, or on the CPU with TRITON_INTERPRET=1 (set before Python
starts). Elsewhere (the project's CI has no Triton) the module is skipped. The kernels round
where the eager layer rounds, but accumulate in another order: float32 results are compared
with float32 tolerances, bf16 results allow one bf16 step on a small share of the values.
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

from budgie import triton_encoder  # noqa: E402
from budgie.encoder import (  # noqa: E402
    ConformerEncoder,
    ConformerLayer,
    RelPositionMultiHeadAttention,
    position_bias,
    time_mask,
)
from budgie.triton_encoder import (  # noqa: E402
    add_layer_norm,
    fused_attention,
    fused_layer,
    glu_depthwise_silu,
    merge_heads,
    position_bias_fused,
    qkv_weights,
    query_terms,
)
from conftest import SynthModels  # noqa: E402

DEVICE = torch.device("cpu" if INTERPRET else "cuda")
DTYPES = [torch.bfloat16, torch.float16]
# Triton's interpreter converts float32 to bf16 by truncation (the GPU rounds to nearest), so
# there most bf16 values may sit a step off; on the GPU only boundary cases may.
OFF_BY_A_STEP = 1.0 if INTERPRET else 0.01


@pytest.fixture(params=DTYPES, ids=["bf16", "fp16"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


def half_encoder(synth_models: SynthModels, dtype: torch.dtype) -> ConformerEncoder:
    encoder = copy.deepcopy(synth_models.model("tiny").network.encoder).to(DEVICE)
    encoder.fold_batch_norms()
    encoder.set_matmul_dtype(dtype)
    return encoder


def close_half(want: torch.Tensor, got: torch.Tensor, share: float = OFF_BY_A_STEP) -> None:
    """Equal but for at most ``share`` of the values, each within three bf16 steps of its size
    (or of the typical size, for values that are small by cancellation); bf16's step is the
    coarser of the two 16-bit types."""
    assert want.dtype == got.dtype and want.shape == got.shape
    diff = (want.float() - got.float()).abs()
    typical = want.float().pow(2).mean().sqrt()
    step = torch.maximum(want.float().abs(), typical) * 2**-7
    assert bool((diff <= 3 * step).all()), float((diff / step).max())
    assert float((diff > 0).float().mean()) <= share


def lengths_and_mask(lengths: list[int], t: int) -> torch.Tensor:
    return time_mask(torch.tensor(lengths, device=DEVICE), t)


@pytest.mark.parametrize("with_branch", [False, True])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_add_layer_norm(
    synth_models: SynthModels, dtype: torch.dtype, with_branch: bool, out_dtype: torch.dtype
) -> None:
    layer = half_encoder(synth_models, dtype).layers[0]
    assert isinstance(layer, ConformerLayer)
    norm = layer.norm_conv
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)  # not the identity LayerNorm
        norm.bias.uniform_(-0.2, 0.2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, norm.weight.shape[0], generator=gen).to(DEVICE)
    branch = torch.randn(x.shape, generator=gen).to(DEVICE, dtype) if with_branch else None
    with torch.no_grad():
        residual, y = add_layer_norm(x, branch, 0.5, norm, out_dtype)
        want_residual = x if branch is None else x + 0.5 * branch.float()
        want_y = F.layer_norm(want_residual, x.shape[-1:], norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(residual, want_residual, rtol=0, atol=0)
    if out_dtype == torch.float32:
        torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-5)
    else:
        close_half(want_y.to(out_dtype), y)


@pytest.mark.parametrize("window", [True, False], ids=["window", "taps"])
@pytest.mark.parametrize("lengths", [[13, 13], [13, 6, 1], [40, 23]])
def test_glu_depthwise_matches_the_eager_convolution(
    synth_models: SynthModels,
    dtype: torch.dtype,
    lengths: list[int],
    window: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both kernels (GLU once per window row with gathered taps; GLU per tap), over one and
    several time blocks."""
    monkeypatch.setattr(triton_encoder, "GLU_WINDOW", window)
    layer = half_encoder(synth_models, dtype).layers[0]
    assert isinstance(layer, ConformerLayer)
    conv = layer.conv
    d = conv.depthwise_conv.weight.shape[0]
    t = max(lengths)
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(len(lengths), t, 2 * d, generator=gen).to(DEVICE, dtype)
    valid = lengths_and_mask(lengths, t)
    dw = conv.depthwise_conv
    assert dw.bias is not None
    with torch.no_grad():
        y = F.glu(g, dim=-1).masked_fill(~valid[:, :, None], 0.0)
        eager = F.silu(dw(y.transpose(1, 2)).float()).to(dtype).transpose(1, 2)
        # The same rounding points with float32 arithmetic: what the kernel computes, up to
        # the order of a 9-term sum.
        pad = dw.padding[0]
        c = F.conv1d(y.transpose(1, 2).float(), dw.weight.float(), dw.bias.float(), 1, pad, 1, d)
        reference = F.silu(c.to(dtype).float()).to(dtype).transpose(1, 2)
        got = glu_depthwise_silu(conv, g, valid)
        unmasked = glu_depthwise_silu(conv, g, None)
    close_half(reference.contiguous(), got)
    # the eager module's rounding differs (measured on an H100: 25 % of the fp16 values a step
    # or more apart, within the bound): compared with a tolerance only
    close_half(eager.contiguous(), got, share=1.0)
    if min(lengths) == t:  # nothing padded: the mask changes nothing
        assert torch.equal(got, unmasked)
    else:
        assert not torch.equal(got, unmasked)


@pytest.mark.parametrize("lengths", [[11, 11], [11, 4]])
def test_fused_layer_matches_the_eager_layer(
    synth_models: SynthModels, dtype: torch.dtype, lengths: list[int]
) -> None:
    if INTERPRET and dtype == torch.bfloat16:
        pytest.skip("attention's tl.dot in bf16 is wrong in the interpreter (numpy has no bf16)")
    encoder = half_encoder(synth_models, dtype)
    layer = encoder.layers[1]
    assert isinstance(layer, ConformerLayer)
    t = max(lengths)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(len(lengths), t, encoder.cfg.d_model, generator=gen).to(DEVICE)
    valid = None if min(lengths) == t else lengths_and_mask(lengths, t)
    positions = encoder.layer_positions(t, DEVICE)[1]
    with torch.inference_mode():
        want = layer(x, positions, valid)
        got = fused_layer(layer, x, positions, valid)
    assert got.dtype == want.dtype == torch.float32
    rows = torch.ones(len(lengths), t, dtype=torch.bool) if valid is None else valid.cpu()
    # bf16 rounding points differ by a step at most here and there: LayerNorm output scale
    err = (want - got).abs()[rows.to(DEVICE)]
    assert float(err.max()) < 0.1 and float(err.mean()) < 2e-3, (
        float(err.max()),
        float(err.mean()),
    )


def attention(
    synth_models: SynthModels, dtype: torch.dtype
) -> tuple[ConformerEncoder, RelPositionMultiHeadAttention]:
    encoder = half_encoder(synth_models, dtype)
    attn = encoder.layers[0].self_attn
    assert isinstance(attn, RelPositionMultiHeadAttention)
    with torch.no_grad():  # non-zero biases, so that a wrong one shows
        attn.pos_bias_u.uniform_(-0.5, 0.5)
        attn.pos_bias_v.uniform_(-0.5, 0.5)
    return encoder, attn


@pytest.mark.parametrize("inside_qkv", [False, True], ids=["contiguous", "qkv-slice"])
def test_query_terms(synth_models: SynthModels, dtype: torch.dtype, inside_qkv: bool) -> None:
    """Also for q as the first third of each row of a fused QKV output (rows 3 D apart)."""
    _, attn = attention(synth_models, dtype)
    b, t, d = 2, 5, attn.h * attn.d_k
    gen = torch.Generator().manual_seed(3)
    wide = torch.randn(b, t, 3 * d if inside_qkv else d, generator=gen).to(DEVICE, dtype)
    q = wide[..., :d]
    q_u, by_head = query_terms(attn, q)
    heads = q.view(b, t, attn.h, attn.d_k)
    want_u = (heads.float() + attn.pos_bias_u).to(dtype).transpose(1, 2)
    want_v = (heads.float() + attn.pos_bias_v).to(dtype)
    want_v = want_v.permute(2, 0, 1, 3).reshape(attn.h, b * t, attn.d_k)
    close_half(want_u.contiguous(), q_u.contiguous())
    close_half(want_v, by_head)


@pytest.mark.parametrize("lengths", [[6, 6], [6, 2]])
def test_position_bias(lengths: list[int], dtype: torch.dtype) -> None:
    h, t = 3, max(lengths)
    gen = torch.Generator().manual_seed(4)
    bd = torch.randn(h, len(lengths) * t, 2 * t, generator=gen).to(DEVICE, dtype)
    valid = None if min(lengths) == t else lengths_and_mask(lengths, t)
    want = position_bias(bd.view(h, len(lengths), t, -1), 0.125, valid)
    got = position_bias_fused(bd, len(lengths), 0.125, valid)
    assert got.shape == want.shape == (len(lengths), h, t, t)
    close_half(want.contiguous(), got)  # x 0.125 is exact: equal but for the dtype rounding
    if valid is not None:
        assert bool((got[1, :, :, 2:] == want[1, :, :, 2:]).all())  # the fill value


@pytest.mark.parametrize("lengths", [[4, 4], [4, 1]])
def test_merge_heads(lengths: list[int], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    b, h, t, dk = len(lengths), 3, max(lengths), 8
    o = torch.randn(b, t, h, dk, generator=gen).to(DEVICE, dtype).transpose(1, 2)  # strided
    valid = None if min(lengths) == t else lengths_and_mask(lengths, t)
    want = o if valid is None else o.masked_fill(~valid[:, None, :, None], 0.0)
    want = want.transpose(1, 2).reshape(b, t, h * dk)
    assert torch.equal(merge_heads(o, valid), want)


@pytest.mark.skipif(INTERPRET, reason="the CPU module runs plain attention, not SDPA")
@pytest.mark.parametrize("lengths", [[9, 9], [9, 3], [9, 9, 9, 9, 9, 4]])  # 6 rows: 5 kernels
def test_fused_attention_equals_the_module(
    synth_models: SynthModels, dtype: torch.dtype, lengths: list[int]
) -> None:
    encoder, attn = attention(synth_models, dtype)
    t = max(lengths)
    gen = torch.Generator().manual_seed(6)
    y = torch.randn(len(lengths), t, encoder.cfg.d_model, generator=gen).to(DEVICE, dtype)
    valid = None if min(lengths) == t else lengths_and_mask(lengths, t)
    positions = encoder.layer_positions(t, DEVICE)[0]
    with torch.inference_mode():
        want = attn(y, positions, valid)
        got = fused_attention(attn, y, positions, valid)
    # q, k, v come from one GEMM of the concatenated weights: its sums may round differently
    # than three GEMMs'; the elementwise kernels after it are exact (tests above)
    close_half(want, got)


def test_qkv_weights_follow_the_modules(synth_models: SynthModels, dtype: torch.dtype) -> None:
    """The concatenated QKV weight is made once and made again after a weight changes."""
    _, attn = attention(synth_models, dtype)
    weight, bias = qkv_weights(attn)
    d = attn.h * attn.d_k
    assert torch.equal(weight[d : 2 * d], attn.linear_k.weight)
    if attn.linear_v.bias is None:
        assert bias is None
    else:
        assert bias is not None and torch.equal(bias[2 * d :], attn.linear_v.bias)
    assert qkv_weights(attn)[0] is weight
    with torch.no_grad():
        attn.linear_v.weight.mul_(2)
    again, _ = qkv_weights(attn)
    assert again is not weight and torch.equal(again[2 * d :], attn.linear_v.weight)
