"""Word error rate: word-level Levenshtein distance after a simple normalisation.

Normalisation: lowercase, punctuation removed (hyphens and slashes split words, apostrophes are
kept inside words so "don't" stays one word), whitespace collapsed. This is deliberately simple
(no number or spelling normalisation), so WERs are comparable between Budgie runs but not with
leaderboards that use Whisper's English normaliser.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_SPLITTERS = re.compile(r"[-/\u2010-\u2015_]+")


def normalize_words(text: str) -> tuple[str, ...]:
    """Lowercased words with punctuation stripped."""
    text = _SPLITTERS.sub(" ", unicodedata.normalize("NFKC", text).lower())
    chars = []
    for ch in text:
        if ch == "'" or ch == "\u2019":
            chars.append("'")
        elif unicodedata.category(ch).startswith(("P", "S")):
            chars.append(" ")
        else:
            chars.append(ch)
    words = "".join(chars).split()
    return tuple(w.strip("'") for w in words if w.strip("'"))


def edit_distance(ref: tuple[str, ...], hyp: tuple[str, ...]) -> int:
    """Levenshtein distance between word sequences (substitution, insertion, deletion cost 1).

    The common prefix and suffix are removed first: benchmark transcripts are usually close to
    their references, so the quadratic table stays tiny in practice.
    """
    start = 0
    while start < len(ref) and start < len(hyp) and ref[start] == hyp[start]:
        start += 1
    end_r, end_h = len(ref), len(hyp)
    while end_r > start and end_h > start and ref[end_r - 1] == hyp[end_h - 1]:
        end_r -= 1
        end_h -= 1
    r, h = ref[start:end_r], hyp[start:end_h]
    if not r or not h:
        return max(len(r), len(h))
    previous = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        current = [i]
        for j, hw in enumerate(h, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (rw != hw)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class WerCounts:
    """Edits and reference words of one pair; WER = errors / words (words 0: no WER)."""

    errors: int
    words: int


@lru_cache(maxsize=65536)
def wer_counts(reference: str, hypothesis: str) -> WerCounts:
    """Cached: repeated runs of one sample share the pair, so 100k-run files stay fast."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    return WerCounts(errors=edit_distance(ref, hyp), words=len(ref))


def word_error_rate(reference: str, hypothesis: str) -> float | None:
    """WER of one pair as a fraction; None when the reference has no words."""
    counts = wer_counts(reference, hypothesis)
    return counts.errors / counts.words if counts.words else None
