"""Train the small SentencePiece BPE tokenizers shipped for synthetic checkpoints (offline).

Run once, by hand: ``.venv/bin/python scripts/train_synth_tokenizers.py``. It writes
``src/budgie/data/synth-bpe-256.model`` (tiny presets) and ``synth-bpe-1024.model`` (v2-shaped
presets) and prints the corpus hash. The corpus is assembled deterministically from text every
machine here has, with no download:

1. the 100 ``referenceText`` fields of the parakeet.js benchmark export (real dictated English,
   ../shared/fixtures/parakeet-js/parakeet-benchmark-1772221557947.json), three times, so that
   speech-like words weigh more;
2. the prose of Python's own documentation topics (``pydoc_data.topics``, PSF licence), sorted by
   topic, grammar and code blocks dropped, wrapped lines joined into sentences;
3. Python's LICENSE.txt prose, the same way.

Sentences are kept only if every character is in a plain-English alphabet (letters, digits and
common punctuation), so both vocabularies cover every character (``character_coverage=1``) and
nothing decodes to ``<unk>``. The trainer options mirror NeMo's ``create_spt_model`` (BPE, no
bos/eos, ``<unk>`` = 0, ``hard_vocab_limit=false``) except ``normalization_rule_name=identity``,
which drops the 240 KB NFKC table and keeps each model a few tens of KB. One thread and no input
shuffling make the training reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
BENCHMARK_JSON = FIXTURES / "parakeet-js" / "parakeet-benchmark-1772221557947.json"
OUT_DIR = ROOT / "src" / "budgie" / "data"
VOCAB_SIZES = (256, 1024)

ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!'\"-:;()%/")
QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "—": "-", "–": "-"})


def sentences_from_prose(text: str) -> list[str]:
    """Sentences of the unindented paragraphs of a plain-text document (no code, no grammar)."""
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.split("\n")
        if any(line.startswith((" ", "\t", ">>>")) or "::=" in line for line in lines):
            continue
        if all(set(line.strip()) <= set("*=-~^") for line in lines[1:2]) and len(lines) <= 2:
            continue  # a heading with its underline
        joined = " ".join(line.strip() for line in lines).translate(QUOTES)
        for sentence in re.split(r"(?<=[.?!])\s+", joined):
            if len(sentence) >= 20 and set(sentence) <= ALLOWED:
                out.append(sentence)
    return out


def reference_sentences() -> list[str]:
    runs = json.loads(BENCHMARK_JSON.read_text(encoding="utf-8"))["runs"]
    out: list[str] = []
    for run in runs:
        for line in str(run["referenceText"]).translate(QUOTES).split("\n"):
            line = " ".join(line.split())
            if line and set(line) <= ALLOWED:
                out.append(line)
    return out


def build_corpus() -> list[str]:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    corpus = reference_sentences() * 3
    for key in sorted(topics):
        corpus += sentences_from_prose(topics[key])
    licence = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    licence_file = licence / "LICENSE.txt"
    if licence_file.exists():
        corpus += sentences_from_prose(licence_file.read_text(encoding="utf-8"))
    return corpus


def train(corpus_name: str, vocab_size: int, workdir: Path) -> Path:
    """Train inside ``workdir`` with relative names: the model records its input path and prefix."""
    prefix = f"synth-bpe-{vocab_size}"
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        _train(corpus_name, prefix, vocab_size)
    finally:
        os.chdir(cwd)
    return workdir / f"{prefix}.model"


def _train(corpus_name: str, prefix: str, vocab_size: int) -> None:
    spm.SentencePieceTrainer.train(
        input=corpus_name,
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        hard_vocab_limit=False,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        normalization_rule_name="identity",
        shuffle_input_sentence=False,
        input_sentence_size=0,
        num_threads=1,
        minloglevel=2,
    )


def main() -> int:
    corpus = build_corpus()
    text = "\n".join(corpus) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    print(f"corpus: {len(corpus)} sentences, {len(text)} chars, sha256 {digest}")
    print(f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus_file = Path(tmp) / "corpus.txt"
        corpus_file.write_text(text, encoding="utf-8")
        for size in VOCAB_SIZES:
            model = train(corpus_file.name, size, Path(tmp))
            target = OUT_DIR / model.name
            target.write_bytes(model.read_bytes())
            sp = spm.SentencePieceProcessor(model_file=str(target))
            model_hash = hashlib.sha256(target.read_bytes()).hexdigest()
            print(
                f"{target.relative_to(ROOT)}: {sp.get_piece_size()} pieces, "
                f"{target.stat().st_size} bytes, sha256 {model_hash}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
