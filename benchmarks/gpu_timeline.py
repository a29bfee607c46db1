"""A B=1 transcript's timeline, host and GPU side by side: where the GPU waits on the host.

Loads the full-size synthetic v2 checkpoint in bf16, warms every clip's graphs up, then records
a few single-clip transcripts with torch.profiler (host runtime calls and GPU kernels/copies,
each phase marked as a range) and writes the Chrome trace plus a summary: per transcript the
wall time, the GPU's busy time, and its idle gaps longer than ``--gap-us`` with the phase they
fall in. Run on the device:
    python3 benchmarks/gpu_timeline.py --out $OUT/gpu_timeline.json --trace $OUT/trace.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_micro import gpu_record, synth_v2_clips  # noqa: E402

from budgie import timing  # noqa: E402
from budgie.api import load_model  # noqa: E402


def mark_phases() -> None:
    """Make every PhaseClock phase a named profiler range."""
    original = timing.PhaseClock.phase

    @contextmanager
    def phase(self: timing.PhaseClock, name: str) -> Iterator[None]:
        with torch.profiler.record_function(f"phase:{name}"), original(self, name):
            yield

    timing.PhaseClock.phase = phase  # type: ignore[method-assign]


def summarize(trace: dict[str, Any], gap_us: float) -> list[dict[str, Any]]:
    """Per transcript (a ``transcript`` range): wall, GPU busy, and the GPU's idle gaps."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    gpu = sorted(
        (e["ts"], e["ts"] + e["dur"], e["name"])
        for e in events
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
    )
    host = [e for e in events if e.get("cat") == "user_annotation"]
    phases = [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in host if "phase:" in e["name"]]
    out = []
    for run in sorted((e["ts"], e["dur"]) for e in host if e["name"] == "transcript"):
        start, end = run[0], run[0] + run[1]
        inside = [g for g in gpu if start <= g[0] <= end]
        busy, gaps, last_end = 0.0, [], None
        for s, e, name in inside:
            if last_end is None:
                busy, last_end = e - s, e
                continue
            if s - last_end > gap_us:
                where = [p[2] for p in phases if p[0] <= last_end <= p[1]]
                gaps.append(
                    {"after_us": last_end - start, "gap_us": s - last_end, "phase": where,
                     "next": name[:60]}
                )  # fmt: skip
            if e > last_end:
                busy += e - max(s, last_end)
                last_end = e
        out.append(
            {
                "wall_us": end - start,
                "gpu_first_us": (inside[0][0] - start) if inside else None,
                "gpu_busy_us": busy,
                "gpu_after_last_us": (end - last_end) if last_end else None,
                "phases_us": {p[2]: p[1] - p[0] for p in phases if start <= p[0] <= end},
                "gaps": gaps,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trace", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gap-us", type=float, default=5.0)
    args = parser.parse_args()
    checkpoint, clips = synth_v2_clips(4)
    model = load_model(checkpoint, device="cuda", dtype="bf16")
    for _ in range(3):
        model.transcribe(clips)
    mark_phases()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for k in range(args.runs):
            with torch.profiler.record_function("transcript"):
                model.transcribe(clips[k % len(clips)])
    prof.export_chrome_trace(str(args.trace))
    record = gpu_record()
    record["runs"] = summarize(json.loads(args.trace.read_text()), args.gap_us)
    for run in record["runs"]:
        print({k: (round(v) if isinstance(v, float) else v) for k, v in run.items() if k != "gaps"})
        for gap in run["gaps"]:
            print("   ", gap)
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
