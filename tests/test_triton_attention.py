"""The one-kernel relative-position attention (triton_attention.py) against the eager steps.

Runs where Triton can run: on CUDA, or on the CPU with TRITON_INTERPRET=1 (set before Python
starts); skipped elsewhere (the project's CI has no Triton). The reference below is the eager
module's arithmetic step by step (its rounding points in the 16-bit dtype, softmax in float32);
the kernel sums in another order (flash attention normalizes at the end), so values may differ
by a 16-bit step. Triton's interpreter gets bf16 products wrong (numpy has no bf16): there only
fp16 runs.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

pytest.importorskip("triton")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not (torch.cuda.is_available() or INTERPRET):
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from budgie.encoder import (  # noqa: E402
    INF_VAL,
    ConformerEncoder,
    RelPositionMultiHeadAttention,
    rel_shift,
    relative_positions,
    time_mask,
)
from budgie.triton_attention import (  # noqa: E402
    LARGE_TILES,
    SMALL_TILES,
    AttentionTiles,
    relative_attention,
    tiles_for,
)
from budgie.triton_encoder import qkv_weights  # noqa: E402
from conftest import SynthModels  # noqa: E402

DEVICE = torch.device("cpu" if INTERPRET else "cuda")
DTYPES = [torch.float16] if INTERPRET else [torch.bfloat16, torch.float16]


@pytest.fixture(params=DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


def attention(
    synth_models: SynthModels, dtype: torch.dtype
) -> tuple[ConformerEncoder, RelPositionMultiHeadAttention]:
    encoder = copy.deepcopy(synth_models.model("tiny").network.encoder).to(DEVICE)
    encoder.set_matmul_dtype(dtype)
    attn = encoder.layers[0].self_attn
    assert isinstance(attn, RelPositionMultiHeadAttention)
    with torch.no_grad():  # non-zero biases, so that a wrong one shows
        attn.pos_bias_u.uniform_(-0.5, 0.5)
        attn.pos_bias_v.uniform_(-0.5, 0.5)
    return encoder, attn


def eager_attention(
    attn: RelPositionMultiHeadAttention,
    qkv: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor | None,
) -> torch.Tensor:
    """The module's attention from qkv, rounding where it rounds; merged heads [B, T, D]."""
    dt = qkv.dtype
    b, t, three_d = qkv.shape
    h, dk = attn.h, attn.d_k
    q, k, v = (part.view(b, t, h, dk).transpose(1, 2) for part in qkv.split(three_d // 3, -1))
    q_u = (q.float() + attn.pos_bias_u[:, None]).to(dt)
    q_v = (q.float() + attn.pos_bias_v[:, None]).to(dt)
    pos = positions[0, :, : 2 * t - 1]  # [H, 2T-1, dk]
    bd = (q_v.float() @ pos.float().transpose(-1, -2)[None]).to(dt)
    scale = 1.0 / math.sqrt(dk)
    bias = (rel_shift(bd).float() * scale).to(dt)
    if valid is not None:
        bias = bias.masked_fill(~valid[:, None, None, :], -INF_VAL)
    scores = q_u.float() @ k.float().transpose(-1, -2) * scale + bias.float()
    probs = torch.softmax(scores, dim=-1)
    out = probs @ v.float()
    if valid is not None:
        out = out.masked_fill(~valid[:, None, :, None], 0.0)
    return out.transpose(1, 2).reshape(b, t, h * dk).to(dt)


def close_half(want: torch.Tensor, got: torch.Tensor) -> None:
    """Each value within a few 16-bit steps of the typical size (flash attention normalizes
    the float32 sums at the end, the reference rounds no probabilities)."""
    assert want.dtype == got.dtype and want.shape == got.shape
    diff = (want.float() - got.float()).abs()
    typical = float(want.float().pow(2).mean().sqrt())
    assert float(diff.max()) <= 8 * typical * 2**-7, (float(diff.max()), typical)
    assert float(diff.mean()) <= typical * 2**-7, (float(diff.mean()), typical)


@pytest.mark.parametrize(
    ("lengths", "tiles"),
    [
        ([9, 9], None),  # one block of everything, no mask
        ([9, 3], None),  # padded keys and queries
        ([70, 41], SMALL_TILES),
        ([70, 41], AttentionTiles(64, 32)),  # 2 query blocks, 3 key blocks
        ([70, 41], AttentionTiles(32, 16)),
        ([70, 70], AttentionTiles(16, 64)),
    ],
)
@pytest.mark.parametrize("table", [True, False], ids=["table-slice", "direct"])
def test_relative_attention_matches_the_eager_steps(
    synth_models: SynthModels,
    dtype: torch.dtype,
    lengths: list[int],
    tiles: AttentionTiles | None,
    table: bool,
) -> None:
    encoder, attn = attention(synth_models, dtype)
    t = max(lengths)
    gen = torch.Generator().manual_seed(7)
    y = torch.randn(len(lengths), t, encoder.cfg.d_model, generator=gen).to(DEVICE, dtype)
    valid = None if min(lengths) == t else time_mask(torch.tensor(lengths, device=DEVICE), t)
    if table:  # the encoder's cached table: a strided slice of 2T rows
        positions = encoder.layer_positions(t, DEVICE)[0]
    else:  # exactly 2T-1 rows
        pos_emb = relative_positions(t, encoder.cfg.d_model, DEVICE)
        positions = attn.project_positions(pos_emb)
    with torch.inference_mode():
        qkv = torch.nn.functional.linear(y, *qkv_weights(attn))
        want = eager_attention(attn, qkv, positions, valid)
        got = relative_attention(attn, qkv, positions, valid, tiles)
    close_half(want, got)
    if valid is not None:  # padded query rows are exactly zero
        assert bool((got[1, lengths[1] :] == 0).all())
        assert bool((got[1, : lengths[1]] != 0).any())


def test_relative_attention_ignores_padded_keys(
    synth_models: SynthModels, dtype: torch.dtype
) -> None:
    """A row's valid outputs do not depend on what its padded frames hold."""
    encoder, attn = attention(synth_models, dtype)
    t, n = 40, 23
    gen = torch.Generator().manual_seed(8)
    y = torch.randn(1, t, encoder.cfg.d_model, generator=gen).to(DEVICE, dtype)
    noisy = y.clone()
    noisy[:, n:] = 100.0
    valid = time_mask(torch.tensor([n], device=DEVICE), t)
    positions = encoder.layer_positions(t, DEVICE)[0]
    with torch.inference_mode():
        outs = [
            relative_attention(
                attn, torch.nn.functional.linear(x, *qkv_weights(attn)), positions, valid
            )
            for x in (y, noisy)
        ]
    assert torch.equal(outs[0], outs[1])


def test_tiles_follow_the_shape() -> None:
    # batch 1, 8 heads, 250 frames: 64 programs of 32 queries, too few for 132 SMs
    assert tiles_for(1, 8, 250) == SMALL_TILES
    assert tiles_for(64, 8, 375) == tiles_for(2, 8, 1000) == LARGE_TILES
