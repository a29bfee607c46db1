"""Budgie: fast NVIDIA Parakeet TDT speech recognition that measures itself phase by phase."""

from budgie.api import load_model
from budgie.errors import AudioError, BudgieError, ModelError
from budgie.pipeline import Model
from budgie.results import PhaseTimings, Segment, Token, Transcript, TranscriptionError, Word

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "BudgieError",
    "Model",
    "ModelError",
    "PhaseTimings",
    "Segment",
    "Token",
    "Transcript",
    "TranscriptionError",
    "Word",
    "__version__",
    "load_model",
]
