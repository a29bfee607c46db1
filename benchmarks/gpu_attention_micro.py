"""The one-kernel relative-position attention (triton_attention.py) against the five kernels it
replaced (query terms, position GEMM, rel-shifted bias, cuDNN SDPA, head merge), on the
full-size model's attention (d_model 1024, 8 heads) at batch 1 and at batch 32/64, padded and
not, for a sweep of tilings; also the largest difference between the two outputs. Each time is
per call, timed inside a CUDA graph (gpu_micro.graph_timed: as in the encoder's graphs, no
launch costs).

Run on the device: python3 benchmarks/gpu_attention_micro.py --out $OUT/gpu_attention_micro.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from gpu_micro import gpu_record, graph_timed, one_layer_encoder  # noqa: E402

from budgie.encoder import ConformerEncoder, time_mask  # noqa: E402
from budgie.triton_attention import AttentionTiles, relative_attention  # noqa: E402
from budgie.triton_encoder import (  # noqa: E402
    merge_heads,
    position_bias_fused,
    qkv_weights,
    query_terms,
)

TILINGS = [
    AttentionTiles(rows, keys, warps, stages)
    for rows in (16, 32)
    for keys in (32, 64, 128)
    for warps in (4, 8)
    for stages in (2, 3, 4)
    if not (rows == 16 and warps == 8) and not (keys == 128 and stages == 4)
]
# (batch, frames, shortest input): the encoder's graphs always pass the padding mask, and
# frames are bucketed to multiples of 16 (384 = a 29.5 s clip).
CASES = {
    "b1_t250": (1, 250, 250),
    "b1_t384_masked": (1, 384, 369),
    "b32_t375_padded": (32, 375, 300),
    "b64_t384_masked": (64, 384, 240),
    "b64_t375": (64, 375, 375),
}


def measure(
    encoder: ConformerEncoder, attn: Any, batch: int, frames: int, shortest: int
) -> dict[str, Any]:
    """Times of the five kernels and of the one kernel per query block; their differences."""
    dev, d, heads = qkv_device(attn), 1024, 8
    gen = torch.Generator(device=dev).manual_seed(0)
    y = torch.randn(batch, frames, d, device=dev, dtype=torch.bfloat16, generator=gen)
    lengths = torch.linspace(shortest, frames, batch, device=dev).long()
    valid = None if shortest == frames else time_mask(lengths, frames)
    positions = encoder.layer_positions(frames, dev)[0]
    qkv = F.linear(y, *qkv_weights(attn))

    def five_kernels() -> torch.Tensor:
        k = qkv[..., d : 2 * d].view(batch, frames, heads, -1).transpose(1, 2)
        v = qkv[..., 2 * d :].view(batch, frames, heads, -1).transpose(1, 2)
        q_u, by_head = query_terms(attn, qkv[..., :d])
        bd = torch.matmul(by_head, positions[0].transpose(-2, -1))
        bias = position_bias_fused(bd, batch, 1.0 / math.sqrt(d // heads), valid)
        out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias)
        return merge_heads(out, valid)

    with torch.inference_mode():
        want = five_kernels()
        row: dict[str, Any] = {"five_kernels_ms": graph_timed(five_kernels), "tilings": []}
        for tiles in TILINGS:
            print(" ", tuple(tiles.__dict__.values()), end=" ", flush=True)  # a crash: the last
            try:
                got = relative_attention(attn, qkv, positions, valid, tiles)
                ms = graph_timed(lambda t=tiles: relative_attention(attn, qkv, positions, valid, t))
            except Exception as exc:  # e.g. out of shared memory: record and go on
                row["tilings"].append({"tiles": tiles.__dict__, "error": repr(exc)[:200]})
                continue
            diff = float((got.float() - want.float()).abs().max())
            print(round(ms, 4), flush=True)
            row["tilings"].append({"tiles": tiles.__dict__, "ms": ms, "max_diff": diff})
        row["default_ms"] = graph_timed(lambda: relative_attention(attn, qkv, positions, valid))
    row["typical_value"] = float(want.float().pow(2).mean().sqrt())
    timings = [r for r in row["tilings"] if "ms" in r]
    row["best"] = sorted(timings, key=lambda r: r["ms"])[:5]
    return row


def qkv_device(attn: Any) -> torch.device:
    return attn.linear_q.weight.device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    encoder = one_layer_encoder()
    attn = encoder.layers[0].self_attn
    with torch.no_grad():
        attn.pos_bias_u.uniform_(-0.5, 0.5)
        attn.pos_bias_v.uniform_(-0.5, 0.5)
    result = gpu_record()
    for name, (batch, frames, shortest) in CASES.items():
        row = {"case": name, **measure(encoder, attn, batch, frames, shortest)}
        print(
            name,
            "five kernels",
            round(row["five_kernels_ms"], 4),
            "default",
            round(row["default_ms"], 4),
            "best",
            row["best"][:3],
            flush=True,
        )
        result["runs"].append(row)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
