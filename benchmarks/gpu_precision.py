"""Where 16-bit inference loses tokens: agreement with float32 per precision setting.

Issue 4 asks for >= 99 % token agreement between bf16 and fp32 on the calibrated random model;
bf16 reached 92-97 % (NeMo's own bf16 91-96 % on the same weights). This script separates the
sources: the encoder in bf16 or fp16 (same tensor-core speed, 3 more mantissa bits), and the
decoder's weights in 16 bits or float32. Every setting transcribes the same clips at B=1 and
is compared with the float32 run (token agreement as in gpu_compare.py).

Run on the device (one call; no NeMo needed with ``--checkpoint synth``):
    python3 benchmarks/gpu_precision.py --checkpoint synth --out $OUT/gpu_precision.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from gpu_compare import agreement, phase_means  # noqa: E402
from gpu_micro import float32_weights, gpu_record  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.bench.audioset import default_clips, write_clips  # noqa: E402

# name -> (model dtype, float32 decoder weights)
SETTINGS: dict[str, tuple[str, bool]] = {
    "fp32": ("fp32", False),
    "bf16": ("bf16", False),
    "bf16_fp32_decoder": ("bf16", True),
    "fp16": ("fp16", False),
    "fp16_fp32_decoder": ("fp16", True),
}


def transcribe_all(checkpoint: Path, clips: list[str], dtype: str, fp32_decoder: bool) -> Any:
    model = load_model(checkpoint, device="cuda", dtype=dtype)
    runner = model.cuda_runner
    assert runner is not None
    if fp32_decoder:
        for kind in ("loop_decoder", "triton_decoder"):
            if getattr(runner, kind) is not None:
                setattr(runner, kind, float32_weights(getattr(runner, kind)))
    for _ in range(2):  # eager first use, then graph capture: time the third pass
        model.transcribe(clips)
    runs = [model.transcribe(clip) for clip in clips]
    return {**phase_means(runs), "token_ids": [r.token_ids for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", choices=["synth", "recipe"], default="synth")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    out = gpu_record() | {"checkpoint": args.checkpoint, "settings": {}}
    work = Path(tempfile.mkdtemp())
    checkpoint = work / "v2.nemo"
    if args.checkpoint == "recipe":
        builder = HERE / "build_recipe_checkpoint.py"
        subprocess.run([sys.executable, str(builder), str(checkpoint)], check=True)
    else:
        from budgie.synth import synth_nemo

        synth_nemo(checkpoint, "parakeet-tdt-0.6b-v2", seed=0)
    clips = [str(p) for p in write_clips(default_clips(args.clips), work / "clips")]
    names = args.settings.split(",")
    if "fp32" not in names:
        names.insert(0, "fp32")
    for name in names:
        t0 = time.perf_counter()
        dtype, fp32_decoder = SETTINGS[name]
        entry = transcribe_all(checkpoint, clips, dtype, fp32_decoder)
        out["settings"][name] = entry
        if name != "fp32":
            entry["agreement_vs_fp32"] = agreement(
                entry["token_ids"], out["settings"]["fp32"]["token_ids"]
            )
            share = entry["agreement_vs_fp32"]["token_agreement"]
            print(
                f"[{name}] total {entry['total_ms']:.2f} ms (enc {entry['encode_ms']:.2f} dec "
                f"{entry['decode_ms']:.2f}); agreement with fp32 {share:.4f}, identical clips "
                f"{entry['agreement_vs_fp32']['identical_clips']}/{len(clips)}; "
                f"{time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    for entry in out["settings"].values():
        entry["token_ids"] = "omitted"
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
