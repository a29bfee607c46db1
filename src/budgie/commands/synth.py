"""``budgie synth``: write a synthetic NeMo-format checkpoint (offline tests, demos, benchmarks)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    from budgie.synth import PRESETS

    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic .nemo checkpoint (random weights, real NeMo format)",
        description=(
            "Write a .nemo file that NeMo and Budgie load like a real Parakeet TDT checkpoint, "
            "with seeded random weights calibrated to decode speech-like token streams. "
            "The transcripts are meaningless: use it to test and benchmark, not to recognise."
        ),
    )
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model shapes")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="SentencePiece .model to use instead of the shipped synthetic one",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .nemo to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from budgie.synth import synthesize, write_nemo

    started = time.perf_counter()
    config, state, tokenizer = synthesize(args.preset, args.seed, args.tokenizer)
    path = write_nemo(args.output, config, state, tokenizer)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(
        t.numel()
        for k, t in state.items()
        if not k.startswith("preprocessor.") and not k.endswith(buffers)
    )
    size_mb = path.stat().st_size / 1e6
    print(
        f"wrote {path}: preset {args.preset}, seed {args.seed}, {params / 1e6:.2f}M parameters, "
        f"vocabulary {config['decoder']['vocab_size']}, {size_mb:.1f} MB, "
        f"{time.perf_counter() - started:.1f} s (synthetic random weights: not a speech model)"
    )
    return 0
