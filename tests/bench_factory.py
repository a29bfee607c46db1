"""Helpers for the analyzer/comparer tests: the real fixture's path and hand-made run files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from budgie.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
PARAKEET_JS = FIXTURES / "parakeet-benchmark-1772221557947.json"
TOKENIZER = FIXTURES / "tokenizer-v3.model"


def budgie_run(
    duration: float,
    decode: float,
    *,
    preprocess: float = 1.0,
    encode: float = 2.0,
    tokenize: float = 0.0,
    total: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One run in Budgie's format; ``extra`` keys go into ``metrics`` when they are counts."""
    metric_keys = {
        "tokens",
        "decoder_steps",
        "encoder_frames",
        "batch_size",
        "load_audio_ms",
        "rtf",
    }
    metrics: dict[str, Any] = {
        "preprocess_ms": preprocess,
        "encode_ms": encode,
        "decode_ms": decode,
        "tokenize_ms": tokenize,
        "total_ms": preprocess + encode + decode + tokenize if total is None else total,
    }
    run: dict[str, Any] = {"audioDurationSec": duration, "metrics": metrics, "error": None}
    for key, value in extra.items():
        (metrics if key in metric_keys else run)[key] = value
    return run


def write_runs(path: Path, runs: list[Any], **top: Any) -> Path:
    """A run file with the shared top-level keys; NaN is written as the JSON extension NaN."""
    data = {
        "generatedAt": "2026-01-01T00:00:00Z",
        "settings": {"budgie_version": "test"},
        "hardwareProfile": {},
        "hardwareSummary": {},
        "runs": runs,
        **top,
    }
    path.write_text(json.dumps(data))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``budgie ARGS``."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def strict_json(text: str) -> Any:
    """json.loads that fails on NaN/Infinity, which standard JSON does not allow."""

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=reject)
