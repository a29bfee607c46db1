"""Inputs past the single-pass memory limit: cut at quiet points, transcribed in pieces, joined."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from tests.conftest import SynthModels
from tests.parity_goldens import AUDIO_DIR

from budgie import limits
from budgie.audio import load_audio
from budgie.errors import AudioError
from budgie.long_audio import PIECE_MIN_S, cut_points, frame_samples, piece_length
from budgie.results import Transcript, TranscriptionError

STEP = 1280  # parakeet's samples per encoder frame (160 hop x 8)
RATE = 16000


def test_a_short_input_is_one_piece() -> None:
    samples = np.ones(10 * STEP + 7, np.float32)
    assert cut_points(samples, 20 * STEP, STEP) == [0, len(samples)]


def test_cuts_are_frame_aligned_short_enough_and_cover_everything() -> None:
    rng = np.random.default_rng(0)
    samples = rng.standard_normal(1_000_003).astype(np.float32)
    cuts = cut_points(samples, 100 * STEP, STEP)
    assert cuts[0] == 0 and cuts[-1] == len(samples)
    assert all(c % STEP == 0 for c in cuts[:-1])
    pieces = np.diff(cuts)
    assert all(0 < p <= 100 * STEP for p in pieces)
    assert all(p >= 80 * STEP for p in pieces[:-1])  # cut inside the last fifth


def test_the_cut_is_the_quietest_boundary_and_the_latest_on_ties() -> None:
    rng = np.random.default_rng(1)
    samples = rng.standard_normal(300 * STEP).astype(np.float32)
    samples[85 * STEP : 87 * STEP] *= 1e-3  # a quiet spot in the last fifth of the first piece
    assert cut_points(samples, 100 * STEP, STEP)[1] == 86 * STEP
    silence = np.zeros(300 * STEP, np.float32)
    assert cut_points(silence, 100 * STEP, STEP)[:3] == [0, 100 * STEP, 200 * STEP]


def test_pieces_must_span_two_frames() -> None:
    with pytest.raises(ValueError):
        cut_points(np.zeros(10 * STEP, np.float32), STEP, STEP)


def _speech_with_pauses() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """~104 s: three real/synthetic clips (<= 5.05 s) in turn, 1 s of silence after each;
    returns the samples and the silent spans."""
    clips = [
        load_audio(AUDIO_DIR / f) for f in ("espeak_fox.wav", "espeak_hello.wav", "life_Jim.wav")
    ]
    parts, silent, at = [], [], 0
    for _ in range(7):
        for clip in clips:
            parts += [clip, np.zeros(RATE, np.float32)]
            silent.append((at + len(clip), at + len(clip) + RATE))
            at += len(clip) + RATE
    return np.concatenate(parts), silent


def _limit_to(monkeypatch: pytest.MonkeyPatch, model_config: object, seconds: float) -> None:
    """Make the device's free memory fit one pass of about ``seconds``."""
    need = limits.estimated_peak_bytes(model_config, int(seconds * RATE))  # type: ignore[arg-type]
    free = int(need / limits.USABLE_FRACTION) + 1
    monkeypatch.setattr(limits, "free_memory_bytes", lambda device: free)


def test_a_long_input_is_transcribed_in_pieces_cut_in_its_pauses(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = synth_models.model("tiny")
    audio, silent = _speech_with_pauses()
    _limit_to(monkeypatch, model.config, 60.0)
    piece = piece_length(
        model.config, limits.max_single_pass_seconds(model.config, model.device), RATE
    )
    assert piece is not None and 29 * RATE < piece <= 30 * RATE
    cuts = cut_points(audio, piece, frame_samples(model.config))
    assert len(cuts) >= 5  # four pieces or more
    for cut in cuts[1:-1]:  # each cut in a pause, both frames around it silent
        assert any(start <= cut - STEP and cut + STEP <= end for start, end in silent)

    result = model.transcribe(audio, batch_size=4)
    assert isinstance(result, Transcript)
    assert result.duration_s == len(audio) / RATE
    assert result.batch_size == 1

    # The same pieces transcribed as inputs of their own, their frames moved by the cut.
    alone = model.transcribe([audio[a:b] for a, b in itertools.pairwise(cuts)])
    ids, frames = [], []
    for start, piece_result in zip(cuts, alone, strict=False):
        assert isinstance(piece_result, Transcript)
        ids += piece_result.token_ids
        frames += [t.frame + start // STEP for t in piece_result.tokens]
    assert ids and result.token_ids == ids
    assert [t.frame for t in result.tokens] == frames
    assert result.decoder_steps == sum(p.decoder_steps for p in alone if isinstance(p, Transcript))
    # (a last token's duration may reach past the audio's end, as in one pass: up to 4 frames)
    assert all(0 <= w.start <= w.end <= result.duration_s + 5 * 0.08 for w in result.words)
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)
    t = result.timings
    assert t.total_ms == pytest.approx(
        t.load_audio_ms + t.preprocess_ms + t.encode_ms + t.decode_ms + t.tokenize_ms
    )


def test_an_input_that_fits_is_not_cut(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = synth_models.model("tiny")
    audio, _ = _speech_with_pauses()
    audio = audio[: 50 * RATE]
    free_run = model.transcribe(audio)
    _limit_to(monkeypatch, model.config, 60.0)
    limited = model.transcribe(audio)
    assert limited.token_ids == free_run.token_ids
    assert limited.decoder_steps == free_run.decoder_steps


def test_a_device_too_full_for_pieces_refuses_the_input_and_keeps_the_others(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = synth_models.model("tiny")
    _limit_to(monkeypatch, model.config, 1.8 * PIECE_MIN_S)
    jim = load_audio(AUDIO_DIR / "life_Jim.wav")
    long_input = np.zeros(3600 * RATE, np.float32)
    results = model.transcribe([jim, long_input], batch_size=2)
    assert isinstance(results[0], Transcript)
    assert isinstance(results[1], TranscriptionError)
    assert "3600.0 s" in results[1].error and "split" in results[1].error
    assert "\n" not in results[1].error
    with pytest.raises(AudioError, match=re.escape("3600.0 s")):
        model.transcribe(long_input)


def test_progress_counts_a_long_input_once_its_pieces_are_done(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = synth_models.model("tiny")
    audio, _ = _speech_with_pauses()
    _limit_to(monkeypatch, model.config, 60.0)
    jim = load_audio(AUDIO_DIR / "life_Jim.wav")
    pieces_done = []
    in_pieces = model._in_pieces

    def recorded(*args: object, **kwargs: object) -> object:
        result = in_pieces(*args, **kwargs)  # type: ignore[arg-type]
        pieces_done.append(True)
        return result

    monkeypatch.setattr(model, "_in_pieces", recorded)
    seen: list[tuple[int, bool]] = []
    results = model.transcribe([audio, jim], progress=lambda n: seen.append((n, bool(pieces_done))))
    assert all(isinstance(r, Transcript) for r in results)
    assert [n for n, _ in seen] == sorted(n for n, _ in seen) and seen[-1] == (2, True)
    assert (1, False) in seen and (2, False) not in seen  # jim first, then the long input
