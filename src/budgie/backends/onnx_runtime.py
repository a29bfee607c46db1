"""``backend="onnx"``: Parakeet TDT ONNX directories run with ONNX Runtime on the CPU.

One code path for Budgie's own exports and for the Hugging Face ones
(istupakov/parakeet-tdt-0.6b-v2-onnx, ysdede/parakeet-tdt-0.6b-v2-onnx; layout in
``budgie.backends``). Budgie's own frontend makes the features: an ONNX directory has no
checkpoint buffers, so the window and filterbank are NeMo's (symmetric Hann, slaney mel) for
``features_size`` bins.

The combined ``decoder_joint`` graph of those exports recomputes the LSTM and both joint
projections on every call. ``DecoderParts`` cuts it, without knowing who exported it, at the
node that adds the encoder and prediction projections: one graph projects all encoder frames
at once, one runs the prediction network (only when a label is emitted), one maps a summed
projection to logits (per step). ``budgie.cpu_decoding`` then runs the fast greedy loop.

Threads: the encoder session uses one intra-op thread per physical core (ORT's default counts
logical cores, and hyperthreads slow its GEMMs); the small per-step graphs use one thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from budgie.backends import (
    CONFIG_FILE,
    DECODER_JOINT_FILE,
    DECODER_JOINT_INPUTS,
    DECODER_JOINT_OUTPUTS,
    DEFAULT_DURATIONS,
    ENCODER_FILE,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    VOCAB_FILE,
    quantized_name,
    read_config,
    read_vocab,
)
from budgie.backends.onnx_fast import FAST_ENCODER_FILE, FastEncoder, load_fast_encoder
from budgie.backends.onnx_graphs import DecoderParts, split_decoder_joint
from budgie.config import (
    DecodingConfig,
    EncoderConfig,
    JointConfig,
    ModelConfig,
    PredictionConfig,
    PreprocessorConfig,
)
from budgie.cpu_decoding import decode_rows, decode_threads
from budgie.decoding import Hypothesis
from budgie.errors import BudgieError, ModelError
from budgie.frontend import Preprocessor
from budgie.model import ParakeetTDT
from budgie.nemo_files import mel_filterbank
from budgie.pipeline import Model
from budgie.text import Tokenizer

QUANTIZATIONS = {None: None, "fp32": None, "float32": None, "int8": "int8"}
ONNX_REPO_SUFFIX = "-onnx"


def physical_cores() -> int:
    """Physical cores available to this process (logical CPUs when that cannot be told)."""
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
    except ImportError:
        count = None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(count or logical or 1, logical or 1))


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are not for our users
    return options


def looks_like_onnx(source: str | os.PathLike[str]) -> bool:
    """An ONNX directory, or a hub id of one of the ``*-onnx`` repositories."""
    path = Path(source).expanduser()
    if path.is_dir():
        return (path / ENCODER_FILE).exists() or (path / DECODER_JOINT_FILE).exists()
    return not path.exists() and str(source).endswith(ONNX_REPO_SUFFIX) and "/" in str(source)


def required_files(quantization: str | None) -> list[str]:
    return [
        quantized_name(ENCODER_FILE, quantization),
        quantized_name(DECODER_JOINT_FILE, quantization),
        VOCAB_FILE,
        CONFIG_FILE,
    ]


def decoder_file(directory: Path, quantization: str | None) -> Path:
    """The float decoder_joint whenever the directory has it, also for int8 encoders.

    Quantizing the decoder saves no measurable time (decoding is a few percent of encoding and
    the per-step matrices are read back as float anyway) but flips argmaxes: on the full-size
    synthetic model it cost 2.5-4 points of token agreement with fp32.
    """
    fp32 = directory / DECODER_JOINT_FILE
    return fp32 if fp32.is_file() else directory / quantized_name(DECODER_JOINT_FILE, quantization)


def resolve_onnx_dir(source: str | os.PathLike[str], quantization: str | None) -> Path:
    """The local directory behind a path or a hub id (fetched with only the files needed)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"{source}: expected an ONNX model directory, got a file")
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise ModelError(f"ONNX model directory not found: {source}")
    advice = "download it on a machine with network access and pass the local directory"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelError(
            f"cannot fetch {text}: huggingface_hub is not installed; {advice}"
        ) from None
    patterns = required_files(quantization)
    patterns.append(quantized_name(ENCODER_FILE, quantization) + ".data")
    if quantization:
        patterns.append(DECODER_JOINT_FILE)  # preferred, see decoder_file
    try:
        return Path(snapshot_download(text, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, HTTP errors: one line, never a traceback
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelError(
            f"cannot get {text} from the Hugging Face hub ({type(exc).__name__}: {reason}); "
            f"{advice}"
        ) from None


def tokenizer_from_pieces(pieces: Sequence[str], name: str) -> Tokenizer:
    """A SentencePiece model holding exactly these pieces, so detokenization is SentencePiece's.

    vocab.txt has no piece types; they are inferred the way NeMo's tokenizers lay them out:
    ``<unk>`` unknown, ``<s>``/``</s>`` control, ``<0xNN>`` bytes, other ``<...>`` user-defined.
    """
    import importlib

    spm_pb2: Any = importlib.import_module("sentencepiece.sentencepiece_model_pb2")
    proto = spm_pb2.ModelProto()
    kinds = spm_pb2.ModelProto.SentencePiece
    for index, piece in enumerate(pieces):
        entry = proto.pieces.add()
        entry.piece = piece
        entry.score = -float(index)
        if piece == "<unk>":
            entry.type = kinds.UNKNOWN
        elif piece in ("<s>", "</s>"):
            entry.type = kinds.CONTROL
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            entry.type = kinds.BYTE
        elif piece.startswith("<") and piece.endswith(">") and len(piece) > 2:
            entry.type = kinds.USER_DEFINED
        else:
            entry.type = kinds.NORMAL
    if "<unk>" not in pieces:
        raise ModelError(f"{name}: no <unk> piece; not a SentencePiece vocabulary")
    proto.trainer_spec.model_type = spm_pb2.TrainerSpec.BPE
    proto.trainer_spec.unk_id = list(pieces).index("<unk>")
    for attr in ("bos_id", "eos_id", "pad_id"):
        setattr(proto.trainer_spec, attr, -1)
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    return Tokenizer.from_bytes(proto.SerializeToString(), name)


def frontend(features: int) -> Preprocessor:
    """Budgie's log-mel frontend with NeMo's default window and filterbank for ``features`` bins."""
    cfg = PreprocessorConfig(features=features)
    pre = Preprocessor(cfg)
    bank = mel_filterbank(cfg.sample_rate, cfg.n_fft, features)
    pre.featurizer.fb = torch.from_numpy(bank)[None]
    pre.featurizer.window = torch.hann_window(cfg.win_length, periodic=False)  # NeMo's default
    return pre.eval()


@dataclass
class _Shapes:
    features: int
    d_model: int


def _check_encoder(session: Any, file: Path, features: int) -> _Shapes:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    _check_names(file, "input", list(inputs), ENCODER_INPUTS)
    _check_names(file, "output", list(outputs), ENCODER_OUTPUTS)
    _check_tensor(file, inputs["audio_signal"], "tensor(float)", 3, {1: features})
    _check_tensor(file, inputs["length"], "tensor(int64)", 1, {})
    out = outputs["outputs"]
    _check_tensor(file, out, "tensor(float)", 3, {})
    d_model = out.shape[1]
    if not isinstance(d_model, int):
        raise ModelError(f"{file}: output 'outputs' has no fixed model dimension (axis 1)")
    return _Shapes(features, d_model)


def _check_names(file: Path, kind: str, got: list[str], wanted: Sequence[str]) -> None:
    missing = [n for n in wanted if n not in got]
    if missing:
        raise ModelError(
            f"{file}: {kind} names {got} lack {missing} (NeMo's export names are {list(wanted)})"
        )


def _check_tensor(file: Path, arg: Any, dtype: str, rank: int, fixed: dict[int, int]) -> None:
    shape = list(arg.shape or [])
    if arg.type != dtype or len(shape) != rank:
        raise ModelError(
            f"{file}: '{arg.name}' is {arg.type} of rank {len(shape)}, "
            f"expected {dtype} of rank {rank}"
        )
    for axis, size in fixed.items():
        if isinstance(shape[axis], int) and shape[axis] != size:
            raise ModelError(
                f"{file}: '{arg.name}' has size {shape[axis]} on axis {axis}, expected {size}"
            )


def _check_decoder_joint(session: Any, file: Path, d_model: int) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    _check_names(file, "input", list(inputs), DECODER_JOINT_INPUTS)
    _check_names(
        file, "output", [o for o in outputs], DECODER_JOINT_OUTPUTS[:1] + DECODER_JOINT_OUTPUTS[2:]
    )
    _check_tensor(file, inputs["encoder_outputs"], "tensor(float)", 3, {1: d_model})
    _check_tensor(file, inputs["targets"], "tensor(int32)", 2, {})
    for name in ("input_states_1", "input_states_2"):
        _check_tensor(file, inputs[name], "tensor(float)", 3, {})


class OnnxCpuDecoder:
    """The fast CPU loop over the parts of a ``decoder_joint`` graph."""

    def __init__(self, parts: DecoderParts, cfg: ModelConfig) -> None:
        self.parts = parts
        self.predictor = parts.predictor(cfg.blank_id)
        self.blank = cfg.blank_id
        self.num_labels = cfg.vocab_size + 1
        self.durations = cfg.decoding.durations
        self.max_symbols = cfg.decoding.max_symbols

    def decode(self, encoded: Tensor, lengths: Tensor, confidence: bool) -> list[Hypothesis]:
        # encoded is a [B, T, D] view of the encoder's [B, D, T] output: hand that back as is.
        projected = self.parts.project_encoder(encoded.transpose(1, 2).contiguous().numpy())
        with decode_threads(1):
            return self._loop(projected, lengths, confidence)

    def _loop(self, projected: np.ndarray, lengths: Tensor, confidence: bool) -> list[Hypothesis]:
        return decode_rows(
            projected,
            lengths,
            self.predictor,
            self.parts.joint,
            self.blank,
            self.num_labels,
            self.durations,
            self.max_symbols,
            confidence,
        )


class OnnxModel(Model):
    """A ``Model`` whose encoder and decoder are ONNX graphs; same ``transcribe``, same results."""

    def __init__(
        self,
        encoder: Any,
        parts: DecoderParts,
        cfg: ModelConfig,
        tokenizer: Tokenizer,
        name: str,
        quantization: str | None,
    ) -> None:
        # No torch network here: the pipeline reaches the model only through the hooks below.
        super().__init__(cast(ParakeetTDT, None), tokenizer, torch.device("cpu"), name=name)
        self.encoder_session = encoder
        self.preprocessor = frontend(cfg.preprocessor.features)
        self.cfg = cfg
        self.quantization = quantization
        self.cpu_decoder = OnnxCpuDecoder(parts, cfg)
        self.fast_encoder: FastEncoder | None = None  # see budgie.backends.onnx_fast
        self.files: dict[str, str] = {}

    @property
    def config(self) -> ModelConfig:
        return self.cfg

    @property
    def dtype(self) -> torch.dtype:
        return torch.qint8 if self.quantization == "int8" else torch.float32

    def _preprocess(self, audio: Tensor, num_samples: Tensor) -> tuple[Tensor, Tensor]:
        # One thread: these element-wise ops are too small to split (2 threads measured 1.2-5x
        # slower on a 2-core machine, worst when other processes compete for the cores).
        with decode_threads(1):
            features, lengths = self.preprocessor(audio, num_samples)
        return features, lengths

    def _encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.fast_encoder is not None:
            return self.fast_encoder.encode(features, lengths)
        outputs, encoded_lengths = self.encoder_session.run(
            list(ENCODER_OUTPUTS),
            {"audio_signal": features.numpy(), "length": lengths.numpy().astype(np.int64)},
        )
        encoded = torch.from_numpy(outputs).transpose(1, 2)  # a view: [B, T, D]
        return encoded, torch.from_numpy(np.asarray(encoded_lengths, dtype=np.int64))


def load_onnx_model(
    source: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    threads: int | None = None,
    fast: bool = True,
) -> OnnxModel:
    """Load an ONNX directory (or hub id) for CPU inference; ``dtype="int8"`` picks *.int8.onnx.

    A float directory written by Budgie also holds an encoder for unpadded inputs
    (``budgie.backends.onnx_fast``), used unless ``fast=False``; same numbers, less work.
    """
    if str(device) not in ("cpu", "auto"):
        raise BudgieError(f"the ONNX backend runs on the CPU (got device {device!r})")
    if dtype not in QUANTIZATIONS:
        raise BudgieError(f"the ONNX backend takes dtype fp32 or int8, got {dtype!r}")
    quantization = QUANTIZATIONS[dtype]
    try:
        import onnxruntime as ort
    except ImportError:
        raise BudgieError(
            "the ONNX backend needs onnxruntime: pip install 'budgie[onnx]'"
        ) from None
    directory = resolve_onnx_dir(source, quantization)
    needed = required_files(quantization)
    if quantization and (directory / DECODER_JOINT_FILE).is_file():
        needed.remove(quantized_name(DECODER_JOINT_FILE, quantization))
    missing = [f for f in needed if not (directory / f).is_file()]
    if missing:
        raise ModelError(
            f"{directory}: missing {', '.join(missing)} (an ONNX Parakeet TDT directory holds "
            f"{', '.join(required_files(quantization))})"
        )
    onnx_cfg = read_config(directory / CONFIG_FILE)
    pieces = read_vocab(directory / VOCAB_FILE)
    encoder_file = directory / quantized_name(ENCODER_FILE, quantization)
    joint_file = decoder_file(directory, quantization)
    threads = threads or physical_cores()
    fast_encoder = None
    if fast and not quantization:
        fast_encoder = load_fast_encoder(
            directory,
            lambda file, n: _session(ort, file, n),
            threads,
            onnx_cfg.features_size,
            onnx_cfg.subsampling_factor,
        )
    if fast_encoder is not None:
        encoder, encoder_file = fast_encoder.session, directory / FAST_ENCODER_FILE
        shapes = _Shapes(onnx_cfg.features_size, fast_encoder.d_model)
    else:
        encoder = _session(ort, encoder_file, threads)
        shapes = _check_encoder(encoder, encoder_file, onnx_cfg.features_size)
    _check_decoder_joint(_session(ort, joint_file, 1), joint_file, shapes.d_model)
    # The prediction graph streams the LSTM's weights (26 MB for parakeet-tdt-0.6b-v2) per
    # emitted label: memory-bound, it runs ~1.5x faster on two threads than one (decode 4.69 ->
    # 3.14 s over the 20 default clips, same tokens; benchmarks/results/cpu_prediction_threads_
    # ab-*.json). The per-step joint and the encoder projection are too small to split.
    parts = split_decoder_joint(joint_file, session_options(1), session_options(threads))
    num_outputs = parts.num_outputs
    durations = onnx_cfg.durations or DEFAULT_DURATIONS[: max(num_outputs - len(pieces) - 1, 0)]
    if num_outputs != len(pieces) + 1 + len(durations) or not durations:
        raise ModelError(
            f"{joint_file}: the joint has {num_outputs} outputs but {VOCAB_FILE} has "
            f"{len(pieces)} pieces + blank and config.json {len(durations)} durations"
        )
    cfg = ModelConfig(
        preprocessor=PreprocessorConfig(features=shapes.features),
        encoder=EncoderConfig(
            feat_in=shapes.features,
            d_model=shapes.d_model,
            subsampling_factor=onnx_cfg.subsampling_factor,
        ),
        prediction=PredictionConfig(
            vocab_size=len(pieces), pred_hidden=parts.pred_hidden, pred_rnn_layers=parts.layers
        ),
        joint=JointConfig(
            joint_hidden=parts.joint_hidden,
            encoder_hidden=shapes.d_model,
            pred_hidden=parts.pred_hidden,
        ),
        decoding=DecodingConfig(
            durations=tuple(durations), max_symbols=onnx_cfg.max_tokens_per_step
        ),
    )
    tokenizer = tokenizer_from_pieces(pieces, str(directory / VOCAB_FILE))
    model = OnnxModel(encoder, parts, cfg, tokenizer, str(source), quantization)
    model.fast_encoder = fast_encoder
    model.files = {"encoder": encoder_file.name, "decoder_joint": joint_file.name}
    return model


def _session(ort: Any, file: Path, threads: int) -> Any:
    try:
        return ort.InferenceSession(
            str(file), session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own types for unreadable or invalid graphs
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{file}: ONNX Runtime cannot load it ({reason})") from None
