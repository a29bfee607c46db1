"""How close the CPU encoder is to the machine's float32 GEMM speed: GFLOP/s of one encoder-shaped
matrix product (an FFN input projection of a 20 s clip: [250 x 1024] @ [1024 x 4096]) through
ONNX Runtime (MLAS, as the ONNX backend runs it), torch (MKL) and numpy (OpenBLAS), with the
intra-op threads the backends use, one thread, and two one-thread streams side by side.

    python benchmarks/cpu_gemm_peak.py -o benchmarks/results/cpu_gemm_peak.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

M, K, N = 250, 1024, 4096
FLOPS = 2 * M * K * N


def gflops(run: Callable[[], object], repeats: int) -> float:
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return FLOPS * repeats / (time.perf_counter() - start) / 1e9


def ort_session(weight: np.ndarray, threads: int) -> ort.InferenceSession:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    torch.set_num_threads(cores)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    many, one = ort_session(b, cores), ort_session(b, 1)
    results = {
        f"onnxruntime_{cores}_threads": gflops(lambda: many.run(None, {"x": a}), args.repeats),
        "onnxruntime_1_thread": gflops(lambda: one.run(None, {"x": a}), args.repeats),
        f"torch_{cores}_threads": gflops(lambda: ta @ tb, args.repeats),
        "numpy": gflops(lambda: a @ b, args.repeats),
    }
    streams = [ort_session(b, 1) for _ in range(cores)]

    def loop(session: ort.InferenceSession) -> None:
        for _ in range(args.repeats):
            session.run(None, {"x": a})

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    results[f"onnxruntime_{cores}_streams_of_1_thread"] = (
        FLOPS * args.repeats * cores / elapsed / 1e9
    )
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "python benchmarks/cpu_gemm_peak.py -o " + args.output,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores},
        "shape": [M, K, N],
        "gflops": {k: round(v, 1) for k, v in results.items()},
        "loadavg": list(os.getloadavg()),
    }
    for name, value in record["gflops"].items():
        print(f"{name:36s} {value:7.1f} GFLOP/s")
    Path(args.output).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
