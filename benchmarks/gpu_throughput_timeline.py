"""Where a throughput-mode transcribe() spends its wall time: host and GPU timeline per batch.

Without a profiler (it inflates graph launches ~50x): host spans from perf_counter around the
pipeline's steps (audio loading per loader task, each batch's start and end, the text thread),
GPU spans from CUDA events recorded around each batch's frontend + encoder (caller's stream)
and its decode (the stream the decode runs on), mapped onto the host clock through an event
recorded right after a synchronization. GPU busy = union of the GPU spans; what is left of the
wall is where the GPU waited for the host. Each pass also records the garbage collector's
passes (count and milliseconds per generation).

Run on the device (no NeMo needed):
    python3 benchmarks/gpu_throughput_timeline.py --out $OUT/timeline.json [--batch 64]
"""

from __future__ import annotations

import argparse
import ast
import gc
import importlib
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_micro import gpu_record, synth_v2_clips, time_calls  # noqa: E402

from budgie import cuda_runner  # noqa: E402
from budgie.api import load_model  # noqa: E402
from budgie.pipeline import Model  # noqa: E402

Span = tuple[str, str, float, float]  # thread or stream, what, start, end (host seconds)


class Recorder:
    def __init__(self) -> None:
        self.host: list[Span] = []
        self.gpu: list[tuple[str, str, torch.cuda.Event, torch.cuda.Event]] = []
        self.lock = threading.Lock()
        self.origin = (0.0, torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]

    def start(self) -> None:
        torch.cuda.synchronize()
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        event.record()
        self.origin = (time.perf_counter(), event)
        self.host.clear()
        self.gpu.clear()

    def wrap_host(self, owner: Any, name: str) -> Callable[[], None]:
        def record(t0: float, t1: float) -> None:
            with self.lock:
                self.host.append((threading.current_thread().name, name, t0, t1))

        return time_calls(owner, name, record)

    def wrap_gpu(self, owner: Any, name: str, label: str) -> Callable[[], None]:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            stream = torch.cuda.current_stream()
            begin = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            begin.record(stream)
            try:
                return original(*args, **kwargs)
            finally:
                end.record(stream)
                self.gpu.append((f"stream {stream.stream_id}", label, begin, end))

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)

    def spans(self) -> list[Span]:
        torch.cuda.synchronize()
        t0, origin = self.origin
        gpu = [
            (where, what, t0 + origin.elapsed_time(b) / 1e3, t0 + origin.elapsed_time(e) / 1e3)
            for where, what, b, e in self.gpu
        ]
        return sorted(self.host + gpu, key=lambda s: s[2])


def union_ms(spans: list[tuple[float, float]]) -> float:
    total, current = 0.0, None
    for start, end in sorted(spans):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        total += current[1] - current[0]
    return total * 1e3


class Collections:
    """The garbage collector's passes during a timed pass: generation, count, milliseconds."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ms: dict[int, list[float]] = {}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.started is not None:
            self.ms.setdefault(info["generation"], []).append(
                (time.perf_counter() - self.started) * 1e3
            )

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            f"gen{g}": {"count": len(v), "total_ms": round(sum(v), 2), "max_ms": round(max(v), 2)}
            for g, v in sorted(self.ms.items())
        }


def one_pass(model: Model, files: list[str], batch: int, recorder: Recorder) -> dict[str, Any]:
    collections = Collections()
    gc.callbacks.append(collections)
    recorder.start()
    t0 = recorder.origin[0]
    try:
        model.transcribe(files, batch_size=batch)
        torch.cuda.synchronize()
    finally:
        gc.callbacks.remove(collections)
    wall = time.perf_counter() - t0
    spans = recorder.spans()
    gpu = [(s, e) for where, _, s, e in spans if where.startswith("stream")]
    rows = [
        {"where": w, "what": what, "start_ms": (s - t0) * 1e3, "end_ms": (e - t0) * 1e3}
        for w, what, s, e in spans
    ]
    first_gpu = min((s for s, _ in gpu), default=t0)
    return {
        "wall_ms": wall * 1e3,
        "gpu_busy_ms": union_ms(gpu),
        "gpu_first_start_ms": (first_gpu - t0) * 1e3,
        "text_thread_ms": sum(e - s for w, what, s, e in spans if what == "_finish_batch") * 1e3,
        "load_ms": sum(e - s for w, what, s, e in spans if what == "_load_many") * 1e3,
        "gc": collections.summary(),
        "spans": rows,
    }


class HeapSwitch:
    """``frozen`` = True freezes the heap (gc.freeze), False unfreezes it (gc.unfreeze)."""

    def __setattr__(self, name: str, frozen: bool) -> None:
        if frozen:
            gc.freeze()
        else:
            gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument(
        "--ab",
        metavar="MODULE.FLAG",
        help="alternate a budgie module's setting between two values pass by pass, e.g. "
        "pipeline.STAGE_AHEAD or batching.LONGEST_FIRST",
    )
    parser.add_argument(
        "--ab-values",
        default="True,False",
        help="the two values --ab alternates between (Python literals; default: True,False)",
    )
    parser.add_argument(
        "--ab-gc",
        action="store_true",
        help="instead of --ab: alternate a frozen heap (gc.freeze, as load_model leaves it) "
        "with an unfrozen one (gc.unfreeze) pass by pass",
    )
    args = parser.parse_args()
    out = gpu_record() | {"batch": args.batch}
    checkpoint, clips = synth_v2_clips(20)
    files = clips * args.copies
    model = load_model(checkpoint, device="cuda", dtype="bf16")
    model.sync_phases = False
    module, flag = (None, "") if args.ab is None else args.ab.split(".")
    owner: Any = importlib.import_module(f"budgie.{module}") if module else None
    modes = [ast.literal_eval(v) for v in args.ab_values.split(",")] if owner else [None]
    if args.ab_gc:
        owner, flag, args.ab, modes = HeapSwitch(), "frozen", "gc.freeze", [True, False]
    for mode in modes:  # every mode's shapes captured before anything is timed
        if owner is not None:
            setattr(owner, flag, mode)
        for _ in range(2):
            model.transcribe(files, batch_size=args.batch)
    recorder = Recorder()
    undo = [
        recorder.wrap_host(Model, "_load_many"),
        recorder.wrap_host(Model, "_stage_batch"),
        recorder.wrap_host(Model, "_start_batch"),
        recorder.wrap_host(Model, "_end_batch"),
        recorder.wrap_host(Model, "_finish_batch"),
        recorder.wrap_gpu(Model, "_start_batch", "frontend+encoder"),
        recorder.wrap_gpu(cuda_runner.CudaRunner, "decode", "decode"),
    ]
    passes = []
    for number in range(args.passes * len(modes)):  # --ab: the modes alternate pass by pass
        if owner is not None:
            setattr(owner, flag, modes[number % len(modes)])
        record = one_pass(model, files, args.batch, recorder)
        passes.append(record | {"flag": args.ab, "on": modes[number % len(modes)]})
    for restore in reversed(undo):
        restore()
    for p in passes:
        print(
            f"{p['flag']} {p['on']}: wall {p['wall_ms']:.1f} ms, GPU busy "
            f"{p['gpu_busy_ms']:.1f}, first GPU work at {p['gpu_first_start_ms']:.1f}, text "
            f"thread {p['text_thread_ms']:.1f}, loading {p['load_ms']:.1f} (thread sum), "
            f"collections {p['gc']}",
            flush=True,
        )
    out["wall_ms_median"] = {}
    for mode in modes:
        mine = [p for p in passes if p["on"] == mode]
        median = out["wall_ms_median"][f"{args.ab}={mode}"] = statistics.median(
            p["wall_ms"] for p in mine
        )
        print(f"{args.ab} {mode}: median wall {median:.1f} ms over {len(mine)} passes")
        for row in min(mine, key=lambda p: p["wall_ms"])["spans"]:
            print(
                f"  {row['start_ms']:8.2f} {row['end_ms']:8.2f}  {row['where']:>16}  {row['what']}"
            )
    out["passes"] = passes
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
