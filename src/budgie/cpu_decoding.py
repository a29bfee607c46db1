"""Fast TDT greedy decoding on the CPU, shared by the torch and the ONNX Runtime backends.

The seed spent more time decoding than encoding because every step ran the whole
``decoder_joint`` graph: the LSTM and both joint projections after every blank. Here:

- the encoder half of the joint (``enc`` projection) runs once for all frames, one matrix
  product per batch (``EncoderProjection``);
- the prediction network and the prediction half of the joint run only when a label is
  emitted (``Predictor``); after a blank the cached projection is reused;
- a step is ``relu(f_t + g) @ W.T + b`` into preallocated buffers, then two argmaxes over
  fixed views of the logits buffer (``JointStep``): no tensor allocation per step.

``greedy_decode_fast`` follows ``budgie.decoding.greedy_decode_single`` rule for rule and gives the
same tokens, frames, durations and step counts (tested, including the symbol cap); only the
summation order of the output matmul may differ (a different BLAS), which cannot change an
argmax unless two logits tie to the last bits.

Threads: the per-step work is a 640 x 1030 matrix-vector product (~0.7 MFLOP); splitting it
over threads costs more in synchronisation than it saves, so steps run on the calling thread
(``torch`` ops inside ``decode_threads(1)``); the encoder keeps all physical cores.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from budgie.decoding import Hypothesis
from budgie.transducer import Decoder, Joint

EncoderProjection = Callable[[Tensor], np.ndarray]
"""encoder output [B, T, D] (CPU tensor) -> joint encoder projection [B, T, J] float32."""


class CpuDecoder(Protocol):
    """What ``Model._decode`` calls when decoding runs on the CPU (both backends)."""

    def decode(self, encoded: Tensor, lengths: Tensor, confidence: bool) -> list[Hypothesis]:
        """encoded [B, T, D] (float32, any device), lengths [B] -> one hypothesis per row."""


class Predictor(Protocol):
    """The prediction network followed by the joint's prediction projection, for one stream."""

    def start(self) -> np.ndarray:
        """Reset to the zero state and consume the blank start symbol; returns g [J]."""

    def advance(self, label: int) -> np.ndarray:
        """Consume an emitted label; returns the new g [J] (valid until the next call)."""


class JointStep(Protocol):
    """logits [labels + durations] of one frame's projection f [J] and a prediction g [J]."""

    def __call__(self, f: np.ndarray, g: np.ndarray) -> np.ndarray: ...


class TorchJoint:
    """relu(f + g) @ W.T + b with torch kernels writing into preallocated buffers.

    Measured (benchmarks/cpu_compare.py --micro) to beat numpy/OpenBLAS on the 640 x 1030
    step; both run on one thread.
    """

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        self.weight = weight.detach().float().cpu().contiguous()
        self.bias = bias.detach().float().cpu().contiguous()
        self._hidden = torch.empty(self.weight.shape[1])
        self._logits = torch.empty(self.weight.shape[0])
        self._hidden_np = self._hidden.numpy()
        self._logits_np = self._logits.numpy()

    def __call__(self, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        np.add(f, g, out=self._hidden_np)
        np.maximum(self._hidden_np, 0.0, out=self._hidden_np)
        torch.addmv(self.bias, self.weight, self._hidden, out=self._logits)
        return self._logits_np


class NumpyJoint:
    """The same step in numpy (kept for the per-step measurement and as a reference)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self._hidden = np.empty(self.weight.shape[1], dtype=np.float32)
        self._logits = np.empty(self.weight.shape[0], dtype=np.float32)

    def __call__(self, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        np.add(f, g, out=self._hidden)
        np.maximum(self._hidden, 0.0, out=self._hidden)
        np.dot(self.weight, self._hidden, out=self._logits)
        np.add(self._logits, self.bias, out=self._logits)
        return self._logits


def greedy_decode_fast(
    enc_proj: np.ndarray,
    predictor: Predictor,
    joint: JointStep,
    blank: int,
    num_labels: int,
    durations: Sequence[int],
    max_symbols: int,
    with_confidence: bool = False,
) -> Hypothesis:
    """TDT greedy decoding of one utterance from its projected frames ``enc_proj`` [T, J].

    NeMo's label-looping rules (see ``budgie.decoding``): a blank advances by its duration (at
    least 1); a label is emitted at the frame it was found on, with its duration, even past the
    end; at most ``max_symbols`` labels per frame.
    """
    hyp = Hypothesis(confidences=[] if with_confidence else None)
    num_frames = enc_proj.shape[0]
    if num_frames == 0:
        return hyp
    rows = list(enc_proj)  # row views made once, not per step
    dur_table = list(durations)
    g = predictor.start()
    t, last_frame, on_frame, steps = 0, -1, 0, 0
    label, duration, logits = blank, 0, None
    while t < num_frames:
        while True:  # look for a label from frame t on
            label_frame = t
            logits = joint(rows[t], g)
            steps += 1
            label = int(logits[:num_labels].argmax())
            duration = dur_table[int(logits[num_labels:].argmax())]
            if label != blank:
                break
            t += duration or 1
            if t >= num_frames:
                break
        if label == blank:
            break  # ran off the end while looking for a label
        t += duration
        hyp.token_ids.append(label)
        hyp.frames.append(label_frame)
        hyp.durations.append(duration)
        if hyp.confidences is not None and logits is not None:
            hyp.confidences.append(label_probability(logits[:num_labels]))
        on_frame = on_frame + 1 if label_frame == last_frame else 1
        last_frame = label_frame
        g = predictor.advance(label)
        if t < num_frames and on_frame >= max_symbols and last_frame == t:
            t += 1  # symbol cap reached on this frame: force a blank
    hyp.steps = steps
    return hyp


def decode_rows(
    projected: np.ndarray,
    lengths: Tensor,
    predictor: Predictor,
    joint: JointStep,
    blank: int,
    num_labels: int,
    durations: Sequence[int],
    max_symbols: int,
    with_confidence: bool = False,
) -> list[Hypothesis]:
    """``greedy_decode_fast`` for each row of a padded [B, T, J] batch, over its valid frames."""
    return [
        greedy_decode_fast(
            projected[row, :n],
            predictor,
            joint,
            blank,
            num_labels,
            durations,
            max_symbols,
            with_confidence,
        )
        for row, n in enumerate(int(x) for x in lengths.tolist())
    ]


def label_probability(label_logits: np.ndarray) -> float:
    """max softmax probability over the labels (NeMo's 'max_prob' confidence)."""
    shifted = label_logits.astype(np.float64) - float(label_logits.max())
    return float(1.0 / np.exp(shifted).sum())


@contextmanager
def decode_threads(count: int) -> Iterator[None]:
    """Run torch ops on ``count`` intra-op threads for a while (the step is too small to split)."""
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchPredictor:
    """Budgie's prediction network (embedding + LSTM) and ``joint.pred`` on the CPU, in float32.

    One emitted label is one time step of a memory-bound network: each step streams the LSTM's
    weights (26 MB for parakeet-tdt-0.6b-v2). So layer 0's input product is looked up in a
    per-label table (W_ih0 @ embedding + both biases, float64 sums rounded once: ~25 % of the
    weights not streamed), and every layer's product is one ``addmm`` against a contiguous
    [inputs, 4H] matrix ([x | h] against [W_ih | W_hh]^T above layer 0), the layout MKL's
    one-row products run fastest on: 0.8 vs 2.2 ms per step with ``torch.lstm_cell`` (the
    module's own [4H, inputs] weights) on the 2-core machine (benchmarks/cpu_predictor_micro.py),
    and ``nn.LSTM``'s oneDNN path
    re-packs its weights on every call (~5x slower). Same gates (float rounding aside).
    """

    def __init__(self, decoder: Decoder, joint: Joint) -> None:
        prediction = decoder.prediction
        lstm = prediction.dec_rnn.lstm
        self.embed = prediction.embed
        self.project = joint.pred
        self.blank = prediction.blank_id
        hidden = lstm.hidden_size

        def weights(layer: int) -> tuple[Tensor, Tensor, Tensor]:
            w_ih = getattr(lstm, f"weight_ih_l{layer}").detach()
            w_hh = getattr(lstm, f"weight_hh_l{layer}").detach()
            bias = torch.zeros(4 * hidden, dtype=torch.float64)
            for name in (f"bias_ih_l{layer}", f"bias_hh_l{layer}"):
                if getattr(lstm, name, None) is not None:
                    bias += getattr(lstm, name).detach().double()
            return w_ih, w_hh, bias

        with torch.no_grad():
            w_ih, w_hh, bias = weights(0)
            embedding = self.embed.weight.detach().double()
            self._table = (embedding @ w_ih.double().T + bias).float()  # [labels, 4H]
            self._recurrent0 = w_hh.T.contiguous()  # [H, 4H]
            self._upper: list[tuple[Tensor, Tensor]] = []  # [in + H, 4H], [1, 4H]
            for layer in range(1, lstm.num_layers):
                w_ih, w_hh, bias = weights(layer)
                stacked = torch.cat([w_ih, w_hh], dim=1).T.contiguous()
                self._upper.append((stacked, bias.float().unsqueeze(0)))
        self._zero = torch.zeros(1, hidden)
        self._state: list[tuple[Tensor, Tensor]] = []

    @torch.inference_mode()
    def start(self) -> np.ndarray:
        self._state = [(self._zero, self._zero)] * (1 + len(self._upper))
        return self.advance(self.blank)

    @staticmethod
    def _cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = gates.chunk(4, dim=1)  # torch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    @torch.inference_mode()
    def advance(self, label: int) -> np.ndarray:
        h, c = self._state[0]
        x, c = self._cell(torch.addmm(self._table[label : label + 1], h, self._recurrent0), c)
        state = [(x, c)]
        for (stacked, bias), (h, c) in zip(self._upper, self._state[1:], strict=True):
            x, c = self._cell(torch.addmm(bias, torch.cat([x, h], dim=1), stacked), c)
            state.append((x, c))
        self._state = state
        projected: np.ndarray = self.project(x)[0].numpy()
        return projected


class TorchCpuDecoder:
    """The fast loop over Budgie's decoder and joint modules (CPU copies if they live on a GPU)."""

    def __init__(
        self,
        decoder: Decoder,
        joint: Joint,
        durations: Sequence[int],
        max_symbols: int,
        threads: int = 1,
    ) -> None:
        cpu = torch.device("cpu")
        on_cpu = next(decoder.parameters()).device == cpu and next(joint.parameters()).device == cpu
        self.decoder = decoder if on_cpu else copy.deepcopy(decoder).to(cpu)
        self.joint = joint if on_cpu else copy.deepcopy(joint).to(cpu)
        self.decoder.float()
        self.joint.float()
        output = self.joint.joint_net[2]
        assert isinstance(output, torch.nn.Linear)
        self.step = TorchJoint(output.weight, output.bias)
        self.predictor = TorchPredictor(self.decoder, self.joint)
        self.blank = self.decoder.prediction.blank_id
        self.num_labels = self.joint.num_labels
        self.durations = tuple(durations)
        self.max_symbols = max_symbols
        self.threads = threads

    @torch.inference_mode()
    def project_encoder(self, encoded: Tensor) -> np.ndarray:
        projected: np.ndarray = self.joint.project_encoder(encoded.float().cpu()).numpy()
        return projected

    @torch.inference_mode()
    def decode(self, encoded: Tensor, lengths: Tensor, confidence: bool) -> list[Hypothesis]:
        """encoded [B, T, D] (any device), lengths [B] -> one hypothesis per row."""
        projected = self.project_encoder(encoded)
        with decode_threads(self.threads):
            return decode_rows(
                projected,
                lengths,
                self.predictor,
                self.step,
                self.blank,
                self.num_labels,
                self.durations,
                self.max_symbols,
                confidence,
            )
