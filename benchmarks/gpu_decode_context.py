"""Why a decode can be slower inside a transcript than in the decoder micro-benchmark.

Times CudaRunner.decode of one clip's encoder output (full-size synthetic v2, bf16, B=1) in
three contexts: back to back (decoder weights hot in L2, GPU busy), right after the clip's
encoder pass, and after an idle gap of 2 ms on the host. Per context the wall time of decode()
and the GPU time of the decode kernel(s) (CUDA events), for the one-launch loop decoder and the
graphed step kernels. Run on the device:
    python3 benchmarks/gpu_decode_context.py --out $OUT/gpu_decode_context.json
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
from gpu_micro import synth_v2_clips  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.audio import load_audio  # noqa: E402
from budgie.cuda_runner import CudaRunner  # noqa: E402


def timed_decode(runner: CudaRunner, encoded: torch.Tensor, lengths: torch.Tensor) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    runner.decode(encoded, lengths)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000


@torch.inference_mode()
def contexts(runner: CudaRunner, audio: Any, reps: int) -> dict[str, float]:
    features, lengths = runner.preprocess([audio])
    encoded, enc_lengths = runner.encode(features, lengths)
    for _ in range(3):
        runner.decode(encoded, enc_lengths)
    hot = [timed_decode(runner, encoded, enc_lengths) for _ in range(reps)]
    after_encode, after_gap = [], []
    for _ in range(reps):
        encoded, enc_lengths = runner.encode(features, lengths)
        after_encode.append(timed_decode(runner, encoded, enc_lengths))
        torch.cuda.synchronize()
        time.sleep(0.002)
        after_gap.append(timed_decode(runner, encoded, enc_lengths))
    hyps = runner.decode(encoded, enc_lengths)
    return {
        "hot_ms": statistics.median(hot),
        "after_encode_ms": statistics.median(after_encode),
        "after_2ms_gap_ms": statistics.median(after_gap),
        "steps": hyps[0].steps,
        "tokens": len(hyps[0].token_ids),
        "parts_ms": parts(runner, encoded, enc_lengths, reps),
    }


def parts(
    runner: CudaRunner, encoded: torch.Tensor, lengths: torch.Tensor, reps: int
) -> dict[str, float]:
    """decode()'s pieces, each timed on the host with a sync after it (medians): the joint's
    encoder projection, the lengths to the host, the machine's reset + steps, the hypotheses."""
    times: dict[str, list[float]] = {}

    def clock(name: str, t0: float) -> float:
        torch.cuda.synchronize()
        now = time.perf_counter()
        times.setdefault(name, []).append((now - t0) * 1000)
        return now

    machine, graphed = next(iter(runner._decoders.values()))
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        enc_proj = runner.network.joint.project_encoder(encoded.float())
        t = clock("project_encoder", t)
        lengths.tolist()
        t = clock("lengths_to_host", t)
        machine.reset(enc_proj, lengths)
        if graphed is None:
            machine.step()
        else:
            graphed.run(0)
        t = clock("reset_and_steps", t)
        machine.hypotheses(encoded.shape[0])
        clock("hypotheses", t)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    checkpoint, clips = synth_v2_clips(2)
    clip = clips[1]
    model = load_model(checkpoint, device="cuda", dtype="bf16")
    audio = load_audio(clip)
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
    }
    from budgie.triton_loop import LoopConfig, LoopDecoder

    def loop_with(config: LoopConfig) -> type[LoopDecoder]:
        class Configured(LoopDecoder):
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a[:7], config, *a[8:], **k)

        return Configured

    variants: dict[str, Any] = {
        "steps": None,
        "loop": LoopDecoder,
        "loop_ahead2": loop_with(LoopConfig(window=2)),
        "loop_ahead4": loop_with(LoopConfig(window=4)),
    }
    for name, loop in variants.items():
        runner = CudaRunner(model.network, True, False, False)
        runner.loop_decoder = loop
        out[name] = contexts(runner, audio, args.reps)
        print(name, json.dumps(out[name], default=lambda v: round(v, 3)), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
