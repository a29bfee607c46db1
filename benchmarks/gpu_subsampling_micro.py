"""The fused subsampling kernel (triton_subsampling.py) by tiling, against the eager passes.

Times ``relu_mask_depthwise`` on the first and second depthwise stages' shapes of the full-size
model (256 channels, 128 mel bins) at batch 1 (20 s) and batch 64 (30 s), for several tilings,
and the eager module's passes it replaces (bias, ReLU, mask, depthwise convolution, bias).

Run on the device: python3 benchmarks/gpu_subsampling_micro.py --out $OUT/gpu_subsampling_micro.json
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

from budgie import triton_subsampling  # noqa: E402
from budgie.encoder import time_mask  # noqa: E402
from budgie.triton_subsampling import relu_mask_depthwise  # noqa: E402

CHANNELS = 256
TILINGS = [(1, 1), (2, 1), (4, 1), (8, 1), (8, 2), (16, 2), (32, 4)]  # (frames, warps)


def timed(fn: Any, reps: int = 20) -> float:
    """Median milliseconds per call (CUDA events)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    depthwise = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, 2, 1, groups=CHANNELS).to(dev, dt)
    bias = torch.randn(CHANNELS, device=dev, dtype=dt) * 0.1
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "runs": [],
    }
    shapes = {  # (batch, frames, bins) of the depthwise input
        "b1_stage1": (1, 1000, 64),
        "b1_stage2": (1, 500, 32),
        "b64_stage1": (64, 1500, 64),
        "b64_stage2": (64, 750, 32),
    }
    for name, (batch, frames, bins) in shapes.items():
        y = torch.randn(batch, CHANNELS, frames, bins, device=dev, dtype=dt)
        lengths = torch.full((batch,), frames - 7, device=dev, dtype=torch.long)

        def eager(y: torch.Tensor = y, lengths: torch.Tensor = lengths) -> torch.Tensor:
            x = torch.relu(y + bias[:, None, None])
            x = x * time_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
            return depthwise(x)

        row: dict[str, Any] = {"shape": name, "eager_ms": timed(eager)}
        gbytes = y.numel() * y.element_size() / 1e9
        for frames_block, warps in TILINGS:
            triton_subsampling.TIME_BLOCK, triton_subsampling.NUM_WARPS = frames_block, warps
            ms = timed(lambda y=y, n=lengths: relu_mask_depthwise(y, n, bias, depthwise))
            row[f"fused_bt{frames_block}_w{warps}_ms"] = ms
        row["input_gb"] = gbytes
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
