"""Token ids -> text, timed tokens, words and segments, exactly as NeMo 3.0.0 gives them for TDT.

The pipeline calls one function, ``build_text_and_timestamps``; the pieces below it are public so
they can be tested one by one against NeMo's goldens (``tests/fixtures/text_goldens.json``, made
by ``scripts/make_text_goldens.py`` through NeMo's own ``transcribe(timestamps=True)`` path).

NeMo rules reproduced (nemo/collections/...; timestamp rules: see ``budgie.timestamps``):

* Text (``asr/parts/submodules/rnnt_decoding.py``, ``decode_hypothesis`` ->
  ``decode_tokens_to_str_with_strip_punctuation``): the ids' pieces are decoded by SentencePiece
  itself (``common/tokenizers/sentencepiece_tokenizer.py``: ``ids_to_tokens`` then
  ``tokens_to_text`` = ``decode_pieces``). That is not a plain "join, '▁' -> space, strip": only
  the first piece's leading "▁" is dropped, a trailing lone "▁" leaves a trailing space, "<unk>"
  becomes " ⁇ " and user-defined pieces ("<|pnc|>") stay literal. Then one whitespace character
  right before any supported punctuation mark is removed (regex ``(\\s)(p1|p2|...)`` -> the mark,
  all occurrences): "hello , world" -> "hello, world", but also "qué tal ¿" -> "qué tal¿".
* Supported punctuation (``asr/parts/utils/tokenizer_utils.py``,
  ``extract_punctuation_from_vocab``; set on the model's tokenizer by ``mixins.py``,
  ``_derive_tokenizer_properties``): every Unicode "P*" character of every piece that is not
  special: pieces matching ``^\\[.*\\]$``, ``^<.*>$``, ``^##``, ``^▁`` or ``^\\s*$`` are skipped.
  For the v3 tokenizer: ! % ' , - . / : ? ¡ ¿.
* Tokenizer type (``define_spe_tokenizer_type``): "wpe" if any piece starts with "##", else "bpe".
* Seconds (``asr/parts/utils/timestamp_utils.py``, ``process_timestamp_outputs``): NeMo computes
  ``offset * window_stride * subsampling_factor``; Budgie computes ``offset * frame_shift_s`` with
  ``frame_shift_s = window_stride * subsampling_factor``. For a power-of-two subsampling factor
  (8 for Parakeet) both give the same float bit for bit, since scaling by 2^k is exact.
* Word confidence: NeMo's ``_aggregate_token_confidence_subwords_sentencepiece`` (default
  aggregation ``min``) groups tokens by its own rule, aligned with ``text.split()``, and raises
  when the two disagree (e.g. Spanish "¿"). Budgie takes the ``min`` over each timestamp word's
  own tokens instead; where NeMo's two word lists agree the values are the same (tested).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cached_property, lru_cache
from itertools import pairwise
from pathlib import Path
from typing import cast

import sentencepiece as spm

from budgie.errors import ModelError
from budgie.results import Segment, Token, Word
from budgie.timestamps import SEGMENT_DELIMITERS, segment_spans, snap_punctuation, word_spans

# Decoded words kept by Tokenizer.decode_word (cleared when full: bounded memory).
WORD_CACHE_SIZE = 65536
_SPECIAL_PIECE = re.compile(r"^\[.*\]$|^<.*>$|^##|^▁|^\s*$")


def extract_punctuation(pieces: Sequence[str]) -> frozenset[str]:
    """The punctuation marks NeMo treats specially: P* characters of non-special pieces."""
    return frozenset(
        ch
        for piece in pieces
        if not _SPECIAL_PIECE.match(piece)
        for ch in piece
        if unicodedata.category(ch).startswith("P")
    )


def spe_tokenizer_type(pieces: Sequence[str]) -> str:
    """'wpe' when any piece starts with '##' (changes NeMo's word rule), else 'bpe'."""
    return "wpe" if any(p.startswith("##") for p in pieces) else "bpe"


@lru_cache(maxsize=8)
def _space_before(punctuation: frozenset[str]) -> re.Pattern[str]:
    marks = "|".join(re.escape(p) for p in sorted(punctuation))
    return re.compile(r"(\s)(" + marks + ")")


def remove_space_before_punctuation(text: str, punctuation: frozenset[str]) -> str:
    """NeMo >= 2.4: drop one whitespace character right before each punctuation mark."""
    if not punctuation:
        return text
    return _space_before(punctuation).sub(r"\2", text)


class Tokenizer:
    """A SentencePiece model with the views NeMo's decoding uses (pieces, per-token text)."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "not found"
            raise ModelError(f"tokenizer file {what}: {p}")
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read tokenizer file {p}: {exc.strerror}") from exc
        self._init(spm.SentencePieceProcessor(), data, str(p))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> Tokenizer:
        """Load a serialized SentencePiece model, e.g. read straight out of a .nemo archive."""
        tok = cls.__new__(cls)
        tok._init(spm.SentencePieceProcessor(), data, name)
        return tok

    def _init(self, sp: spm.SentencePieceProcessor, data: bytes, name: str) -> None:
        try:
            sp.LoadFromSerializedProto(data)
        except (RuntimeError, OSError, TypeError) as exc:
            raise ModelError(f"not a valid SentencePiece tokenizer: {name}") from exc
        if sp.get_piece_size() == 0:
            raise ModelError(f"SentencePiece tokenizer has no pieces: {name}")
        self._sp = sp
        self.name = name
        self._text_cache: dict[int, str] = {}
        self._word_cache: dict[tuple[str, ...], str] = {}

    @cached_property
    def vocab_size(self) -> int:
        """Number of pieces; the TDT blank id equals this."""
        return int(self._sp.get_piece_size())

    @cached_property
    def vocab(self) -> tuple[str, ...]:
        return tuple(self._sp.id_to_piece(i) for i in range(self.vocab_size))

    @cached_property
    def supported_punctuation(self) -> frozenset[str]:
        return extract_punctuation(self.vocab)

    @cached_property
    def tokenizer_type(self) -> str:
        return spe_tokenizer_type(self.vocab)

    def id_to_piece(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise ModelError(
                f"token id {token_id} is outside the tokenizer's {self.vocab_size} pieces "
                "(model and tokenizer do not match)"
            )
        return self.vocab[token_id]

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """A tuple lookup per id (checked in bulk): the tokenize phase is per-token Python."""
        vocab = self.vocab
        if ids and not (min(ids) >= 0 and max(ids) < len(vocab)):
            return [self.id_to_piece(i) for i in ids]  # raises for the bad id
        return [vocab[i] for i in ids]

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        """SentencePiece's own detokenization (NeMo's ``tokens_to_text``), no punctuation fix."""
        return str(self._sp.decode_pieces(list(pieces)))

    def decode_word(self, pieces: Sequence[str]) -> str:
        """``decode_pieces`` memoized: words recur, and SentencePiece's call costs ~7 us of
        interpreter time per word (the text thread's largest share)."""
        key = tuple(pieces)
        text = self._word_cache.get(key)
        if text is None:
            if len(self._word_cache) >= WORD_CACHE_SIZE:
                self._word_cache.clear()
            text = self._word_cache[key] = self.decode_pieces(key)
        return text

    def token_text(self, token_id: int) -> str:
        """One token decoded on its own, as NeMo's timestamp code sees it ('▁the' -> 'the')."""
        text = self._text_cache.get(token_id)
        if text is None:
            text = self.decode_pieces([self.id_to_piece(token_id)])
            self._text_cache[token_id] = text
        return text

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """``token_text`` of every id (one dict lookup each once cached)."""
        cache = self._text_cache
        texts = [cache.get(i) for i in ids]
        if None in texts:
            texts = [self.token_text(i) for i in ids]
        return cast(list[str], texts)

    def decode(self, ids: Sequence[int]) -> str:
        """The transcript NeMo 3.0.0 gives for these (blank-free) token ids."""
        text = self.decode_pieces(self.pieces(ids))
        return remove_space_before_punctuation(text, self.supported_punctuation)


def build_timed_tokens(
    tokenizer: Tokenizer,
    ids: Sequence[int],
    frames: Sequence[int],
    durations: Sequence[int],
    confidences: Sequence[float] | None,
    frame_shift_s: float,
) -> list[Token]:
    """Tokens with NeMo's char-level start/end (punctuation snapped), in seconds.

    ``frame`` and ``duration`` keep the decoder's raw emission frame and TDT duration.
    """
    ids = [int(i) for i in ids]
    return _timed_tokens(
        tokenizer, ids, tokenizer.pieces(ids), tokenizer.token_texts(ids), frames, durations,
        confidences, frame_shift_s,
    )  # fmt: skip


def _timed_tokens(
    tokenizer: Tokenizer,
    ids: list[int],
    pieces: list[str],
    texts: list[str],
    frames: Sequence[int],
    durations: Sequence[int],
    confidences: Sequence[float] | None,
    frame_shift_s: float,
) -> list[Token]:
    _check_lengths(ids, frames, durations, confidences)
    offsets = snap_punctuation(texts, frames, durations, tokenizer.supported_punctuation)
    confs = [None] * len(ids) if confidences is None else [float(c) for c in confidences]
    return [
        Token(tid, piece, start * frame_shift_s, end * frame_shift_s, int(frame), int(dur), conf)
        for tid, piece, frame, dur, (start, end), conf in zip(
            ids, pieces, frames, durations, offsets, confs, strict=True
        )
    ]


def group_words(tokens: Sequence[Token], tokenizer: Tokenizer) -> list[Word]:
    """NeMo's word timestamps; confidence = min over the word's tokens (None if any lacks one)."""
    pieces = [t.piece for t in tokens]
    return _group_words(tokens, pieces, tokenizer.token_texts([t.id for t in tokens]), tokenizer)


def _group_words(
    tokens: Sequence[Token], pieces: list[str], texts: list[str], tokenizer: Tokenizer
) -> list[Word]:
    spans = word_spans(
        pieces,
        texts,
        tokenizer.supported_punctuation,
        tokenizer.decode_word,
        tokenizer.tokenizer_type,
    )
    if all(t.confidence is None for t in tokens):  # the usual case: no per-word minimum
        return [
            Word(span.text, tokens[span.start_index].start, tokens[span.end_index].end, None)
            for span in spans
        ]
    words = []
    for span in spans:
        confs = [tokens[k].confidence for k in span.members]
        conf = None if None in confs else min(c for c in confs if c is not None)
        words.append(
            Word(span.text, tokens[span.start_index].start, tokens[span.end_index].end, conf)
        )
    return words


def group_segments(
    words: Sequence[Word],
    *,
    delimiters: Sequence[str] = SEGMENT_DELIMITERS,
    gap_threshold: int | None = None,
    frame_shift_s: float | None = None,
) -> list[Segment]:
    """NeMo's segment timestamps (split after '.', '!', '?'; optional gap threshold in frames)."""
    gaps = None
    if gap_threshold:
        if not frame_shift_s:
            raise ValueError("a segment gap threshold needs frame_shift_s")
        gaps = [0] + [round((w.start - prev.end) / frame_shift_s) for prev, w in pairwise(words)]
    spans = segment_spans([w.text for w in words], gaps, delimiters, gap_threshold)
    return [Segment(s.text, words[s.first_word].start, words[s.last_word].end) for s in spans]


def build_text_and_timestamps(
    tokenizer: Tokenizer,
    ids: Sequence[int],
    frames: Sequence[int],
    durations: Sequence[int],
    confidences: Sequence[float] | None,
    frame_shift_s: float,
) -> tuple[str, list[Token], list[Word], list[Segment]]:
    """Everything the pipeline needs from one utterance's decoder output, in one call (each
    token's piece and text looked up once for all of it)."""
    ids = [int(i) for i in ids]
    pieces, texts = tokenizer.pieces(ids), tokenizer.token_texts(ids)
    tokens = _timed_tokens(
        tokenizer, ids, pieces, texts, frames, durations, confidences, frame_shift_s
    )
    words = _group_words(tokens, pieces, texts, tokenizer)
    text = remove_space_before_punctuation(
        tokenizer.decode_pieces(pieces), tokenizer.supported_punctuation
    )
    return text, tokens, words, group_segments(words)


def _check_lengths(
    ids: Sequence[int],
    frames: Sequence[int],
    durations: Sequence[int],
    confidences: Sequence[float] | None,
) -> None:
    """The decoder hands over parallel lists; a length mismatch is a Budgie bug, said plainly."""
    n = len(ids)
    if (
        len(frames) != n
        or len(durations) != n
        or (confidences is not None and len(confidences) != n)
    ):
        raise ValueError(
            f"token ids ({n}), frames ({len(frames)}), durations ({len(durations)})"
            + ("" if confidences is None else f" and confidences ({len(confidences)})")
            + " must have the same length"
        )
