"""Result types returned by the engine: plain dataclasses, JSON-ready through ``to_dict``.

Times are in seconds from the start of the audio; timings are in milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PHASES = ("load_audio", "preprocess", "encode", "decode", "tokenize")


@dataclass(slots=True)
class Token:
    """One emitted SentencePiece token with its place on the encoder time axis."""

    id: int
    piece: str
    start: float
    end: float
    frame: int
    duration: int
    confidence: float | None = None


@dataclass(slots=True)
class Word:
    text: str
    start: float
    end: float
    confidence: float | None = None


@dataclass(slots=True)
class Segment:
    """A sentence-like span: NeMo ends a segment at '.', '?' or '!'."""

    text: str
    start: float
    end: float


@dataclass
class PhaseTimings:
    """Wall time of each phase of one run, in milliseconds.

    In a batch every utterance carries the batch's phase times (they were spent together);
    ``batch_size`` in the Transcript tells how many shared them.
    """

    load_audio_ms: float = 0.0
    preprocess_ms: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    tokenize_ms: float = 0.0
    total_ms: float = 0.0

    def phases_ms(self) -> float:
        """The phases' sum, which ``total_ms`` holds for one input."""
        return (
            self.load_audio_ms
            + self.preprocess_ms
            + self.encode_ms
            + self.decode_ms
            + self.tokenize_ms
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Transcript:
    """What one audio input became: text, timed tokens/words/segments, timings and counts."""

    text: str
    tokens: list[Token]
    words: list[Word]
    segments: list[Segment]
    duration_s: float
    timings: PhaseTimings = field(default_factory=PhaseTimings)
    decoder_steps: int = 0
    encoder_frames: int = 0
    batch_size: int = 1
    source: str | None = None

    @property
    def token_ids(self) -> list[int]:
        return [t.id for t in self.tokens]

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of the CLI's ``--format json`` (one line per input)."""
        return {
            "path": self.source,
            "text": self.text,
            "duration_s": self.duration_s,
            "token_ids": self.token_ids,
            "tokens": [asdict(t) for t in self.tokens],
            "words": [asdict(w) for w in self.words],
            "segments": [asdict(s) for s in self.segments],
            "timings_ms": self.timings.to_dict(),
            "counts": {
                "tokens": len(self.tokens),
                "decoder_steps": self.decoder_steps,
                "encoder_frames": self.encoder_frames,
                "batch_size": self.batch_size,
            },
        }


@dataclass
class TranscriptionError:
    """The record left in place of a Transcript when one input of a batch fails."""

    source: str | None
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.source, "error": self.error}
