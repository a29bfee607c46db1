"""``budgie bench``: the record's shape (a superset of parakeet.js's), its internal consistency,
that ``budgie analyze`` reads it, error runs, CSV, throughput mode, and bad input.

One tiny synthetic checkpoint is written per module; the runs use few, short clips. Expected
values come from elsewhere than the runner: parakeet.js's real export (its keys), the clip set
(durations, references), the encoder's length formula (frames), wer.py (WER).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from bench_factory import PARAKEET_JS, run_cli, strict_json
from budgie.api import load_model
from budgie.audio import SAMPLE_RATE
from budgie.bench import hardware
from budgie.bench.audioset import default_clips, write_clips
from budgie.bench.run_command import CSV_FIELDS, write_json
from budgie.bench.runner import BenchOptions, run_benchmark
from budgie.bench.wer import word_error_rate
from budgie.pipeline import Model
from budgie.synth import synth_nemo

PHASE_KEYS = ("load_audio_ms", "preprocess_ms", "encode_ms", "decode_ms", "tokenize_ms")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_nemo(tmp_path_factory.mktemp("model") / "tiny.nemo", "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> Model:
    return load_model(tiny_path, device="cpu")


@pytest.fixture(scope="module")
def parakeet_js() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PARAKEET_JS.read_text())
    return data


@pytest.fixture(scope="module")
def record(tiny: Model, tiny_path: Path) -> dict[str, Any]:
    """3 default clips x 2 repeats after 1 warm-up, latency mode."""
    opts = BenchOptions(model=str(tiny_path), samples=3, warmups=1, repeats=2, progress=False)
    return run_benchmark(opts, model=tiny)


def short_clips(tmp_path: Path, n: int = 2) -> Path:
    """``n`` short default-style clips (2-4 s) with their manifest; returns the manifest path."""
    write_clips(default_clips(n, seed=3, min_s=2.0, max_s=4.0), tmp_path / "clips")
    return tmp_path / "clips" / "manifest.jsonl"


def encoder_frames(n_samples: int) -> int:
    """Parakeet's lengths: N // 160 feature frames, then floor((L - 1) / 2) + 1 three times."""
    length = n_samples // 160
    for _ in range(3):
        length = (length - 1) // 2 + 1
    return length


def test_top_level_and_run_keys_cover_parakeet_js(
    record: dict[str, Any], parakeet_js: dict[str, Any]
) -> None:
    assert set(parakeet_js) <= set(record)
    assert set(parakeet_js["hardwareSummary"]) <= set(record["hardwareSummary"])
    js_run = parakeet_js["runs"][0]
    for run in record["runs"]:
        assert set(js_run) <= set(run), set(js_run) - set(run)
        assert set(js_run["metrics"]) - {"preprocessor_backend", "mel_cache"} <= set(run["metrics"])
    for key in ("modelKey", "backend", "sampleCount", "repeatCount", "warmups", "encoderQuant"):
        assert key in record["settings"]
    strict_json(json.dumps(record))  # no NaN or Infinity anywhere


def test_settings_and_hardware(record: dict[str, Any], tiny_path: Path) -> None:
    s = record["settings"]
    assert s["modelKey"] == str(tiny_path)
    assert re.fullmatch(r"[0-9a-f]{64}", s["modelFileHash"])
    assert (s["backend"], s["device"], s["dtype"]) == ("torch", "cpu", "fp32")
    assert (s["batchSize"], s["warmups"], s["repeatCount"], s["sampleCount"]) == (1, 1, 2, 3)
    assert s["phaseSync"] is True and s["mode"] == "latency"
    assert s["threads"]["intraop"] >= 1 and s["threads"]["interop"] >= 1
    assert s["audioSource"] == {"kind": "default", "seed": 0}
    h = record["hardwareProfile"]
    assert h["cpu"]["logicalCores"] >= 1 and h["memory"]["totalBytes"] > 2**28
    assert h["torch"] and h["python"] and h["budgie"] == s["budgieVersion"]
    assert ISO_UTC.match(record["generatedAt"]) and ISO_UTC.match(h["capturedAt"])


def test_runs_are_consistent(record: dict[str, Any]) -> None:
    clips = default_clips(3, seed=0)
    runs = record["runs"]
    assert [(r["rowIndex"], r["repeatIndex"]) for r in runs] == [
        (row, rep) for rep in (1, 2) for row in range(3)
    ]
    assert len({r["id"] for r in runs}) == len(runs)
    for run in runs:
        clip = clips[run["rowIndex"]]
        m = run["metrics"]
        assert run["error"] is None and run["warm"] is True
        assert run["sampleKey"] == run["sample"] == clip.name and run["audioPath"] is None
        assert run["audioDurationSec"] == pytest.approx(len(clip.samples) / SAMPLE_RATE, abs=1e-6)
        assert run["referenceText"] == clip.reference
        assert run["referenceExact"] is clip.reference_exact
        assert run["wer"] == pytest.approx(word_error_rate(clip.reference, run["transcription"]))
        assert all(isinstance(m[k], float) and m[k] >= 0 for k in (*PHASE_KEYS, "total_ms"))
        assert m["total_ms"] >= sum(m[k] for k in PHASE_KEYS) - 0.005
        assert m["total_ms"] <= sum(m[k] for k in PHASE_KEYS) + 0.005
        expected_rtf = run["audioDurationSec"] * 1000 / m["total_ms"]
        assert m["rtf"] == pytest.approx(expected_rtf, rel=1e-3)
        assert m["tokens"] <= m["decoder_steps"] and m["batch_size"] == 1
        assert m["encoder_frames"] == encoder_frames(len(clip.samples))
        assert ISO_UTC.match(run["startedAt"]) and run["startedAt"] <= run["finishedAt"]
        if run["repeatIndex"] == 2:  # CPU decoding is deterministic
            assert run["exactMatchToFirst"] is True and run["similarityToFirst"] == 1.0


def test_summary(record: dict[str, Any]) -> None:
    s = record["summary"]
    assert (s["runs"], s["ok"], s["errors"], s["mode"]) == (6, 6, 0, "latency")
    audio = sum(r["audioDurationSec"] for r in record["runs"])
    assert s["audioSec"] == pytest.approx(audio, abs=1e-5)
    assert s["rtfx"] == pytest.approx(s["audioSec"] / s["wallSec"], rel=1e-3)
    # wall clock covers the runs' own totals (it also includes the pipeline's bookkeeping)
    assert s["wallSec"] * 1000 >= sum(r["metrics"]["total_ms"] for r in record["runs"]) * 0.99


def test_analyze_reads_the_record(
    record: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    write_json(record, path)
    code, out, _ = run_cli(capsys, "analyze", str(path), "--format", "json")
    assert code == 0
    analysis = strict_json(out)
    assert analysis["n"] == len(record["runs"]) and analysis["errors"] == 0
    means = analysis["phases"]["total"]["mean"]
    assert means == pytest.approx(
        sum(r["metrics"]["total_ms"] for r in record["runs"]) / len(record["runs"])
    )


def test_cold_run_without_warmups(tiny: Model, tiny_path: Path, tmp_path: Path) -> None:
    manifest = short_clips(tmp_path, 2)
    opts = BenchOptions(
        model=str(tiny_path), manifest=manifest, warmups=0, repeats=2, progress=False
    )
    runs = run_benchmark(opts, model=tiny)["runs"]
    assert [r["warm"] for r in runs] == [False, True, True, True]


def test_throughput_mode(tiny: Model, tiny_path: Path, tmp_path: Path) -> None:
    manifest = short_clips(tmp_path, 3)
    opts = BenchOptions(
        model=str(tiny_path),
        manifest=manifest,
        warmups=0,
        batch_size=2,
        throughput=True,
        progress=False,
    )
    rec = run_benchmark(opts, model=tiny)
    assert rec["settings"]["phaseSync"] is False and rec["summary"]["mode"] == "throughput"
    assert tiny.sync_phases is True  # restored after the run
    runs = rec["runs"]
    by_length = sorted(runs, key=lambda r: r["audioDurationSec"], reverse=True)
    # batches by file size (same format: by length): the two longest first (cold), then the
    # shortest
    assert [r["metrics"]["batch_size"] for r in by_length] == [2, 2, 1]
    assert [r["warm"] for r in by_length] == [False, False, True]
    s = rec["summary"]
    assert s["rtfx"] == pytest.approx(s["audioSec"] / s["wallSec"], rel=1e-3)
    assert [r["sampleKey"] for r in runs] == ["clip000.wav", "clip001.wav", "clip002.wav"]


def test_runtime_failure_becomes_error_runs(
    tiny: Model, tiny_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    monkeypatch.setattr(tiny, "transcribe", broken)
    opts = BenchOptions(model=str(tiny_path), samples=2, warmups=1, progress=False)
    rec = run_benchmark(opts, model=tiny)
    assert [r["metrics"] for r in rec["runs"]] == [None, None]
    assert rec["runs"][0]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert rec["summary"]["ok"] == 0 and rec["summary"]["rtfx"] is None


def test_cli_manifest_with_bad_files(
    tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = short_clips(tmp_path, 2)
    (manifest.parent / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 20)
    with manifest.open("a") as f:
        f.write('{"audio": "corrupt.wav", "text": "nothing"}\n{"audio": "gone.flac"}\n')
    out_json, out_csv = tmp_path / "run.json", tmp_path / "run.csv"
    args = ["bench", "--model", str(tiny_path), "--device", "cpu", "--manifest", str(manifest)]
    code, out, err = run_cli(
        capsys,
        *args,
        "--warmups",
        "0",
        "--repeats",
        "2",
        "-o",
        str(out_json),
        "--csv",
        str(out_csv),
    )
    assert code == 0
    assert "8 runs = 4 samples x 2 repeats" in out and "4 error run(s)" in out
    assert str(out_json) in out and len(out.strip().splitlines()) == 1
    assert "corrupt.wav" in err and "gone.flac" in err
    rec = json.loads(out_json.read_text())
    errors = [r for r in rec["runs"] if r["error"] is not None]
    assert [r["sampleKey"] for r in errors] == ["corrupt.wav", "gone.flac"] * 2
    assert all(r["metrics"] is None and r["transcription"] is None for r in errors)
    assert rec["summary"]["errors"] == 4 and rec["summary"]["ok"] == 4
    assert rec["runs"][0]["warm"] is False and rec["runs"][1]["warm"] is True
    assert rec["settings"]["command"][:2] == ["budgie", "bench"]

    rows = out_csv.read_text().splitlines()
    assert rows[0] == ",".join(CSV_FIELDS) and len(rows) == 1 + 8
    assert rows[1].startswith(rec["runs"][0]["id"] + ",clip000.wav,0,1,false,")

    code, out, _ = run_cli(capsys, "analyze", str(out_json), "--format", "json")
    assert code == 0 and strict_json(out)["n"] == 4 and strict_json(out)["errors"] == 4


def test_cli_audio_dir(tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = short_clips(tmp_path, 2).parent
    (clips / "notes.txt").write_text("not audio")
    out_json = tmp_path / "dir.json"
    code, _, _ = run_cli(
        capsys,
        *("bench", "--model", str(tiny_path), "--device", "cpu", "--audio", str(clips)),
        *("--warmups", "0", "--samples", "1", "-o", str(out_json)),
    )
    assert code == 0
    (run,) = json.loads(out_json.read_text())["runs"]
    assert run["sampleKey"] == "clip000.wav" and run["audioPath"] == str(clips / "clip000.wav")
    assert run["referenceText"] is None and run["wer"] is None and run["metrics"]["tokens"] >= 0


def test_cli_all_runs_failed_exits_1(
    tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "missing.wav", "text": "a"}\n')
    out_json = tmp_path / "run.json"
    code, out, _ = run_cli(
        capsys, "bench", "--model", str(tiny_path), "--manifest", str(manifest), "-o", str(out_json)
    )
    assert code == 1 and "no run succeeded" in out
    assert json.loads(out_json.read_text())["runs"][0]["metrics"] is None


BAD_INPUT = {
    "missing dir": ["--audio", "{tmp}/nope", "-o", "{tmp}/run.json"],
    "file as dir": ["--audio", "{tmp}/bad.jsonl", "-o", "{tmp}/run.json"],
    "empty dir": ["--audio", "{tmp}/empty", "-o", "{tmp}/run.json"],
    "no audio in dir": ["--audio", "{tmp}/only_text", "-o", "{tmp}/run.json"],
    "bad manifest": ["--manifest", "{tmp}/bad.jsonl", "-o", "{tmp}/run.json"],
    "empty manifest": ["--manifest", "{tmp}/blank.jsonl", "-o", "{tmp}/run.json"],
    "missing manifest": ["--manifest", "{tmp}/nope.jsonl", "-o", "{tmp}/run.json"],
    "output is a dir": ["-o", "{tmp}/empty"],
    "output dir missing": ["-o", "{tmp}/no/run.json"],
    "csv dir missing": ["-o", "{tmp}/run.json", "--csv", "{tmp}/no/run.csv"],
    "unknown backend": ["--backend", "tensorrt", "-o", "{tmp}/run.json"],
    "zero repeats": ["--repeats", "0", "-o", "{tmp}/run.json"],
    "zero samples": ["--samples", "0", "-o", "{tmp}/run.json"],
    "negative warmups": ["--warmups", "-1", "-o", "{tmp}/run.json"],
    "zero batch": ["--batch-size", "0", "-o", "{tmp}/run.json"],
}


def bad_input_args(case: str, tmp: Path) -> list[str]:
    """The case's arguments, with the files it refers to created under ``tmp``."""
    (tmp / "empty").mkdir()
    (tmp / "only_text").mkdir()
    (tmp / "only_text" / "a.txt").write_text("x")
    (tmp / "bad.jsonl").write_text("{not json\n")
    (tmp / "blank.jsonl").write_text("\n\n")
    return [arg.replace("{tmp}", str(tmp)) for arg in BAD_INPUT[case]]


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = bad_input_args(case, tmp_path)
    code, out, err = run_cli(capsys, "bench", "--model", str(tmp_path / "absent.nemo"), *args)
    assert code == 2 and out == ""
    assert err.startswith("budgie: error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "run.json").exists()  # checked before anything was written


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unknown backend", "unknown backend 'tensorrt' (available: onnx, torch)"),
        ("empty dir", "no audio files"),
        ("missing dir", "audio directory not found"),
        ("bad manifest", "bad.jsonl:1: not valid JSON"),
        ("zero repeats", "--repeats must be >= 1, got 0"),
        ("output is a dir", "is a directory"),
        ("output dir missing", "does not exist"),
    ],
)
def test_bad_input_messages(
    case: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = bad_input_args(case, tmp_path)
    assert needle in run_cli(capsys, "bench", "--model", "m.nemo", *args)[2]


CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 0

processor\t: 2
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 1
core id\t\t: 0
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CPUINFO, ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 2)),
        ("processor\t: 0\nBogoMIPS\t: 50.00\n", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_cpuinfo(text: str, expected: tuple[str | None, int | None]) -> None:
    assert hardware.parse_cpuinfo(text) == expected


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("NVIDIA GeForce RTX 5060 Ti", "RTX 5060 Ti"),
        ("NVIDIA H100 80GB HBM3", "H100 80GB HBM3"),
        ("Tesla T4", "T4"),
        ("NVIDIA", "NVIDIA"),
    ],
)
def test_gpu_model_label(name: str, label: str) -> None:
    assert hardware.gpu_model_label(name) == label


@pytest.mark.parametrize(
    ("n_bytes", "label"),
    [(None, "n/a"), (0, "n/a"), (8 * 2**30, "8.0 GB"), (85_520_809_984, "80 GB")],
)
def test_gib_label(n_bytes: int | None, label: str) -> None:
    assert hardware.gib_label(n_bytes) == label


def test_hardware_summary_with_a_gpu() -> None:
    import torch

    profile = {
        "cpu": {"model": "AMD EPYC 9654", "physicalCores": 16, "logicalCores": 32},
        "memory": {"totalBytes": 128 * 2**30},
        "gpu": {
            "name": "NVIDIA H100 80GB HBM3",
            "memoryBytes": 85_520_809_984,
            "multiProcessorCount": 132,
            "driver": "570.86.15",
            "cuda": "12.8",
        },
    }
    summary = hardware.hardware_summary(profile, torch.device("cuda", 0))
    assert summary["cpuLabel"] == "AMD EPYC 9654 (16 physical / 32 logical cores)"
    assert summary["gpuLabel"] == "NVIDIA H100 80GB HBM3 (driver 570.86.15, CUDA 12.8)"
    assert summary["gpuModelLabel"] == "H100 80GB HBM3"
    assert (summary["gpuCoresLabel"], summary["vramLabel"]) == ("132 SMs", "80 GB")
    assert summary["systemMemoryLabel"] == "128 GB" and summary["deviceLabel"] == "cuda:0"


def test_record_is_finite_numbers_only(record: dict[str, Any]) -> None:
    for run in record["runs"]:
        for value in run["metrics"].values():
            assert isinstance(value, (int, float)) and math.isfinite(value)
