"""The tokenize phase alone: ``build_text_and_timestamps`` (text, tokens, words, segments) for
one 50-token English transcript with the bundled v3 tokenizer, best of 7 x 300 calls.

Run anywhere: python benchmarks/tokenize_micro.py --out RESULT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import sentencepiece as spm  # noqa: E402

from budgie.text import Tokenizer, build_text_and_timestamps  # noqa: E402

TOKENIZER = HERE.parent / "tests" / "fixtures" / "tokenizer-v3.model"
TEXT = (
    "Well, the thing is, we didn't expect the results to come in so quickly. Honestly? Nobody "
    "did! The team worked through the night, and by morning the numbers were ready."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tok = Tokenizer(TOKENIZER)
    ids = spm.SentencePieceProcessor(model_file=str(TOKENIZER)).encode(TEXT)[:50]
    rng = random.Random(0)
    frames = sorted(rng.randrange(250) for _ in ids)
    durations = [rng.randrange(1, 4) for _ in ids]
    for _ in range(50):
        build_text_and_timestamps(tok, ids, frames, durations, None, 0.08)
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(300):
            build_text_and_timestamps(tok, ids, frames, durations, None, 0.08)
        best = min(best, (time.perf_counter() - start) / 300 * 1e3)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "tokens": len(ids),
        "ms_per_call_best": best,
    }
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
