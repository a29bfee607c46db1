"""The encoder's GEMMs (bf16, with bias) at the row counts of batch-1 buckets and of a batch of
64, through cuBLAS and through cuBLASLt (``torch.backends.cuda.preferred_blas_library``), with
the weight as stored ([out, in], what nn.Linear holds) and transposed ([in, out]). Each time is
per call inside a CUDA graph (gpu_micro.graph_timed), next to the call's weight-read and
arithmetic floors on an H100 (3.35 TB/s, 990 dense bf16 TFLOPS). Also split-K through cuBLAS'
batched GEMM (the K dimension cut into 2-8 slices, float32 partial products; what a consumer
kernel that sums them would need), since at batch 1 the GEMMs have too few output tiles to fill
the GPU.

Why: at batch 1 the GEMMs are about half of the encoder's kernel time and run at ~2x their
floors (benchmarks/results/gpu_profile_h100_2026-11-24_session6_end.json); which library and
layout the captured graphs use is a free choice if one of them is faster.

Run on the device: python3 benchmarks/gpu_gemm_micro.py --out $OUT/gpu_gemm_micro.json
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
import torch.nn.functional as F  # noqa: E402
from gpu_micro import gpu_record, graph_timed  # noqa: E402

# (in, out) of a conformer layer's linears: feed-forward up and down, q/k/v, attention out
# and the convolution's second pointwise, the convolution's first pointwise (GLU input).
LINEARS = [(1024, 4096), (4096, 1024), (1024, 3072), (1024, 1024), (1024, 2048)]
ROWS = [128, 256, 384, 64 * 256]
SPLITS = (2, 4, 8)
BANDWIDTH = 3.35e12
TENSOR_FLOPS = 990e12


def floors_us(rows: int, fan_in: int, fan_out: int) -> dict[str, float]:
    weight_bytes = 2 * fan_in * fan_out
    io_bytes = 2 * rows * (fan_in + fan_out)
    return {
        "bytes_floor_us": (weight_bytes + io_bytes) / BANDWIDTH * 1e6,
        "flops_floor_us": 2 * rows * fan_in * fan_out / TENSOR_FLOPS * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    result = gpu_record()
    libraries = ["cublas", "cublaslt"]
    for fan_in, fan_out in LINEARS:
        weight = torch.randn(fan_out, fan_in, device=dev, generator=gen).bfloat16() * 0.03
        weight_t = weight.t().contiguous()
        bias = torch.randn(fan_out, device=dev, generator=gen).bfloat16()
        for rows in ROWS:
            x = torch.randn(rows, fan_in, device=dev, generator=gen).bfloat16()
            row: dict[str, Any] = {"rows": rows, "in": fan_in, "out": fan_out}
            row.update(floors_us(rows, fan_in, fan_out))
            want = F.linear(x, weight, bias).float()
            for library in libraries:
                torch.backends.cuda.preferred_blas_library(library)
                variants = {
                    "linear": lambda x=x, w=weight, b=bias: F.linear(x, w, b),
                    "addmm_t": lambda x=x, w=weight_t, b=bias: torch.addmm(b, x, w),
                }
                for name, fn in variants.items():
                    got = fn().float()
                    row[f"{library}_{name}_us"] = graph_timed(fn) * 1000
                    row[f"{library}_{name}_max_diff"] = float((got - want).abs().max())
            torch.backends.cuda.preferred_blas_library("cublas")
            for splits in SPLITS:  # split-K: float32 partial products, summed by the consumer
                a = x.view(rows, splits, fan_in // splits).transpose(0, 1)
                b = weight.view(fan_out, splits, fan_in // splits).permute(1, 2, 0)

                def split_k(a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
                    return torch.bmm(a, b, out_dtype=torch.float32)

                got = split_k().sum(0) + bias.float()
                row[f"split{splits}_bmm_us"] = graph_timed(split_k) * 1000
                row[f"split{splits}_max_diff"] = float((got - want).abs().max())
            print(
                f"{rows:6d} x {fan_in}->{fan_out}: "
                + " ".join(f"{k}={v:.2f}" for k, v in row.items() if k.endswith("_us")),
                flush=True,
            )
            result["runs"].append(row)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
