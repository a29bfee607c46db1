"""Benchmark run files: parakeet.js exports and Budgie's superset, loaded into typed records.

Both formats share the top level (``generatedAt``, ``settings``, ``hardwareProfile``,
``hardwareSummary``, ``runs[]``) and the per-run core (``audioDurationSec``, ``referenceText``,
``transcription``, ``metrics{preprocess_ms, encode_ms, decode_ms, tokenize_ms, total_ms, rtf}``).
Budgie adds counts and ``load_audio_ms`` in ``metrics`` and ``wer``, ``warm``, ``error``,
``sample`` per run. Unknown keys are ignored.

A file that is not a benchmark at all (not JSON, no ``runs`` list, no runs) raises
:class:`BudgieError`. A single bad run does not: it becomes an *error row* with a reason
(the run reported an error, ``metrics`` is null, or a timing is missing, negative, NaN or
infinite) and is excluded from every statistic, so one broken row never poisons the means.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgie.errors import BudgieError

PHASES: tuple[str, ...] = ("preprocess", "encode", "decode", "tokenize")
"""The phases whose sum is (about) ``total_ms``, in pipeline order."""

TIMING_KEYS: tuple[str, ...] = (*(f"{p}_ms" for p in PHASES), "total_ms")
COUNT_KEYS: tuple[str, ...] = ("tokens", "decoder_steps", "encoder_frames", "batch_size")
SAMPLE_KEYS: tuple[str, ...] = ("sample", "sampleKey", "file", "audio", "audioName", "audio_path")
"""Run fields that name the audio sample, most specific first (Budgie: ``sample``,
parakeet.js: ``sampleKey``)."""


@dataclass(frozen=True)
class Record:
    """One run of one sample. ``error`` is set (and the numbers unusable) for error rows."""

    index: int
    sample: str | None = None
    duration_s: float = math.nan
    reference: str | None = None
    transcription: str | None = None
    phases_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float = math.nan
    rtf: float | None = None
    rtf_recorded: bool = False
    load_audio_ms: float | None = None
    counts: dict[str, float] = field(default_factory=dict)
    wer: float | None = None
    warm: bool | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the record enters the statistics."""
        return self.error is None


@dataclass(frozen=True)
class RunFile:
    """A loaded benchmark file: header fields plus every record, error rows included."""

    name: str
    source: str
    generated_at: str | None
    settings: dict[str, Any]
    hardware_summary: dict[str, Any]
    records: list[Record]

    @property
    def valid(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    @property
    def errors(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    def require_valid(self) -> list[Record]:
        """The valid records; BudgieError when there are none (nothing can be computed)."""
        valid = self.valid
        if not valid:
            top = list(self.error_reasons().items())[:3]
            reasons = "; ".join(f"{k} ({v})" for k, v in top)
            raise BudgieError(f"{self.name}: no valid runs among {len(self.records)}: {reasons}")
        return valid

    def error_reasons(self) -> dict[str, int]:
        """Reason -> number of error rows, most frequent first."""
        counts = Counter(r.error for r in self.records if r.error is not None)
        return dict(counts.most_common())


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: object, label: str, required: bool) -> float | None:
    """A non-negative finite number, None when absent and optional; raises ValueError(reason)."""
    if value is None:
        if required:
            raise ValueError(f"{label} missing")
        return None
    if not _is_number(value):
        raise ValueError(f"{label} is not a number")
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        raise ValueError(f"{label} is NaN")
    if math.isinf(number):
        raise ValueError(f"{label} is infinite")
    if number < 0:
        raise ValueError(f"{label} is negative")
    return number


def _metric(metrics: dict[str, Any], key: str, required: bool = False) -> float | None:
    return _number(metrics.get(key), f"metrics.{key}", required)


def _sample_key(run: dict[str, Any]) -> str | None:
    for key in SAMPLE_KEYS:
        value = run.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return str(value)
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _run_error(run: dict[str, Any]) -> str | None:
    error = run.get("error")
    if error is None or error is False or error == "":
        return None
    message = error.get("message", error) if isinstance(error, dict) else error
    text = " ".join(str(message).split())
    return "run reported an error: " + (text[:60] + "..." if len(text) > 60 else text)


def parse_run(index: int, run: object) -> Record:
    """Turn one element of ``runs`` into a Record (an error row when it is unusable)."""
    if not isinstance(run, dict):
        return Record(index=index, error="run is not a JSON object")
    base: dict[str, Any] = {
        "index": index,
        "sample": _sample_key(run),
        "reference": _text(run.get("referenceText")),
        "transcription": _text(run.get("transcription")),
        "warm": run["warm"] if isinstance(run.get("warm"), bool) else None,
    }
    reason = _run_error(run)
    metrics = run.get("metrics")
    if reason is None and metrics is None:
        reason = "metrics is null"
    elif reason is None and not isinstance(metrics, dict):
        reason = "metrics is not a JSON object"
    if reason is not None:
        return Record(**base, error=reason)
    assert isinstance(metrics, dict)
    try:
        duration = _number(run.get("audioDurationSec"), "audioDurationSec", True) or 0.0
        if duration == 0:
            raise ValueError("audioDurationSec is zero")
        phases = {p: _metric(metrics, f"{p}_ms", True) or 0.0 for p in PHASES}
        total = _metric(metrics, "total_ms", True) or 0.0
        rtf = _metric(metrics, "rtf")
        load_audio = _metric(metrics, "load_audio_ms")
        counts = {k: v for k in COUNT_KEYS if (v := _metric(metrics, k)) is not None}
    except ValueError as exc:
        return Record(**base, error=str(exc))
    recorded = rtf is not None and rtf > 0
    if not recorded:
        rtf = duration * 1000.0 / total if total > 0 else None
    try:
        wer = _number(run.get("wer"), "wer", False)
    except ValueError:
        wer = None  # an unusable recorded WER does not invalidate the timings
    return Record(
        **base,
        duration_s=duration,
        phases_ms=phases,
        total_ms=total,
        rtf=rtf,
        rtf_recorded=recorded,
        load_audio_ms=load_audio,
        counts=counts,
        wer=wer,
    )


def _detect_source(settings: dict[str, Any], runs: list[Any]) -> str:
    budgie_keys = ("sample", "warm", "wer")
    if any(str(k).lower().startswith("budgie") for k in settings) or any(
        isinstance(r, dict) and any(k in r for k in budgie_keys) for r in runs[:50]
    ):
        return "budgie"
    return "parakeet.js"


def parse_run_file(data: object, name: str = "<input>") -> RunFile:
    """Validate the top-level shape and parse every run. Raises BudgieError for non-benchmarks."""
    if not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else f"a {type(data).__name__}"
        raise BudgieError(f"{name}: expected a benchmark object with a 'runs' list, got {kind}")
    if "runs" not in data:
        keys = ", ".join(sorted(map(str, data))[:8]) or "none"
        raise BudgieError(f"{name}: not a benchmark file: no 'runs' list (top-level keys: {keys})")
    runs = data["runs"]
    if not isinstance(runs, list):
        raise BudgieError(f"{name}: 'runs' must be a list, got {type(runs).__name__}")
    if not runs:
        raise BudgieError(f"{name}: 'runs' is empty: nothing to analyze")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    hardware = data.get("hardwareSummary") if isinstance(data.get("hardwareSummary"), dict) else {}
    generated = data.get("generatedAt")
    return RunFile(
        name=name,
        source=_detect_source(settings or {}, runs),
        generated_at=generated if isinstance(generated, str) else None,
        settings=settings or {},
        hardware_summary=hardware or {},
        records=[parse_run(i, run) for i, run in enumerate(runs)],
    )


def load_run_file(path: str | Path) -> RunFile:
    """Read and parse a benchmark JSON file; every failure is a one-line BudgieError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise BudgieError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise BudgieError(f"{p}: is a directory, expected a benchmark JSON file") from None
    except OSError as exc:
        raise BudgieError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise BudgieError(f"{p}: not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise BudgieError(
            f"{p}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise BudgieError(f"{p}: not a benchmark file (JSON nested too deeply)") from None
    return parse_run_file(data, str(p))
