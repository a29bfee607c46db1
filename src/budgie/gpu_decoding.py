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
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from budgie.decoding import Hypothesis
from budgie.model import ParakeetTDT
from budgie.transducer import Decoder, Joint

# Steps per CUDA graph replay: enough to amortize the host check, few enough that rows rarely
# run many idle steps after the last one finishes.
STEPS_PER_GRAPH = 16
# Machines whose whole output (batch x capacity slots) is at most this many slots hand their
# hypotheses to the host in one transfer to pinned memory (a 40 s machine's row: 5,130 slots,
# 123 kB): one wait instead of two, no gather kernels. Larger ones copy the used slots only.
ONE_TRANSFER_SLOTS = 32_768


@dataclass
class LSTMWeights:
    """Per layer (w_ih, w_hh, b_ih, b_hh), in PyTorch's gate order i, f, g, o."""

    layers: list[tuple[Tensor, Tensor, Tensor, Tensor]]

    @classmethod
    def from_decoder(cls, decoder: Decoder) -> LSTMWeights:
        lstm = decoder.prediction.dec_rnn.lstm
        names = ("weight_ih_l{}", "weight_hh_l{}", "bias_ih_l{}", "bias_hh_l{}")
        layers = []
        for layer in range(lstm.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(lstm, n.format(layer)) for n in names)
            layers.append((w_ih, w_hh, b_ih, b_hh))
        return cls(layers)


def lstm_step(x: Tensor, h: Tensor, c: Tensor, w: LSTMWeights) -> tuple[Tensor, Tensor, Tensor]:
    """One time step of the stacked LSTM; h, c are [L, B, H]. ``torch.lstm_cell`` fuses the
    gate arithmetic into one kernel on CUDA (two GEMMs + one kernel per layer)."""
    new_h, new_c = [], []
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(w.layers):
        x, cell = torch.lstm_cell(x, (h[layer], c[layer]), w_ih, w_hh, b_ih, b_hh)
        new_h.append(x)
        new_c.append(cell)
    return x, torch.stack(new_h), torch.stack(new_c)


class StepDecoder:
    """Decoding state for one batch shape, updated in place by ``step``."""

    # True for a machine whose ``step`` decodes the loaded batch to its end (no graph needed).
    runs_to_end = False

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
        self.lstm = LSTMWeights.from_decoder(decoder)
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
        # Per emitted label: (label, frame, duration). Every step writes its candidate at slot
        # ``count``; only an emission advances ``count``, so non-emissions get overwritten.
        self.out = longs(batch, self.capacity, 3)
        shape = (pred.layers, batch, pred.hidden)
        self.h = torch.zeros(shape, device=device)
        self.c = torch.zeros(shape, device=device)
        self.pred_proj = torch.zeros(batch, hidden, device=device)
        self.blank_labels = torch.full((batch,), self.blank, dtype=torch.long, device=device)
        self._host: tuple[Tensor, Tensor] | None = None  # pinned buffers for _one_transfer
        # The state after the start-of-sequence blank depends on the weights only: computed once.
        with torch.inference_mode():
            self._start = self._predict(self.blank_labels)

    @classmethod
    def for_network(
        cls, network: ParakeetTDT, batch: int, max_frames: int, device: torch.device
    ) -> StepDecoder:
        """A machine for ``network``'s decoder, joint and decoding settings."""
        cfg = network.cfg.decoding
        return cls(
            network.decoder,
            network.joint,
            batch,
            max_frames,
            cfg.durations,
            cfg.max_symbols,
            device,
            **cls.network_options(network),
        )

    @classmethod
    def network_options(cls, network: ParakeetTDT) -> dict[str, Any]:
        """Extra constructor arguments a subclass takes from the network (none here)."""
        return {}

    @classmethod
    def supports(cls, network: ParakeetTDT) -> bool:
        """Whether this kind of machine can decode for ``network`` at all (all can here)."""
        return True

    @classmethod
    def ready_now(cls, network: ParakeetTDT, batch: int, device: torch.device) -> bool:
        """Whether building this machine now would wait for no compiler (a shape's first use
        takes it only then); False unless a kind knows better."""
        return False

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
        projected, h, c = self._start
        self.pred_proj.copy_(projected)
        self.h.copy_(h)
        self.c.copy_(c)

    def _predict(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prediction network + joint projection for labels (new h, c returned, not stored)."""
        x = self.decoder.prediction.embed(labels)
        out, h, c = lstm_step(x, self.h, self.c, self.lstm)
        projected: Tensor = self.joint.project_prediction(out)
        return projected, h, c

    @torch.inference_mode()
    def rounded_start(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """The prediction after the start-of-sequence blank, with the weight matrices rounded
        to ``dtype`` as a kernel reading 16-bit weights sees them (for such machines' start)."""
        layers = [
            (w_ih.to(dtype).float(), w_hh.to(dtype).float(), b_ih, b_hh)
            for w_ih, w_hh, b_ih, b_hh in self.lstm.layers
        ]
        x = self.decoder.prediction.embed(self.blank_labels)
        zeros = torch.zeros_like(self.h)
        out, h, c = lstm_step(x, zeros, zeros, LSTMWeights(layers))
        pred = self.joint.pred
        return F.linear(out, pred.weight.to(dtype).float(), pred.bias), h, c

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
        self.out[self.rows, slot] = torch.stack((label, self.time, duration), dim=1)
        self.count.add_(emit.long())
        same_frame = self.last_frame == self.time
        self.on_frame.copy_(
            torch.where(emit, torch.where(same_frame, self.on_frame + 1, 1), self.on_frame)
        )
        self.last_frame.copy_(torch.where(emit, self.time, self.last_frame))

        projected, h, c = self._predict(torch.where(emit, label, self.blank_labels))
        keep = emit[:, None]
        self.pred_proj.copy_(torch.where(keep, projected, self.pred_proj))
        self.h.copy_(torch.where(keep[None], h, self.h))
        self.c.copy_(torch.where(keep[None], c, self.c))

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

    def warm_up(self) -> None:
        """Run the machine's kernels once before use (nothing to do for the torch step)."""

    def hypotheses(self, batch: int) -> list[Hypothesis]:
        if self.out.is_cuda and batch * self.capacity <= ONE_TRANSFER_SLOTS:
            counts, steps, out = self._one_transfer(batch)
        else:
            counts, steps = torch.stack((self.count[:batch], self.steps[:batch])).tolist()
            out = self.out[:batch, : max(counts, default=0)].cpu().numpy()  # the used slots
        return [
            Hypothesis(
                token_ids=out[b, :n, 0].tolist(),
                frames=out[b, :n, 1].tolist(),
                durations=out[b, :n, 2].tolist(),
                steps=int(steps[b]),
            )
            for b, n in enumerate(counts)
        ]

    def _one_transfer(self, batch: int) -> tuple[list[int], list[int], Any]:
        """Counts, step counts and every output slot of the first ``batch`` rows, copied to
        pinned host buffers asynchronously and waited for once."""
        if self._host is None:
            self._host = (
                torch.empty(2, self.batch, dtype=torch.long, pin_memory=True),
                torch.empty(self.out.shape, dtype=torch.long, pin_memory=True),
            )
        tallies, out = self._host
        tallies[0, :batch].copy_(self.count[:batch], non_blocking=True)
        tallies[1, :batch].copy_(self.steps[:batch], non_blocking=True)
        out[:batch].copy_(self.out[:batch], non_blocking=True)
        torch.cuda.current_stream(self.out.device).synchronize()
        counts, steps = tallies[:, :batch].tolist()
        return counts, steps, out.numpy()


class OneLaunchDecoder(StepDecoder):
    """A step machine whose ``step`` decodes the loaded batch to its end in one kernel launch
    (triton_loop.LoopDecoder, cuda_loop.KernelLoopDecoder). ``reset`` only records the inputs
    (no copies: the launch reads them where they are) and ``any_active`` is true until that one
    ``step``, so ``decode_with_steps`` without a graph runs exactly one launch."""

    runs_to_end = True
    _inputs: tuple[Tensor, Tensor] | None = None

    @torch.inference_mode()
    def reset(self, enc_proj: Tensor, lengths: Tensor) -> None:
        b, t, _ = enc_proj.shape
        if b > self.batch or t > self.max_frames:
            raise ValueError(f"batch {b}x{t} exceeds the machine's {self.batch}x{self.max_frames}")
        self._inputs = (enc_proj.float().contiguous(), lengths.to(torch.long).contiguous())

    def take_inputs(self) -> tuple[Tensor, Tensor] | None:
        """The loaded batch for ``step`` to launch on, once (None until the next ``reset``)."""
        inputs, self._inputs = self._inputs, None
        return inputs

    def warm_up(self) -> None:
        """Compile and run the kernel once (one frame of zeros), so that a GPU it cannot run on
        fails here, where the caller can fall back, not in the middle of a transcription."""
        enc = torch.zeros(1, 1, self.enc_proj.shape[2], device=self.enc_proj.device)
        self.reset(enc, torch.ones(1, dtype=torch.long, device=enc.device))
        self.step()
        self.hypotheses(1)

    def any_active(self) -> bool:
        """True from ``reset`` until ``step`` has run the batch to its end."""
        return self._inputs is not None


class GraphedStepDecoder:
    """Replays STEPS_PER_GRAPH steps of a StepDecoder from one CUDA graph.

    With ``compile``, the step is first fused by torch.compile (Inductor): the ~50 small
    kernels of a step become a handful, which is what bounds a step's time at small batch.
    """

    def __init__(self, machine: StepDecoder, compile: bool = False) -> None:
        self.machine = machine
        step = machine.step
        if compile:
            step = torch.compile(machine.step, fullgraph=True, dynamic=False)
        self.graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm up kernels and allocator outside the graph
                step()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(self.graph), torch.inference_mode():
            for _ in range(STEPS_PER_GRAPH):
                step()

    def run(self, unchecked_replays: int = 0) -> None:
        """Replay until no row is active; the first ``unchecked_replays`` replays skip the
        host check (each check is a device sync). Extra replays are harmless: a finished row
        does nothing."""
        for _ in range(unchecked_replays):
            self.graph.replay()
        while self.machine.any_active():
            self.graph.replay()


def unchecked_replays(longest: int, steps_per_frame: float) -> int:
    """Graph replays that are surely needed before the first "anything active?" check.

    ``steps_per_frame`` is a lower estimate of a row's steps per encoder frame (e.g. the
    smallest ratio seen lately); a wrong guess only costs idle steps or an extra check.
    """
    return int(longest * steps_per_frame) // STEPS_PER_GRAPH


def decode_with_steps(
    machine: StepDecoder,
    enc_proj: Tensor,
    lengths: Tensor,
    graphed: GraphedStepDecoder | None,
    replays_before_check: int = 0,
) -> list[Hypothesis]:
    """Decode a batch on a prepared machine (graph replay on CUDA, eager steps elsewhere)."""
    machine.reset(enc_proj, lengths)
    if graphed is not None:
        graphed.run(replays_before_check)
    else:
        with torch.inference_mode():
            while machine.any_active():
                machine.step()
    return machine.hypotheses(enc_proj.shape[0])
