"""The conformer convolution module's GLU + depthwise + SiLU kernel (triton_encoder.py): the
windowed kernel (GLU once per input row of a program's window, taps by tl.gather) by tiling
against the taps kernel (GLU recomputed for each of the 9 taps), on the full-size model's shape
(1024 channels, kernel 9) at batch 1 and 64, in CUDA graphs.

Run on the device: python3 benchmarks/gpu_glu_micro.py --out $OUT/gpu_glu_micro.json
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
from gpu_micro import gpu_record, graph_timed, one_layer_encoder  # noqa: E402

from budgie import triton_encoder  # noqa: E402
from budgie.encoder import time_mask  # noqa: E402
from budgie.triton_encoder import glu_depthwise_silu  # noqa: E402

# (time block, channel block, warps) of the windowed kernel
TILINGS = [(8, 64, 2), (8, 128, 4), (16, 64, 4), (16, 128, 4), (32, 64, 4), (32, 128, 8)]
CASES = {
    "b1_t250": (1, 250, 250),
    "b1_t384_masked": (1, 384, 369),
    "b64_t384_masked": (64, 384, 240),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    conv = one_layer_encoder().layers[0].conv
    result = gpu_record()
    for name, (batch, frames, shortest) in CASES.items():
        gen = torch.Generator(device=dev).manual_seed(0)
        g = torch.randn(batch, frames, 2048, device=dev, dtype=torch.bfloat16, generator=gen)
        lengths = torch.linspace(shortest, frames, batch, device=dev).long()
        valid = time_mask(lengths, frames)
        row: dict[str, Any] = {"case": name}

        def run(g: torch.Tensor = g, valid: torch.Tensor = valid) -> torch.Tensor:
            return glu_depthwise_silu(conv, g, valid)

        with torch.inference_mode():
            triton_encoder.GLU_WINDOW = False
            want = run()
            row["taps_ms"] = graph_timed(run)
            triton_encoder.GLU_WINDOW = True
            for bt, bc, warps in TILINGS:
                triton_encoder.WINDOW_TIME_BLOCK = bt
                triton_encoder.WINDOW_CHANNEL_BLOCK = bc
                triton_encoder.WINDOW_WARPS = warps
                got = run()
                diff = float((got.float() - want.float()).abs().max())
                ms = graph_timed(run)
                row[f"window_t{bt}_c{bc}_w{warps}_ms"] = ms
                row[f"window_t{bt}_c{bc}_w{warps}_max_diff"] = diff
        print(row, flush=True)
        result["runs"].append(row)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
