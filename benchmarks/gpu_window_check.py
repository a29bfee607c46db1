"""Look-ahead window of the Triton decoder on the GPU: machine steps, graph replays and decode
time per window size, on the full-size synthetic decoder with random encoder outputs scaled so
that blanks are rare, common or dominant (see gpu_decoder_micro.py for the scales).

    python3 benchmarks/gpu_window_check.py --out $OUT/gpu_window_check.json
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
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from gpu_decoder_micro import MAX_FRAMES, SPEC, build_network  # noqa: E402

from budgie.gpu_decoding import GraphedStepDecoder, StepDecoder, decode_with_steps  # noqa: E402
from budgie.triton_decoding import TritonConfig, TritonStepDecoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    device = torch.device("cuda")
    decoder, joint, cfg = build_network(device, 0)
    durations, max_symbols = cfg.decoding.durations, cfg.decoding.max_symbols
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "gpu": torch.cuda.get_device_name(),
        "runs": [],
    }
    gen = torch.Generator(device=device).manual_seed(0)
    for batch in (1, 8):
        noise = torch.randn(batch, args.frames, SPEC.d_model, device=device, generator=gen)
        lengths = torch.full((batch,), args.frames, dtype=torch.long, device=device)
        for scale in (0.6, 0.7, 0.8, 3.0):
            with torch.inference_mode():
                enc_proj = joint.project_encoder(noise * scale)
            ref = StepDecoder(decoder, joint, batch, MAX_FRAMES, durations, max_symbols, device)
            want = decode_with_steps(ref, enc_proj, lengths, None)
            for window in (1, 2, 4, 8):
                config = TritonConfig(window=window)
                machine = TritonStepDecoder(
                    decoder, joint, batch, MAX_FRAMES, durations, max_symbols, device, config
                )
                graphed = GraphedStepDecoder(machine)
                times = []
                for _ in range(args.reps):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    got = decode_with_steps(machine, enc_proj, lengths, graphed)
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - t0) * 1000)
                run = {
                    "batch": batch,
                    "scale": scale,
                    "window": window,
                    "decode_ms_median": round(statistics.median(times), 3),
                    "machine_steps_max": max(machine.machine_steps(batch)),
                    "joint_evaluations_mean": statistics.fmean(h.steps for h in got),
                    "tokens_mean": statistics.fmean(len(h.token_ids) for h in got),
                    "same_as_torch_rows": sum(
                        (g.token_ids, g.steps) == (w.token_ids, w.steps)
                        for g, w in zip(got, want, strict=True)
                    ),
                }
                result["runs"].append(run)
                print(run, flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
