"""Host-side costs of a B=1 transcript without a profiler (which inflates graph launches ~5x).

Loads the full-size synthetic v2 checkpoint in bf16, warms the clips' graphs up, then times
single-clip transcripts with light wrappers: the host time of every CUDA graph replay (the
frontend's, then the encoder's) next to the GPU time of the same replay (CUDA events around
it), the host time of the decoder call, and the phase means; before that, in a pass without
any synchronization added, the host time of each step of the pipeline (``HOST_CALLS``). Run on
the device:
    python3 benchmarks/gpu_launch_costs.py --out $OUT/gpu_launch_costs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_compare import phase_means  # noqa: E402
from gpu_micro import gpu_record, synth_v2_clips, time_calls  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.cuda_runner import CudaRunner  # noqa: E402
from budgie.pipeline import Model  # noqa: E402
from budgie.timing import PhaseClock  # noqa: E402

samples: dict[str, list[float]] = {}


def note(name: str, value: float) -> None:
    samples.setdefault(name, []).append(value)


def wrap_replay() -> None:
    original = torch.cuda.CUDAGraph.replay

    def replay(self: torch.cuda.CUDAGraph) -> None:
        kind = getattr(self, "budgie_kind", "graph")
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        t0 = time.perf_counter()
        original(self)
        note(f"{kind}_launch_host_us", (time.perf_counter() - t0) * 1e6)
        end.record()
        end.synchronize()  # measuring only: this serializes the transcript
        note(f"{kind}_gpu_us", start.elapsed_time(end) * 1000)

    torch.cuda.CUDAGraph.replay = replay  # type: ignore[method-assign]


def wrap_host(owner: Any, name: str) -> None:
    """Host time of every call of ``owner.name`` (nothing is synchronized)."""
    key = f"{owner.__name__}.{name}_host_us"
    time_calls(owner, name, lambda t0, t1: note(key, (t1 - t0) * 1e6))


# The calls of a B=1 transcript whose host time the "host" pass records.
HOST_CALLS = (
    (Model, "_load_one"),
    (Model, "_stage_batch"),
    (Model, "_start_batch"),
    (Model, "_end_batch"),
    (Model, "_finish_batch"),
    (CudaRunner, "stage"),
    (CudaRunner, "launch"),
    (CudaRunner, "encode"),
    (CudaRunner, "decode"),
    (PhaseClock, "_settle"),
)


def label_graphs(runner: CudaRunner) -> None:
    for graph in runner._frontends.values():
        graph.graph.budgie_kind = "frontend"  # type: ignore[attr-defined]
    for graph in runner._encoders.values():
        graph.graph.budgie_kind = "encoder"  # type: ignore[attr-defined]


def wrap_decode(runner: CudaRunner) -> None:
    original = runner.decode

    def decode(encoded: torch.Tensor, lengths: torch.Tensor) -> Any:
        t0 = time.perf_counter()
        hyps = original(encoded, lengths)
        note("decode_call_host_us", (time.perf_counter() - t0) * 1e6)
        return hyps

    runner.decode = decode  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=10)
    args = parser.parse_args()
    checkpoint, clips = synth_v2_clips(args.clips)
    model = load_model(checkpoint, device="cuda", dtype="bf16")
    for _ in range(3):
        model.transcribe(clips)
    record = gpu_record()
    record["plain"] = phase_means([model.transcribe(c) for c in clips for _ in range(2)])
    for owner, name in HOST_CALLS:
        wrap_host(owner, name)
    record["host"] = phase_means([model.transcribe(c) for c in clips for _ in range(2)])
    runner = model.cuda_runner
    assert runner is not None
    label_graphs(runner)
    wrap_replay()
    wrap_decode(runner)
    record["instrumented"] = phase_means([model.transcribe(c) for c in clips for _ in range(2)])
    record["costs"] = {k: statistics.median(v) for k, v in samples.items()}
    record["costs_mean"] = {k: statistics.fmean(v) for k, v in samples.items()}
    print(json.dumps({k: record[k] for k in ("plain", "host", "costs", "costs_mean")}, indent=1))
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
