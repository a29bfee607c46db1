"""``budgie`` command line: one subcommand per module, user errors as one line and exit code 2.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the parser default. This file only wires them together.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from budgie.errors import BudgieError

COMMAND_MODULES = (
    "budgie.commands.transcribe",
    "budgie.commands.synth",
    "budgie.commands.export",
    "budgie.bench.commands",
    "budgie.bench.run_command",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="budgie", description="Fast Parakeet TDT speech recognition that measures itself."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command still under construction
        module.register(subparsers)
    return parser


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings (e.g. a truncated WAV) as one line, without Python's source-line echo."""
    print(f"budgie: warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BudgieError as exc:
        print(f"budgie: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("budgie: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
