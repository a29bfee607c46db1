"""Long inputs on one GPU: single passes up to the memory limit, longer ones in pieces.

Checks on a real device what CI can only check on the CPU with a pretended memory size: how
much GPU memory a long single pass takes against ``budgie.limits``' estimate (the estimate
decides when an input is cut), how fast long inputs run whole and in pieces
(``budgie.long_audio``), and how far a cut transcript differs from the uncut one on the same
audio (token agreement; the random model is chaotic, so this bounds the effect from above).

Audio: the default bench clips (real and synthetic speech) in turn, 0.5 s of silence after each,
up to each duration. Model: the full-size synthetic parakeet-tdt-0.6b-v2 (``budgie synth``,
seed 0), bf16.

Run on the device (no NeMo needed):
    python3 benchmarks/gpu_long_audio.py --out $OUT/gpu_long_audio.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from gpu_compare import agreement  # noqa: E402
from gpu_micro import gpu_record  # noqa: E402

from budgie import limits  # noqa: E402
from budgie.api import load_model  # noqa: E402
from budgie.audio import SAMPLE_RATE, load_audio  # noqa: E402
from budgie.bench.audioset import default_clips, write_clips  # noqa: E402
from budgie.long_audio import cut_points, frame_samples, piece_length  # noqa: E402
from budgie.results import Transcript  # noqa: E402
from budgie.synth import synth_nemo  # noqa: E402

PAUSE_S = 0.5


def long_audio(clips: list[np.ndarray], minutes: float) -> np.ndarray:
    """The clips in turn, a pause after each, cut to ``minutes``."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    want = int(minutes * 60 * SAMPLE_RATE)
    parts, have = [], 0
    while have < want:
        for clip in clips:
            parts += [clip, pause]
            have += len(clip) + len(pause)
    return np.concatenate(parts)[:want]


def timed(model: Any, audio: np.ndarray, batch_size: int) -> tuple[Transcript, dict[str, Any]]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = model.transcribe(audio, batch_size=batch_size)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    seconds = len(audio) / SAMPLE_RATE
    return result, {
        "audio_s": seconds,
        "wall_s": round(wall, 3),
        "rtfx": round(seconds / wall, 1),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "tokens": len(result.tokens),
        "decoder_steps": result.decoder_steps,
        "encoder_frames": result.encoder_frames,
        "timings_ms": result.timings.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, nargs="*", default=[5, 20, 60])
    parser.add_argument("--compare-minutes", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    out: dict[str, Any] = gpu_record() | {"runs": [], "errors": []}
    work = Path(tempfile.mkdtemp())
    checkpoint = work / "v2.nemo"
    synth_nemo(checkpoint, "parakeet-tdt-0.6b-v2", seed=0)
    clips = [load_audio(p) for p in write_clips(default_clips(20), work / "clips")]
    model = load_model(checkpoint, device="cuda", dtype="bf16")
    for _ in range(2):
        model.transcribe(clips[0])
    compiling = getattr(model.cuda_runner, "_compiling", None)
    if isinstance(compiling, threading.Thread):  # as in a process that has run for a while
        compiling.join()
    device = torch.device("cuda")
    out["single_pass_limit_s"] = round(limits.max_single_pass_seconds(model.config, device), 1)
    print(f"single-pass limit now: {out['single_pass_limit_s']} s", flush=True)
    whole: dict[float, Transcript] = {}
    for minutes in args.minutes:
        audio = long_audio(clips, minutes)
        entry: dict[str, Any] = {"minutes": minutes}
        entry["fits_one_pass"] = limits.fits_single_pass(model.config, len(audio), device)
        entry["estimated_peak_gib"] = round(
            limits.estimated_peak_bytes(model.config, len(audio)) / 2**30, 2
        )
        if not entry["fits_one_pass"]:
            limit = limits.max_single_pass_seconds(model.config, device)
            piece = piece_length(model.config, limit, SAMPLE_RATE)
            entry["pieces"] = (
                None
                if piece is None
                else len(cut_points(audio, piece, frame_samples(model.config))) - 1
            )
        try:
            result, figures = timed(model, audio, args.batch_size)
            entry |= figures
            whole[minutes] = result
        except Exception as exc:  # record and go on with the next length
            out["errors"].append({"minutes": minutes, "error": repr(exc)})
            traceback.print_exc()
        out["runs"].append(entry)
        print(json.dumps(entry), flush=True)
    minutes = args.compare_minutes
    if minutes in whole:  # the same audio forced into pieces: what cutting changes
        audio = long_audio(clips, minutes)
        real_free = limits.free_memory_bytes
        pretend = limits.estimated_peak_bytes(model.config, int(8 * 60 * SAMPLE_RATE))
        limits.free_memory_bytes = lambda device: int(pretend / limits.USABLE_FRACTION)
        try:
            cut, figures = timed(model, audio, args.batch_size)
        finally:
            limits.free_memory_bytes = real_free
        compare = {"minutes": minutes, "pretended_limit_s": 480, **figures}
        compare["agreement_with_one_pass"] = agreement([cut.token_ids], [whole[minutes].token_ids])
        out["cut_vs_whole"] = compare
        print(json.dumps(compare), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
