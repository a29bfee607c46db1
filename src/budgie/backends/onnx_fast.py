"""Budgie's own encoder graph for unpadded inputs: the same weights, fewer operations per call.

The standard ``encoder-model.onnx`` (NeMo's interface, what onnx-asr and parakeet.js load) must
handle padded batches, so it masks time before every subsampling convolution, in attention and
in every convolution module, and it projects the relative positional encodings through each
layer's ``linear_pos`` on every call. Measured on the full-size model (2-core CPU, 20 s input,
ORT profile): the projection is ~6 % of the encoder's time (it depends only on the length),
and the masks cost more than their own ops: the mask's ``Shape`` of the first convolution's
output keeps ONNX Runtime from fusing that convolution with its ReLU, which adds a layout
reorder and a standalone ReLU over a [256, T/2, F/2] tensor (~7 % together).

So Budgie's export adds two graphs that only Budgie uses (other readers never look for them):

- ``budgie-encoder-fast.onnx``: ``audio_signal`` [B, F, T] with every row T frames long (no
  padding, no ``length`` input, no masks) and ``pos_proj.<i>`` [2T'-1, D] per layer, the
  already projected positional encodings -> ``outputs`` [B, D, T'];
- ``budgie-encoder-positions.onnx``: ``pos_emb`` [P, D] -> ``pos_proj.<i>`` [P, D], each
  layer's ``linear_pos``.

Both reference the standard graph's ``encoder-model.onnx.data`` for every weight they share
with it (matched by content when the directory is written), so nothing large is duplicated on
disk. The backend feeds each utterance cut to its own length (a row cut to its length gives
what the masked graph gives for that row: zero padding where the masks put zeros), and keeps
one table of projected positions for the longest length seen, slicing it for shorter ones: the
rows for relative positions T-1 ... -(T-1) sit in the middle of any longer table.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from budgie.backends import ENCODER_FILE
from budgie.encoder import ConformerEncoder, ConformerLayer, ConvSubsampling, relative_positions
from budgie.errors import ModelError

FAST_ENCODER_FILE = "budgie-encoder-fast.onnx"
POSITIONS_FILE = "budgie-encoder-positions.onnx"
FAST_INPUT = "audio_signal"
FAST_OUTPUT = "outputs"
POS_EMB = "pos_emb"
MIN_TABLE_FRAMES = 376  # encoder frames of 30 s at 80 ms: one table serves the usual clips
MAX_TABLE_BYTES = 1 << 30  # longer inputs get their projections per call, not cached


def pos_name(layer: int) -> str:
    return f"pos_proj.{layer}"


def subsample_unmasked(pre: ConvSubsampling, features: Tensor) -> Tensor:
    """``ConvSubsampling.forward`` for unpadded rows: the masks are all ones, so they go."""
    x = pre.conv(features.transpose(1, 2).unsqueeze(1))  # [B, C, T', F']
    out: Tensor = pre.out(x.transpose(1, 2).flatten(2))
    return out


class FastEncoderGraph(nn.Module):
    """features [B, F, T] (unpadded) + projected positions per layer -> outputs [B, D, T']."""

    def __init__(self, encoder: ConformerEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, audio_signal: Tensor, *pos_proj: Tensor) -> Tensor:
        enc = self.encoder
        x = subsample_unmasked(enc.pre_encode, audio_signal)
        if enc.xscale is not None:
            x = x * enc.xscale
        for layer, projected in zip(enc.layers, pos_proj, strict=True):
            assert isinstance(layer, ConformerLayer)
            # linear_pos passes rows through while tracing: this only lays the rows out per head
            positions = layer.self_attn.project_positions(projected[None])
            x = layer(x, positions, None)
        return x.transpose(1, 2)


class PositionsGraph(nn.Module):
    """pos_emb [P, D] -> every layer's ``linear_pos(pos_emb)``."""

    def __init__(self, encoder: ConformerEncoder) -> None:
        super().__init__()
        layers = [layer for layer in encoder.layers if isinstance(layer, ConformerLayer)]
        self.projections = nn.ModuleList(layer.self_attn.linear_pos for layer in layers)

    def forward(self, pos_emb: Tensor) -> tuple[Tensor, ...]:
        return tuple(projection(pos_emb) for projection in self.projections)


class _Projected(nn.Module):
    """Stands in for ``linear_pos`` when its output is a graph input: passes rows through
    (keeping the weight's dtype visible to the code that reads it)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight

    def forward(self, projected: Tensor) -> Tensor:
        return projected.to(self.weight.dtype)


@contextmanager
def positions_given(encoder: ConformerEncoder) -> Iterator[None]:
    """Let each attention take its projected positions as ``pos_emb`` (restored afterwards)."""
    attentions = [layer.self_attn for layer in encoder.layers if isinstance(layer, ConformerLayer)]
    saved = [attention.linear_pos for attention in attentions]
    try:
        for attention in attentions:
            attention.linear_pos = _Projected(attention.linear_pos)  # type: ignore[assignment]
        yield
    finally:
        for attention, linear in zip(attentions, saved, strict=True):
            attention.linear_pos = linear


def export_fast_encoder(encoder: ConformerEncoder, directory: Path, frames: int = 200) -> None:
    """Write both graphs into ``directory``, sharing the standard graph's data file."""
    from budgie.backends.onnx_export import onnx_friendly_encoder, trace_to_file

    cfg = encoder.cfg
    features = torch.randn(1, cfg.feat_in, frames, generator=torch.Generator().manual_seed(0))
    encoder = encoder.eval()
    with torch.no_grad():
        x = subsample_unmasked(encoder.pre_encode, features)
        pos_emb = relative_positions(x.shape[1], cfg.d_model, x.device)[0]
        projected = PositionsGraph(encoder)(pos_emb)
        names = [pos_name(i) for i in range(len(encoder.layers))]
        with tempfile.TemporaryDirectory(dir=directory) as temp:
            traced = Path(temp) / FAST_ENCODER_FILE
            with positions_given(encoder), onnx_friendly_encoder():
                trace_to_file(
                    FastEncoderGraph(encoder),
                    (features, *projected),
                    traced,
                    ((FAST_INPUT, *names), (FAST_OUTPUT,)),
                    {
                        FAST_INPUT: {0: "batch", 2: "time"},
                        **{n: {0: "positions"} for n in names},
                        FAST_OUTPUT: {0: "batch", 2: "frames"},
                    },
                )
            share_weights(traced, directory / ENCODER_FILE, directory / FAST_ENCODER_FILE)
            traced = Path(temp) / POSITIONS_FILE
            trace_to_file(
                PositionsGraph(encoder),
                (pos_emb,),
                traced,
                ((POS_EMB,), tuple(names)),
                {POS_EMB: {0: "positions"}, **{n: {0: "positions"} for n in names}},
            )
            share_weights(traced, directory / ENCODER_FILE, directory / POSITIONS_FILE)


def _digest(dtype: int, dims: list[int], data: bytes) -> tuple[int, tuple[int, ...], str]:
    return dtype, tuple(dims), hashlib.sha256(data).hexdigest()


def share_weights(traced: Path, standard: Path, target: Path) -> None:
    """Save ``traced`` as ``target``, pointing every tensor the standard graph stores in its
    external data file at those bytes; other tensors stay inside ``target``.

    Without an external data file (a small model) the standard graph embeds its weights and
    ``target`` embeds its own copy.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, set_external_data

    proto = onnx.load(str(traced))  # pulls the exporter's per-tensor files in
    reference = onnx.load(str(standard), load_external_data=False)
    stored: dict[tuple[int, tuple[int, ...], str], dict[str, str]] = {}
    for tensor in reference.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = ExternalDataInfo(tensor)
        with open(standard.parent / info.location, "rb") as data:
            data.seek(info.offset or 0)
            raw = data.read(info.length)
        key = _digest(tensor.data_type, list(tensor.dims), raw)
        stored[key] = {"location": info.location, "offset": str(info.offset or 0)}
        stored[key]["length"] = str(len(raw))
    for tensor in proto.graph.initializer:
        if not tensor.HasField("raw_data"):
            continue
        found = stored.get(_digest(tensor.data_type, list(tensor.dims), tensor.raw_data))
        if found is not None:
            set_external_data(tensor, found["location"], int(found["offset"]), int(found["length"]))
            tensor.ClearField("raw_data")
    onnx.save_model(proto, str(target))


class FastEncoder:
    """Runs ``budgie-encoder-fast.onnx`` row by row, with cached projected positions."""

    def __init__(self, session: Any, positions: Any, d_model: int, factor: int) -> None:
        self.session = session
        self.positions = positions
        self.d_model = d_model
        self.halvings = factor.bit_length() - 1  # a power of two (checked in config.json)
        self.layers = len(positions.get_outputs())
        self.table: list[np.ndarray] = []
        self.table_frames = 0

    def encoded_frames(self, features: int) -> int:
        for _ in range(self.halvings):
            features = (features - 1) // 2 + 1
        return features

    def projections(self, frames: int) -> list[np.ndarray]:
        """Each layer's ``linear_pos`` rows for relative positions frames-1 ... -(frames-1)."""
        if frames > self.table_frames:
            wanted = max(frames, MIN_TABLE_FRAMES, self.table_frames * 3 // 2)
            bytes_needed = (2 * wanted - 1) * self.d_model * 4 * self.layers
            if bytes_needed > MAX_TABLE_BYTES:
                return self._project(frames)  # too long to keep: this call only
            self.table, self.table_frames = self._project(wanted), wanted
        start = self.table_frames - frames
        return [layer[start : start + 2 * frames - 1] for layer in self.table]

    def _project(self, frames: int) -> list[np.ndarray]:
        pos_emb = relative_positions(frames, self.d_model, torch.device("cpu"))[0].numpy()
        return list(self.positions.run(None, {POS_EMB: pos_emb}))

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features [B, F, T] + lengths -> [B, T', D] (zeros past each row's length), lengths."""
        rows = [int(n) for n in lengths.tolist()]
        frames = [self.encoded_frames(n) for n in rows]
        outputs = [self.run(features[row : row + 1, :, :n]) for row, n in enumerate(rows)]
        if len(rows) == 1:  # a view of ORT's [1, D, T'] array: the decoder transposes it back
            return outputs[0].transpose(1, 2), torch.tensor(frames, dtype=torch.long)
        out = torch.zeros(len(rows), max(frames), self.d_model)
        for row, (encoded, t) in enumerate(zip(outputs, frames, strict=True)):
            out[row, :t] = encoded[0].transpose(0, 1)
        return out, torch.tensor(frames, dtype=torch.long)

    def run(self, features: Tensor) -> Tensor:
        """One unpadded row [1, F, n] -> [1, D, T'] (one call, so no batch is ever padded)."""
        frames = self.encoded_frames(features.shape[2])
        feeds = {FAST_INPUT: features.contiguous().numpy()}
        for layer, projected in enumerate(self.projections(frames)):
            feeds[pos_name(layer)] = projected
        (encoded,) = self.session.run([FAST_OUTPUT], feeds)
        return torch.from_numpy(encoded)


def load_fast_encoder(
    directory: Path,
    open_session: Callable[[Path, int], Any],
    threads: int,
    features: int,
    factor: int,
) -> FastEncoder | None:
    """The directory's unpadded encoder, checked against its positions graph; None if absent.

    ``open_session(file, threads)`` opens a graph (ModelError on failure).
    """
    files = [directory / FAST_ENCODER_FILE, directory / POSITIONS_FILE]
    if not all(f.is_file() for f in files):
        return None
    session = open_session(files[0], threads)
    positions = open_session(files[1], threads)
    names = [o.name for o in positions.get_outputs()]
    wanted = [pos_name(i) for i in range(len(names))]
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    audio = inputs.get(FAST_INPUT)
    problem = None
    if [i.name for i in positions.get_inputs()] != [POS_EMB] or names != wanted or not names:
        problem = f"{files[1]}: expected input {POS_EMB!r} and outputs pos_proj.0 ... pos_proj.N"
    elif sorted(inputs) != sorted([FAST_INPUT, *names]) or list(outputs) != [FAST_OUTPUT]:
        problem = (
            f"{files[0]}: inputs {sorted(inputs)} and outputs {list(outputs)} do not match "
            f"{FAST_INPUT!r} + {len(names)} pos_proj inputs -> {FAST_OUTPUT!r}"
        )
    elif audio is None or len(audio.shape) != 3 or audio.shape[1] != features:
        problem = f"{files[0]}: {FAST_INPUT!r} is not [batch, {features}, time]"
    d_model = outputs[FAST_OUTPUT].shape[1] if problem is None else None
    if problem is None and not isinstance(d_model, int):
        problem = f"{files[0]}: output {FAST_OUTPUT!r} has no fixed model dimension (axis 1)"
    if problem is not None:
        raise ModelError(problem)
    assert isinstance(d_model, int)
    return FastEncoder(session, positions, d_model, factor)
