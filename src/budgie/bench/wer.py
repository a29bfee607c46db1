"""Word error rate: word-level Levenshtein distance after a simple normalisation.

Normalisation: NFKC, lowercase, punctuation and symbols removed (hyphens, slashes and
underscores split words; apostrophes are kept inside words so "don't" stays one word),
whitespace collapsed. Deliberately simple (no number or spelling normalisation): WERs are
comparable between Budgie runs, not with leaderboards that use Whisper's English normaliser.
Both steps run in C or on machine words (regex, bit-parallel distance), so 100,000-run files
stay fast.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

_SPLIT = re.compile(r"[-/_\u2010-\u2015]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'"})


@cache
def _punctuation() -> re.Pattern[str]:
    """Every punctuation (P*) and symbol (S*) code point of the BMP except the apostrophe."""
    limit = min(sys.maxunicode, 0xFFFF)
    chars = [
        chr(c)
        for c in range(limit + 1)
        if chr(c) != "'" and unicodedata.category(chr(c))[0] in "PS"
    ]
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]+")


def normalize_words(text: str) -> tuple[str, ...]:
    """Lowercased words with punctuation stripped."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _punctuation().sub(" ", _SPLIT.sub(" ", text))
    if "'" not in text:
        return tuple(text.split())
    return tuple(w for w in (word.strip("'") for word in text.split()) if w)


def edit_distance(ref: tuple[str, ...], hyp: tuple[str, ...]) -> int:
    """Levenshtein distance between word sequences (substitution, insertion, deletion cost 1).

    Bit-parallel (Myers 1999, Hyyrö's Levenshtein form): one machine-word-style update per
    hypothesis word on Python integers whose bits stand for the reference words, so the cost
    is O(len(hyp) * len(ref) / 64) instead of a Python loop over the whole table.
    """
    start, limit = 0, min(len(ref), len(hyp))
    while start < limit and ref[start] == hyp[start]:  # equal ends cost nothing
        start += 1
    suffix = 0
    while suffix < limit - start and ref[-1 - suffix] == hyp[-1 - suffix]:
        suffix += 1
    ref, hyp = ref[start : len(ref) - suffix], hyp[start : len(hyp) - suffix]
    m = len(ref)
    if m == 0 or not hyp:
        return max(m, len(hyp))
    peq: dict[str, int] = {}
    for i, word in enumerate(ref):
        peq[word] = peq.get(word, 0) | (1 << i)
    full = (1 << m) - 1
    top = 1 << (m - 1)
    pv, mv, score = full, 0, m
    for word in hyp:
        eq = peq.get(word, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = (ph << 1) | 1
        pv = ((mh << 1) | ~(xv | ph)) & full
        mv = ph & xv & full
    return score


@dataclass(frozen=True)
class WerCounts:
    """Edits and reference words of one pair; WER = errors / words (words 0: no WER)."""

    errors: int
    words: int


@lru_cache(maxsize=65536)
def wer_counts(reference: str, hypothesis: str) -> WerCounts:
    """Cached: repeated runs of one sample share the pair."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    return WerCounts(errors=edit_distance(ref, hyp), words=len(ref))


def word_error_rate(reference: str, hypothesis: str) -> float | None:
    """WER of one pair as a fraction; None when the reference has no words."""
    counts = wer_counts(reference, hypothesis)
    return counts.errors / counts.words if counts.words else None
