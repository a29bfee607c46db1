"""The fused linear + SiLU kernel (triton_linear.py) against F.linear and F.silu.

Runs where Triton can run: on CUDA, or on the CPU with TRITON_INTERPRET=1 (set before Python
starts); skipped elsewhere (the project's CI has no Triton). The kernel rounds where the eager
pair rounds but sums in another order, so values may sit a 16-bit step apart. Triton's
interpreter gets bf16 products wrong (numpy has no bf16): there only fp16 runs.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not (torch.cuda.is_available() or INTERPRET):
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from budgie.triton_linear import LinearTiles, linear_silu  # noqa: E402
from test_triton_encoder import close_half  # noqa: E402

DEVICE = torch.device("cpu" if INTERPRET else "cuda")
DTYPES = [torch.float16] if INTERPRET else [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    ("shape", "tiles"),
    [
        ((1, 37, 96), None),  # one partial row block, a partial reduction block
        ((2, 70, 128), LinearTiles(rows=32, columns=64, depth=32)),  # several blocks each way
    ],
)
def test_linear_silu_matches_the_eager_pair(
    dtype: torch.dtype, bias: bool, shape: tuple[int, int, int], tiles: LinearTiles | None
) -> None:
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(*shape, generator=gen).to(DEVICE, dtype)
    linear = torch.nn.Linear(shape[-1], 200, bias=bias).to(DEVICE, dtype)
    with torch.inference_mode():
        want = F.silu(linear(x))
        got = linear_silu(x, linear.weight, linear.bias, tiles)
    assert got.shape == want.shape == (*shape[:-1], 200)
    close_half(want, got)
