"""The fused subsampling kernel (triton_subsampling.py) by tiling, against the eager passes;
and the first convolution's kernel by tiling against the cast, mask and cuDNN convolution.

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
from budgie.triton_subsampling import first_conv, relu_mask_depthwise  # noqa: E402

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
    result["first_conv"] = first_conv_runs(dev, dt)
    args.out.write_text(json.dumps(result, indent=1))


FIRST_TILINGS = [(16, 4, 4), (32, 2, 4), (8, 8, 4), (16, 8, 8), (64, 1, 4), (4, 16, 4), (32, 4, 8)]


def first_conv_runs(dev: torch.device, dt: torch.dtype) -> list[dict[str, Any]]:
    """The first 3x3/2 convolution (1 -> 256 channels) of [B, 128, T] float32 features."""
    conv = torch.nn.Conv2d(1, CHANNELS, 3, 2, 1).to(dev, dt)
    runs = []
    for name, (batch, frames) in {"b1_20s": (1, 2000), "b64_30s": (64, 3000)}.items():
        features = torch.randn(batch, 128, frames, device=dev)
        lengths = torch.full((batch,), frames - 9, device=dev, dtype=torch.long)

        def cudnn(x: torch.Tensor = features, n: torch.Tensor = lengths) -> torch.Tensor:
            y = x.transpose(1, 2).unsqueeze(1).to(dt)
            y = y * time_mask(n, y.shape[2])[:, None, :, None].to(dt)
            return torch.nn.functional.conv2d(y, conv.weight, None, 2, 1)

        def kernel(x: torch.Tensor = features, n: torch.Tensor = lengths) -> torch.Tensor:
            return first_conv(x, n, conv.weight)

        want = cudnn()
        row: dict[str, Any] = {"shape": name, "cudnn_ms": timed(cudnn)}
        for channels, frames_block, warps in FIRST_TILINGS:
            triton_subsampling.FIRST_CHANNELS = channels
            triton_subsampling.FIRST_FRAMES = frames_block
            triton_subsampling.FIRST_WARPS = warps
            key = f"kernel_c{channels}_t{frames_block}_w{warps}"
            row[key + "_ms"] = timed(kernel)
            row[key + "_max_diff"] = float((kernel().float() - want.float()).abs().max())
        row["output_gb"] = want.numel() * want.element_size() / 1e9
        print(json.dumps(row), flush=True)
        runs.append(row)
    return runs


if __name__ == "__main__":
    main()
