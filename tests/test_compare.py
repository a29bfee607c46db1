"""``budgie compare``: matching by sample key or content, ratios, repeats, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench_factory import PARAKEET_JS, budgie_run, run_cli, strict_json, write_runs

SERIES = ("preprocess", "encode", "decode", "tokenize", "total", "rtf")


def fixture_runs() -> list[dict[str, Any]]:
    return json.loads(PARAKEET_JS.read_text())["runs"]  # type: ignore[no-any-return]


def compare_json(capsys: pytest.CaptureFixture[str], a: Path, b: Path) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "compare", str(a), str(b), "--format", "json")
    assert code == 0 and err == ""
    return strict_json(out)  # type: ignore[no-any-return]


def test_file_against_itself(capsys: pytest.CaptureFixture[str]) -> None:
    c = compare_json(capsys, PARAKEET_JS, PARAKEET_JS)
    assert c["match"] == {"key": "sample", "shared": 100, "only_a": 0, "only_b": 0}
    for section in ("shared", "overall"):
        for name in SERIES:
            row = c[section]["series"][name]
            assert row["a_mean"] == pytest.approx(row["b_mean"])
            if name != "tokenize":
                assert row["mean_ratio"] == pytest.approx(1.0)
    # the overall means are the seed report's (mean total 258.5 ms, RTF 73.24)
    assert round(c["overall"]["series"]["total"]["a_mean"], 1) == 258.5
    assert round(c["overall"]["series"]["rtf"]["a_mean"], 2) == 73.24


def test_halved_decode_on_a_subset_with_repeats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """B: 60 of the samples, each twice, decode 0.4x and 0.6x of A (mean 0.5x)."""
    runs = fixture_runs()
    b_runs = []
    for run in runs[:60]:
        for factor in (0.4, 0.6):
            r = json.loads(json.dumps(run))
            r["metrics"]["decode_ms"] *= factor
            r["metrics"]["total_ms"] -= run["metrics"]["decode_ms"] * (1 - factor)
            b_runs.append(r)
    b_runs.append({**runs[0], "metrics": None, "error": "crashed"})
    b = write_runs(tmp_path / "b.json", b_runs)
    c = compare_json(capsys, PARAKEET_JS, b)
    assert c["match"] == {"key": "sample", "shared": 60, "only_a": 40, "only_b": 0}
    assert c["b"]["errors"] == 1 and c["b"]["n"] == 120
    shared = c["shared"]
    a_decode = np.array([r["metrics"]["decode_ms"] for r in runs[:60]])
    assert shared["series"]["decode"]["a_mean"] == pytest.approx(a_decode.mean())
    assert shared["series"]["decode"]["mean_ratio"] == pytest.approx(0.5)
    assert shared["series"]["encode"]["mean_ratio"] == pytest.approx(1.0)
    a_total = np.array([r["metrics"]["total_ms"] for r in runs[:60]])
    b_total = a_total - a_decode * 0.5
    assert shared["series"]["total"]["mean_ratio"] == pytest.approx(b_total.mean() / a_total.mean())
    assert shared["total_ratio_per_sample"]["min"] == pytest.approx(np.min(b_total / a_total))
    assert shared["share"]["decode"]["b"] == pytest.approx(0.5 * a_decode.mean() / b_total.mean())
    overall = c["overall"]
    assert (overall["n_a"], overall["n_b"]) == (100, 120)
    all_decode = np.array([r["metrics"]["decode_ms"] for r in runs])
    assert overall["series"]["decode"]["a_mean"] == pytest.approx(all_decode.mean())
    assert any("B: 1 error row(s) excluded" in n for n in c["notes"])


def test_match_by_content_across_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Budgie file with its own sample names still matches parakeet.js by reference text."""
    runs = fixture_runs()[:10]
    b_runs = [
        budgie_run(
            r["audioDurationSec"],
            r["metrics"]["decode_ms"] / 10,
            encode=r["metrics"]["encode_ms"] / 2,
            preprocess=r["metrics"]["preprocess_ms"],
            sample=f"clip-{i}.wav",
            load_audio_ms=3.0,
            referenceText=r["referenceText"],
            transcription=r["transcription"],
        )
        for i, r in enumerate(runs)
    ]
    b = write_runs(tmp_path / "budgie.json", b_runs)
    c = compare_json(capsys, PARAKEET_JS, b)
    assert c["match"]["key"] == "content" and c["match"]["shared"] == 10
    assert c["shared"]["series"]["decode"]["mean_ratio"] == pytest.approx(0.1)
    assert c["shared"]["series"]["encode"]["mean_ratio"] == pytest.approx(0.5)
    assert any("matched by reference text" in n for n in c["notes"])
    assert any("Only B's total_ms includes audio loading" in n for n in c["notes"])
    assert "load_audio" not in c["shared"]["series"]  # A did not record it


def test_no_shared_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = write_runs(tmp_path / "b.json", [budgie_run(d, 5.0, sample=f"x{d}") for d in (1.0, 2.0)])
    c = compare_json(capsys, PARAKEET_JS, b)
    assert c["shared"] is None and c["match"]["key"] is None
    assert c["overall"]["n_b"] == 2
    code, out, _ = run_cli(capsys, "compare", str(PARAKEET_JS), str(b))
    assert code == 0 and "No shared samples" in out and "Overall" in out


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_rendered_formats(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, err = run_cli(capsys, "compare", str(PARAKEET_JS), str(PARAKEET_JS), "--format", fmt)
    assert code == 0 and err == ""
    assert "Shared samples (n = 100" in out and "1.00x" in out and "46.1 %" in out
    if fmt == "markdown":
        assert "| Decode | 119.0 | 119.0 | 1.00x | 126.8 | 126.8 | 1.00x | 46.1 % | 46.1 % |" in out


def test_load_audio_compared_when_both_have_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_runs(tmp_path / "a.json", [budgie_run(1.0, 4.0, sample="s", load_audio_ms=2.0)])
    b = write_runs(tmp_path / "b.json", [budgie_run(1.0, 4.0, sample="s", load_audio_ms=1.0)])
    c = compare_json(capsys, a, b)
    assert c["shared"]["series"]["load_audio"]["mean_ratio"] == 0.5
    code, out, _ = run_cli(capsys, "compare", str(a), str(b))
    assert code == 0 and "Load audio" in out


def test_zero_baseline_gives_null_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_runs(tmp_path / "a.json", [budgie_run(1.0, 0.0, sample="s")])
    b = write_runs(tmp_path / "b.json", [budgie_run(1.0, 4.0, sample="s")])
    c = compare_json(capsys, a, b)
    assert c["shared"]["series"]["decode"]["mean_ratio"] is None  # not inf, not NaN


@pytest.mark.parametrize("which", ["a", "b"])
def test_bad_side_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": []}')
    args = [str(bad), str(PARAKEET_JS)] if which == "a" else [str(PARAKEET_JS), str(bad)]
    code, out, err = run_cli(capsys, "compare", *args)
    assert code == 2 and out == "" and "'runs' is empty" in err
