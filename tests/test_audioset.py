"""budgie.bench.audioset: the offline default benchmark set, its WAV files and manifests.

The recordings are checked independently of budgie.audio: read with soundfile, resampled with
soxr, and found again, sample for sample, inside the clips; the references are the known texts
from the fixtures' README.
"""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from budgie.bench.audioset import (
    MANIFEST_NAME,
    Clip,
    default_clips,
    load_manifest,
    write_clips,
)
from budgie.errors import BudgieError

JIM_TEXT = "it is not life as we know or understand it"
NANO_TEXT = (
    "I'm confused why some people have super short timelines, yet at the same time are bullish "
    "on scaling up reinforcement learning atop LLMs. If we're actually close to a human-like "
    "learner, then this whole approach of training on verifiable outcomes."
)


def _recording_16k(file: str) -> np.ndarray:
    data = resources.files("budgie").joinpath(f"data/{file}").read_bytes()
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return soxr.resample(samples, rate, 16000, quality="HQ")


RECORDINGS = {
    JIM_TEXT: _recording_16k("life_Jim.wav"),
    NANO_TEXT: _recording_16k("nano_parakeet_sample.wav"),
}


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return default_clips()


def _walk(samples: np.ndarray) -> tuple[list[str], int | None]:
    """The recordings found whole, in order, between runs of exact silence, as texts; and where
    audio that is no whole recording starts (None when there is none)."""
    found, pos = [], 0
    while True:
        nonzero = np.flatnonzero(samples[pos:])
        if len(nonzero) == 0:
            return found, None
        pos += int(nonzero[0])
        for text, rec in RECORDINGS.items():
            start = pos - int(np.flatnonzero(rec)[0])
            if np.array_equal(samples[start : start + len(rec)], rec):
                found.append(text)
                pos = start + len(rec)
                break
        else:
            return found, pos


def test_default_set_shape(clips: list[Clip]) -> None:
    assert len(clips) == 20
    assert len({c.name for c in clips}) == 20
    durations = [c.duration_s for c in clips]
    assert all(2.0 <= d <= 30.0 for d in durations)
    assert abs(np.mean(durations) - 19.5) < 0.5  # like the parakeet.js set (mean 19.48 s)
    assert max(durations) - min(durations) > 20
    for c in clips:
        assert c.samples.dtype == np.float32 and c.samples.ndim == 1


def test_exact_clips_hold_whole_recordings_in_reference_order(clips: list[Clip]) -> None:
    exact = [c for c in clips if c.reference_exact]
    assert 5 <= len(exact) < len(clips)
    for clip in exact:
        found, rest = _walk(clip.samples)
        assert rest is None and " ".join(found) == clip.reference


def test_cut_clips_end_in_a_recording_prefix_with_its_first_words(clips: list[Clip]) -> None:
    for clip in (c for c in clips if not c.reference_exact):
        found, rest = _walk(clip.samples)
        assert rest is not None
        head = " ".join(found)
        assert clip.reference.startswith(head)
        tail = clip.reference[len(head) :].split()
        fade = 160  # the last 10 ms fade out
        matches = []
        for text, rec in RECORDINGS.items():
            start = rest - int(np.flatnonzero(rec)[0])
            kept = len(clip.samples) - start
            if 0 < kept < len(rec) and np.array_equal(
                clip.samples[start : start + kept - fade], rec[: kept - fade]
            ):
                words = text.split()
                matches.append(tail == words[: round(len(words) * kept / len(rec))])
        assert matches == [True], clip.name


def test_same_seed_is_bit_identical_and_other_seeds_differ(clips: list[Clip]) -> None:
    again = default_clips()
    for a, b in zip(clips, again, strict=True):
        assert a.samples.tobytes() == b.samples.tobytes()
        assert (a.name, a.reference, a.reference_exact) == (b.name, b.reference, b.reference_exact)
    other = default_clips(seed=1)
    assert [c.samples.tobytes() for c in other] != [c.samples.tobytes() for c in clips]


def test_durations_cover_the_range_and_follow_the_bounds() -> None:
    many = [c.duration_s for c in default_clips(100, seed=3)]
    assert min(many) < 4.0 and max(many) > 29.0 and abs(np.mean(many) - 19.5) < 0.3
    narrow = default_clips(4, seed=2, min_s=3.0, max_s=4.0)
    assert all(3.0 <= c.duration_s <= 4.0 for c in narrow)
    assert default_clips(0) == []


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n": -1}, "non-negative integer"),
        ({"n": 2.5}, "non-negative integer"),
        ({"min_s": 0.0}, "0 < min_s <= max_s"),
        ({"min_s": 10.0, "max_s": 5.0}, "0 < min_s <= max_s"),
    ],
)
def test_bad_parameters(kwargs: dict[str, float], pattern: str) -> None:
    with pytest.raises(BudgieError, match=pattern):
        default_clips(**kwargs)  # type: ignore[arg-type]


def test_write_and_read_back(clips: list[Clip], tmp_path: Path) -> None:
    some = clips[:3]
    paths = write_clips(some, tmp_path / "set")
    assert [p.name for p in paths] == [f"{c.name}.wav" for c in some]
    for path, clip in zip(paths, some, strict=True):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        back, _ = sf.read(path, dtype="float32")
        assert np.max(np.abs(back - clip.samples)) <= 1 / 32768
    lines = (tmp_path / "set" / MANIFEST_NAME).read_text().splitlines()
    assert json.loads(lines[0])["audio"] == paths[0].name
    entries = load_manifest(tmp_path / "set" / MANIFEST_NAME)
    assert entries == [(p, c.reference) for p, c in zip(paths, some, strict=True)]


def test_write_into_a_file_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BudgieError, match="cannot write the benchmark clips"):
        write_clips([Clip("a", np.zeros(10, np.float32), "")], blocker)


def test_manifest_forms(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"audio": "a.wav", "text": "hello"}\n'
        "\n"
        '{"audio_filepath": "/abs/b.flac", "text": "x", "duration": 1.0}\n'
        '{"audio": "sub/c.mp3"}\n'
    )
    assert load_manifest(manifest) == [
        (tmp_path / "a.wav", "hello"),
        (Path("/abs/b.flac"), "x"),
        (tmp_path / "sub/c.mp3", None),
    ]


BAD_MANIFESTS = {
    "not_json": ('{"audio": "a.wav"}\n\n{"audio": "b.wav",\n', r"m\.jsonl:3: not valid JSON"),
    "list": ('["a.wav", "text"]\n', r"m\.jsonl:1: expected a JSON object"),
    "no_audio": ('{"text": "hi"}\n', r'm\.jsonl:1: missing "audio"'),
    "audio_not_str": ('{"audio": 3}\n', r'm\.jsonl:1: missing "audio"'),
    "text_not_str": ('{"audio": "a.wav", "text": 3}\n', r'm\.jsonl:1: "text" must be a string'),
    "empty": ("\n  \n", r"m\.jsonl: manifest has no entries"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_lines(case: str, tmp_path: Path) -> None:
    content, pattern = BAD_MANIFESTS[case]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(content)
    with pytest.raises(BudgieError, match=pattern) as info:
        load_manifest(manifest)
    assert "\n" not in str(info.value)


def test_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(BudgieError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(BudgieError, match="is a directory"):
        load_manifest(tmp_path)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BudgieError, match="not UTF-8"):
        load_manifest(binary)
