"""Helpers shared by the decoder machines' tests (torch, Triton and CUDA-kernel machines):
the tiny synthetic network on a device, random encoder projections, hypotheses as comparable
tuples, weights rounded as a 16-bit machine reads them, other LSTM depths."""

from __future__ import annotations

import copy
import dataclasses

import torch

from budgie.decoding import Hypothesis
from budgie.model import ParakeetTDT
from budgie.transducer import Decoder
from conftest import SynthModels

MAX_SYMBOLS = 2  # small, so that the cap is reached
# Batches in a row on one machine of 4 rows: lengths (0 = an empty row), scale, seed.
BATCHES = [([16], 1.5, 3), ([16, 7, 0], 1.5, 0), ([5, 20, 11, 1], 1.5, 2), ([9], 0.3, 1)]

Outcome = tuple[list[int], list[int], list[int], int]


def network(synth_models: SynthModels, device: str) -> ParakeetTDT:
    net = synth_models.model("tiny").network
    return net if device == "cpu" else copy.deepcopy(net).to(device)


def random_enc_proj(
    net: ParakeetTDT, lengths: list[int], frames: int, scale: float, seed: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    enc = torch.randn(len(lengths), frames, net.cfg.joint.joint_hidden, generator=gen) * scale
    return enc.to(device), torch.tensor(lengths, device=device)


def outcome(hyps: list[Hypothesis]) -> list[Outcome]:
    return [(h.token_ids, h.frames, h.durations, h.steps) for h in hyps]


def hits_the_cap(outcomes: list[Outcome]) -> bool:
    """Whether some row emitted MAX_SYMBOLS labels on one frame (then the frame moves on)."""
    return any(h[1][i] == h[1][i + MAX_SYMBOLS - 1] for h in outcomes for i in range(len(h[1]) - 1))


def rounded_weights(net: ParakeetTDT, dtype: torch.dtype) -> ParakeetTDT:
    """A copy whose LSTM, prediction-projection and joint-output weight matrices are rounded to
    ``dtype`` (and kept float32): what a machine reading them in ``dtype`` computes."""
    rounded = copy.deepcopy(net)
    lstm = rounded.decoder.prediction.dec_rnn.lstm
    matrices = [p for n, p in lstm.named_parameters() if n.startswith("weight")]
    out = rounded.joint.joint_net[2]
    assert isinstance(out, torch.nn.Linear)
    with torch.no_grad():
        for weight in [*matrices, rounded.joint.pred.weight, out.weight]:
            weight.copy_(weight.to(dtype).float())
    return rounded


def other_depth(net: ParakeetTDT, layers: int) -> tuple[Decoder, ParakeetTDT]:
    """A prediction network of ``layers`` LSTM layers (seeded default init) for ``net``'s
    joint, on its device."""
    cfg = net.cfg
    cfg = dataclasses.replace(
        cfg, prediction=dataclasses.replace(cfg.prediction, pred_rnn_layers=layers)
    )
    torch.manual_seed(layers)
    device = next(net.parameters()).device
    return Decoder(cfg).to(device), net
