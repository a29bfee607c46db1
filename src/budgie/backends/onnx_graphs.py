"""Cutting a NeMo-style ``decoder_joint`` ONNX graph into the three pieces fast decoding needs.

The graph computes ``joint(enc(encoder_outputs) + pred(LSTM(embed(targets), states)))`` in one
call. Whatever produced it (NeMo's export, Budgie's, a re-export), the first node whose result
depends on both ``encoder_outputs`` and ``targets`` is where the two projections meet; its two
inputs are the cut points:

- ``project_encoder``: ``encoder_outputs`` -> encoder projection, run once for all frames;
- the prediction graph: ``targets`` + states -> prediction projection + new states, run only
  when a label is emitted;
- the joint output graph: (encoder projection, prediction projection) -> logits, per step.

When the joint output is ``relu(a + b) @ W.T + bias`` (a float graph), W and bias are read
back by probing it with scaled unit vectors, checked on random inputs, and the step runs as one
matrix-vector product in ``budgie.cpu_decoding``; otherwise (e.g. int8 graphs) each step runs
the extracted graph with ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from budgie.cpu_decoding import JointStep, TorchJoint
from budgie.errors import ModelError

PROBE_SCALE = 2.0**40  # one-hot probes this large make W's recovery exact to float32 rounding
PROBE_TOLERANCE = 1e-4  # relative: a float graph matches its read-back weights far closer


@dataclass
class DecoderParts:
    """Sessions of the three extracted graphs and the facts the decoder needs about them."""

    encoder_session: Any
    prediction_session: Any
    joint: JointStep
    enc_name: str
    pred_name: str
    pred_inputs: list[str]
    layers: int
    pred_hidden: int
    joint_hidden: int
    num_outputs: int
    joint_is_matmul: bool

    def project_encoder(self, encoder_outputs: np.ndarray) -> np.ndarray:
        """[B, D, T] encoder output -> [B, T, J] float32 encoder projection."""
        batch, _, frames = encoder_outputs.shape
        (projected,) = self.encoder_session.run(
            [self.enc_name], {"encoder_outputs": np.ascontiguousarray(encoder_outputs)}
        )
        return np.asarray(projected, dtype=np.float32).reshape(batch, frames, self.joint_hidden)

    def predictor(self, blank: int) -> OrtPredictor:
        return OrtPredictor(
            self.prediction_session, self.pred_name, self.pred_inputs, self.layers,
            self.pred_hidden, blank,
        )  # fmt: skip


class OrtPredictor:
    """Runs the prediction graph for one stream; the LSTM state stays in numpy arrays."""

    def __init__(
        self, session: Any, name: str, inputs: list[str], layers: int, hidden: int, blank: int
    ) -> None:
        self.session = session
        self.blank = blank
        shape = (layers, 1, hidden)
        feed: dict[str, np.ndarray] = {
            "targets": np.zeros((1, 1), dtype=np.int32),
            "target_length": np.ones(1, dtype=np.int32),
            "input_states_1": np.zeros(shape, dtype=np.float32),
            "input_states_2": np.zeros(shape, dtype=np.float32),
        }
        self._feed = {k: v for k, v in feed.items() if k in inputs}
        self._zero = np.zeros(shape, dtype=np.float32)
        self._outputs = [name, "output_states_1", "output_states_2"]
        self.output_shape: tuple[int, ...] = ()

    def start(self) -> np.ndarray:
        self._feed["input_states_1"] = self._zero
        self._feed["input_states_2"] = self._zero
        return self.advance(self.blank)

    def advance(self, label: int) -> np.ndarray:
        self._feed["targets"][0, 0] = label
        g, h, c = self.session.run(self._outputs, self._feed)
        self._feed["input_states_1"] = h  # ORT's fresh outputs: no copy, nothing shared
        self._feed["input_states_2"] = c
        self.output_shape = g.shape
        flat: np.ndarray = g.reshape(-1)
        return flat


class OrtJoint:
    """One joint step through the extracted joint output graph (graphs that are not a matmul)."""

    def __init__(
        self, session: Any, names: tuple[str, str], shapes: tuple[tuple[int, ...], ...]
    ) -> None:
        self.session = session
        self.names = names
        self._a = np.zeros(shapes[0], dtype=np.float32)
        self._b = np.zeros(shapes[1], dtype=np.float32)
        self._a_flat = self._a.reshape(-1)
        self._b_flat = self._b.reshape(-1)

    def __call__(self, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        self._a_flat[...] = f
        self._b_flat[...] = g
        (out,) = self.session.run(["outputs"], {self.names[0]: self._a, self.names[1]: self._b})
        logits: np.ndarray = out.reshape(-1)
        return logits


def _dependencies(graph: Any) -> tuple[str, str]:
    """Names of the encoder-side and prediction-side inputs of the node joining them."""
    deps: dict[str, frozenset[str]] = {i.name: frozenset([i.name]) for i in graph.input}
    for node in graph.node:
        found = frozenset().union(*(deps.get(x, frozenset()) for x in node.input if x))
        for out in node.output:
            deps[out] = found
        if "encoder_outputs" in found and "targets" in found:
            enc = [x for x in node.input if deps.get(x) == frozenset(["encoder_outputs"])]
            pred = [x for x in node.input if x and "encoder_outputs" not in deps.get(x, ())]
            if node.op_type == "Add" and len(enc) == 1 and len(pred) == 1:
                return enc[0], pred[0]
            break
    raise ModelError(
        "cannot find where the joint adds the encoder and prediction projections "
        "(expected an Add of one encoder-only and one prediction-only tensor)"
    )


def split_decoder_joint(
    file: Path, options: Any, prediction_options: Any | None = None
) -> DecoderParts:
    """Extract and load the three graphs; probe the joint output for a plain matmul.
    ``prediction_options``: the prediction graph's session options (else ``options``)."""
    import onnx
    import onnx.utils
    import onnxruntime as ort

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(file)))
        enc_name, pred_name = _dependencies(model.graph)
        known = {v.name for v in model.graph.value_info}
        for name in (enc_name, pred_name):  # the cut tensors become graph inputs: need a type
            if name not in known:
                model.graph.value_info.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
        extractor = onnx.utils.Extractor(model)
        pred_outputs = [pred_name, "output_states_1", "output_states_2"]
        used = _inputs_used(model.graph, pred_outputs)
        graphs = (
            extractor.extract_model(["encoder_outputs"], [enc_name]),
            extractor.extract_model(used, pred_outputs),
            extractor.extract_model([enc_name, pred_name], ["outputs"]),
        )
        enc_s, pred_s, joint_s = (
            ort.InferenceSession(g.SerializeToString(), o, providers=["CPUExecutionProvider"])
            for g, o in zip(graphs, (options, prediction_options or options, options), strict=True)
        )
    except ModelError as exc:
        raise ModelError(f"{file}: {exc}") from None
    except Exception as exc:  # onnx and ORT raise assorted types for graphs they cannot follow
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{file}: cannot split the decoder_joint graph ({reason})") from None
    states = {i.name: i.shape for i in pred_s.get_inputs()}
    layers, _, hidden = states.get("input_states_1", [None, None, None])
    if not isinstance(layers, int) or not isinstance(hidden, int):
        raise ModelError(f"{file}: input_states_1 must be [layers, batch, hidden] with fixed sizes")
    predictor = OrtPredictor(pred_s, pred_name, used, layers, hidden, blank=0)
    joint_hidden = predictor.start().size
    b_shape = predictor.output_shape
    a_shape = _encoder_projection_layout(file, enc_s, enc_name, joint_hidden)
    names = (enc_name, pred_name)
    zeros = {enc_name: np.zeros(a_shape(1), np.float32), pred_name: np.zeros(b_shape, np.float32)}
    num_outputs = int(joint_s.run(["outputs"], zeros)[0].size)
    weights = _read_back_matmul(joint_s, names, a_shape, b_shape)
    joint: JointStep
    if weights is not None:
        joint = TorchJoint(torch.from_numpy(weights[0]), torch.from_numpy(weights[1]))
    else:
        joint = OrtJoint(joint_s, names, (a_shape(1), b_shape))
    return DecoderParts(
        enc_s, pred_s, joint, enc_name, pred_name, used, layers, hidden, joint_hidden,
        num_outputs, weights is not None,
    )  # fmt: skip


def _inputs_used(graph: Any, outputs: list[str]) -> list[str]:
    """Graph inputs that ``outputs`` depend on (the prediction graph has no encoder input)."""
    producer = {out: node for node in graph.node for out in node.output}
    inputs = {i.name for i in graph.input}
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is not None:
            stack.extend(x for x in node.input if x)
    return [i.name for i in graph.input if i.name in seen and i.name in inputs]


def _encoder_projection_layout(file: Path, session: Any, name: str, hidden: int) -> Any:
    """n -> the projection's shape for n frames; it must be [1, T, 1..., J] (C-order [T, J])."""
    d_model = session.get_inputs()[0].shape[1]
    frames = hidden + 7  # unlike every other axis size, so the frame axis can be told
    (a,) = session.run([name], {"encoder_outputs": np.zeros((1, d_model, frames), np.float32)})
    dims = list(a.shape)
    if dims[-1] != hidden or frames not in dims or int(np.prod(dims)) != frames * hidden:
        raise ModelError(
            f"{file}: the encoder projection has shape {tuple(dims)} for {frames} frames; "
            f"expected [batch, frames, ..., {hidden}]"
        )
    axis = dims.index(frames)

    def a_shape(n: int) -> tuple[int, ...]:
        return tuple(n if i == axis else d for i, d in enumerate(dims))

    return a_shape


def _read_back_matmul(
    session: Any, names: tuple[str, str], a_shape: Any, b_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(W [outputs, J], bias) if the joint output graph is relu(a + b) @ W.T + bias, else None."""
    hidden = b_shape[-1]
    probe = np.zeros((hidden + 1, hidden), np.float32)
    probe[np.arange(1, hidden + 1), np.arange(hidden)] = PROBE_SCALE
    zeros = np.zeros(b_shape, np.float32)
    (out,) = session.run(
        ["outputs"], {names[0]: probe.reshape(a_shape(hidden + 1)), names[1]: zeros}
    )
    out = out.reshape(hidden + 1, -1).astype(np.float64)
    bias = out[0]
    weight = ((out[1:] - bias) / PROBE_SCALE).T.astype(np.float32)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, hidden)).astype(np.float32)
    b = rng.standard_normal(hidden).astype(np.float32)
    (check,) = session.run(
        ["outputs"], {names[0]: a.reshape(a_shape(8)), names[1]: b.reshape(b_shape)}
    )
    expected = np.maximum(a + b, 0.0) @ weight.T.astype(np.float64) + bias
    got = check.reshape(8, -1)
    if not np.all(np.isfinite(weight)):
        return None
    scale = float(np.abs(expected).max()) or 1.0
    if float(np.abs(got - expected).max()) > PROBE_TOLERANCE * scale:
        return None
    return np.ascontiguousarray(weight), bias.astype(np.float32)
