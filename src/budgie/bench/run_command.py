"""``budgie bench``: run a benchmark, write its record (JSON, optional CSV), print a summary.

Exit codes: 0 when at least one run produced a transcript (failed samples are error runs in the
record and counted in the summary), 1 when every run failed (the record is still written, so
the errors can be read), 2 for bad input (missing audio directory, empty directory, bad
manifest, unknown backend, unwritable output path), raised as ``BudgieError`` before the model
is loaded where possible. Nothing but the final summary goes to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from budgie.errors import BudgieError

BACKEND_NAMES = ("torch",)
"""Shown in ``--help``; the registry itself is ``budgie.bench.runner.BACKENDS`` (checked there)."""

CSV_FIELDS = (
    "id",
    "sampleKey",
    "rowIndex",
    "repeatIndex",
    "warm",
    "audioDurationSec",
    "load_audio_ms",
    "preprocess_ms",
    "encode_ms",
    "decode_ms",
    "tokenize_ms",
    "total_ms",
    "rtf",
    "tokens",
    "decoder_steps",
    "encoder_frames",
    "batch_size",
    "wer",
    "error",
    "transcription",
)
RUN_FIELDS = frozenset(
    {"id", "sampleKey", "rowIndex", "repeatIndex", "warm", "audioDurationSec", "wer", "error"}
)


def register(subparsers: Any) -> None:
    """Add ``bench`` to budgie's argparse subcommands."""
    from budgie.commands.transcribe import add_model_arguments

    p = subparsers.add_parser(
        "bench",
        help="benchmark a model phase by phase and write a run record",
        description="Transcribe a sample set (the offline default clips, a directory or a "
        "JSONL manifest) with warm-ups and repeats, timing every phase of every run; write a "
        "parakeet.js-compatible JSON record that `budgie analyze` and `budgie compare` read.",
    )
    add_model_arguments(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--audio", type=Path, metavar="DIR", help="benchmark the audio files in DIR"
    )
    source.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE.jsonl",
        help='JSON Lines, one {"audio": path, "text": reference} per line',
    )
    p.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="use the first N samples (default set: N clips, default 20)",
    )
    p.add_argument("--warmups", type=int, default=1, metavar="K", help="untimed passes first")
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="timed runs per sample")
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="inputs per forward")
    p.add_argument(
        "--backend", default="torch", help=f"inference backend ({', '.join(BACKEND_NAMES)})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the default clip set")
    p.add_argument(
        "--throughput",
        action="store_true",
        help="batch all inputs by length, no per-phase sync: only totals and wall clock count",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="RUN.json")
    p.add_argument("--csv", type=Path, metavar="RUN.csv", help="also write one CSV row per run")
    p.set_defaults(func=run_bench)


def check_writable(path: Path, what: str) -> None:
    """Fail before the benchmark, not after it: the output path must be a writable file."""
    if path.is_dir():
        raise BudgieError(f"{path}: is a directory; {what} needs a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BudgieError(f"{path}: directory {parent} does not exist")
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise BudgieError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
    if not existed:
        path.unlink(missing_ok=True)


def write_json(record: dict[str, Any], path: Path) -> None:
    text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False)
    try:
        path.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise BudgieError(f"{path}: cannot write the record ({exc.strerror or exc})") from None


def csv_row(run: dict[str, Any]) -> dict[str, Any]:
    """The CSV columns of one run: run-level fields and metrics, blank where absent."""
    metrics = run.get("metrics") or {}
    row = {}
    for name in CSV_FIELDS:
        value = (
            run.get(name) if name in RUN_FIELDS or name == "transcription" else metrics.get(name)
        )
        row[name] = (
            "" if value is None else str(value).lower() if isinstance(value, bool) else value
        )
    return row


def write_csv(record: dict[str, Any], path: Path) -> None:
    try:
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(csv_row(run) for run in record["runs"])
    except OSError as exc:
        raise BudgieError(f"{path}: cannot write the CSV ({exc.strerror or exc})") from None


def summary_text(record: dict[str, Any], output: Path, csv_path: Path | None) -> str:
    """The one paragraph printed at the end: counts, mean total, RTFx, where the record went."""
    s, summary = record["settings"], record["summary"]
    head = (
        f"Benchmarked {s['modelKey']} ({s['backend']}, {s['device']}, {s['dtype']}, "
        f"batch {s['batchSize']}, {summary['mode']}): {summary['runs']} runs = "
        f"{s['sampleCount']} samples x {s['repeatCount']} repeats after {s['warmups']} warm-up(s)"
    )
    if summary["ok"]:
        body = (
            f"mean total {summary['meanTotalMs']:.1f} ms per run, RTFx {summary['rtfx']:.1f} "
            f"({summary['audioSec']:.1f} s of audio in {summary['wallSec']:.2f} s wall)"
        )
    else:
        body = "no run succeeded"
    errors = f"{summary['errors']} error run(s)" if summary["errors"] else "no errors"
    where = f"Record: {output}" + (f", CSV: {csv_path}" if csv_path else "")
    return f"{head}; {body}; {errors}. {where}"


def canonical_command(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``budgie bench`` command line that reproduces this run, every option spelled out."""
    words = ["budgie", "bench", "--model", str(args.model), "--device", args.device]
    optional = (
        ("--dtype", args.dtype),
        ("--audio", args.audio),
        ("--manifest", args.manifest),
        ("--samples", args.samples),
    )
    words += [w for name, value in optional if value is not None for w in (name, str(value))]
    words += ["--warmups", str(args.warmups), "--repeats", str(args.repeats)]
    words += ["--batch-size", str(args.batch_size), "--backend", args.backend]
    words += ["--seed", str(args.seed)] + (["--throughput"] if args.throughput else [])
    words += ["-o", str(args.output)] + (["--csv", str(args.csv)] if args.csv else [])
    return tuple(words)


def run_bench(args: argparse.Namespace) -> int:
    from budgie.bench.runner import BenchOptions, run_benchmark, validate_options

    opts = BenchOptions(
        model=args.model,
        audio_dir=args.audio,
        manifest=args.manifest,
        samples=args.samples,
        warmups=args.warmups,
        repeats=args.repeats,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        throughput=args.throughput,
        seed=args.seed,
        command=canonical_command(args),
    )
    validate_options(opts)
    check_writable(args.output, "the record")
    if args.csv is not None:
        check_writable(args.csv, "the CSV")
    record = run_benchmark(opts)
    write_json(record, args.output)
    if args.csv is not None:
        write_csv(record, args.csv)
    reported: set[str] = set()
    for run in record["runs"]:
        if run["error"] is not None and run["sampleKey"] not in reported:
            reported.add(run["sampleKey"])
            print(f"budgie: warning: {run['sampleKey']}: {run['error']}", file=sys.stderr)
    print(summary_text(record, args.output, args.csv))
    return 0 if record["summary"]["ok"] else 1
