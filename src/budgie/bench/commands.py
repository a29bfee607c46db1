"""``budgie analyze`` and ``budgie compare``: read benchmark records, print reports.

Bad input (missing file, not JSON, not a benchmark, no valid runs, unreadable tokenizer) raises
BudgieError, which the CLI turns into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

FORMATS = ("text", "markdown", "json")


def run_analyze(args: argparse.Namespace) -> int:
    from budgie.bench.analyze import analyze, build_dataset
    from budgie.bench.records import load_run_file
    from budgie.bench.report import render_analysis

    run = load_run_file(args.run)
    analysis = analyze(run, tokenizer=args.tokenizer)
    if args.plots:
        from budgie.bench.plots import write_plots

        written = write_plots(build_dataset(run, args.tokenizer), analysis, args.plots)
        analysis["plots"] = [str(p) for p in written]
    sys.stdout.write(render_analysis(analysis, args.format))
    if args.plots and args.format != "json":
        print(f"\nPlots written to {args.plots}: " + ", ".join(analysis["plots"]))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from budgie.bench.compare import compare, render_compare
    from budgie.bench.records import load_run_file

    result = compare(load_run_file(args.a), load_run_file(args.b))
    sys.stdout.write(render_compare(result, args.format))
    return 0


def register(subparsers: Any) -> None:
    """Add ``analyze`` and ``compare`` to budgie's argparse subcommands."""
    p = subparsers.add_parser(
        "analyze",
        help="analyse a benchmark record file (Budgie or parakeet.js)",
        description="Phase statistics, shares, fits, RTF, buckets, token cost and "
        "recommendations for one benchmark run file.",
    )
    p.add_argument("run", metavar="RUN.json", help="benchmark record file")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    p.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="SentencePiece model to estimate token counts when the file has none",
    )
    p.set_defaults(func=run_analyze)

    c = subparsers.add_parser(
        "compare",
        help="compare two benchmark record files",
        description="Side-by-side phase means, p50s, B/A ratios, shares and RTF, on the "
        "samples both files share and overall.",
    )
    c.add_argument("a", metavar="A.json", help="baseline run file")
    c.add_argument("b", metavar="B.json", help="candidate run file")
    c.add_argument("--format", choices=FORMATS, default="text", help="output format")
    c.set_defaults(func=run_compare)
