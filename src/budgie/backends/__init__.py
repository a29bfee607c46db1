"""The ONNX directory layout shared by Budgie's exporter and its ONNX Runtime backend.

The layout is the one NeMo's ``export()`` writes and parakeet.js / onnx-asr / the
istupakov and ysdede Hugging Face repositories use, so one directory serves all of them:

- ``encoder-model.onnx`` (+ ``encoder-model.onnx.data`` when the weights pass protobuf's 2 GB):
  ``audio_signal`` [B, features, T] float32 and ``length`` [B] int64 in; ``outputs``
  [B, d_model, T'] float32 and ``encoded_lengths`` [B] int64 out;
- ``decoder_joint-model.onnx``: ``encoder_outputs`` [B, d_model, T] float32, ``targets`` [B, U]
  int32, ``target_length`` [B] int32, ``input_states_1/2`` [layers, B, hidden] float32 in;
  ``outputs`` [B, T, U, vocab + 1 + durations] float32 (raw logits), ``prednet_lengths`` [B]
  int32, ``output_states_1/2`` out;
- ``*.int8.onnx``: the same graphs, dynamically quantized;
- ``vocab.txt``: ``piece id`` per line, the last one ``<blk> N`` (N = vocabulary size);
- ``config.json``: ``model_type`` nemo-conformer-tdt, ``features_size``, ``subsampling_factor``
  (Budgie adds ``durations`` and ``max_tokens_per_step``; other readers ignore them).

This module only knows names and the two text files; it imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budgie.errors import ModelError

ENCODER_FILE = "encoder-model.onnx"
DECODER_JOINT_FILE = "decoder_joint-model.onnx"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "config.json"
BLANK_PIECE = "<blk>"
MODEL_TYPE = "nemo-conformer-tdt"

ENCODER_INPUTS = ("audio_signal", "length")
ENCODER_OUTPUTS = ("outputs", "encoded_lengths")
DECODER_JOINT_INPUTS = (
    "encoder_outputs",
    "targets",
    "target_length",
    "input_states_1",
    "input_states_2",
)
DECODER_JOINT_OUTPUTS = ("outputs", "prednet_lengths", "output_states_1", "output_states_2")
DEFAULT_DURATIONS = (0, 1, 2, 3, 4)


def quantized_name(file_name: str, quantization: str | None) -> str:
    """``encoder-model.onnx`` -> ``encoder-model.int8.onnx`` for quantization ``int8``."""
    if not quantization:
        return file_name
    return file_name.removesuffix(".onnx") + f".{quantization}.onnx"


def write_vocab(path: Path, pieces: list[str]) -> None:
    """One ``piece id`` line per token, then ``<blk> N``: the blank follows the vocabulary."""
    lines = [f"{piece} {index}" for index, piece in enumerate(pieces)]
    lines.append(f"{BLANK_PIECE} {len(pieces)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_vocab(path: Path) -> list[str]:
    """The pieces by id (blank excluded); ModelError naming the file and the line if malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from None
    by_id: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        piece, _, index = line.rpartition(" ")
        if not piece or not index.lstrip("-").isdigit():
            raise ModelError(f"{path}: line {number} is not 'piece id': {line[:60]!r}")
        if int(index) in by_id:
            raise ModelError(f"{path}: line {number}: id {index} appears twice")
        by_id[int(index)] = piece
    blanks = [i for i, p in by_id.items() if p == BLANK_PIECE]
    if not blanks:
        raise ModelError(f"{path}: no {BLANK_PIECE} line (the blank token must be listed)")
    blank = blanks[0]
    if sorted(by_id) != list(range(len(by_id))):
        raise ModelError(f"{path}: ids are not 0..{len(by_id) - 1} without gaps")
    if blank != len(by_id) - 1:
        raise ModelError(f"{path}: {BLANK_PIECE} has id {blank}; TDT models put it last")
    return [by_id[i] for i in range(blank)]


@dataclass(frozen=True)
class OnnxConfig:
    """What ``config.json`` says (with the defaults other exporters rely on)."""

    features_size: int
    subsampling_factor: int
    durations: tuple[int, ...] | None
    max_tokens_per_step: int


def write_config(
    path: Path,
    features_size: int,
    subsampling_factor: int,
    durations: tuple[int, ...],
    max_symbols: int,
) -> None:
    config = {
        "model_type": MODEL_TYPE,
        "features_size": features_size,
        "subsampling_factor": subsampling_factor,
        "max_tokens_per_step": max_symbols,
        "durations": list(durations),
    }
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def read_config(path: Path) -> OnnxConfig:
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: expected a JSON object")
    model_type = raw.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ModelError(f"{path}: model_type is {model_type!r}; Budgie runs {MODEL_TYPE!r}")
    try:
        features = int(raw.get("features_size", 128))
        factor = int(raw.get("subsampling_factor", 8))
        max_tokens = int(raw.get("max_tokens_per_step", 10))
        durations = raw.get("durations")
        parsed = None if durations is None else tuple(int(d) for d in durations)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad value ({exc})") from None
    if features < 1 or factor < 1 or factor & (factor - 1) or max_tokens < 1:
        raise ModelError(
            f"{path}: features_size {features}, subsampling_factor {factor} (a power of two) "
            f"and max_tokens_per_step {max_tokens} must be positive"
        )
    return OnnxConfig(features, factor, parsed, max_tokens)
