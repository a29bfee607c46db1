"""The analysis of one benchmark file as a plain dict (the JSON output is exactly this dict).

Only valid records enter the statistics; error rows are counted in ``errors`` with their
reasons. Every number is unrounded here; rounding belongs to the renderers. Degenerate
inputs (one run, equal durations, zero totals) yield defined numbers plus a sentence in
``notes`` that says what they mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from budgie.bench import stats
from budgie.bench.recommend import recommendations
from budgie.bench.records import PHASES, RunFile
from budgie.bench.wer import wer_counts
from budgie.errors import BudgieError

FloatArray = stats.FloatArray

CHARS_PER_TOKEN = 2.7
"""Characters per token assumed without a tokenizer: parakeet-tdt-0.6b-v3's SentencePiece model
gives 2.69 on the parakeet.js fixture's transcriptions (clinical English)."""

SPEEDUPS = (2.0, 10.0)
WER_MAX_PAIRS = 10_000
"""Above this many distinct (reference, transcription) pairs, WER uses an evenly spaced subset."""


@dataclass(frozen=True)
class Dataset:
    """Column arrays of the valid records; what the statistics and the plots read."""

    duration: FloatArray
    ms: dict[str, FloatArray]  # ["load_audio" when every run has it,] the PHASES, "total"
    rtf: FloatArray  # NaN where a run has no RTF (total_ms 0 and no recorded rtf)
    rtf_recorded: bool
    tokens: FloatArray | None
    tokens_source: str  # "recorded" | "tokenizer" | "characters" | "none"
    steps: FloatArray | None
    batch: FloatArray | None  # utterances that shared each run's phase times
    n_errors: int

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases that share the total: Budgie's total_ms includes load_audio_ms."""
        return ("load_audio", *PHASES) if "load_audio" in self.ms else PHASES


def _complete(column: FloatArray) -> FloatArray | None:
    """The column when every valid run recorded it, else None."""
    return None if np.isnan(column).any() else column


def _load_tokenizer(path: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise BudgieError(f"{p}: tokenizer not found")
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(p))
    except (RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split())[:80]
        raise BudgieError(f"{p}: not a SentencePiece model ({reason})") from None


def estimate_tokens(texts: list[str], tokenizer: str | None) -> tuple[FloatArray, str]:
    """Token counts from transcriptions: SentencePiece pieces, else characters / CHARS_PER_TOKEN."""
    if tokenizer is not None:
        processor = _load_tokenizer(tokenizer)
        unique = sorted(set(texts))
        counts = dict(zip(unique, (len(ids) for ids in processor.encode(unique)), strict=True))
        return np.asarray([counts[t] for t in texts], dtype=np.float64), "tokenizer"
    chars = np.asarray([len(t.strip()) for t in texts], dtype=np.float64)
    return chars / CHARS_PER_TOKEN, "characters"


def build_dataset(run: RunFile, tokenizer: str | None = None) -> Dataset:
    """Columns of the valid runs; token counts recorded, or estimated from transcriptions."""
    run.require_valid()
    load_audio = _complete(run.optional["load_audio"])
    ms = {**({} if load_audio is None else {"load_audio": load_audio}), **run.ms}
    tokens = _complete(run.optional["tokens"])
    source = "recorded"
    if tokens is None:
        texts = run.transcription
        if all(t is not None for t in texts):
            tokens, source = estimate_tokens([t or "" for t in texts], tokenizer)
        else:
            source = "none"
    return Dataset(
        duration=run.duration,
        ms=ms,
        rtf=run.rtf,
        rtf_recorded=run.rtf_recorded,
        tokens=tokens,
        tokens_source=source,
        steps=_complete(run.optional["decoder_steps"]),
        batch=_complete(run.optional["batch_size"]),
        n_errors=len(run.errors),
    )


def _fit_dict(x: FloatArray, y: FloatArray) -> dict[str, float]:
    return asdict(stats.linear_fit(x, y))


def _buckets(duration: FloatArray, ms: dict[str, FloatArray]) -> list[dict[str, float | int]]:
    """2-second buckets ``floor(d/2)*2`` with decode and encode ranges (one sort, reduceat)."""
    lo = np.floor(duration / 2.0) * 2.0
    order = np.argsort(lo, kind="stable")
    lo_sorted = lo[order]
    starts = np.flatnonzero(np.r_[True, lo_sorted[1:] != lo_sorted[:-1]])
    counts = np.diff(np.r_[starts, lo_sorted.size])
    ranges = {}
    for phase in ("decode", "encode"):
        values = ms[phase][order]
        ranges[phase] = (np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts))
    return [
        {
            "lo": float(lo_sorted[s]),
            "hi": float(lo_sorted[s]) + 2.0,
            "count": int(counts[i]),
            "decode_min": float(ranges["decode"][0][i]),
            "decode_max": float(ranges["decode"][1][i]),
            "encode_min": float(ranges["encode"][0][i]),
            "encode_max": float(ranges["encode"][1][i]),
        }
        for i, s in enumerate(starts)
    ]


def _rtf(data: Dataset, notes: list[str]) -> dict[str, Any]:
    keep = ~np.isnan(data.rtf)
    if not keep.any():
        notes.append("No run has an RTF (every total_ms is 0 and none recorded one).")
        return dict.fromkeys(
            ("mean", "min", "max", "p50", "p95", "std", "slope", "intercept", "r2")
        )
    s = stats.summarize(data.rtf[keep])
    fit = stats.linear_fit(data.duration[keep], data.rtf[keep])
    return {
        "mean": s.mean,
        "min": s.min,
        "max": s.max,
        "p50": s.p50,
        "p95": s.p95,
        "std": s.std,
        "slope": fit.slope,
        "intercept": fit.intercept,
        "r2": fit.r2,
        "source": "recorded" if data.rtf_recorded else "computed",
    }


def _counts_section(
    counts: FloatArray, data: Dataset, source: str, notes: list[str]
) -> dict[str, Any]:
    decode = data.ms["decode"]
    total = float(np.sum(counts))
    section: dict[str, Any] = {
        "source": source,
        "estimated": source not in ("recorded",),
        "total": total,
        "mean": float(np.mean(counts)),
        "per_audio_s": total / float(np.sum(data.duration)),
        "decode_ms_per_count": float(np.sum(decode)) / total if total > 0 else None,
        "decode_fit": _fit_dict(counts, decode),
    }
    if total == 0:
        notes.append(f"Every {source} count is 0: no per-count decode cost can be computed.")
    return section


def _token_sections(data: Dataset, tokenizer: str | None, notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"tokens": None, "decoder_steps": None, "decode_fit2": None}
    if data.tokens is None:
        notes.append("No token counts and no transcriptions: decode cost per token is unknown.")
    else:
        tokens = _counts_section(data.tokens, data, data.tokens_source, notes)
        if data.tokens_source == "tokenizer":
            tokens["tokenizer"] = tokenizer
            notes.append(
                f"Token counts are ESTIMATED from the transcriptions with {tokenizer} "
                "(the benchmarked model's own tokenizer may split differently)."
            )
        elif data.tokens_source == "characters":
            tokens["chars_per_token"] = CHARS_PER_TOKEN
            notes.append(
                "Token counts are ESTIMATED from transcription length at "
                f"{CHARS_PER_TOKEN} characters per token (pass --tokenizer for piece counts)."
            )
        out["tokens"] = tokens
        fit2 = stats.linear_fit2(data.duration, data.tokens, data.ms["decode"])
        if fit2 is None:
            notes.append(
                "Two-variable decode fit skipped: duration and token count cannot be "
                "separated (fewer than 4 runs, a constant, or nearly collinear: |r| > 0.999)."
            )
        else:
            out["decode_fit2"] = {
                "per_audio_s": fit2.a,
                "per_token": fit2.b,
                "intercept": fit2.c,
                "r2": fit2.r2,
                "estimated": tokens["estimated"],
            }
    if data.steps is not None:
        out["decoder_steps"] = _counts_section(data.steps, data, "recorded", notes)
    return out


def _wer(run: RunFile, notes: list[str]) -> dict[str, Any] | None:
    """Corpus WER (word errors / reference words) over the runs that have both texts.

    Repeats of a sample share their pair and are computed once; when more than
    WER_MAX_PAIRS distinct pairs exist, an evenly spaced subset of runs is used and said so.
    """
    pairs = [
        (ref, hyp)
        for ref, hyp in zip(run.reference, run.transcription, strict=True)
        if ref is not None and hyp is not None and ref.strip()
    ]
    step = 1
    if len(set(pairs)) > WER_MAX_PAIRS:
        step = -(-len(pairs) // WER_MAX_PAIRS)
        notes.append(
            f"WER computed on 1 run in {step} ({len(pairs[::step])} of the {len(pairs)} runs "
            f"with a reference; more than {WER_MAX_PAIRS} distinct transcripts); timings use "
            "every run."
        )
    errors = words = 0
    for ref, hyp in pairs[::step]:
        counts = wer_counts(ref, hyp)
        errors, words = errors + counts.errors, words + counts.words
    if words:
        used = len(pairs[::step])
        return {"wer": errors / words, "errors": errors, "words": words, "n": used}
    recorded = run.wer[~np.isnan(run.wer)]
    if recorded.size:
        return {"wer": float(np.mean(recorded)), "n": int(recorded.size), "source": "recorded mean"}
    return None


def _amdahl(mean_ms: dict[str, float], total: float) -> dict[str, dict[str, float]]:
    """Mean total if one phase alone became k times faster (the rest unchanged)."""
    out = {}
    for phase, part in mean_ms.items():
        entry = {f"total_ms_if_{k:g}x": total - part * (1.0 - 1.0 / k) for k in SPEEDUPS}
        entry["total_ms_if_removed"] = total - part
        out[phase] = entry
    return out


def _rtfx(data: Dataset, audio_s: float, notes: list[str]) -> dict[str, float | None]:
    """Audio seconds per second spent in each phase, over the whole file.

    A run timed in a batch carries the whole batch's phase times, so each run's time is divided
    by its recorded batch_size: the sum is then the wall time actually spent.
    """
    batch = data.batch if data.batch is not None and (data.batch > 1).any() else None
    if batch is not None:
        notes.append(
            f"Runs were timed in batches of up to {int(np.max(batch))}: their phase times are "
            "the batch's, so per-run times and RTF describe latency per batch; RTFx divides "
            "each run's time by its batch_size to give throughput."
        )
    out: dict[str, float | None] = {}
    for name, values in data.ms.items():
        spent = float(np.sum(values if batch is None else values / batch)) / 1000.0
        out[name] = audio_s / spent if spent > 0 else None
    if any(v is None for v in out.values()):
        notes.append("RTFx is null for phases that took 0 ms in every run (infinitely fast).")
    return out


def _degenerate_notes(run: RunFile, data: Dataset, notes: list[str]) -> None:
    n = data.duration.size
    if data.n_errors:
        reasons = ", ".join(f"{k}: {v}" for k, v in run.error_reasons().items())
        notes.append(f"{data.n_errors} error row(s) excluded from every statistic ({reasons}).")
    if n == 1:
        notes.append(
            "Only one valid run: std is 0, every percentile is that run, and no fit is "
            "possible (slopes reported as 0, R² as 0)."
        )
    elif float(np.min(data.duration)) == float(np.max(data.duration)):
        notes.append(
            f"All durations are equal ({data.duration[0]:g} s): fits against duration have "
            "no slope (reported as 0 with R² 0); the intercept is the mean."
        )
    if float(np.mean(data.ms["total"])) == 0:
        notes.append("Mean total_ms is 0: shares of total are undefined (null).")


def analyze(run: RunFile, tokenizer: str | None = None) -> dict[str, Any]:
    """The full analysis dict of one file (see docs/analyzer.md for every key)."""
    data = build_dataset(run, tokenizer)
    notes: list[str] = []
    _degenerate_notes(run, data, notes)
    phases = {name: asdict(stats.summarize(values)) for name, values in data.ms.items()}
    mean_total = phases["total"]["mean"]
    share = {p: (phases[p]["mean"] / mean_total if mean_total else None) for p in data.phases}
    audio_s = float(np.sum(data.duration))
    rtfx = _rtfx(data, audio_s, notes)
    result: dict[str, Any] = {
        "file": run.name,
        "source": run.source,
        "generated_at": run.generated_at,
        "n": int(data.duration.size),
        "errors": data.n_errors,
        "error_reasons": run.error_reasons(),
        "cold": sum(1 for w in run.warm if w is False),
        "duration_s": {
            "min": float(np.min(data.duration)),
            "max": float(np.max(data.duration)),
            "mean": float(np.mean(data.duration)),
            "total": audio_s,
        },
        "phases": phases,
        "share": share,
        "fits": {name: _fit_dict(data.duration, v) for name, v in data.ms.items()},
        "rtf": _rtf(data, notes),
        "rtfx": rtfx,
        "buckets": _buckets(data.duration, data.ms),
        "bottleneck": sorted(data.phases, key=lambda p: -(share[p] or 0.0)),
        "amdahl": _amdahl({p: phases[p]["mean"] for p in data.phases}, mean_total),
    }
    result.update(_token_sections(data, tokenizer, notes))
    result["wer"] = _wer(run, notes)
    if result["cold"]:
        notes.append(f"{result['cold']} run(s) are marked cold (warm = false) and are included.")
    result["recommendations"] = recommendations(result)
    result["notes"] = notes
    return result
