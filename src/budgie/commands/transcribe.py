"""``budgie transcribe FILES...``: transcripts on stdout or into an output directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from budgie.errors import BudgieError
from budgie.formats import EXTENSIONS, FORMATS, render
from budgie.progress import progress_bar
from budgie.results import Transcript, TranscriptionError

# --throughput's batch size when none is given: within the best two on an H100 (README, Speed).
THROUGHPUT_BATCH = 32


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files",
        description="Transcribe audio files with a Parakeet TDT model.",
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="audio files (wav, flac, mp3, m4a, ...)"
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"inputs per forward pass (default 1; {THROUGHPUT_BATCH} with --throughput)",
    )
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="many files in the least total time: phases are not synced one by one (each "
        "record's timings are then host times) and the next batch is packed while the GPU "
        "works on this one",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")
    parser.add_argument("--output-dir", type=Path, help="write one file per input here")
    parser.add_argument("--confidence", action="store_true", help="per-token confidence")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnx"],
        help="torch (.nemo), onnx (ONNX directory, ONNX Runtime on the CPU); auto: by --model",
    )
    parser.add_argument(
        "--decoder-device",
        default=None,
        choices=["cpu", "cuda"],
        help="run the TDT decoder here (default: with the encoder; cpu behind a GPU encoder "
        "is the seed's hybrid layout)",
    )
    parser.set_defaults(func=run)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype: shared by every command that loads a model."""
    parser.add_argument(
        "--model",
        default="nvidia/parakeet-tdt-0.6b-v2",
        help=".nemo file, ONNX directory or Hugging Face id (default: %(default)s)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--dtype", default=None, choices=["fp32", "bf16", "fp16", "int8"], help="encoder precision"
    )


def run(args: argparse.Namespace) -> int:
    from budgie.api import load_model

    if args.batch_size is None:
        args.batch_size = THROUGHPUT_BATCH if args.throughput else 1
    if args.batch_size < 1:
        raise BudgieError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.output_dir is not None:
        try:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BudgieError(
                f"cannot create output directory {args.output_dir}: {exc.strerror}"
            ) from None
    model = load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        decoder_device=args.decoder_device,
    )
    model.sync_phases = not args.throughput
    show = args.format != "json" and len(args.files) > 1
    with progress_bar(len(args.files), "transcribing", enabled=show) as advance:
        results = model.transcribe(
            list(args.files),
            batch_size=args.batch_size,
            confidence=args.confidence,
            progress=advance,
        )
    failed = 0
    for path, result in zip(args.files, results, strict=True):
        if isinstance(result, TranscriptionError):
            failed += 1
            print(f"budgie: error: {result.source}: {result.error}", file=sys.stderr)
        if args.output_dir is not None and isinstance(result, Transcript):
            target = args.output_dir / (Path(path).stem + EXTENSIONS[args.format])
            target.write_text(render(result, args.format) + "\n", encoding="utf-8")
        elif args.output_dir is None:
            _print(path, result, args.format, several=len(args.files) > 1)
    return 1 if failed else 0


def _print(path: str, result: Transcript | TranscriptionError, fmt: str, several: bool) -> None:
    if fmt == "json":
        print(render(result, fmt), flush=True)
    elif isinstance(result, Transcript):
        if several:
            print(f"==> {path} <==")
        print(render(result, fmt), flush=True)
