"""``budgie export --model M --format onnx [--quantize int8] -o DIR``: an ONNX model directory.

The directory is what parakeet.js, onnx-asr and ``budgie transcribe --backend onnx`` load
(layout: ``budgie.backends``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (the parakeet.js / onnx-asr layout)",
        description=(
            "Write encoder-model.onnx, decoder_joint-model.onnx (NeMo's export interface), "
            "vocab.txt and config.json; with --quantize int8 also their dynamically quantized "
            "*.int8.onnx variants."
        ),
    )
    parser.add_argument(
        "--model",
        default="nvidia/parakeet-tdt-0.6b-v2",
        help=".nemo file or Hugging Face id (default: %(default)s)",
    )
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="output format")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="also write int8 graphs")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from budgie.backends.onnx_export import export_onnx

    started = time.perf_counter()

    def progress(step: str) -> None:
        print(f"exporting {step} ...", file=sys.stderr, flush=True)

    result = export_onnx(args.model, args.output, quantize=args.quantize, progress=progress)
    for path in result.files:
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
