"""`budgie transcribe` end to end: formats, the JSON record, and every kind of bad input.

One call gets good files and bad ones together: the bad ones become one-line errors (JSON
records with `error`), the good ones are still transcribed, the exit code is 1, and nothing
prints a traceback.
"""

from __future__ import annotations

import json
import wave
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from budgie.cli import main
from conftest import SynthModels

JIM = str(resources.files("budgie") / "data" / "life_Jim.wav")


def _wav(path: Path, samples: np.ndarray, rate: int = 16000) -> str:
    sf.write(path, samples, rate, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.txt").write_text("this is not audio\n" * 50)
    (d / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    full = Path(JIM).read_bytes()
    (d / "header_cut.wav").write_bytes(full[:20])
    (d / "a_directory").mkdir()
    return {
        "missing": str(d / "does_not_exist.wav"),
        "directory": str(d / "a_directory"),
        "empty": str(d / "empty.wav"),
        "text": str(d / "notes.txt"),
        "random": str(d / "random.wav"),
        "header_cut": str(d / "header_cut.wav"),
    }


@pytest.fixture(scope="module")
def odd_but_valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("odd")
    zero = d / "zero_samples.wav"
    with wave.open(str(zero), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    full = Path(JIM).read_bytes()
    (d / "truncated_data.wav").write_bytes(full[: len(full) // 2])
    return {
        "zero_samples": str(zero),
        "under_one_frame": _wav(d / "short.wav", np.full(100, 0.1, dtype=np.float32)),
        "silence": _wav(d / "silence.wav", np.zeros(32000, dtype=np.float32)),
        "truncated_data": str(d / "truncated_data.wav"),
    }


def _run_json(
    capsys: pytest.CaptureFixture[str], model: Path, files: list[str]
) -> tuple[int, list[dict[str, object]], str]:
    code = main(
        ["transcribe", "--model", str(model), "--device", "cpu", "--format", "json", *files]
    )
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_bad_files_are_reported_and_the_good_one_still_transcribed(
    synth_models: SynthModels,
    bad_inputs: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = synth_models.checkpoint("tiny").path
    files = [JIM, *bad_inputs.values()]
    code, records, err = _run_json(capsys, model, files)
    assert code == 1
    assert [r["path"] for r in records] == files
    good, *bad = records
    assert "error" not in good and isinstance(good["text"], str) and good["token_ids"]
    for record, name in zip(bad, bad_inputs, strict=True):
        assert set(record) == {"path", "error"}, name
        message = record["error"]
        assert isinstance(message, str) and "\n" not in message and message, name
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == len(bad)  # one stderr line per failed file


def test_odd_but_valid_audio_gives_transcripts(
    synth_models: SynthModels,
    odd_but_valid: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = synth_models.checkpoint("tiny").path
    code, records, err = _run_json(capsys, model, list(odd_but_valid.values()))
    assert code == 0, err
    by_name = dict(zip(odd_but_valid, records, strict=True))
    for name in ("zero_samples", "under_one_frame"):
        assert by_name[name]["text"] == "" and by_name[name]["token_ids"] == [], name
    assert by_name["zero_samples"]["duration_s"] == 0.0
    # A WAV whose data stops early: what is there is transcribed (with a warning).
    assert by_name["truncated_data"]["duration_s"] == pytest.approx(1.27, abs=0.05)
    assert "Traceback" not in err


def test_json_record_fields(synth_models: SynthModels, capsys: pytest.CaptureFixture[str]) -> None:
    model = synth_models.checkpoint("tiny").path
    code, [record], _ = _run_json(capsys, model, [JIM])
    assert code == 0
    for key in ("path", "text", "duration_s", "token_ids", "tokens", "words", "segments"):
        assert key in record
    tokens = record["tokens"]
    assert isinstance(tokens, list) and tokens
    assert [t["id"] for t in tokens] == record["token_ids"]
    for t in tokens:
        assert set(t) >= {"id", "piece", "start", "end", "frame", "duration"}
        assert t["start"] == pytest.approx(t["frame"] * 0.08)
    timings = record["timings_ms"]
    assert isinstance(timings, dict)
    phases = ("load_audio_ms", "preprocess_ms", "encode_ms", "decode_ms", "tokenize_ms")
    assert timings["total_ms"] == pytest.approx(sum(timings[p] for p in phases))
    assert record["counts"]["tokens"] == len(tokens)


@pytest.mark.parametrize("fmt, head", [("srt", "1\n00:00:"), ("vtt", "WEBVTT\n\n00:00:")])
def test_subtitle_formats_to_output_dir(
    synth_models: SynthModels,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    head: str,
) -> None:
    model = synth_models.checkpoint("tiny").path
    code = main(
        [
            "transcribe",
            "--model",
            str(model),
            "--device",
            "cpu",
            "--format",
            fmt,
            "--output-dir",
            str(tmp_path / "out"),
            JIM,
        ]
    )
    assert code == 0
    written = (tmp_path / "out" / f"life_Jim.{fmt}").read_text(encoding="utf-8")
    assert written.startswith(head) and " --> " in written


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["transcribe", "--model", "/no/such/model.nemo", JIM], "model.nemo"),
        (["transcribe", "--model", "{tiny}", "--batch-size", "0", JIM], "batch-size"),
        (["transcribe", "--model", "{tiny}", "--device", "cuda", JIM], "CUDA"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    synth_models: SynthModels,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragment: str,
) -> None:
    tiny = str(synth_models.checkpoint("tiny").path)
    argv = [a.replace("{tiny}", tiny) for a in argv]
    if "cuda" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment in err and "Traceback" not in err


def test_throughput_mode_gives_the_same_transcripts_in_batches(
    synth_models: SynthModels, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--throughput batches the files (32 unless --batch-size says otherwise) with phases not
    synced; the transcripts are those of the default one-by-one run."""
    model = synth_models.checkpoint("tiny").path
    rng = np.random.default_rng(3)
    files = [
        _wav(tmp_path / f"f{i}.wav", (rng.standard_normal(4000 + 900 * i) * 0.1).astype(np.float32))
        for i in range(5)
    ] + [JIM]
    code, plain, _ = _run_json(capsys, model, files)
    code_t, batched, _ = _run_json(capsys, model, ["--throughput", *files])
    assert code == code_t == 0
    assert [r["token_ids"] for r in batched] == [r["token_ids"] for r in plain]
    assert {r["counts"]["batch_size"] for r in plain} == {1}  # type: ignore[index]
    assert max(r["counts"]["batch_size"] for r in batched) == len(files)  # type: ignore[index]
    _, capped, _ = _run_json(capsys, model, ["--throughput", "--batch-size", "2", *files])
    assert max(r["counts"]["batch_size"] for r in capped) == 2  # type: ignore[index]
