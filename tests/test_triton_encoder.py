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

from budgie.encoder import ConformerEncoder, ConformerLayer, time_mask  # noqa: E402
from budgie.triton_encoder import add_layer_norm, fused_layer, glu_depthwise_silu  # noqa: E402
from conftest import SynthModels  # noqa: E402

DEVICE = torch.device("cpu" if INTERPRET else "cuda")
DTYPE = torch.bfloat16
# Triton's interpreter converts float32 to bf16 by truncation (the GPU rounds to nearest), so
# there most bf16 values may sit a step off; on the GPU only boundary cases may.
OFF_BY_A_STEP = 1.0 if INTERPRET else 0.01


def bf16_encoder(synth_models: SynthModels) -> ConformerEncoder:
    encoder = copy.deepcopy(synth_models.model("tiny").network.encoder).to(DEVICE)
    encoder.fold_batch_norms()
    encoder.set_matmul_dtype(DTYPE)
    return encoder


def close_bf16(want: torch.Tensor, got: torch.Tensor, share: float = OFF_BY_A_STEP) -> None:
    """Equal but for at most ``share`` of the values, each within three bf16 steps of its size
    (or of the typical size, for values that are small by cancellation)."""
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
    synth_models: SynthModels, with_branch: bool, out_dtype: torch.dtype
) -> None:
    layer = bf16_encoder(synth_models).layers[0]
    assert isinstance(layer, ConformerLayer)
    norm = layer.norm_conv
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)  # not the identity LayerNorm
        norm.bias.uniform_(-0.2, 0.2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, norm.weight.shape[0], generator=gen).to(DEVICE)
    branch = torch.randn(x.shape, generator=gen).to(DEVICE, DTYPE) if with_branch else None
    with torch.no_grad():
        residual, y = add_layer_norm(x, branch, 0.5, norm, out_dtype)
        want_residual = x if branch is None else x + 0.5 * branch.float()
        want_y = F.layer_norm(want_residual, x.shape[-1:], norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(residual, want_residual, rtol=0, atol=0)
    if out_dtype == torch.float32:
        torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-5)
    else:
        close_bf16(want_y.to(out_dtype), y)


@pytest.mark.parametrize("lengths", [[13, 13], [13, 6, 1]])
def test_glu_depthwise_matches_the_eager_convolution(
    synth_models: SynthModels, lengths: list[int]
) -> None:
    layer = bf16_encoder(synth_models).layers[0]
    assert isinstance(layer, ConformerLayer)
    conv = layer.conv
    d = conv.depthwise_conv.weight.shape[0]
    t = max(lengths)
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(len(lengths), t, 2 * d, generator=gen).to(DEVICE, DTYPE)
    valid = lengths_and_mask(lengths, t)
    with torch.no_grad():
        y = F.glu(g, dim=-1).masked_fill(~valid[:, :, None], 0.0)
        want = F.silu(conv.depthwise_conv(y.transpose(1, 2)).float()).to(DTYPE).transpose(1, 2)
        got = glu_depthwise_silu(conv, g, valid)
        unmasked = glu_depthwise_silu(conv, g, None)
    close_bf16(want.contiguous(), got)
    if min(lengths) == t:  # nothing padded: the mask changes nothing
        assert torch.equal(got, unmasked)
    else:
        assert not torch.equal(got, unmasked)


@pytest.mark.parametrize("lengths", [[11, 11], [11, 4]])
def test_fused_layer_matches_the_eager_layer(synth_models: SynthModels, lengths: list[int]) -> None:
    encoder = bf16_encoder(synth_models)
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
