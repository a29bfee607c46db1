"""Where the CUDA frontend's time goes at batch: host fill of the pinned staging buffer, the
host-to-device copies, the graph (STFT, mel, normalisation), and the whole ``preprocess``.

Run on the device (no NeMo needed):
    python3 benchmarks/gpu_frontend_profile.py --out $OUT/gpu_frontend_profile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpu_micro import synth_v2_clips  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.audio import load_audio  # noqa: E402
from budgie.cuda_frontend import FILL_THREADS, pack_padded  # noqa: E402
from budgie.cuda_runner import CudaRunner  # noqa: E402


def timed(fn: Any, repeats: int) -> float:
    """Median ms of fn() with the GPU synchronized around each call."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(
    runner: CudaRunner, rows: list[np.ndarray], repeats: int, pool: ThreadPoolExecutor
) -> dict[str, float]:
    samples = sum(len(r) for r in rows)
    for _ in range(3):  # eager, capture, warm
        runner.preprocess(rows)
    host = torch.empty(samples, dtype=torch.float32, pin_memory=True)
    device = torch.empty(samples, dtype=torch.float32, device="cuda")
    longest = max(len(r) for r in rows)
    padded = torch.empty(len(rows), longest, dtype=torch.float32, pin_memory=True)

    def fill() -> None:
        offset = 0
        for r in rows:
            host[offset : offset + len(r)].numpy()[:] = r
            offset += len(r)

    return {
        "samples": samples,
        "audio_s": samples / 16000,
        "preprocess_ms": timed(lambda: runner.preprocess(rows), repeats),
        "host_fill_ms": timed(fill, repeats),
        "pack_padded_threads_ms": timed(lambda: pack_padded(rows, padded.numpy(), pool), repeats),
        "h2d_ms": timed(lambda: device.copy_(host, non_blocking=True), repeats),
        "float_to_int16_host_ms": timed(
            lambda: [(r * 32768).astype(np.int16) for r in rows], repeats
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    checkpoint, paths = synth_v2_clips(20)
    model = load_model(checkpoint, device="cuda", dtype="bf16")
    runner = model.cuda_runner
    assert isinstance(runner, CudaRunner)
    record: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "batches": {},
    }
    pool = ThreadPoolExecutor(FILL_THREADS)
    for batch in (1, 8, 32, 64):
        rows = [load_audio(paths[i % len(paths)]) for i in range(batch)]
        entry = measure(runner, rows, args.repeats, pool)
        record["batches"][batch] = entry
        print(batch, {k: round(v, 2) for k, v in entry.items()}, flush=True)
    Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
