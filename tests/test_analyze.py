"""``budgie analyze``: the seed report's numbers on the real parakeet.js fixture, Budgie's
additions on hand-made files, and every kind of bad input through the CLI."""

from __future__ import annotations

import json
import math
import re
import struct
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sentencepiece as spm

from bench_factory import PARAKEET_JS, TOKENIZER, budgie_run, run_cli, strict_json, write_runs

# The seed report, ../shared/fixtures/README.md, verbatim (golden: written by nobody here).
SEED_TABLE = {
    "Preprocess": "27.9 5.5 55.2 29.5 43.5 9.6",
    "Encode": "109.3 65.7 305.0 113.5 129.7 26.9",
    "Decode": "119.0 15.2 206.8 126.8 194.8 46.3",
    "Tokenize": "~0 0 0.2 0 0.1 ~0",
    "Total": "258.5 89.4 540.8 276.7 352.6 77.0",
}
SEED_SHARES = "decode 46.1 %, encode 42.3 %, preprocess 10.8 %, tokenize < 0.1 %"
SEED_FITS = {
    "preprocess": "1.28·d + 3.1 (0.854)",
    "encode": "2.79·d + 55.0 (0.516)",
    "decode": "5.91·d + 3.9 (0.782)",
    "total": "10.11·d + 61.5 (0.827)",
}
SEED_RTF = {"mean": "73.24", "min": "26.01", "max": "101.87", "p50": "75.6"}
SEED_RTF_SLOPE = ("+1.60", "0.64")
STAT_KEYS = ("mean", "min", "max", "p50", "p95", "std")


def half_up(value: float, digits: int) -> str:
    return str(Decimal(repr(value)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP))


def seed_cell(value: float) -> str:
    """A JSON value as the seed table writes it: "0" for zero, "~0" when it rounds to 0.0."""
    if value == 0:
        return "0"
    text = half_up(value, 1)
    return "~0" if text == "0.0" else text


@pytest.fixture(scope="module")
def fixture_json() -> dict[str, Any]:
    import contextlib
    import io

    from budgie.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["analyze", str(PARAKEET_JS), "--format", "json"]) == 0
    return strict_json(out.getvalue())  # type: ignore[no-any-return]


# --- the seed report, text ----------------------------------------------------------------


def test_text_reproduces_seed_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "analyze", str(PARAKEET_JS))
    assert code == 0 and err == ""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Phase (ms)"))
    table = lines[start + 2 : start + 7]  # header, rule, then the five rows
    rows = {line.split()[0]: line.split()[1:] for line in table}
    for label, numbers in SEED_TABLE.items():
        assert rows[label] == numbers.split(), label
    assert SEED_SHARES in out
    for phase, fit in SEED_FITS.items():
        assert re.search(rf"^{phase.capitalize()}\s+{re.escape(fit)}", out, re.M), phase
    rtf_line = next(line for line in out.splitlines() if line.startswith("RTF"))
    for key, value in SEED_RTF.items():
        assert f"{key} {value}," in rtf_line or f"{key} {value};" in rtf_line, key
    assert f"slope vs duration {SEED_RTF_SLOPE[0]} (R² {SEED_RTF_SLOPE[1]})" in rtf_line
    assert "n = 100 valid runs, 0 error rows; audio 2.33–28.63 s, mean 19.48 s" in out
    assert "Bottleneck ranking: decode > encode > preprocess > tokenize" in out


def test_markdown_has_the_seed_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "analyze", str(PARAKEET_JS), "--format", "markdown")
    assert code == 0
    for label, numbers in SEED_TABLE.items():
        assert f"| {label} | " + " | ".join(numbers.split()) + " |" in out
    assert SEED_SHARES in out and "## Recommendations" in out


# --- the seed report, JSON (unrounded; rounded here) ---------------------------------------


def test_json_reproduces_seed_report(fixture_json: dict[str, Any]) -> None:
    a = fixture_json
    assert (a["n"], a["errors"]) == (100, 0)
    d = a["duration_s"]
    assert (half_up(d["min"], 2), half_up(d["max"], 2), half_up(d["mean"], 2)) == (
        "2.33",
        "28.63",
        "19.48",
    )
    for label, numbers in SEED_TABLE.items():
        phase = a["phases"][label.lower()]
        assert [seed_cell(phase[k]) for k in STAT_KEYS] == numbers.split(), label
    shares = {p: half_up(100 * a["share"][p], 1) for p in ("decode", "encode", "preprocess")}
    assert shares == {"decode": "46.1", "encode": "42.3", "preprocess": "10.8"}
    assert 0 < a["share"]["tokenize"] < 0.001
    assert math.fsum(a["share"].values()) == pytest.approx(1.0, abs=0.02)  # phases ≈ total
    for phase, text in SEED_FITS.items():
        slope, intercept, r2 = re.match(r"([\d.]+)·d \+ ([\d.]+) \(([\d.]+)\)", text).groups()  # type: ignore[union-attr]
        fit = a["fits"][phase]
        assert (half_up(fit["slope"], 2), half_up(fit["intercept"], 1)) == (slope, intercept)
        assert half_up(fit["r2"], 3) == r2
    r = a["rtf"]
    assert [half_up(r[k], 2) for k in ("mean", "min", "max")] == ["73.24", "26.01", "101.87"]
    assert half_up(r["p50"], 1) == "75.6"
    assert (half_up(r["slope"], 2), half_up(r["r2"], 2)) == ("1.60", "0.64")
    assert a["bottleneck"] == ["decode", "encode", "preprocess", "tokenize"]


def test_json_shape(fixture_json: dict[str, Any]) -> None:
    a = fixture_json
    assert isinstance(a["n"], int) and isinstance(a["errors"], int)
    assert set(a["duration_s"]) >= {"min", "max", "mean"}
    for name in ("preprocess", "encode", "decode", "tokenize", "total"):
        assert set(a["phases"][name]) >= set(STAT_KEYS)
    assert set(a["share"]) >= {"preprocess", "encode", "decode", "tokenize"}
    for name in ("preprocess", "encode", "decode", "total"):
        assert set(a["fits"][name]) >= {"slope", "intercept", "r2"}
    assert set(a["rtf"]) >= {"mean", "min", "max", "p50", "std", "slope", "r2"}
    keys = {"lo", "hi", "count", "decode_min", "decode_max", "encode_min", "encode_max"}
    assert all(set(b) >= keys for b in a["buckets"])


def test_buckets_match_direct_computation(fixture_json: dict[str, Any]) -> None:
    runs = json.loads(PARAKEET_JS.read_text())["runs"]
    expected: dict[float, list[dict[str, float]]] = {}
    for run in runs:
        expected.setdefault(math.floor(run["audioDurationSec"] / 2) * 2.0, []).append(
            run["metrics"]
        )
    got = fixture_json["buckets"]
    assert [b["lo"] for b in got] == sorted(expected)
    for b in got:
        group = expected[b["lo"]]
        assert b["hi"] == b["lo"] + 2 and b["count"] == len(group)
        assert b["decode_min"] == min(m["decode_ms"] for m in group)
        assert b["decode_max"] == max(m["decode_ms"] for m in group)
        assert b["encode_min"] == min(m["encode_ms"] for m in group)
        assert b["encode_max"] == max(m["encode_ms"] for m in group)


def test_beyond_the_seed_on_the_fixture(fixture_json: dict[str, Any]) -> None:
    a = fixture_json
    runs = json.loads(PARAKEET_JS.read_text())["runs"]
    audio_s = sum(r["audioDurationSec"] for r in runs)
    decode_s = sum(r["metrics"]["decode_ms"] for r in runs) / 1000
    assert a["rtfx"]["decode"] == pytest.approx(audio_s / decode_s)
    chars = sum(len(r["transcription"].strip()) for r in runs)
    assert a["tokens"]["estimated"] is True and a["tokens"]["source"] == "characters"
    assert a["tokens"]["total"] == pytest.approx(chars / a["tokens"]["chars_per_token"])
    decode_share = a["share"]["decode"]
    total = a["phases"]["total"]["mean"]
    assert a["amdahl"]["decode"]["total_ms_if_10x"] == pytest.approx(
        total * (1 - 0.9 * decode_share)
    )
    assert a["recommendations"][0].startswith("Attack decode first")
    assert 0.05 < a["wer"]["wer"] < 0.3  # clinical text, unnormalised numbers and units


def test_tokenizer_estimate_is_marked(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "analyze", str(PARAKEET_JS), "--tokenizer", str(TOKENIZER), "--format", "json"
    )
    assert code == 0
    a = strict_json(out)
    runs = json.loads(PARAKEET_JS.read_text())["runs"]
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    assert a["tokens"]["total"] == sum(len(sp.encode(r["transcription"])) for r in runs)
    assert a["tokens"]["source"] == "tokenizer" and a["tokens"]["estimated"] is True
    assert a["decode_fit2"]["estimated"] is True
    for fmt in ("text", "markdown"):
        code, out, _ = run_cli(
            capsys, "analyze", str(PARAKEET_JS), "--tokenizer", str(TOKENIZER), "--format", fmt
        )
        assert code == 0 and "ESTIMATED" in out and "Tokens (estimated)" in out


# --- Budgie's own records ------------------------------------------------------------------


DURATIONS = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
TOKENS = [10, 7, 20, 12, 30, 18]


def budgie_file(tmp_path: Path) -> Path:
    """decode = 3·d + 0.5·tokens + 2 exactly; steps = 2·tokens; known WER."""
    runs = [
        budgie_run(
            d,
            3 * d + 0.5 * t + 2,
            tokens=t,
            decoder_steps=2 * t,
            load_audio_ms=1.5,
            sample=f"clip{i}",
            warm=i > 0,
            referenceText="the cat sat on the mat",
            transcription="the cat sat on a mat" if i == 0 else "The cat sat on the mat.",
        )
        for i, (d, t) in enumerate(zip(DURATIONS, TOKENS, strict=True))
    ]
    return write_runs(tmp_path / "budgie.json", runs)


def test_budgie_file_counts_and_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "analyze", str(budgie_file(tmp_path)), "--format", "json")
    assert code == 0
    a = strict_json(out)
    assert a["source"] == "budgie" and a["n"] == 6 and a["cold"] == 1
    assert a["tokens"]["source"] == "recorded" and a["tokens"]["estimated"] is False
    fit2 = a["decode_fit2"]
    assert (fit2["per_audio_s"], fit2["per_token"], fit2["intercept"]) == pytest.approx((3, 0.5, 2))
    assert fit2["r2"] == pytest.approx(1.0)
    decode = [3 * d + 0.5 * t + 2 for d, t in zip(DURATIONS, TOKENS, strict=True)]
    assert a["decoder_steps"]["decode_ms_per_count"] == pytest.approx(sum(decode) / (2 * 97))
    assert a["phases"]["load_audio"]["mean"] == 1.5
    # Budgie's total_ms includes load_audio_ms, so it is a phase of its own in the shares
    assert a["share"]["load_audio"] == pytest.approx(1.5 / a["phases"]["total"]["mean"])
    assert set(a["bottleneck"]) == {"load_audio", "preprocess", "encode", "decode", "tokenize"}
    assert a["wer"] == {"wer": pytest.approx(1 / 36), "errors": 1, "words": 36, "n": 6}
    d, t = np.array(DURATIONS), np.array(TOKENS, dtype=float)
    assert a["rtf"]["mean"] == pytest.approx(np.mean(d * 1000 / (3 + 3 * d + 0.5 * t + 2)))
    assert a["rtf"]["source"] == "computed"
    code, text, _ = run_cli(capsys, "analyze", str(budgie_file(tmp_path)))
    assert code == 0 and "ESTIMATED" not in text and "Decoder steps" in text
    assert "WER: 2.8 % (1 word errors / 36 reference words" in text


def test_batched_runs_rtfx_is_throughput(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two 5 s clips decoded together in 100 ms: each run carries the batch's 100 ms."""
    runs = [budgie_run(5.0, 97.0, batch_size=2, sample=f"s{i}") for i in range(2)]
    code, out, _ = run_cli(
        capsys, "analyze", str(write_runs(tmp_path / "b.json", runs)), "--format", "json"
    )
    a = strict_json(out)
    assert code == 0 and a["phases"]["total"]["mean"] == 100.0
    assert a["rtfx"]["total"] == pytest.approx(10.0 / 0.1)  # not 10 s / 0.2 s
    assert a["rtf"]["mean"] == pytest.approx(50.0)  # per-run latency view
    assert any("timed in batches of up to 2" in n for n in a["notes"])


def test_error_rows_are_excluded_not_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [budgie_run(d, 10.0 * d) for d in (2.0, 4.0, 6.0)]
    bad_metric = budgie_run(3.0, 5.0)
    bad_metric["metrics"]["encode_ms"] = -1
    nan_metric = budgie_run(3.0, float("nan"))
    text_metric = budgie_run(3.0, 5.0)
    text_metric["metrics"]["total_ms"] = "fast"
    missing = budgie_run(3.0, 5.0)
    del missing["metrics"]["tokenize_ms"]
    bad = [
        {"audioDurationSec": 3.0, "metrics": None, "error": None},
        {"audioDurationSec": 3.0, "metrics": None, "error": "CUDA out of memory"},
        bad_metric,
        nan_metric,
        text_metric,
        missing,
        budgie_run(-1.0, 5.0),
        "not a run",
    ]
    path = write_runs(tmp_path / "mixed.json", [*good[:2], *bad, good[2]])
    code, out, _ = run_cli(capsys, "analyze", str(path), "--format", "json")
    assert code == 0
    a = strict_json(out)
    assert (a["n"], a["errors"]) == (3, len(bad))
    assert a["phases"]["decode"]["mean"] == pytest.approx(40.0)
    assert a["phases"]["decode"]["min"] == 20.0
    assert a["fits"]["decode"]["slope"] == pytest.approx(10.0)
    reasons = a["error_reasons"]
    for reason in (
        "metrics is null",
        "run reported an error: CUDA out of memory",
        "metrics.encode_ms is negative",
        "metrics.decode_ms is NaN",
        "metrics.total_ms is not a number",
        "metrics.tokenize_ms missing",
        "audioDurationSec is negative",
        "run is not a JSON object",
    ):
        assert reasons.get(reason) == 1, reason
    code, text, _ = run_cli(capsys, "analyze", str(path))
    assert code == 0 and "8 error row(s) excluded" in text


def test_wer_on_a_subset_when_transcripts_are_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from budgie.bench import analyze

    monkeypatch.setattr(analyze, "WER_MAX_PAIRS", 2)
    runs = [
        budgie_run(1.0 + i, 5.0, referenceText="a b c d", transcription=f"a b c {i}")
        for i in range(6)
    ]
    code, out, _ = run_cli(
        capsys, "analyze", str(write_runs(tmp_path / "w.json", runs)), "--format", "json"
    )
    a = strict_json(out)
    assert code == 0 and a["wer"] == {"wer": 0.25, "errors": 2, "words": 8, "n": 2}
    assert any("WER computed on 1 run in 3 (2 of the 6 runs" in n for n in a["notes"])


# --- degenerate but valid ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runs", "note"),
    [
        ([budgie_run(5.0, 50.0)], "Only one valid run"),
        ([budgie_run(5.0, v) for v in (40.0, 50.0, 60.0)], "All durations are equal (5 s)"),
        (
            [budgie_run(d, 0.0, preprocess=0, encode=0, total=0) for d in (1.0, 2.0)],
            "shares of total are undefined",
        ),
    ],
)
def test_degenerate_inputs_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: list[Any], note: str
) -> None:
    path = write_runs(tmp_path / "degenerate.json", runs)
    for fmt in ("text", "markdown"):
        code, out, err = run_cli(capsys, "analyze", str(path), "--format", fmt)
        assert code == 0 and err == "" and note in out
    code, out, _ = run_cli(capsys, "analyze", str(path), "--format", "json")
    a = strict_json(out)  # no NaN anywhere
    assert code == 0 and any(note in n for n in a["notes"])
    assert a["fits"]["decode"]["slope"] == 0 or a["phases"]["total"]["mean"] == 0
    assert a["fits"]["total"]["r2"] == 0.0


# --- plots ---------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])  # type: ignore[return-value]


def test_plots_are_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "plots"
    code, out, _ = run_cli(capsys, "analyze", str(PARAKEET_JS), "--plots", str(out_dir))
    assert code == 0 and "Plots written" in out
    names = {"phase_vs_duration", "decode_vs_tokens", "share_per_bucket", "rtf_vs_duration"}
    assert {p.stem for p in out_dir.iterdir()} == names
    for name in names:
        width, height = png_size(out_dir / f"{name}.png")
        assert width >= 400 and height >= 300
    code, out, _ = run_cli(
        capsys, "analyze", str(PARAKEET_JS), "--plots", str(out_dir), "--format", "json"
    )
    assert code == 0 and len(strict_json(out)["plots"]) == 4
