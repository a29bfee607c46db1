"""OneLaunchDecoder (gpu_decoding.py), the contract both one-launch machines share (the Triton
loop and the CUDA kernel), on the CPU with a stand-in whose one "launch" runs the torch steps to
the end: reset only records the inputs, any_active is true until that one step, a too-large
batch is refused, and decode_with_steps gives the torch machine's hypotheses."""

from __future__ import annotations

import pytest
import torch

from budgie.gpu_decoding import OneLaunchDecoder, StepDecoder, decode_with_steps
from conftest import SynthModels
from decoder_machines import BATCHES, MAX_SYMBOLS, network, outcome, random_enc_proj


class _TorchToTheEnd(OneLaunchDecoder):
    """One ``step`` = the torch machine's steps until every row is done."""

    launches = 0

    def step(self) -> None:
        inputs = self.take_inputs()
        if inputs is None:
            return
        type(self).launches += 1
        StepDecoder.reset(self, *inputs)
        with torch.inference_mode():
            while StepDecoder.any_active(self):
                StepDecoder.step(self)


def test_one_launch_contract(synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch) -> None:
    net = network(synth_models, "cpu")
    cfg = net.cfg.decoding
    args = (net.decoder, net.joint, 4, 20, cfg.durations, MAX_SYMBOLS, torch.device("cpu"))
    ref, machine = StepDecoder(*args), _TorchToTheEnd(*args)
    monkeypatch.setattr(_TorchToTheEnd, "launches", 0)
    assert machine.runs_to_end and not machine.any_active()
    for lengths, scale, seed in BATCHES:
        enc, lens = random_enc_proj(net, lengths, max(lengths), scale, seed, "cpu")
        want = outcome(decode_with_steps(ref, enc, lens, None))
        assert outcome(decode_with_steps(machine, enc, lens, None)) == want
        assert not machine.any_active()
    assert _TorchToTheEnd.launches == len(BATCHES)  # one launch per decode
    enc, lens = random_enc_proj(net, [3], 3, 1.5, 0, "cpu")
    machine.reset(enc, lens)
    assert machine.any_active() and machine.take_inputs() is not None
    assert not machine.any_active() and machine.take_inputs() is None
    machine.warm_up()  # one frame of zeros, then the hypotheses
    assert _TorchToTheEnd.launches == len(BATCHES) + 1 and not machine.any_active()
    too_many, _ = random_enc_proj(net, [1] * 5, 4, 1.5, 0, "cpu")
    with pytest.raises(ValueError, match="exceeds the machine's 4x20"):
        machine.reset(too_many, torch.ones(5, dtype=torch.long))
