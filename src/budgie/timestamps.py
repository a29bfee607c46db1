"""NeMo 3.0.0's TDT timestamp rules as pure functions over token texts and frame offsets.

Nothing here knows about SentencePiece or seconds: the rules work on integer frame offsets,
token pieces and their decoded texts, so they can be checked one by one against NeMo's goldens.
``budgie.text`` feeds them from a ``Tokenizer`` and turns offsets into seconds.

The rules, with the NeMo code they reproduce (nemo/collections/asr/...):

1. Token offsets (``parts/submodules/rnnt_decoding.py``, ``_compute_offsets_tdt``): a token
   emitted at frame ``t`` with TDT duration ``d`` spans ``[t, t + d]``. Nothing is clamped to the
   number of encoder frames; a zero duration gives an empty span.
2. Punctuation snap (same file, ``_refine_timestamps_tdt``): every token but the first whose
   decoded text (the token decoded on its own) is one of the tokenizer's punctuation marks gets
   ``start = end = end of the previous token`` (after that token's own snap, so runs of
   punctuation all collapse onto the last word's end). Multi-character texts (",." , "--") and
   pieces like "'s" are not single marks and keep their span; "▁'" or "▁¿" decode to a single mark
   and are snapped.
3. Words (``parts/utils/timestamp_utils.py``, ``get_words_offsets`` for a "bpe" tokenizer and
   word delimiter " "): a token starts a new word when its piece differs from its decoded text
   (a "▁" prefix, "<unk>" -> " ⁇ ") and its text is not a punctuation mark; the tokens gathered so
   far become a word spanning first token's start .. the previous token's end, its text the
   SentencePiece decoding of their pieces (no space-before-punctuation fix). A punctuation token
   joins the word being built (dropping a trailing lone "▁" piece, whose index stays the word's
   start), or, when no word is being built, is glued to the previous word's text (one trailing
   space removed) and extends its end. The first word's start is always the first token's start;
   leading punctuation forms a word of its own. A "wpe" tokenizer (any piece starting "##")
   starts words at every non-empty text not starting "##".
4. Segments (``get_segment_offsets``, delimiters ['.', '!', '?'], ``segment_gap_threshold`` None):
   a word whose last character is a delimiter (or that is one) closes a segment; segment text is
   the words joined by one space; start/end are its first word's start and last word's end; words
   after the last delimiter form a final segment. With a gap threshold, a gap (in frames) of at
   least the threshold before a word also closes a segment, and, as in NeMo, a word after which
   such a gap check ran without splitting is not tested for a delimiter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

WORD_DELIMITER = " "
SEGMENT_DELIMITERS: tuple[str, ...] = (".", "!", "?")  # RNNTDecodingConfig.segment_seperators
_STRIPPED_MARKERS = (" ", "_", "▁")  # pieces dropped before a punctuation mark in a built word


class WordSpan(NamedTuple):
    """A word as token indices: its time runs from ``start_index``'s start to ``end_index``'s end.

    ``members`` are the tokens whose pieces make the word (for confidence); they may differ from
    the start..end range exactly where NeMo's own bookkeeping does. (A NamedTuple: built once
    per word in the text phase, where a frozen dataclass's construction showed in profiles.)
    """

    text: str
    start_index: int
    end_index: int
    members: tuple[int, ...]


class SegmentSpan(NamedTuple):
    """A segment as word indices (inclusive)."""

    text: str
    first_word: int
    last_word: int


def snap_punctuation(
    texts: Sequence[str],
    frames: Sequence[int],
    durations: Sequence[int],
    punctuation: Collection[str],
) -> list[tuple[int, int]]:
    """(start_offset, end_offset) per token: ``[frame, frame + duration]``, punctuation snapped."""
    offsets: list[tuple[int, int]] = []
    marks = punctuation or ()
    end = 0
    for i, (text, frame, dur) in enumerate(zip(texts, frames, durations, strict=True)):
        if i > 0 and text in marks:
            offsets.append((end, end))  # end: the previous token's (snapped) end
        else:
            start = int(frame)
            end = start + int(dur)
            offsets.append((start, end))
    return offsets


def _next_non_delimiter(texts: Sequence[str], i: int) -> str | None:
    """NeMo's look-ahead: the next text that is neither empty nor the delimiter, if any."""
    for k in range(i + 1, len(texts)):  # indices, not a slice: no copy per delimiter
        text = texts[k]
        if text and text != WORD_DELIMITER:
            return text
    return None


def _starts_word(
    piece: str, text: str, texts: Sequence[str], i: int, punctuation: Collection[str], wpe: bool
) -> bool:
    plain_start = (bool(text) and not text.startswith("##")) if wpe else piece != text
    if plain_start:
        return True
    return text == WORD_DELIMITER and _next_non_delimiter(texts, i) not in punctuation


def word_spans(
    pieces: Sequence[str],
    texts: Sequence[str],
    punctuation: Collection[str],
    decode: Callable[[list[str]], str],
    tokenizer_type: str = "bpe",
) -> list[WordSpan]:
    """Group tokens into words exactly as NeMo's ``get_words_offsets`` does (rule 3)."""
    wpe = tokenizer_type == "wpe"
    marks = punctuation or ()
    words: list[WordSpan] = []
    built: list[int] = []  # token indices whose pieces make the word being built
    first = 0  # NeMo's previous_token_index
    for i, (piece, text) in enumerate(zip(pieces, texts, strict=True)):
        is_punct = text in marks and text != WORD_DELIMITER
        if not is_punct and _starts_word(piece, text, texts, i, punctuation, wpe):
            if built:
                words.append(_span(decode, pieces, built, first, i - 1))
            built = []
            if text != WORD_DELIMITER:
                built = [i]
                first = i
        elif is_punct and not built and words:
            last = words[-1]
            base = last.text[:-1] if last.text.endswith(" ") else last.text
            words[-1] = WordSpan(base + text, last.start_index, i, (*last.members, i))
        elif is_punct and built:
            if pieces[built[-1]] in _STRIPPED_MARKERS:
                built.pop()
            built.append(i)
        else:
            if not built:
                first = i
            built.append(i)
    if built:
        words.append(_span(decode, pieces, built, first, len(pieces) - 1))
    if words:  # NeMo forces the first word to start at the first token
        w = words[0]
        words[0] = WordSpan(w.text, 0, w.end_index, w.members)
    return words


def _span(
    decode: Callable[[list[str]], str], pieces: Sequence[str], idx: list[int], start: int, end: int
) -> WordSpan:
    return WordSpan(decode([pieces[k] for k in idx]), start, end, tuple(idx))


def segment_spans(
    words: Sequence[str],
    gaps: Sequence[int] | None = None,
    delimiters: Collection[str] = SEGMENT_DELIMITERS,
    gap_threshold: int | None = None,
) -> list[SegmentSpan]:
    """Group words into segments as NeMo's ``get_segment_offsets`` does (rule 4).

    ``gaps[i]`` is word i's start offset minus word i-1's end offset (frames); it is only read
    when ``gap_threshold`` is set.
    """
    segments: list[SegmentSpan] = []
    current: list[str] = []
    first = 0
    for i, word in enumerate(words):
        if gap_threshold and current:
            if gaps is None:
                raise ValueError("segment gap threshold needs the gaps between words")
            if gaps[i] >= gap_threshold:
                segments.append(SegmentSpan(" ".join(current), first, i - 1))
                current = [word]
                first = i
                continue
        elif word and (word[-1] in delimiters or word in delimiters):
            current.append(word)
            segments.append(SegmentSpan(" ".join(current), first, i))
            current = []
            first = i + 1
            continue
        current.append(word)
    if current:
        segments.append(SegmentSpan(" ".join(current), first, len(words) - 1))
    return segments
