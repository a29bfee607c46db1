"""The fused residual add + LayerNorm kernel (triton_encoder.add_layer_norm) by rows per
program and warps, on the full-size model's width (1024) at batch 1 (250 and 384 frames) and
batch 64 x 384, in CUDA graphs.

Run on the device: python3 benchmarks/gpu_layer_norm_micro.py --out $OUT/gpu_layer_norm_micro.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_micro import gpu_record, graph_timed  # noqa: E402

from budgie import triton_encoder  # noqa: E402
from budgie.triton_encoder import add_layer_norm  # noqa: E402

TILINGS = [(1, 1), (1, 2), (1, 4), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (16, 8)]
CASES = {"b1_t250": (1, 250), "b1_t384": (1, 384), "b64_t384": (64, 384)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    norm = torch.nn.LayerNorm(1024).to(dev)
    result = gpu_record()
    for name, (batch, frames) in CASES.items():
        x = torch.randn(batch, frames, 1024, device=dev)
        branch = torch.randn(batch, frames, 1024, device=dev, dtype=torch.bfloat16)

        def run(x: torch.Tensor = x, branch: torch.Tensor = branch) -> torch.Tensor:
            return add_layer_norm(x, branch, 0.5, norm, torch.bfloat16)[1]

        row: dict[str, Any] = {"case": name}
        with torch.inference_mode():
            for rows, warps in TILINGS:
                triton_encoder.ROWS_PER_PROGRAM, triton_encoder.LAYER_NORM_WARPS = rows, warps
                row[f"rows{rows}_w{warps}_ms"] = graph_timed(run)
        print(row, flush=True)
        result["runs"].append(row)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
