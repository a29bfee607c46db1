"""``budgie bench`` as a library: transcribe a sample set, return a parakeet.js-compatible record.

The record is a superset of parakeet.js's benchmark export (top level ``generatedAt``,
``settings``, ``hardwareProfile``, ``hardwareSummary``, ``runs[]``), so ``budgie analyze`` and
``budgie compare`` read Budgie and parakeet.js files alike (fields: ``build_settings``,
``run_record``, ``transcript_metrics``, ``build_summary``; machine facts: ``hardware.py``).

Two modes:

- latency (default): samples are transcribed in input order, ``batch_size`` at a time, one
  ``Model.transcribe`` call per chunk, with per-phase CUDA synchronisation, so each phase figure
  is the time its work took (``settings.phaseSync`` is true);
- throughput: one call per repeat over all samples, which the pipeline batches by length, with
  no per-phase synchronisation (``phaseSync`` false: only ``total_ms`` and the top-level
  ``summary`` wall clock are meaningful).

Warm-up passes (untimed) transcribe the first ``batch_size`` samples before timing. A run is
``warm: false`` (cold) when it belongs to the first batch computed after the model was loaded,
which only happens without warm-ups. A sample that fails (unreadable file, too long, a runtime
error in its batch) becomes a run with ``metrics: null`` and ``error`` set; the others go on.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import budgie
from budgie import batching
from budgie.api import DEFAULT_MODEL
from budgie.batching import input_order, input_windows
from budgie.bench.audioset import default_clips, load_manifest, write_clips
from budgie.bench.hardware import device_label, hardware_profile, hardware_summary, utc_now
from budgie.bench.wer import edit_distance, normalize_words, word_error_rate
from budgie.errors import BudgieError
from budgie.pipeline import Model, Result
from budgie.progress import progress_bar
from budgie.results import Transcript, TranscriptionError

DEFAULT_SAMPLES = 20
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".webm", ".mp4", ".aif", ".aiff"}
)
DTYPE_LABELS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
MS_DIGITS = 3  # microseconds: finer than any timer noise, short enough to read
RUN_SETTINGS = (  # settings that parakeet.js repeats in every run
    "modelKey",
    "backend",
    "encoderQuant",
    "decoderQuant",
    "preprocessor",
    "preprocessorBackend",
)
RUN_HARDWARE = {  # run key -> hardwareSummary key, as parakeet.js repeats them in every run
    "hardwareCpu": "cpuLabel",
    "hardwareGpu": "gpuLabel",
    "hardwareGpuModel": "gpuModelLabel",
    "hardwareGpuCores": "gpuCoresLabel",
    "hardwareVram": "vramLabel",
    "hardwareMemory": "systemMemoryLabel",
    "hardwareWebgpu": "webgpuLabel",
}


def _load_torch(model: str, device: str, dtype: str | None) -> Model:
    from budgie.api import load_model

    return load_model(model, device=device, dtype=dtype, backend="torch")


def _load_onnx(model: str, device: str, dtype: str | None) -> Model:
    from budgie.api import load_model

    return load_model(
        model, device="cpu" if device == "auto" else device, dtype=dtype, backend="onnx"
    )


BACKENDS: dict[str, Callable[[str, str, str | None], Model]] = {
    "torch": _load_torch,
    "onnx": _load_onnx,
}
"""Backend name -> loader(model, device, dtype)."""


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark and how; mirrors ``budgie bench``'s options."""

    model: str = DEFAULT_MODEL
    audio_dir: Path | None = None
    manifest: Path | None = None
    samples: int | None = None
    warmups: int = 1
    repeats: int = 1
    batch_size: int = 1
    device: str = "auto"
    dtype: str | None = None
    backend: str = "torch"
    throughput: bool = False
    seed: int = 0
    command: tuple[str, ...] = ()
    progress: bool = True


@dataclass(frozen=True)
class BenchSample:
    """One input: ``key`` names it in records (clip name, or path relative to its dir/manifest)."""

    key: str
    path: Path
    reference: str | None
    reference_exact: bool | None = None
    duration_s: float | None = None
    is_clip: bool = False


@dataclass
class _Timed:
    """What one timed ``transcribe`` call produced, before it becomes runs."""

    rows: list[int]
    results: list[Result]
    started: str
    finished: str
    wall_s: float
    repeat: int
    cold_rows: set[int] = field(default_factory=set)


def validate_options(opts: BenchOptions) -> None:
    """Reject impossible settings before anything is loaded (one-line BudgieError)."""
    if opts.backend not in BACKENDS:
        raise BudgieError(
            f"unknown backend {opts.backend!r} (available: {', '.join(sorted(BACKENDS))})"
        )
    if opts.audio_dir is not None and opts.manifest is not None:
        raise BudgieError("use either --audio or --manifest, not both")
    for name, value, low in (
        ("--samples", opts.samples, 1),
        ("--warmups", opts.warmups, 0),
        ("--repeats", opts.repeats, 1),
        ("--batch-size", opts.batch_size, 1),
    ):
        if value is not None and value < low:
            raise BudgieError(f"{name} must be >= {low}, got {value}")


def _relative_key(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def audio_dir_samples(directory: Path) -> list[BenchSample]:
    """Audio files directly in ``directory`` (common extensions), sorted by name."""
    if not directory.exists():
        raise BudgieError(f"{directory}: audio directory not found")
    if not directory.is_dir():
        raise BudgieError(f"{directory}: not a directory (--audio takes a directory)")
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
    if not files:
        exts = ", ".join(sorted(AUDIO_EXTENSIONS))
        raise BudgieError(f"{directory}: no audio files ({exts})")
    return [BenchSample(p.name, p.resolve(), None) for p in files]


def manifest_samples(manifest: Path) -> list[BenchSample]:
    base = manifest.parent
    return [
        BenchSample(_relative_key(path, base), path.resolve(), text)
        for path, text in load_manifest(manifest)
    ]


def default_samples(n: int, seed: int, workdir: Path) -> list[BenchSample]:
    """The offline default clips, written as WAV files so ``load_audio`` reads real files."""
    clips = default_clips(n, seed)
    paths = write_clips(clips, workdir)
    return [
        BenchSample(c.name, p, c.reference, c.reference_exact, c.duration_s, is_clip=True)
        for c, p in zip(clips, paths, strict=True)
    ]


def collect_samples(opts: BenchOptions, workdir: Path) -> tuple[list[BenchSample], dict[str, Any]]:
    """The samples to benchmark and a description of where they came from (for ``settings``)."""
    if opts.audio_dir is not None:
        samples = audio_dir_samples(opts.audio_dir)
        source: dict[str, Any] = {"kind": "directory", "path": str(opts.audio_dir)}
    elif opts.manifest is not None:
        samples = manifest_samples(opts.manifest)
        source = {"kind": "manifest", "path": str(opts.manifest)}
    else:
        samples = default_samples(opts.samples or DEFAULT_SAMPLES, opts.seed, workdir)
        source = {"kind": "default", "seed": opts.seed}
    if opts.samples is not None:
        samples = samples[: opts.samples]
    return samples, source


def dtype_label(dtype: torch.dtype) -> str:
    return DTYPE_LABELS.get(dtype, str(dtype).removeprefix("torch."))


def _similarity(first: str, text: str) -> float:
    """1 - word edit distance / longer length: how close a repeat is to the first transcript."""
    a, b = normalize_words(first), normalize_words(text)
    longest = max(len(a), len(b))
    return 1.0 - edit_distance(a, b) / longest if longest else 1.0


def transcript_metrics(result: Transcript) -> dict[str, Any]:
    """parakeet.js's metrics (ms and rtf = audio s / processing s from total_ms) plus counts."""
    t = result.timings
    rtf = result.duration_s * 1000.0 / t.total_ms if t.total_ms > 0 else None
    return {
        "preprocess_ms": round(t.preprocess_ms, MS_DIGITS),
        "encode_ms": round(t.encode_ms, MS_DIGITS),
        "decode_ms": round(t.decode_ms, MS_DIGITS),
        "tokenize_ms": round(t.tokenize_ms, MS_DIGITS),
        "total_ms": round(t.total_ms, MS_DIGITS),
        "rtf": None if rtf is None else round(rtf, 4),
        "load_audio_ms": round(t.load_audio_ms, MS_DIGITS),
        "compute_ms": round(t.total_ms - t.load_audio_ms, MS_DIGITS),
        "tokens": len(result.tokens),
        "decoder_steps": result.decoder_steps,
        "encoder_frames": result.encoder_frames,
        "batch_size": result.batch_size,
    }


def run_record(
    ctx: dict[str, Any],
    sample: BenchSample,
    row: int,
    timed: _Timed,
    result: Result,
    first_texts: dict[int, str],
) -> dict[str, Any]:
    """One element of ``runs``: parakeet.js's run keys, then Budgie's (``wer``, ``warm``, ...)."""
    ok = isinstance(result, Transcript)
    text = result.text if isinstance(result, Transcript) else None
    if text is not None:
        first_texts.setdefault(row, text)
    first = first_texts.get(row)
    duration = result.duration_s if isinstance(result, Transcript) else sample.duration_s
    wer = None
    if text is not None and sample.reference is not None:
        wer = word_error_rate(sample.reference, text)
    error = None
    if isinstance(result, TranscriptionError):
        error = result.error
    return {
        "id": f"{ctx['batchId']}-{sample.key}-run-{timed.repeat}",
        "batchId": ctx["batchId"],
        "sampleKey": sample.key,
        "rowIndex": row,
        "repeatIndex": timed.repeat,
        "audioDurationSec": None if duration is None else round(duration, 6),
        "referenceText": sample.reference,
        "transcription": text,
        "exactMatchToFirst": None if text is None or first is None else text == first,
        "similarityToFirst": None if text is None or first is None else _similarity(first, text),
        "metrics": transcript_metrics(result) if isinstance(result, Transcript) else None,
        "error": error,
        **ctx["runFields"],
        "startedAt": timed.started,
        "finishedAt": timed.finished,
        "sample": sample.key,
        "audioPath": None if sample.is_clip else str(sample.path),
        "warm": (row not in timed.cold_rows) if ok else None,
        "wer": wer,
        "referenceExact": sample.reference_exact,
    }


def _cold_rows(
    rows: list[int], paths: list[Path], results: list[Result], batch_size: int
) -> set[int]:
    """Rows of the first batch the model computed: the inputs of the pipeline's first window
    (in its input order) that loaded, sorted by length within the window when batched."""
    order = input_order([str(path) for path in paths], batch_size)
    first = {order[i] for i in input_windows(len(rows), batch_size)[0]} if rows else set()
    done = [
        (row, r)
        for index, (row, r) in enumerate(zip(rows, results, strict=True))
        if index in first and isinstance(r, Transcript)
    ]
    if batch_size > 1:
        done.sort(key=lambda item: item[1].duration_s, reverse=batching.LONGEST_FIRST)
    return {row for row, _ in done[:batch_size]}


def _transcribe(
    model: Model, paths: list[Path], batch_size: int, progress: Callable[[int], None]
) -> list[Result]:
    """``Model.transcribe``, with a runtime failure (e.g. CUDA out of memory) as error records."""
    try:
        return model.transcribe(list(map(str, paths)), batch_size=batch_size, progress=progress)
    except RuntimeError as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return [TranscriptionError(str(p), message) for p in paths]


def warm_up(model: Model, samples: Sequence[BenchSample], opts: BenchOptions) -> bool:
    """Untimed passes over the first batch; True when at least one transcription succeeded."""
    paths = [s.path for s in samples[: opts.batch_size]]
    succeeded = False
    for _ in range(opts.warmups):
        results = _transcribe(model, paths, opts.batch_size, lambda done: None)
        succeeded = succeeded or any(isinstance(r, Transcript) for r in results)
    return succeeded


def _offset(advance: Callable[[int], None], base: int) -> Callable[[int], None]:
    """A progress callback for one call, shifted by the runs finished before it."""
    return lambda done: advance(base + done)


def timed_passes(
    model: Model, samples: Sequence[BenchSample], opts: BenchOptions, cold: bool
) -> list[_Timed]:
    """Every timed call: ``repeats`` passes, in chunks of ``batch_size`` (latency) or whole."""
    chunk = len(samples) if opts.throughput else opts.batch_size
    total = len(samples) * opts.repeats
    calls: list[_Timed] = []
    with progress_bar(total, "benchmarking", enabled=opts.progress) as advance:
        finished = 0
        for repeat in range(1, opts.repeats + 1):
            for start in range(0, len(samples), chunk):
                rows = list(range(start, min(start + chunk, len(samples))))
                started, t0 = utc_now(), time.perf_counter()
                results = _transcribe(
                    model,
                    [samples[i].path for i in rows],
                    opts.batch_size,
                    _offset(advance, finished),
                )
                wall = time.perf_counter() - t0
                timed = _Timed(rows, results, started, utc_now(), wall, repeat)
                if cold:
                    paths = [samples[i].path for i in rows]
                    timed.cold_rows = _cold_rows(rows, paths, results, opts.batch_size)
                    cold = not timed.cold_rows
                calls.append(timed)
                finished += len(rows)
                advance(finished)
    return calls


def build_settings(
    opts: BenchOptions, model: Model, n_samples: int, source: dict[str, Any]
) -> dict[str, Any]:
    """parakeet.js's settings keys where they have a meaning here, plus Budgie's."""
    dtype = dtype_label(model.dtype)
    return {
        "modelKey": model.name or opts.model,
        "modelFileHash": model.file_hash or None,
        "backend": opts.backend,
        "device": device_label(model.device),
        "dtype": dtype,
        "encoderQuant": dtype,
        "decoderQuant": "fp32",
        "preprocessor": f"nemo{model.config.preprocessor.features}",
        "preprocessorBackend": opts.backend,
        "cpuThreads": torch.get_num_threads(),
        "threads": {"intraop": torch.get_num_threads(), "interop": torch.get_num_interop_threads()},
        "batchSize": opts.batch_size,
        "warmups": opts.warmups,
        "repeatCount": opts.repeats,
        "sampleCount": n_samples,
        "offset": 0,
        "randomize": False,
        "randomSeed": str(opts.seed),
        "audioSource": source,
        "mode": "throughput" if opts.throughput else "latency",
        "phaseSync": model.sync_phases,
        "budgieVersion": budgie.__version__,
        "command": list(opts.command),
    }


def build_summary(runs: list[dict[str, Any]], calls: list[_Timed], mode: str) -> dict[str, Any]:
    """Wall-clock totals of the timed calls and overall RTFx = audio seconds / wall seconds."""
    ok = [r for r in runs if r["metrics"] is not None]
    wall = sum(c.wall_s for c in calls)
    audio = sum(r["audioDurationSec"] for r in ok)
    totals = [r["metrics"]["total_ms"] for r in ok]
    return {
        "mode": mode,
        "runs": len(runs),
        "ok": len(ok),
        "errors": len(runs) - len(ok),
        "wallSec": round(wall, 6),
        "audioSec": round(audio, 6),
        "rtfx": round(audio / wall, 4) if wall > 0 and ok else None,
        "meanTotalMs": round(sum(totals) / len(totals), MS_DIGITS) if totals else None,
    }


def run_benchmark(opts: BenchOptions, model: Model | None = None) -> dict[str, Any]:
    """Run the benchmark ``opts`` describes and return the record (see the module docstring).

    ``model`` may be given already loaded (tests, notebooks); it is then used as is, except that
    its ``sync_phases`` follows the mode for the duration of the run.
    """
    validate_options(opts)
    with tempfile.TemporaryDirectory(prefix="budgie-bench-") as workdir:
        samples, source = collect_samples(opts, Path(workdir))
        if model is None:
            model = BACKENDS[opts.backend](opts.model, opts.device, opts.dtype)
        previous_sync = model.sync_phases
        model.sync_phases = not opts.throughput
        try:
            cold = not warm_up(model, samples, opts) if opts.warmups else True
            calls = timed_passes(model, samples, opts, cold)
            settings = build_settings(opts, model, len(samples), source)
        finally:
            model.sync_phases = previous_sync
    profile = hardware_profile(model.device)
    summary = hardware_summary(profile, model.device)
    ctx = {
        "batchId": f"bench-{int(time.time() * 1000)}",
        "runFields": {
            **{key: settings[key] for key in RUN_SETTINGS},
            **{key: summary[label] for key, label in RUN_HARDWARE.items()},
        },
    }
    first_texts: dict[int, str] = {}
    runs = [
        run_record(ctx, samples[row], row, call, result, first_texts)
        for call in calls
        for row, result in zip(call.rows, call.results, strict=True)
    ]
    return {
        "generatedAt": utc_now(),
        "settings": settings,
        "hardwareProfile": profile,
        "hardwareSummary": summary,
        "summary": build_summary(runs, calls, settings["mode"]),
        "runs": runs,
    }
