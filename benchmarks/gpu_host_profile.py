"""Where the host's time goes in a throughput run: py-spy samples of every thread.

The throughput pass (many files, batch 64) kept the GPU busy only about half of its wall time
(torch profiler, 2026-11-25: 297 ms of kernels in a 566 ms pass), so the host sets its pace. This
samples all Python threads (main: batching, graphs, decode bookkeeping; budgie-load: audio
decoding; budgie-text: tokenization; budgie-stage: pinned-memory packing) during measured passes
only, and sums the samples per thread and per function (self and inclusive).

Run on the device (py-spy carried as a wheel in .whl/):
    python3 benchmarks/gpu_host_profile.py --out $OUT/gpu_host_profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_micro import synth_v2_clips  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.results import Transcript  # noqa: E402


def summarize(raw: Path, top: int = 25) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> samples per thread, and per function within each."""
    per_thread: collections.Counter[str] = collections.Counter()
    self_time: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].partition(": ")[2] or frames[0]  # "thread (id): name"
        thread = thread.rstrip("0123456789").rstrip("_")  # pool threads: name_N -> name
        per_thread[thread] += count
        self_time[thread][frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[thread][frame] += count
    return {
        "samples_per_thread": dict(per_thread.most_common()),
        "self": {t: c.most_common(top) for t, c in self_time.items()},
        "inclusive": {t: c.most_common(top) for t, c in inclusive.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    args = parser.parse_args()
    checkpoint, clips = synth_v2_clips(args.clips)
    files = clips * args.copies
    model = load_model(checkpoint, device="cuda", dtype="bf16")
    model.sync_phases = False
    for _ in range(2):  # every shape's graphs captured
        model.transcribe(files, batch_size=args.batch)
    torch.cuda.synchronize()
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "cpus": os.cpu_count(),
        "files": len(files),
    }
    walls = [0.0]

    def passes() -> None:
        walls.clear()
        for _ in range(args.passes):
            t0 = time.perf_counter()
            results = model.transcribe(files, batch_size=args.batch)
            torch.cuda.synchronize()
            walls.append(time.perf_counter() - t0)
        audio = sum(r.duration_s for r in results if isinstance(r, Transcript))
        out["audio_s"] = audio
        out["rtfx_per_pass"] = [round(audio / w, 1) for w in walls]

    passes()  # unsampled
    out["unsampled_wall_s"] = walls[:]
    spy = shutil.which("py-spy") or str(Path(sys.prefix) / "bin" / "py-spy")
    # "active": every thread running on a CPU; "gil": only the thread holding the GIL.
    for mode in ("active", "gil"):
        raw = args.out.with_suffix(f".{mode}.raw.txt")
        command = [spy, "record", "--pid", str(os.getpid()), "--rate", str(args.rate)]
        command += ["--format", "raw", "--threads", "--nonblocking", "-o", str(raw)]
        command += ["--gil"] if mode == "gil" else []
        try:
            sampler = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            out["py_spy_error"] = repr(exc)
            break
        time.sleep(1.0)
        passes()
        out[f"sampled_{mode}_wall_s"] = walls[:]
        sampler.send_signal(signal.SIGINT)
        log, _ = sampler.communicate(timeout=60)
        out[f"py_spy_{mode}_log"] = log.decode(errors="replace")[-600:]
        if raw.exists():
            out[f"profile_{mode}"] = summarize(raw)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if not k.startswith("profile")}, indent=1))
    for mode in ("active", "gil"):
        profile = out.get(f"profile_{mode}", {})
        print(f"--- {mode}")
        for thread, samples in profile.get("samples_per_thread", {}).items():
            print(f"{samples:7d} {thread}")
            for frame, count in profile["self"][thread][:10]:
                print(f"        self {count:7d} {frame[:140]}")


if __name__ == "__main__":
    main()
