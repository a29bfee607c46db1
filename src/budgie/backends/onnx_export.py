"""``budgie export --format onnx``: a checkpoint as an ONNX directory parakeet.js and onnx-asr load.

The graphs have NeMo's own export interface (names, dtypes, layouts: see ``budgie.backends``)
and the same numbers as Budgie's torch engine. Two encoder details need an export-friendly form,
supplied here without touching ``budgie.encoder``:

- ``rel_shift`` selects the relative-position scores with ``as_strided``, which ONNX cannot
  express; during export it is swapped for the pad-and-reshape form of the same selection
  (Transformer-XL's trick), which picks the same elements, so the values are identical;
- the encoder skips its masks when nothing is padded (a data-dependent ``if``); the export
  graph always masks, which changes nothing for unpadded inputs (masking an all-valid row is a
  no-op) and keeps batches with padding exact.

The relative positional encodings are computed in the graph from the input length (no table, no
5000-frame cap): any length the memory allows runs. Tracing uses the legacy TorchScript exporter
(``dynamo=False``), which needs no extra packages and keeps every time axis dynamic. Graphs
whose weights pass protobuf's 2 GB limit are saved with one external data file
(``encoder-model.onnx.data``), as NeMo and the Hugging Face exports do.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import budgie.encoder as encoder_module
from budgie.backends import (
    CONFIG_FILE,
    DECODER_JOINT_FILE,
    DECODER_JOINT_INPUTS,
    DECODER_JOINT_OUTPUTS,
    ENCODER_FILE,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    VOCAB_FILE,
    quantized_name,
    write_config,
    write_vocab,
)
from budgie.backends.onnx_fast import FAST_ENCODER_FILE, POSITIONS_FILE, export_fast_encoder
from budgie.encoder import INF_VAL, ConformerEncoder, ConformerLayer, time_mask
from budgie.errors import BudgieError, ModelError
from budgie.model import ParakeetTDT

OPSET = 17  # NeMo's export opset; onnxruntime-web (parakeet.js) runs it
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # leave room for the graph itself under protobuf's 2 GB
QUANTIZATIONS = ("int8",)


@dataclass
class ExportResult:
    directory: Path
    files: list[Path]


def rel_shift_onnx(scores: Tensor) -> Tensor:
    """``budgie.encoder.rel_shift`` with reshapes only: [B, H, T, 2T-1] -> [B, H, T, T].

    Prepending one zero column and reading the buffer as 2T rows of T shifts row i left by
    T-1-i; dropping the first row and the columns past T leaves column j = relative position
    j - i, the elements ``as_strided`` selects.
    """
    b, h, t, p = scores.shape
    padded = F.pad(scores, (1, 0))
    shifted = padded.reshape(b, h, p + 1, t)[:, :, 1:]
    return shifted.reshape(b, h, t, p)[:, :, :, :t]


def relative_positions_onnx(x: Tensor, d_model: int) -> Tensor:
    """``budgie.encoder.relative_positions`` for x's length, interleaved without index_put."""
    t = x.shape[1]
    positions = torch.arange(t - 1, -t, -1, dtype=torch.float32, device=x.device)
    div_term = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=x.device)
        * -(math.log(INF_VAL) / d_model)
    )
    angles = positions[:, None] * div_term
    pe = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1)
    return pe.reshape(1, -1, d_model).to(x.dtype)


@contextmanager
def onnx_friendly_encoder() -> Iterator[None]:
    """Swap ``rel_shift`` for its reshape form while tracing (restored afterwards)."""
    original = encoder_module.rel_shift
    encoder_module.rel_shift = rel_shift_onnx
    try:
        yield
    finally:
        encoder_module.rel_shift = original


class EncoderGraph(nn.Module):
    """NeMo's encoder export interface: features [B, F, T] -> outputs [B, D, T'] + lengths."""

    def __init__(self, encoder: ConformerEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, audio_signal: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
        enc = self.encoder
        x, lengths = enc.pre_encode(audio_signal, length)
        if enc.xscale is not None:
            x = x * enc.xscale
        pos_emb = relative_positions_onnx(x, enc.cfg.d_model)
        valid = time_mask(lengths, x.shape[1])
        for layer in enc.layers:
            assert isinstance(layer, ConformerLayer)
            x = layer(x, layer.self_attn.project_positions(pos_emb), valid)
        return x.transpose(1, 2), lengths


class DecoderJointGraph(nn.Module):
    """NeMo's decoder_joint export: labels + LSTM states + encoder frames -> joint logits.

    outputs[b, t, u] are the raw logits (no log-softmax) for frame t after label u.
    """

    def __init__(self, network: ParakeetTDT) -> None:
        super().__init__()
        self.prediction = network.decoder.prediction
        self.joint = network.joint

    def forward(
        self,
        encoder_outputs: Tensor,
        targets: Tensor,
        target_length: Tensor,
        input_states_1: Tensor,
        input_states_2: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        embedded = self.prediction.embed(targets.long())
        out, (h, c) = self.prediction.dec_rnn.lstm(embedded, (input_states_1, input_states_2))
        f = self.joint.project_encoder(encoder_outputs.transpose(1, 2))  # [B, T, J]
        g = self.joint.project_prediction(out)  # [B, U, J]
        logits = self.joint.logits(f[:, :, None, :], g[:, None, :, :])
        return logits, target_length, h, c


def trace_to_file(
    module: nn.Module,
    args: tuple[Tensor, ...],
    traced: Path,
    names: tuple[tuple[str, ...], tuple[str, ...]],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """Trace ``module`` (opset 17, legacy exporter) into ``traced``; big weights may land in
    per-tensor files beside it."""
    module.eval()  # the exporter restores the wrapper's mode afterwards: it must be eval already
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter, not for users
        torch.onnx.export(
            module,
            args,
            str(traced),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(names[0]),
            output_names=list(names[1]),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    target: Path,
    names: tuple[tuple[str, ...], tuple[str, ...]],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """Trace ``module`` into ``target``; weights go to ``<target>.data`` past protobuf's limit."""
    import onnx

    with tempfile.TemporaryDirectory(dir=target.parent) as temp:
        traced = Path(temp) / target.name
        trace_to_file(module, args, traced, names, dynamic_axes)
        weights = sum(f.stat().st_size for f in Path(temp).iterdir())
        if weights < EXTERNAL_DATA_THRESHOLD and not any(
            f.name != target.name for f in Path(temp).iterdir()
        ):
            shutil.move(traced, target)
            return
        proto = onnx.load(str(traced))  # pulls the exporter's per-tensor files in
        data_name = target.name + ".data"
        (target.parent / data_name).unlink(missing_ok=True)
        onnx.save_model(
            proto,
            str(target),
            save_as_external_data=weights >= EXTERNAL_DATA_THRESHOLD,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
        data = target.parent / data_name
        if data.exists():  # onnx creates it owner-only; give it the graph file's permissions
            data.chmod(target.stat().st_mode & 0o777)


def export_encoder(network: ParakeetTDT, target: Path, frames: int = 200) -> None:
    cfg = network.cfg.encoder
    features = torch.randn(1, cfg.feat_in, frames, generator=torch.Generator().manual_seed(0))
    length = torch.tensor([frames], dtype=torch.long)
    with onnx_friendly_encoder(), torch.no_grad():
        _export(
            EncoderGraph(network.encoder),
            (features, length),
            target,
            (ENCODER_INPUTS, ENCODER_OUTPUTS),
            {
                "audio_signal": {0: "batch", 2: "time"},
                "length": {0: "batch"},
                "outputs": {0: "batch", 2: "frames"},
                "encoded_lengths": {0: "batch"},
            },
        )


def export_decoder_joint(network: ParakeetTDT, target: Path) -> None:
    cfg = network.cfg
    pred = cfg.prediction
    states = torch.zeros(pred.pred_rnn_layers, 1, pred.pred_hidden)
    args = (
        torch.zeros(1, cfg.joint.encoder_hidden, 1),
        torch.full((1, 1), cfg.blank_id, dtype=torch.int32),
        torch.ones(1, dtype=torch.int32),
        states,
        states.clone(),
    )
    with torch.no_grad():
        _export(
            DecoderJointGraph(network),
            args,
            target,
            (DECODER_JOINT_INPUTS, DECODER_JOINT_OUTPUTS),
            {
                "encoder_outputs": {0: "batch", 2: "frames"},
                "targets": {0: "batch", 1: "labels"},
                "target_length": {0: "batch"},
                "input_states_1": {1: "batch"},
                "input_states_2": {1: "batch"},
                "outputs": {0: "batch", 1: "frames", 2: "labels"},
                "prednet_lengths": {0: "batch"},
                "output_states_1": {1: "batch"},
                "output_states_2": {1: "batch"},
            },
        )


# MatMuls left in float32 by --quantize int8, by node name (measured on the full-size synthetic
# model, 20 default clips, token agreement with fp32): quantizing the subsampling's output
# projection alone costs 7 points (88 % -> 95 % without it) for 0.7 % of the weights; the joint's
# output layer decides every argmax.
KEEP_FLOAT = ("/pre_encode/", "/joint_net/")


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the MatMuls (weights int8, activations quantized per call).

    Only MatMuls with constant weights are quantized (minus ``KEEP_FLOAT``): they carry nearly
    all of the encoder's weights; convolutions, the embedding and the LSTM stay float (ORT's
    int8 convolutions are slower than its float ones, and the decoder is a small share).
    Scales are per output channel: on the full-size synthetic model (10 default clips) token
    agreement with fp32 rose from 95.2 % (one scale per matrix) to 97.3 % at the same speed.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    keep = [n.name for n in graph.node if n.op_type == "MatMul" and n.name.startswith(KEEP_FLOAT)]

    external = (source.parent / (source.name + ".data")).exists()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is not for our users
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(source),
                str(target),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=keep,
                per_channel=True,
                use_external_data_format=external and _too_big_for_one_file(source),
                extra_options={"MatMulConstBOnly": True},
            )
    finally:
        root.setLevel(level)


def _too_big_for_one_file(source: Path) -> bool:
    data = source.parent / (source.name + ".data")
    return data.stat().st_size // 4 > EXTERNAL_DATA_THRESHOLD  # int8 is a quarter of fp32


def export_onnx(
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    quantize: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a ``.nemo`` checkpoint (path or hub id) to an ONNX directory; returns the files."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise BudgieError(f"unknown quantization {quantize!r} (choose from int8)")
    _require_onnx()
    from budgie.api import load_model

    loaded = load_model(model, device="cpu", dtype="fp32")
    return export_network(loaded.network, list(loaded.tokenizer.vocab), out_dir, quantize, progress)


def export_network(
    network: ParakeetTDT,
    pieces: list[str],
    out_dir: str | os.PathLike[str],
    quantize: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write the graphs, vocab.txt and config.json of ``network`` into ``out_dir``."""
    directory = Path(out_dir)
    if len(pieces) != network.cfg.vocab_size:
        raise ModelError(f"{len(pieces)} pieces for a model of {network.cfg.vocab_size} labels")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BudgieError(f"cannot create {directory}: {exc.strerror or exc}") from None
    say = progress or (lambda _msg: None)
    network = network.float().eval()
    cfg = network.cfg
    files = [directory / ENCODER_FILE, directory / DECODER_JOINT_FILE]
    say("encoder")
    export_encoder(network, files[0])
    say("encoder (Budgie's unpadded variant)")
    export_fast_encoder(network.encoder, directory)
    fast = [directory / FAST_ENCODER_FILE, directory / POSITIONS_FILE]
    say("decoder_joint")
    export_decoder_joint(network, files[1])
    write_vocab(directory / VOCAB_FILE, pieces)
    write_config(
        directory / CONFIG_FILE,
        features_size=cfg.preprocessor.features,
        subsampling_factor=cfg.encoder.subsampling_factor,
        durations=cfg.decoding.durations,
        max_symbols=cfg.decoding.max_symbols,
    )
    written = [*files, *fast, directory / VOCAB_FILE, directory / CONFIG_FILE]
    if quantize:
        for source in files:
            say(f"quantize {source.name}")
            target = directory / quantized_name(source.name, quantize)
            quantize_int8(source, target)
            written.append(target)
    data = directory / (ENCODER_FILE + ".data")
    if data.exists():
        written.append(data)
    return ExportResult(directory, [f for f in written if f.exists()])


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BudgieError(
            f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is missing): "
            "pip install 'budgie[onnx]'"
        ) from None
