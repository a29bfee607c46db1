"""Inputs longer than one encoder pass can hold: cut at quiet points, transcribed in pieces,
joined back into one Transcript.

Why: full self-attention needs memory quadratic in the duration (limits.py), so a two-hour
recording fits no device in one pass, and on a laptop even 15 minutes may not. Rather than
refuse such an input, the pipeline cuts it where the signal is quietest (so that words stay
whole), transcribes the pieces as a batch of their own, and puts their tokens back on the
input's time axis before text and timestamps are built, as if from one hypothesis. Inputs that
fit one pass are never cut: their transcripts stay NeMo's.

Each piece is decoded from the prediction network's start state, as NeMo's own buffered
inference does per chunk; a word cut by a piece boundary (no quiet point in the search window)
may come out differently than in one pass. Cuts fall on encoder-frame boundaries (hop x
subsampling samples: 80 ms for parakeet), so a piece's frame indices shift by whole frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from budgie.config import ModelConfig
from budgie.results import PhaseTimings, Transcript, TranscriptionError
from budgie.text import Tokenizer, build_text_and_timestamps
from budgie.timing import PhaseClock

# Longest piece when an input must be cut (attention's share of the work grows with length;
# minutes of context are plenty for the model), and the shortest worth running: below it the
# device is too full to transcribe anything sensibly, and the input is refused as before.
PIECE_MAX_S = 300.0
PIECE_MIN_S = 10.0
# A piece's cut is the quietest encoder-frame boundary in its last fifth.
SEARCH_FRACTION = 0.2


@dataclass
class TooLong(TranscriptionError):
    """A loaded input past the single-pass limit, kept (with its samples) until the pipeline
    transcribes it in pieces; it never reaches the caller."""

    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    load_ms: float = 0.0
    limit_s: float = 0.0  # the single-pass limit when it was loaded


def frame_samples(cfg: ModelConfig) -> int:
    """Samples per encoder frame (160 x 8 = 1280 for parakeet)."""
    return cfg.preprocessor.hop_length * cfg.encoder.subsampling_factor


def cut_points(samples: np.ndarray, piece_max: int, step: int) -> list[int]:
    """Boundaries [0, c1, ..., len(samples)] of pieces at most ``piece_max`` samples long, each
    cut at the multiple of ``step`` in the piece's last SEARCH_FRACTION where the two
    ``step``-long blocks around it hold the least energy (the latest such on ties)."""
    if piece_max < 2 * step:
        raise ValueError(f"pieces of {piece_max} samples cannot be cut every {step}")
    n = len(samples)
    blocks = n // step
    energy = np.square(samples[: blocks * step].astype(np.float64)).reshape(blocks, step).sum(1)
    around = energy[:-1] + energy[1:]  # around[k]: the blocks on either side of (k + 1) * step
    cuts, start = [0], 0
    while n - start > piece_max:
        # the latest boundary keeping the piece short enough (and inside the blocks)
        last = min((start + piece_max) // step, blocks - 1)
        first = max(start // step + 1, last - int(SEARCH_FRACTION * piece_max) // step)
        window = around[first - 1 : last]  # boundaries first .. last
        quietest = first + len(window) - 1 - int(np.argmin(window[::-1]))
        start = quietest * step
        cuts.append(start)
    cuts.append(n)
    return cuts


def piece_length(cfg: ModelConfig, limit_s: float, sample_rate: int) -> int | None:
    """Samples per piece for an input past a single-pass limit of ``limit_s`` seconds: half of
    it (room for the batch's other rows) up to PIECE_MAX_S, whole encoder frames; None when
    that is under PIECE_MIN_S (the input is refused)."""
    seconds = min(PIECE_MAX_S, limit_s / 2)
    if seconds < PIECE_MIN_S:
        return None
    step = frame_samples(cfg)
    return int(seconds * sample_rate) // step * step


def join(
    pieces: Sequence[Transcript],
    offsets: Sequence[int],
    tokenizer: Tokenizer,
    cfg: ModelConfig,
    whole: TooLong,
    duration_s: float,
) -> Transcript:
    """One Transcript from the pieces' (cut at sample ``offsets``, whole encoder frames): their
    tokens on the input's frame axis, text and timestamps built once from all of them. Phase
    times are the pieces' batches' own (each piece carries its batch's, shared by
    ``batch_size`` pieces), so ``batch_size`` is 1: the input had those phases to itself."""
    step = frame_samples(cfg)
    ids: list[int] = []
    frames: list[int] = []
    durations: list[int] = []
    confidences: list[float] = []
    for piece, offset in zip(pieces, offsets, strict=True):
        shift = offset // step
        for token in piece.tokens:
            ids.append(token.id)
            frames.append(token.frame + shift)
            durations.append(token.duration)
            confidences.append(token.confidence if token.confidence is not None else 0.0)
    scored = bool(pieces) and all(t.confidence is not None for p in pieces for t in p.tokens)
    clock = PhaseClock(torch.device("cpu"), sync=False)
    with clock.phase("tokenize"):
        text, tokens, words, segments = build_text_and_timestamps(
            tokenizer, ids, frames, durations, confidences if scored else None, cfg.frame_shift_s
        )
    timings = PhaseTimings(load_audio_ms=whole.load_ms, tokenize_ms=clock.ms["tokenize"])
    for piece in pieces:
        share = piece.timings
        timings.preprocess_ms += share.preprocess_ms / piece.batch_size
        timings.encode_ms += share.encode_ms / piece.batch_size
        timings.decode_ms += share.decode_ms / piece.batch_size
        timings.tokenize_ms += share.tokenize_ms
    timings.total_ms = timings.phases_ms()
    return Transcript(
        text=text,
        tokens=tokens,
        words=words,
        segments=segments,
        duration_s=duration_s,
        timings=timings,
        decoder_steps=sum(p.decoder_steps for p in pieces),
        encoder_frames=sum(p.encoder_frames for p in pieces),
        batch_size=1,
        source=whole.source,
    )
