"""Benchmark run files: parakeet.js exports and Budgie's superset, loaded into typed columns.

Both formats share the top level (``generatedAt``, ``settings``, ``hardwareProfile``,
``hardwareSummary``, ``runs[]``) and the per-run core (``audioDurationSec``, ``referenceText``,
``transcription``, ``metrics{preprocess_ms, encode_ms, decode_ms, tokenize_ms, total_ms, rtf}``).
Budgie adds counts and ``load_audio_ms`` in ``metrics`` and ``wer``, ``warm``, ``error``,
``sample`` per run. Unknown keys are ignored.

A file that is not a benchmark at all (not JSON, no ``runs`` list, no runs) raises
:class:`BudgieError`. A single bad run does not: it becomes an *error row* with a reason
(the run reported an error, ``metrics`` is null, or a number is missing, not a number,
negative, NaN or infinite) and is excluded from every statistic, so one broken row never
poisons the means. The valid rows are stored as numpy columns: files of 100,000 runs are
validated column by column instead of value by value.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from budgie.errors import BudgieError

FloatArray = npt.NDArray[np.float64]

PHASES: tuple[str, ...] = ("preprocess", "encode", "decode", "tokenize")
"""The phases whose sum is (about) ``total_ms``, in pipeline order."""

COUNT_KEYS: tuple[str, ...] = ("tokens", "decoder_steps", "encoder_frames", "batch_size")
SAMPLE_KEYS: tuple[str, ...] = ("sample", "sampleKey", "file", "audio", "audioName", "audio_path")
"""Run fields that name the audio sample, most specific first (Budgie: ``sample``,
parakeet.js: ``sampleKey``)."""

OPTIONAL_FIELDS: dict[str, str] = {"load_audio": "load_audio_ms", **{k: k for k in COUNT_KEYS}}
"""Optional metrics: column name -> key in ``metrics``."""

_NUMBER_TYPES = frozenset({int, float})


@dataclass(frozen=True)
class RunFile:
    """A loaded benchmark file: header fields, error rows, and the valid rows as columns.

    ``ms`` has the PHASES and ``total``; ``load_audio_ms`` and the counts live in ``optional``
    with NaN where a run did not record them; ``rtf`` is the recorded value, else computed as
    audio ms / total ms (NaN when total is 0).
    """

    name: str
    source: str
    generated_at: str | None
    settings: dict[str, Any]
    hardware_summary: dict[str, Any]
    n_rows: int
    errors: list[tuple[int, str]]
    duration: FloatArray
    ms: dict[str, FloatArray]
    optional: dict[str, FloatArray]
    rtf: FloatArray
    rtf_recorded: bool
    wer: FloatArray
    warm: list[bool | None]
    sample: list[str | None]
    reference: list[str | None]
    transcription: list[str | None]

    @property
    def n(self) -> int:
        """Number of valid runs."""
        return int(self.duration.size)

    def error_reasons(self) -> dict[str, int]:
        """Reason -> number of error rows, most frequent first."""
        return dict(Counter(reason for _, reason in self.errors).most_common())

    def require_valid(self) -> None:
        """BudgieError when no run is valid (nothing can be computed)."""
        if self.n == 0:
            top = list(self.error_reasons().items())[:3]
            reasons = "; ".join(f"{k} ({v})" for k, v in top)
            raise BudgieError(f"{self.name}: no valid runs among {self.n_rows}: {reasons}")


def _run_error(run: dict[str, Any]) -> str | None:
    error = run.get("error")
    if error is None or error is False or error == "":
        return None
    message = error.get("message", error) if isinstance(error, dict) else error
    text = " ".join(str(message).split())
    return "run reported an error: " + (text[:60] + "..." if len(text) > 60 else text)


def _column(values: list[object], label: str, required: bool) -> tuple[FloatArray, dict[int, str]]:
    """Floats (NaN where absent) and the reason for every row whose value is unusable.

    Fast path: when every value is an int or float, one numpy conversion and vectorised checks.
    """
    problems: dict[int, str] = {}
    present: npt.NDArray[np.bool_] | None = None
    arr: FloatArray | None = None
    if set(map(type, values)) <= _NUMBER_TYPES:
        try:
            arr = np.array(values, dtype=np.float64)
        except OverflowError:
            arr = None
    if arr is None:
        arr = np.full(len(values), np.nan)
        present = np.zeros(len(values), dtype=bool)
        for i, value in enumerate(values):
            if value is None:
                if required:
                    problems[i] = f"{label} missing"
            elif type(value) in _NUMBER_TYPES:
                try:
                    arr[i] = float(value)  # type: ignore[arg-type]
                    present[i] = True
                except OverflowError:
                    problems[i] = f"{label} is infinite"
            else:
                problems[i] = f"{label} is not a number"
    with np.errstate(invalid="ignore"):
        checks = (
            (np.isnan(arr) if present is None else np.isnan(arr) & present, "is NaN"),
            (np.isinf(arr), "is infinite"),
            (arr < 0, "is negative"),
        )
    for mask, what in checks:
        for i in np.flatnonzero(mask).tolist():
            problems.setdefault(i, f"{label} {what}")
    return arr, problems


def _sample_key(run: dict[str, Any]) -> str | None:
    for key in SAMPLE_KEYS:
        value = run.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return str(value)
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _split_rows(runs: list[Any]) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, str]]]:
    """Runs that carry a metrics object, their indices, and the row-level error rows."""
    candidates, index, errors = [], [], []
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            errors.append((i, "run is not a JSON object"))
            continue
        reason = _run_error(run)
        metrics = run.get("metrics")
        if reason is None and not isinstance(metrics, dict):
            reason = "metrics is null" if metrics is None else "metrics is not a JSON object"
        if reason is None:
            candidates.append(run)
            index.append(i)
        else:
            errors.append((i, reason))
    return candidates, index, errors


def _parse_runs(runs: list[Any]) -> dict[str, Any]:
    """Columns of the valid runs plus the (index, reason) list of every error row."""
    candidates, index, errors = _split_rows(runs)
    metrics = [run["metrics"] for run in candidates]
    reasons: dict[int, str] = {}

    def column(values: list[object], label: str, required: bool) -> FloatArray:
        arr, problems = _column(values, label, required)
        for i, reason in problems.items():
            reasons.setdefault(i, reason)
        return arr

    duration = column([r.get("audioDurationSec") for r in candidates], "audioDurationSec", True)
    for i in np.flatnonzero(duration == 0).tolist():
        reasons.setdefault(i, "audioDurationSec is zero")
    ms = {p: column([m.get(f"{p}_ms") for m in metrics], f"metrics.{p}_ms", True) for p in PHASES}
    ms["total"] = column([m.get("total_ms") for m in metrics], "metrics.total_ms", True)
    optional = {
        key: column([m.get(name) for m in metrics], f"metrics.{name}", False)
        for key, name in OPTIONAL_FIELDS.items()
    }
    rtf = column([m.get("rtf") for m in metrics], "metrics.rtf", False)
    wer, _ = _column([r.get("wer") for r in candidates], "wer", False)  # bad WER: ignored

    keep = np.ones(len(candidates), dtype=bool)
    keep[list(reasons)] = False
    errors += [(index[i], reason) for i, reason in reasons.items()]
    valid = [run for run, k in zip(candidates, keep.tolist(), strict=True) if k]
    rtf = rtf[keep]
    recorded = ~np.isnan(rtf) & (rtf > 0)
    total, dur = ms["total"][keep], duration[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        computed = np.where(total > 0, dur * 1000.0 / total, np.nan)
    return {
        "errors": sorted(errors),
        "duration": dur,
        "ms": {k: v[keep] for k, v in ms.items()},
        "optional": {k: v[keep] for k, v in optional.items()},
        "rtf": np.where(recorded, rtf, computed),
        "rtf_recorded": bool(recorded.all()),
        "wer": wer[keep],
        "warm": [r.get("warm") if isinstance(r.get("warm"), bool) else None for r in valid],
        "sample": [_sample_key(r) for r in valid],
        "reference": [_text(r.get("referenceText")) for r in valid],
        "transcription": [_text(r.get("transcription")) for r in valid],
    }


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
    settings = data.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    hardware = data.get("hardwareSummary")
    generated = data.get("generatedAt")
    return RunFile(
        name=name,
        source=_detect_source(settings, runs),
        generated_at=generated if isinstance(generated, str) else None,
        settings=settings,
        hardware_summary=hardware if isinstance(hardware, dict) else {},
        n_rows=len(runs),
        **_parse_runs(runs),
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
