"""Engine properties that hold for any weights: shift trick, masking, decoders, folding, limits.

NeMo parity itself is in test_parity.py; here every expected value comes from an independent
formulation (NeMo's pad-and-reshape rel_shift written out, the unfolded BatchNorm, a decoding
outcome forced through the joint's bias) or from the single-utterance path of the same model.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from budgie import batching, limits
from budgie.audio import load_audio
from budgie.batching import input_order, input_windows
from budgie.config import EncoderConfig
from budgie.decoding import Hypothesis, greedy_decode_batched, greedy_decode_single
from budgie.encoder import ConvolutionModule, rel_shift, relative_positions
from budgie.errors import AudioError
from budgie.gpu_decoding import StepDecoder, decode_with_steps
from budgie.model import ParakeetTDT
from budgie.results import Transcript, TranscriptionError
from conftest import SynthModels
from parity_goldens import AUDIO_DIR

SMALL_PRESETS = ("tiny", "bias-xscale")
HOP = 160


@pytest.fixture(scope="module")
def jim() -> np.ndarray:
    return load_audio(AUDIO_DIR / "life_Jim.wav")


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Three real and synthetic clips of different lengths (2.5 s to 6.2 s)."""
    names = ("life_Jim.wav", "espeak_hello.wav", "espeak_price.wav")
    return [load_audio(AUDIO_DIR / name) for name in names]


def pad_batch(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    audio = torch.zeros(len(clips), max(max(len(c) for c in clips), 1))
    for row, clip in enumerate(clips):
        audio[row, : len(clip)] = torch.from_numpy(clip)
    return audio, torch.tensor([len(c) for c in clips])


# --- rel_shift -------------------------------------------------------------------------------


def nemo_rel_shift(x: torch.Tensor) -> torch.Tensor:
    """NeMo's RelPositionMultiHeadAttention.rel_shift followed by its slice to T columns."""
    b, h, t, p = x.shape
    x = F.pad(x, pad=(1, 0))  # [B, H, T, P + 1]
    x = x.view(b, h, -1, t)  # [B, H, P + 1, T]
    x = x[:, :, 1:].reshape(b, h, t, p)
    return x[:, :, :, :t]


@pytest.mark.parametrize("t", [1, 2, 3, 7, 32, 101])
@pytest.mark.parametrize("transposed", [False, True])
def test_rel_shift_equals_nemo_pad_and_reshape(t: int, transposed: bool) -> None:
    gen = torch.Generator().manual_seed(t)
    scores = torch.randn(2, 3, t, 2 * t - 1, generator=gen)
    if transposed:  # a non-contiguous input with the same values
        scores = scores.transpose(0, 1).contiguous().transpose(0, 1)
        assert not scores.is_contiguous() or t == 1
    got = rel_shift(scores)
    assert got.shape == (2, 3, t, t)
    assert torch.equal(got, nemo_rel_shift(scores))
    # and the meaning: entry (i, j) is the score against relative position j - i
    i, j = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    column = (t - 1) - i + j  # positions run T-1 ... -(T-1)
    assert torch.equal(got[0, 0], scores[0, 0][i, column])


# --- encoder: batch == single, short inputs --------------------------------------------------

LENGTHS = [100, HOP, 2 * HOP + 5, 8 * HOP, 16000, 16000 * 3 + 123]


@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_encoder_batch_equals_single(
    synth_models: SynthModels, preset: str, jim: np.ndarray
) -> None:
    net = synth_models.model(preset).network
    clips = [jim[:n] for n in LENGTHS]
    with torch.inference_mode():
        batch_out, batch_len = net.encode(*pad_batch(clips))
        for row, clip in enumerate(clips):
            out, length = net.encode(*pad_batch([clip]))
            n = int(length[0])
            assert int(batch_len[row]) == n
            assert torch.allclose(batch_out[row, :n], out[0, :n], atol=1e-5, rtol=0)
    # 100 samples: less than one hop, no frame; 160: one feature frame, one encoder frame
    assert batch_len.tolist()[:2] == [0, 1]
    assert torch.isfinite(batch_out).all()


@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_cached_position_tables_equal_direct_projection(
    synth_models: SynthModels, preset: str
) -> None:
    """Slices of a cached table give each length the projection computed for it alone."""
    encoder = copy.deepcopy(synth_models.model(preset).network.encoder)
    layers = [layer.self_attn for layer in encoder.layers]  # type: ignore[union-attr]
    for frames in (1, 7, 256, 257, 600, 300):
        with torch.inference_mode():
            cached = encoder.layer_positions(frames, torch.device("cpu"))
        pos_emb = relative_positions(frames, encoder.cfg.d_model, torch.device("cpu"))
        with torch.no_grad():
            for attn, got in zip(layers, cached, strict=True):
                assert got.shape == (1, attn.h, 2 * frames, attn.d_k)  # + 1 unused row
                want = attn.project_positions(pos_emb)
                assert torch.allclose(got[:, :, :-1], want, atol=1e-5, rtol=1e-5)
    assert sorted(key[0] for key in encoder._position_tables) == [256, 512, 1024]
    with torch.no_grad():  # new weights: the tables are rebuilt, not reused
        layers[0].linear_pos.weight.mul_(2.0)
    with torch.inference_mode():
        doubled = encoder.layer_positions(7, torch.device("cpu"))[0]
    assert sorted(key[0] for key in encoder._position_tables) == [256]
    with torch.no_grad():
        want = layers[0].project_positions(
            relative_positions(7, encoder.cfg.d_model, torch.device("cpu"))
        )
    assert torch.allclose(doubled[:, :, :-1], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_transcribe_batch_equals_single_for_short_and_long(
    synth_models: SynthModels, preset: str, jim: np.ndarray
) -> None:
    model = synth_models.model(preset)
    clips = [jim[:n] for n in LENGTHS]
    batched = model.transcribe(clips, batch_size=len(clips))
    for clip, result in zip(clips, batched, strict=True):
        single = model.transcribe(clip)
        assert isinstance(result, Transcript)
        assert (result.token_ids, result.text, result.words) == (
            single.token_ids,
            single.text,
            single.words,
        )
        assert [t.frame for t in result.tokens] == [t.frame for t in single.tokens]
    zero, one = batched[0], batched[1]
    assert isinstance(zero, Transcript) and isinstance(one, Transcript)
    assert (zero.text, zero.tokens, zero.encoder_frames, zero.decoder_steps) == ("", [], 0, 0)
    assert one.encoder_frames == 1 and one.decoder_steps >= 1


# --- decoders ----------------------------------------------------------------------------------


def decode_three_ways(
    net: ParakeetTDT, encoded: torch.Tensor, lengths: torch.Tensor
) -> list[list[Hypothesis]]:
    """Reference loop per row, batched label looping, and the step machine (CPU, eager)."""
    cfg = net.cfg.decoding
    single = [
        greedy_decode_single(
            net.decoder, net.joint, encoded[row, : int(n)], cfg.durations, cfg.max_symbols
        )
        for row, n in enumerate(lengths.tolist())
    ]
    batched = greedy_decode_batched(
        net.decoder, net.joint, encoded, lengths, cfg.durations, cfg.max_symbols
    )
    machine = StepDecoder.for_network(net, encoded.shape[0], encoded.shape[1], torch.device("cpu"))
    with torch.inference_mode():
        enc_proj = net.joint.project_encoder(encoded)
    stepped = decode_with_steps(machine, enc_proj, lengths, None)
    return [single, batched, stepped]


def outcome(h: Hypothesis) -> tuple[list[int], list[int], list[int], int]:
    return h.token_ids, h.frames, h.durations, h.steps


@pytest.mark.parametrize(
    ("preset", "tokenizer"),
    [("tiny", None), ("bias-xscale", None), ("tiny", "tokenizer-v3.model")],
)
def test_decoders_agree_on_speech(
    synth_models: SynthModels, preset: str, tokenizer: str | None, speech: list[np.ndarray]
) -> None:
    tok = None if tokenizer is None else Path(__file__).parent / "fixtures" / tokenizer
    net = synth_models.model(preset, 4 if tok else 0, tok).network
    clips = [*speech, speech[0][: 8 * HOP], speech[0][:50]]  # incl. 1 frame and 0 frames
    with torch.inference_mode():
        encoded, lengths = net.encode(*pad_batch(clips))
    # In float64: the three decoders sum in different orders, and in float32 a near-tie of the
    # random model flipped one row's argmax on another host's BLAS path (the device hosts' CPU).
    wide = copy.deepcopy(net).double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        single, batched, stepped = decode_three_ways(wide, encoded.double(), lengths)
    finally:
        torch.set_default_dtype(default)
    for row in range(len(clips)):
        assert outcome(batched[row]) == outcome(single[row]), row
        assert outcome(stepped[row]) == outcome(single[row]), row
    assert single[-1].token_ids == [] and single[-1].steps == 0
    assert sum(len(h.token_ids) for h in single) > 10


def forced(net: ParakeetTDT, label: int, duration_index: int) -> ParakeetTDT:
    """A copy whose joint always picks ``label`` and the duration at ``duration_index``."""
    net = copy.deepcopy(net)
    with torch.no_grad():
        out = net.joint.joint_net[2]
        assert isinstance(out, torch.nn.Linear)
        out.weight.mul_(0.01)
        out.bias[label] += 100.0
        out.bias[net.joint.num_labels + duration_index] += 100.0
    return net


@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_symbol_cap_forces_the_next_frame(
    synth_models: SynthModels, preset: str, speech: list[np.ndarray]
) -> None:
    """A label with duration 0 always wins: max_symbols of it per frame, then the next frame."""
    base = synth_models.model(preset).network
    net = forced(base, label=7, duration_index=base.cfg.decoding.durations.index(0))
    cap = net.cfg.decoding.max_symbols
    clips = [speech[0][: 16 * HOP], speech[1][: 40 * HOP]]
    with torch.inference_mode():
        encoded, lengths = net.encode(*pad_batch(clips))
    for hyps in decode_three_ways(net, encoded, lengths):
        for row, hyp in enumerate(hyps):
            frames = int(lengths[row])
            assert hyp.token_ids == [7] * (cap * frames)
            assert hyp.frames == [t for t in range(frames) for _ in range(cap)]
            assert hyp.durations == [0] * (cap * frames)
            assert hyp.steps == cap * frames


@pytest.mark.parametrize("duration", [0, 1, 3])
def test_blank_durations_advance_at_least_one_frame(
    synth_models: SynthModels, duration: int, speech: list[np.ndarray]
) -> None:
    """Blank always wins: no tokens, one step per max(duration, 1) frames."""
    base = synth_models.model("tiny").network
    durations = base.cfg.decoding.durations
    net = forced(base, label=base.cfg.blank_id, duration_index=durations.index(duration))
    clips = [speech[0], speech[2][: 21 * HOP]]
    with torch.inference_mode():
        encoded, lengths = net.encode(*pad_batch(clips))
    for hyps in decode_three_ways(net, encoded, lengths):
        for row, hyp in enumerate(hyps):
            assert hyp.token_ids == []
            assert hyp.steps == math.ceil(int(lengths[row]) / max(duration, 1))


# --- BatchNorm folding -------------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [False, True])
def test_batch_norm_folding_preserves_the_output(use_bias: bool) -> None:
    torch.manual_seed(0)
    cfg = EncoderConfig(d_model=48, conv_kernel_size=9, use_bias=use_bias)
    module = ConvolutionModule(cfg).eval()
    bn = module.batch_norm
    assert isinstance(bn, torch.nn.BatchNorm1d)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.3)
        bn.running_mean.normal_(0.0, 0.5)  # type: ignore[union-attr]
        bn.running_var.uniform_(0.3, 2.0)  # type: ignore[union-attr]
    x = torch.randn(3, 40, 48)
    pad_mask = torch.arange(40)[None, :] >= torch.tensor([40, 25, 3])[:, None]
    with torch.inference_mode():
        before = module(x, pad_mask)
        module.fold_batch_norm()
        assert isinstance(module.batch_norm, torch.nn.Identity)
        after = module(x, pad_mask)
        module.fold_batch_norm()  # folding twice is a no-op
        again = module(x, pad_mask)
    assert float((before - after).abs().max()) <= 1e-5
    assert torch.equal(after, again)


def test_folded_encoder_matches_unfolded(synth_models: SynthModels, jim: np.ndarray) -> None:
    net = copy.deepcopy(synth_models.model("bias-xscale").network)
    audio, lengths = pad_batch([jim, jim[:9000]])
    with torch.inference_mode():
        before, _ = net.encode(audio, lengths)
        net.encoder.fold_batch_norms()
        after, _ = net.encode(audio, lengths)
    assert float((before - after).abs().max()) <= 1e-5


# --- whole-pipeline behaviour on odd input -----------------------------------------------------


@pytest.mark.parametrize(
    "samples",
    [
        np.zeros(0, np.float32),
        np.zeros(HOP - 1, np.float32),
        np.zeros(16000 * 2, np.float32),
        np.full(16000, 1e-9, np.float32),
    ],
    ids=["empty", "under-one-hop", "silence-2s", "near-silence"],
)
def test_empty_and_silent_audio_give_a_transcript(
    synth_models: SynthModels, samples: np.ndarray
) -> None:
    model = synth_models.model("tiny")
    result = model.transcribe(samples)
    assert isinstance(result, Transcript)
    assert result.duration_s == len(samples) / 16000
    assert result.encoder_frames == (len(samples) // HOP + 7) // 8
    assert len(result.tokens) <= result.decoder_steps  # every token takes a joint step
    if result.encoder_frames == 0:
        assert (result.text, result.tokens, result.words, result.segments) == ("", [], [], [])
    assert all(0 <= t.start <= t.end for t in result.tokens)


def test_one_corrupt_file_does_not_stop_the_others(
    synth_models: SynthModels, tmp_path: Path, jim: np.ndarray
) -> None:
    model = synth_models.model("tiny")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage that is not audio")
    good = str(AUDIO_DIR / "espeak_hello.wav")
    for batch_size in (1, 3):
        results = model.transcribe([good, str(corrupt), jim], batch_size=batch_size)
        assert len(results) == 3
        error = results[1]
        assert isinstance(error, TranscriptionError)
        assert error.source == str(corrupt) and str(corrupt) in error.error
        assert "\n" not in error.error
        for index, source in ((0, good), (2, jim)):
            result = results[index]
            assert isinstance(result, Transcript)
            assert result.token_ids == model.transcribe(source).token_ids
    with pytest.raises(AudioError, match=re.escape("corrupt.wav")):
        model.transcribe(str(corrupt))


@pytest.mark.parametrize("batch_size", [1, 4])
def test_results_stay_in_input_order_over_many_loads(
    synth_models: SynthModels, tmp_path: Path, batch_size: int
) -> None:
    """More inputs than loader threads (each thread loads a strided share of a window), files
    of different lengths and errors among them: every result lands at its input's position."""
    model = synth_models.model("tiny")
    rng = np.random.default_rng(8)
    inputs = []
    for i in range(3 * batching.LOAD_THREADS + 5):
        path = tmp_path / f"clip{i:02d}.wav"
        if i % 7 == 3:
            path.write_bytes(b"not audio at all")
        else:
            pcm = rng.integers(-2000, 2000, 800 * (1 + (i * 5) % 11), dtype=np.int64)
            sf.write(path, pcm.astype(np.int16), 16000, subtype="PCM_16")
        inputs.append(str(path))
    results = model.transcribe(inputs, batch_size=batch_size)
    assert [r.source for r in results] == inputs
    assert [isinstance(r, TranscriptionError) for r in results] == [
        i % 7 == 3 for i in range(len(inputs))
    ]
    for source, result in zip(inputs, results, strict=True):
        if isinstance(result, Transcript):
            assert result.duration_s == sf.info(source).frames / 16000


ONE_HOUR = 16000 * 3600


def test_single_pass_limit_refuses_an_hour_on_a_small_device(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = synth_models.model("tiny")
    monkeypatch.setattr(limits, "free_memory_bytes", lambda device: 2 * 2**30)
    with pytest.raises(AudioError) as info:
        limits.check_single_pass(model.config, ONE_HOUR, torch.device("cpu"))
    message = str(info.value)
    assert "\n" not in message
    assert "3600.0 s" in message and "split" in message
    allowed = limits.max_single_pass_seconds(model.config, torch.device("cpu"))
    assert 10 < allowed < 3600
    limits.check_single_pass(model.config, int(allowed * 16000) - HOP, torch.device("cpu"))


@pytest.mark.parametrize(
    ("count", "batch_size", "sizes"),
    [(0, 4, []), (3, 4, [3]), (10, 4, [4, 6]), (200, 1, [64, 64, 64, 8]), (300, 64, [64, 236])],
)
def test_input_windows_start_with_one_batch(count: int, batch_size: int, sizes: list[int]) -> None:
    windows = input_windows(count, batch_size)
    assert [len(w) for w in windows] == sizes
    assert [i for w in windows for i in w] == list(range(count))


def test_batched_inputs_are_ordered_by_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are formed in size order before any audio is decoded; batch 1 keeps the order."""
    small, big = tmp_path / "small.wav", tmp_path / "big.wav"
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"x" * 1000)
    inputs = [str(big), np.zeros(50, dtype=np.float32), b"y" * 5, str(small), str(tmp_path / "no")]
    assert input_order(inputs, 4) == [0, 1, 3, 2, 4]  # longest first; missing file: size 0
    assert input_order(inputs, 1) == [0, 1, 2, 3, 4]
    monkeypatch.setattr(batching, "LONGEST_FIRST", False)
    assert input_order(inputs, 4) == [4, 2, 3, 1, 0]
