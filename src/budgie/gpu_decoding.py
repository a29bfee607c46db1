"""Batched TDT greedy decoding as a fixed-shape step machine, for CUDA graphs.

``greedy_decode_batched`` in decoding.py follows NeMo's nested loops (an outer loop per emitted
label, an inner loop over blanks), which needs a host check at every level. Here one ``step``
does the same work for every row at once with no data-dependent control flow: evaluate the
joint at the row's current frame; a blank moves the frame on by its duration; a label is
recorded, fed to the prediction network, and the frame moves on by its duration (with NeMo's
max-symbols rule). Per row, the sequence of joint evaluations is exactly NeMo's, so tokens,
frames, durations and step counts are identical (tested against the reference loop).

Because a step has fixed shapes and updates preallocated buffers in place, a run of K steps can
be captured once in a CUDA graph and replayed; the host only checks "any row still active?"
once per K steps. The LSTM cell is written out (one matmul over [x, h] per layer) so the
prediction network is capturable and costs one GEMM per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from budgie.decoding import Hypothesis
from budgie.transducer import Decoder, Joint

# Steps per CUDA graph replay: enough to amortize the host check, few enough that rows rarely
# run many idle steps after the last one finishes.
STEPS_PER_GRAPH = 16


@dataclass
class LSTMWeights:
    """Per layer: W = [W_ih | W_hh] as [4H, in + H] and b = b_ih + b_hh."""

    weights: list[Tensor]
    biases: list[Tensor]

    @classmethod
    def from_decoder(cls, decoder: Decoder, dtype: torch.dtype) -> LSTMWeights:
        lstm = decoder.prediction.dec_rnn.lstm
        weights, biases = [], []
        for layer in range(lstm.num_layers):
            w_ih = getattr(lstm, f"weight_ih_l{layer}")
            w_hh = getattr(lstm, f"weight_hh_l{layer}")
            weights.append(torch.cat([w_ih, w_hh], dim=1).to(dtype).contiguous())
            b_ih = getattr(lstm, f"bias_ih_l{layer}")
            b_hh = getattr(lstm, f"bias_hh_l{layer}")
            biases.append((b_ih + b_hh).to(dtype))
        return cls(weights, biases)


def lstm_step(x: Tensor, h: Tensor, c: Tensor, w: LSTMWeights) -> tuple[Tensor, Tensor, Tensor]:
    """One time step of the stacked LSTM; h, c are [L, B, H]. Gate order i, f, g, o (PyTorch)."""
    new_h, new_c = [], []
    for layer, (weight, bias) in enumerate(zip(w.weights, w.biases, strict=True)):
        gates = torch.addmm(bias, torch.cat([x, h[layer]], dim=1), weight.t())
        i, f, g, o = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
        x = torch.sigmoid(o) * torch.tanh(cell)
        new_h.append(x)
        new_c.append(cell)
    return x, torch.stack(new_h), torch.stack(new_c)


class StepDecoder:
    """Decoding state for one batch shape, updated in place by ``step``."""

    def __init__(
        self,
        decoder: Decoder,
        joint: Joint,
        batch: int,
        max_frames: int,
        durations: tuple[int, ...],
        max_symbols: int,
        device: torch.device,
    ) -> None:
        pred = decoder.prediction
        self.decoder, self.joint = decoder, joint
        self.blank = pred.blank_id
        self.num_labels = joint.num_labels
        self.max_symbols = max_symbols
        self.lstm = LSTMWeights.from_decoder(decoder, torch.float32)
        self.batch, self.max_frames = batch, max_frames
        # A row can emit at most max_symbols labels per frame; the last frame may add more.
        self.capacity = max_frames * max_symbols + max_symbols
        hidden = joint.enc.out_features

        def longs(*shape: int) -> Tensor:
            return torch.zeros(shape, dtype=torch.long, device=device)

        self.rows = torch.arange(batch, dtype=torch.long, device=device)
        self.durations = torch.tensor(durations, dtype=torch.long, device=device)
        self.enc_proj = torch.zeros(batch, max_frames, hidden, device=device)
        self.lengths = longs(batch)
        self.time = longs(batch)
        self.steps = longs(batch)
        self.count = longs(batch)
        self.last_frame = longs(batch)
        self.on_frame = longs(batch)
        self.out_labels = longs(batch, self.capacity)
        self.out_frames = longs(batch, self.capacity)
        self.out_durations = longs(batch, self.capacity)
        shape = (pred.layers, batch, pred.hidden)
        self.h = torch.zeros(shape, device=device)
        self.c = torch.zeros(shape, device=device)
        self.pred_proj = torch.zeros(batch, hidden, device=device)
        self.blank_labels = torch.full((batch,), self.blank, dtype=torch.long, device=device)

    @torch.inference_mode()
    def reset(self, enc_proj: Tensor, lengths: Tensor) -> None:
        """Load a batch (enc_proj [b, t, J] with b <= batch, t <= max_frames) and start over."""
        b, t, _ = enc_proj.shape
        self.enc_proj.zero_()
        self.enc_proj[:b, :t].copy_(enc_proj)
        self.lengths.zero_()
        self.lengths[:b].copy_(lengths)
        for buffer in (self.time, self.steps, self.count, self.on_frame, self.h, self.c):
            buffer.zero_()
        self.last_frame.fill_(-1)
        out = self._predict(self.blank_labels)
        self.pred_proj.copy_(out)

    def _predict(self, labels: Tensor) -> Tensor:
        """Prediction network + joint projection for labels; updates h, c in place."""
        x = self.decoder.prediction.embed(labels)
        out, h, c = lstm_step(x, self.h, self.c, self.lstm)
        self.h.copy_(h)
        self.c.copy_(c)
        projected: Tensor = self.joint.project_prediction(out)
        return projected

    def step(self) -> None:
        """One joint evaluation per row, with every consequence applied in place."""
        active = self.time < self.lengths
        frame = torch.minimum(self.time, (self.lengths - 1).clamp(min=0))
        logits = self.joint.logits(self.enc_proj[self.rows, frame], self.pred_proj)
        label = logits[:, : self.num_labels].argmax(dim=-1)
        duration = self.durations[logits[:, self.num_labels :].argmax(dim=-1)]
        is_blank = label == self.blank
        duration = torch.where(is_blank & (duration == 0), 1, duration)
        emit = active & ~is_blank
        self.steps.add_(active.long())

        slot = self.count.clamp(max=self.capacity - 1)
        for buffer, value in (
            (self.out_labels, label),
            (self.out_frames, self.time),
            (self.out_durations, duration),
        ):
            buffer[self.rows, slot] = torch.where(emit, value, buffer[self.rows, slot])
        self.count.add_(emit.long())
        same_frame = self.last_frame == self.time
        self.on_frame.copy_(
            torch.where(emit, torch.where(same_frame, self.on_frame + 1, 1), self.on_frame)
        )
        self.last_frame.copy_(torch.where(emit, self.time, self.last_frame))

        old_h, old_c = self.h.clone(), self.c.clone()
        projected = self._predict(torch.where(emit, label, self.blank_labels))
        keep = emit[:, None]
        self.pred_proj.copy_(torch.where(keep, projected, self.pred_proj))
        self.h.copy_(torch.where(keep[None], self.h, old_h))
        self.c.copy_(torch.where(keep[None], self.c, old_c))

        new_time = self.time + duration * active
        capped = (
            emit
            & (new_time < self.lengths)
            & (self.on_frame >= self.max_symbols)
            & (self.last_frame == new_time)
        )
        self.time.copy_(new_time + capped.long())

    def any_active(self) -> bool:
        return bool((self.time < self.lengths).any())

    def hypotheses(self, batch: int) -> list[Hypothesis]:
        counts = self.count[:batch].tolist()
        steps = self.steps[:batch].tolist()
        labels = self.out_labels[:batch].cpu()
        frames = self.out_frames[:batch].cpu()
        durations = self.out_durations[:batch].cpu()
        return [
            Hypothesis(
                token_ids=labels[b, :n].tolist(),
                frames=frames[b, :n].tolist(),
                durations=durations[b, :n].tolist(),
                steps=int(steps[b]),
            )
            for b, n in enumerate(counts)
        ]


class GraphedStepDecoder:
    """Replays STEPS_PER_GRAPH steps of a StepDecoder from one CUDA graph."""

    def __init__(self, machine: StepDecoder) -> None:
        self.machine = machine
        self.graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm up kernels and allocator outside the graph
                machine.step()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(self.graph), torch.inference_mode():
            for _ in range(STEPS_PER_GRAPH):
                machine.step()

    def run(self) -> None:
        while self.machine.any_active():
            self.graph.replay()


def decode_with_steps(
    machine: StepDecoder, enc_proj: Tensor, lengths: Tensor, graphed: GraphedStepDecoder | None
) -> list[Hypothesis]:
    """Decode a batch on a prepared machine (graph replay on CUDA, eager steps elsewhere)."""
    machine.reset(enc_proj, lengths)
    if graphed is not None:
        graphed.run()
    else:
        with torch.inference_mode():
            while machine.any_active():
                machine.step()
    return machine.hypotheses(enc_proj.shape[0])
