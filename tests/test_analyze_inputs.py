"""``budgie analyze`` and ``budgie compare`` on bad input: one line on stderr, exit code 2,
never a traceback; and a 100,000-run file analysed correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench_factory import PARAKEET_JS, TOKENIZER, budgie_run, run_cli, strict_json, write_runs

# --- bad files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00binary", "not JSON"),
        (b"[1, 2, 3]", "got an array"),
        (b'"text"', "got a str"),
        (b'{"generatedAt": "x", "settings": {}}', "no 'runs' list"),
        (b'{"runs": {"a": 1}}', "'runs' must be a list"),
        (b'{"runs": []}', "'runs' is empty"),
        (b'{"runs": [{"metrics": null}, 5]}', "no valid runs among 2"),
        (b'{"runs": [{"audioDurationSec": 1, "metrics": {"decode_ms": NaN}}]}', "no valid runs"),
        (b"[" * 100_000, "not"),
    ],
)
def test_bad_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    for command in (["analyze", str(path)], ["compare", str(path), str(PARAKEET_JS)]):
        code, out, err = run_cli(capsys, *command)
        assert code == 2 and out == ""
        assert err.startswith("budgie: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("which", ["missing", "directory"])
def test_missing_paths_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    path = tmp_path / "nothing.json" if which == "missing" else tmp_path
    code, _, err = run_cli(capsys, "analyze", str(path))
    assert code == 2 and ("no such file" in err or "is a directory" in err)


@pytest.mark.parametrize(
    ("make", "message"), [("missing", "tokenizer not found"), ("garbage", "not a SentencePiece")]
)
def test_bad_tokenizer_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str, message: str
) -> None:
    tokenizer = tmp_path / "tok.model"
    if make == "garbage":
        tokenizer.write_bytes(b"definitely not a sentencepiece model")
    code, out, err = run_cli(capsys, "analyze", str(PARAKEET_JS), "--tokenizer", str(tokenizer))
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_tokenizer_fixture_is_real() -> None:
    assert TOKENIZER.stat().st_size > 100_000  # the real v3 model, not a pointer


def test_hundred_thousand_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Correct on a large file (the algorithm is one sort per series; no timing asserted)."""
    n = 100_000
    rng = np.random.default_rng(1)
    durations = np.round(rng.uniform(1.0, 30.0, n), 3)
    decode = np.round(6.0 * durations + 4.0, 3)
    texts = ["the cat sat on the mat", "a dog ran", "hello world again"]
    runs = [
        budgie_run(
            float(d),
            float(c),
            sample=f"s{i % 500}",
            referenceText=texts[i % 3],
            transcription=texts[i % 3],
            tokens=int(d * 4),
        )
        for i, (d, c) in enumerate(zip(durations, decode, strict=True))
    ]
    path = write_runs(tmp_path / "big.json", runs)
    code, out, _ = run_cli(capsys, "analyze", str(path), "--format", "json")
    assert code == 0
    a = strict_json(out)
    assert a["n"] == n and a["errors"] == 0
    assert sum(b["count"] for b in a["buckets"]) == n
    assert a["fits"]["decode"]["slope"] == pytest.approx(6.0, abs=1e-3)
    assert a["phases"]["decode"]["p50"] == float(np.sort(decode)[n // 2])
    assert a["wer"]["wer"] == 0.0
    code, out, _ = run_cli(capsys, "analyze", str(path))
    assert code == 0 and "n = 100000 valid runs" in out
