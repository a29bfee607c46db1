"""Budgie: fast NVIDIA Parakeet TDT speech recognition that measures itself phase by phase."""

from budgie.errors import AudioError, BudgieError, ModelError
from budgie.results import PhaseTimings, Segment, Token, Transcript, TranscriptionError, Word

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "BudgieError",
    "ModelError",
    "PhaseTimings",
    "Segment",
    "Token",
    "Transcript",
    "TranscriptionError",
    "Word",
    "__version__",
]
