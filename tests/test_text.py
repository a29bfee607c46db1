"""Text and timestamps against NeMo 3.0.0's own outputs (tests/fixtures/text_goldens.json).

The goldens come from scripts/make_text_goldens.py, which runs NeMo's transcribe(timestamps=True)
post-search path (RNNTBPEDecoding + process_timestamp_outputs) with the real v3 tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from budgie.errors import ModelError
from budgie.results import Token, Word
from budgie.text import (
    Tokenizer,
    build_text_and_timestamps,
    build_timed_tokens,
    extract_punctuation,
    group_segments,
    group_words,
    remove_space_before_punctuation,
)
from budgie.timestamps import segment_spans, snap_punctuation, word_spans

FIXTURES = Path(__file__).parent / "fixtures"
GOLDENS: dict[str, Any] = json.loads((FIXTURES / "text_goldens.json").read_text("utf-8"))
CASES = GOLDENS["cases"]
SHIFT = GOLDENS["window_stride"] * GOLDENS["subsampling_factor"]
TOL = 1e-9


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(FIXTURES / GOLDENS["tokenizer"])


def ids_of(case: dict[str, Any]) -> str:
    return str(case["name"])


def test_golden_set_covers_the_brief() -> None:
    names = {c["name"] for c in CASES}
    assert {"empty", "leading_punct", "consecutive_punct", "ends_past_last_frame"} <= names
    assert {"all_duration_zero", "large_durations", "e2e_life_Jim", "e2e_sample"} <= names
    assert GOLDENS["nemo_version"] == "3.0.0"


def test_tokenizer_matches_nemo_vocabulary_view(tok: Tokenizer) -> None:
    assert tok.vocab_size == 8192
    assert sorted(tok.supported_punctuation) == GOLDENS["supported_punctuation"]
    assert tok.tokenizer_type == GOLDENS["tokenizer_type"]
    assert tok.id_to_piece(7877) == "," and tok.pieces([7877, 7883]) == [",", "."]


@pytest.mark.parametrize("case", CASES, ids=ids_of)
def test_text_matches_nemo(tok: Tokenizer, case: dict[str, Any]) -> None:
    assert tok.decode(case["ids"]) == case["expected"]["text"]


@pytest.mark.parametrize("case", CASES, ids=ids_of)
def test_token_timestamps_match_nemo(tok: Tokenizer, case: dict[str, Any]) -> None:
    exp = case["expected"]["char"]
    texts = [tok.token_text(i) for i in case["ids"]]
    assert [[t] for t in texts] == [e["char"] for e in exp]
    offsets = snap_punctuation(texts, case["frames"], case["durations"], tok.supported_punctuation)
    assert offsets == [(e["start_offset"], e["end_offset"]) for e in exp]
    tokens = build_timed_tokens(
        tok, case["ids"], case["frames"], case["durations"], case["confidences"], SHIFT
    )
    assert [t.id for t in tokens] == case["ids"]
    assert [t.frame for t in tokens] == case["frames"]
    assert [t.duration for t in tokens] == case["durations"]
    for t, e in zip(tokens, exp, strict=True):
        assert t.start == pytest.approx(e["start"], abs=TOL)
        assert t.end == pytest.approx(e["end"], abs=TOL)
        assert (t.start, t.end) == (e["start"], e["end"])  # bit-exact for subsampling 8


@pytest.mark.parametrize("case", CASES, ids=ids_of)
def test_word_timestamps_match_nemo(tok: Tokenizer, case: dict[str, Any]) -> None:
    exp = case["expected"]["word"]
    tokens = build_timed_tokens(
        tok, case["ids"], case["frames"], case["durations"], case["confidences"], SHIFT
    )
    words = group_words(tokens, tok)
    assert [w.text for w in words] == [e["word"] for e in exp]
    for w, e in zip(words, exp, strict=True):
        assert (w.start, w.end) == pytest.approx((e["start"], e["end"]), abs=TOL)
    # the same rule on integer offsets gives NeMo's start_offset / end_offset
    texts = [tok.token_text(i) for i in case["ids"]]
    offs = snap_punctuation(texts, case["frames"], case["durations"], tok.supported_punctuation)
    spans = word_spans(tok.pieces(case["ids"]), texts, tok.supported_punctuation, tok.decode_pieces)
    got = [(offs[s.start_index][0], offs[s.end_index][1]) for s in spans]
    assert got == [(e["start_offset"], e["end_offset"]) for e in exp]


@pytest.mark.parametrize("case", CASES, ids=ids_of)
def test_segment_timestamps_match_nemo(tok: Tokenizer, case: dict[str, Any]) -> None:
    exp = case["expected"]["segment"]
    tokens = build_timed_tokens(
        tok, case["ids"], case["frames"], case["durations"], case["confidences"], SHIFT
    )
    gap = case["segment_gap_threshold"]
    segs = group_segments(group_words(tokens, tok), gap_threshold=gap, frame_shift_s=SHIFT)
    assert [s.text for s in segs] == [e["segment"] for e in exp]
    for s, e in zip(segs, exp, strict=True):
        assert (s.start, s.end) == pytest.approx((e["start"], e["end"]), abs=TOL)


CONF_CASES = [c for c in CASES if c["expected"].get("confidence_comparable")]


@pytest.mark.parametrize("case", CONF_CASES, ids=ids_of)
def test_word_confidence_matches_nemo_min(tok: Tokenizer, case: dict[str, Any]) -> None:
    tokens = build_timed_tokens(
        tok, case["ids"], case["frames"], case["durations"], case["confidences"], SHIFT
    )
    got = [w.confidence for w in group_words(tokens, tok)]
    assert got == pytest.approx(case["expected"]["word_confidence_textsplit"], abs=TOL)


def test_confidence_cases_exist() -> None:
    assert len(CONF_CASES) >= 5


@pytest.mark.parametrize("case", CASES[:3] + CASES[-3:], ids=ids_of)
def test_one_call_gives_the_same_as_the_parts(tok: Tokenizer, case: dict[str, Any]) -> None:
    text, tokens, words, segs = build_text_and_timestamps(
        tok, case["ids"], case["frames"], case["durations"], case["confidences"], SHIFT
    )
    assert text == case["expected"]["text"]
    assert [t.start for t in tokens] == [e["start"] for e in case["expected"]["char"]]
    assert [w.text for w in words] == [e["word"] for e in case["expected"]["word"]]
    assert [s.text for s in segs] == [e["segment"] for e in case["expected"]["segment"]]


def test_word_confidence_is_none_without_token_confidences(tok: Tokenizer) -> None:
    ids = [7206, 7877, 2148]  # "▁say" "," "▁ok"
    tokens = build_timed_tokens(tok, ids, [0, 2, 3], [1, 1, 1], None, SHIFT)
    assert [w.confidence for w in group_words(tokens, tok)] == [None, None]
    tokens[0].confidence = 0.5
    assert [w.confidence for w in group_words(tokens, tok)] == [None, None]


def test_punctuation_snaps_to_previous_token_end(tok: Tokenizer) -> None:
    ids = [tok_id(tok, "▁so"), tok_id(tok, ","), tok_id(tok, "."), tok_id(tok, "▁then")]
    tokens = build_timed_tokens(tok, ids, [0, 30, 31, 32], [2, 4, 1, 3], None, 0.08)
    spans = [(t.start, t.end) for t in tokens]
    assert spans == [(0.0, 0.16), (0.16, 0.16), (0.16, 0.16), (32 * 0.08, 35 * 0.08)]
    assert [(t.frame, t.duration) for t in tokens] == [(0, 2), (30, 4), (31, 1), (32, 3)]


def tok_id(tok: Tokenizer, piece: str) -> int:
    return tok.vocab.index(piece)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello , world .", "hello, world."),
        ("a  , b", "a , b"),  # only one whitespace is removed
        ("x\t?", "x?"),
        ("qué tal ¿ y", "qué tal¿ y"),
        ("no marks here", "no marks here"),
    ],
)
def test_space_before_punctuation_rule(text: str, expected: str) -> None:
    marks = frozenset(",.?¿")
    assert remove_space_before_punctuation(text, marks) == expected
    assert remove_space_before_punctuation(text, frozenset()) == text


def test_punctuation_extraction_skips_special_pieces() -> None:
    pieces = ["<unk>", "<|a.b|>", "[x,y]", "##!", "▁¿", " ", "a-b", "'s", "%"]
    assert extract_punctuation(pieces) == {"-", "'", "%"}


def test_segments_split_on_delimiters_and_gaps() -> None:
    words = ["Hi.", "you", "there?", "ok"]
    assert [(s.text, s.first_word, s.last_word) for s in segment_spans(words)] == [
        ("Hi.", 0, 0),
        ("you there?", 1, 2),
        ("ok", 3, 3),
    ]
    # NeMo's get_segment_offsets gives exactly this (checked with NeMo 3.0.0): once a gap check
    # has run for a word, that word's own delimiter is not looked at ("there?" does not split).
    spans = segment_spans(words, gaps=[0, 0, 9, 0], gap_threshold=5)
    assert [s.text for s in spans] == ["Hi.", "you", "there? ok"]
    assert segment_spans([]) == []


def test_gap_threshold_needs_frame_shift() -> None:
    words = [Word("a", 0.0, 0.1), Word("b", 1.0, 1.1)]
    with pytest.raises(ValueError, match="frame_shift_s"):
        group_segments(words, gap_threshold=2)
    segs = group_segments(words, gap_threshold=2, frame_shift_s=0.08)
    assert [(s.text, s.start, s.end) for s in segs] == [("a", 0.0, 0.1), ("b", 1.0, 1.1)]


def test_wpe_style_vocabulary_starts_words_at_non_continuations() -> None:
    # expected values from NeMo's get_words_offsets(tokenizer_type="wpe") on the same input
    spans = word_spans(
        ["he", "##llo", "world", "."], ["he", "##llo", "world", "."], {"."}, "".join, "wpe"
    )
    assert [(s.text, s.start_index, s.end_index) for s in spans] == [
        ("he##llo", 0, 1),
        ("world.", 2, 3),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.model", None, "not found"),
        ("empty.model", b"", "not a valid SentencePiece"),
        ("text.model", b"hello world\n", "not a valid SentencePiece"),
        ("truncated.model", "TRUNCATE", "not a valid SentencePiece"),
    ],
)
def test_bad_tokenizer_files(tmp_path: Path, name: str, content: Any, message: str) -> None:
    path = tmp_path / name
    if content == "TRUNCATE":
        content = (FIXTURES / GOLDENS["tokenizer"]).read_bytes()[:1000]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as info:
        Tokenizer(path)
    assert "\n" not in str(info.value)


def test_tokenizer_directory_and_bytes(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="directory"):
        Tokenizer(tmp_path)
    with pytest.raises(ModelError, match="not a valid"):
        Tokenizer.from_bytes(b"\x00garbage", "x.nemo:tokenizer.model")
    tok = Tokenizer.from_bytes((FIXTURES / GOLDENS["tokenizer"]).read_bytes())
    assert tok.decode([tok_id(tok, "▁time"), tok_id(tok, ",")]) == "time,"


@pytest.mark.parametrize("bad_id", [-1, 8192, 10**6])
def test_token_id_outside_vocabulary(tok: Tokenizer, bad_id: int) -> None:
    with pytest.raises(ModelError, match="outside the tokenizer"):
        tok.decode([5, bad_id])


@pytest.mark.parametrize(
    ("frames", "durations", "confidences"),
    [([0], [1, 1], None), ([0, 1], [1], None), ([0, 1], [1, 1], [0.5])],
)
def test_parallel_lists_must_agree(
    tok: Tokenizer, frames: list[int], durations: list[int], confidences: list[float] | None
) -> None:
    with pytest.raises(ValueError, match="same length"):
        build_timed_tokens(tok, [5, 6], frames, durations, confidences, SHIFT)


def test_empty_hypothesis(tok: Tokenizer) -> None:
    assert build_text_and_timestamps(tok, [], [], [], None, SHIFT) == ("", [], [], [])


def test_token_type_is_results_token(tok: Tokenizer) -> None:
    (t,) = build_timed_tokens(tok, [7206], [3], [2], [0.25], SHIFT)
    assert t == Token(
        id=7206, piece="▁say", start=0.24, end=0.4, frame=3, duration=2, confidence=0.25
    )


def test_decode_word_is_decode_pieces_memoized(
    tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same text as SentencePiece for every word; cached; the cache stays bounded."""
    import budgie.text as text_module

    monkeypatch.setattr(text_module, "WORD_CACHE_SIZE", 4)
    tok._word_cache.clear()
    words = [[tok.id_to_piece(i), tok.id_to_piece(i + 1)] for i in range(1, 12)]
    for word in words * 2:
        assert tok.decode_word(word) == tok.decode_pieces(word)
        assert len(tok._word_cache) <= 4
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(tok, "decode_pieces", lambda pieces: calls.append(tuple(pieces)) or "x")
    tok.decode_word(words[-1])  # cached: SentencePiece is not asked again
    assert calls == []
