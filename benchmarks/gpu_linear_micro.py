"""The feed-forward up-projection with SiLU (triton_linear.linear_silu) by tiling against cuBLAS
plus a SiLU kernel, on the full-size model's shape (1024 -> 4096, bf16) at the row counts of
batch-1 inputs (5-30 s), in CUDA graphs.

Run on the device: python3 benchmarks/gpu_linear_micro.py --out $OUT/gpu_linear_micro.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from gpu_attention_micro import timed  # noqa: E402

from budgie.triton_linear import LinearTiles, linear_silu  # noqa: E402

TILINGS = [
    LinearTiles(64, 128, 64, 4, 3),
    LinearTiles(64, 128, 64, 4, 4),
    LinearTiles(64, 64, 64, 4, 4),
    LinearTiles(32, 128, 64, 4, 4),
    LinearTiles(64, 256, 64, 8, 3),
    LinearTiles(128, 128, 64, 8, 3),
    LinearTiles(64, 128, 128, 4, 3),
    LinearTiles(32, 64, 128, 4, 3),
    LinearTiles(128, 64, 64, 4, 3),
    LinearTiles(64, 64, 128, 4, 3),
]
ROWS = [64, 250, 384]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    linear = torch.nn.Linear(1024, 4096).to(dev, torch.bfloat16)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "runs": [],
    }
    for rows in ROWS:
        x = torch.randn(1, rows, 1024, device=dev, dtype=torch.bfloat16)

        def cublas(x: torch.Tensor = x) -> torch.Tensor:
            return F.silu(linear(x))

        row: dict[str, Any] = {"rows": rows, "tilings": []}
        with torch.inference_mode():
            want = cublas()
            row["cublas_silu_ms"] = timed(cublas)
            for tiles in TILINGS:
                got = linear_silu(x, linear.weight, linear.bias, tiles)
                ms = timed(lambda t=tiles, x=x: linear_silu(x, linear.weight, linear.bias, t))
                diff = float((got.float() - want.float()).abs().max())
                row["tilings"].append({"tiles": tiles.__dict__, "ms": ms, "max_diff": diff})
        row["best"] = sorted(row["tilings"], key=lambda r: r["ms"])[:3]
        print(rows, "cublas+silu", round(row["cublas_silu_ms"] * 1000, 1), "us; best",
              [(tuple(r["tiles"].values()), round(r["ms"] * 1000, 1)) for r in row["best"]],
              flush=True)  # fmt: skip
        result["runs"].append(row)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
