"""Seeded weights for synthetic checkpoints, in NeMo's state-dict layout.

Reproducible bit for bit on any machine: one CPU ``torch.Generator`` seeded with ``seed`` yields
63-bit integers (``random_``, Mersenne Twister), one per element, tensor after tensor in NeMo's
state-dict order (``nemo_layout``). They are shaped with exact arithmetic only (integer sums, one
correctly rounded scaling), because ``randn``'s log/cos kernels differ between CPU instruction
sets: a normal is Irwin-Hall(4), the sum of four 15-bit uniforms (a bell within 3.5 standard
deviations, all a fan-in init needs), a uniform takes 53 bits. Every tensor draws ``numel``
integers except the computed ones (window, filterbank, ``num_batches_tracked``):

- weights with 2 or more dims (linear, conv, embedding, LSTM, ``pos_bias_u/v``): normal with std
  ``1/sqrt(fan_in)``, times ``enc_layer_scale`` inside ``encoder.layers`` and times the
  ``weight_scales`` factors whose key part matches; the rows of the ``centered`` ones (linear maps
  after a ReLU/SiLU) are made zero-mean in the integer domain; the blank embedding row (NeMo's
  padding row) is zero; the joint's blank and duration output rows are scaled by
  ``blank_weight_scale`` / ``duration_weight_scale``;
- biases: normal with std ``bias_std``; the LSTM input bias adds NeMo's forget-gate bias 1.0, the
  joint output bias adds ``blank_bias`` to the blank logit (it sets the token rate) and
  ``duration_bias`` to the duration logits (it sets the mix of durations);
- LayerNorm and BatchNorm scales 1 + normal(``norm_std``), shifts normal(``norm_std``); BatchNorm
  running means normal(0.1), running variances uniform(0.5, 1.5), so the inference BN is
  non-trivial;
- ``preprocessor.featurizer.window`` is ``torch.hann_window(400, periodic=False)`` and ``.fb`` the
  slaney mel filterbank, as NeMo computes them.

The presets' knob values were calibrated with NeMo as the oracle (scripts/check_synth_with_nemo.py,
docs/synth.md): varied tokens at a few per second on speech, and every TDT decoding branch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from budgie.errors import BudgieError
from budgie.nemo_files import mel_filterbank

if TYPE_CHECKING:
    from budgie.synth import SynthSpec

SAMPLE_RATE = 16000
N_FFT = 512
WINDOW_SIZE = 0.025
WINDOW_STRIDE = 0.01


def _subsampled_features(spec: SynthSpec) -> int:
    """Frequency bins after the stride-2 convs (kernel 3, padding 1): NeMo's calc_length."""
    freq = spec.features
    for _ in range(_stages(spec)):
        freq = (freq - 1) // 2 + 1
    return freq


def _stages(spec: SynthSpec) -> int:
    stages = int(math.log2(spec.subsampling_factor))
    if 2**stages != spec.subsampling_factor or stages < 1:
        raise BudgieError(f"subsampling_factor must be a power of 2, got {spec.subsampling_factor}")
    return stages


Layout = list[tuple[str, tuple[int, ...], str]]


def nemo_layout(spec: SynthSpec, vocab_size: int) -> Layout:
    """(key, shape, kind) of every state-dict entry, in the order NeMo's module tree gives them."""
    d, ch, p, j = spec.d_model, spec.subsampling_conv_channels, spec.pred_hidden, spec.joint_hidden
    win = int(WINDOW_SIZE * SAMPLE_RATE)
    out: Layout = [
        ("preprocessor.featurizer.window", (win,), "window"),
        ("preprocessor.featurizer.fb", (1, spec.features, N_FFT // 2 + 1), "fb"),
        ("encoder.pre_encode.out.weight", (d, ch * _subsampled_features(spec)), "weight"),
        ("encoder.pre_encode.out.bias", (d,), "bias"),
        ("encoder.pre_encode.conv.0.weight", (ch, 1, 3, 3), "weight"),
        ("encoder.pre_encode.conv.0.bias", (ch,), "bias"),
    ]
    for stage in range(1, _stages(spec)):
        convs: tuple[tuple[int, tuple[int, ...]], ...] = (
            (3 * stage - 1, (ch, 1, 3, 3)),  # depthwise
            (3 * stage, (ch, ch, 1, 1)),  # pointwise
        )
        for index, shape in convs:
            out.append((f"encoder.pre_encode.conv.{index}.weight", shape, "weight"))
            out.append((f"encoder.pre_encode.conv.{index}.bias", (ch,), "bias"))
    for layer in range(spec.n_layers):
        out += _layer_layout(spec, f"encoder.layers.{layer}.")
    out.append(("decoder.prediction.embed.weight", (vocab_size + 1, p), "embed"))
    for layer in range(spec.pred_rnn_layers):
        for name, shape in (("weight_ih", (4 * p, p)), ("weight_hh", (4 * p, p))):
            out.append((f"decoder.prediction.dec_rnn.lstm.{name}_l{layer}", shape, "weight"))
        for name in ("bias_ih", "bias_hh"):
            out.append((f"decoder.prediction.dec_rnn.lstm.{name}_l{layer}", (4 * p,), name))
    n_out = vocab_size + 1 + len(spec.durations)
    out += [
        ("joint.pred.weight", (j, p), "weight"),
        ("joint.pred.bias", (j,), "bias"),
        ("joint.enc.weight", (j, d), "weight"),
        ("joint.enc.bias", (j,), "bias"),
        ("joint.joint_net.2.weight", (n_out, j), "weight"),
        ("joint.joint_net.2.bias", (n_out,), "joint_bias"),
    ]
    return out


def _layer_layout(spec: SynthSpec, prefix: str) -> Layout:
    d, ff, k = spec.d_model, spec.d_model * spec.ff_expansion_factor, spec.conv_kernel_size

    def linear(name: str, shape: tuple[int, ...], bias: bool = spec.use_bias) -> Layout:
        entry: Layout = [(prefix + name + ".weight", shape, "weight")]
        return entry + ([(prefix + name + ".bias", (shape[0],), "bias")] if bias else [])

    def norm(name: str) -> Layout:
        return [
            (prefix + name + ".weight", (d,), "norm_w"),
            (prefix + name + ".bias", (d,), "norm_b"),
        ]

    def feed_forward(n: int) -> Layout:
        return (
            norm(f"norm_feed_forward{n}")
            + linear(f"feed_forward{n}.linear1", (ff, d))
            + linear(f"feed_forward{n}.linear2", (d, ff))
        )

    bn = prefix + "conv.batch_norm."
    heads = (spec.n_heads, d // spec.n_heads)
    return (
        feed_forward(1)
        + norm("norm_conv")
        + linear("conv.pointwise_conv1", (2 * d, d, 1))
        + linear("conv.depthwise_conv", (d, 1, k))
        + [(bn + "weight", (d,), "norm_w"), (bn + "bias", (d,), "norm_b")]
        + [(bn + "running_mean", (d,), "bn_mean"), (bn + "running_var", (d,), "bn_var")]
        + [(bn + "num_batches_tracked", (), "count")]
        + linear("conv.pointwise_conv2", (d, d, 1))
        + norm("norm_self_att")
        + [(prefix + "self_attn.pos_bias_u", heads, "pos_bias")]
        + [(prefix + "self_attn.pos_bias_v", heads, "pos_bias")]
        + linear("self_attn.linear_q", (d, d))
        + linear("self_attn.linear_k", (d, d))
        + linear("self_attn.linear_v", (d, d))
        + linear("self_attn.linear_out", (d, d))
        + linear("self_attn.linear_pos", (d, d), bias=False)
        + feed_forward(2)
        + norm("norm_out")
    )


class _Draws:
    """Machine-independent random tensors: MT19937 integers shaped with exact float arithmetic."""

    CHUNK = 1 << 16
    MASK = np.int64(0x7FFF)
    IRWIN_HALL_STD = math.sqrt(4 * (32768.0**2 - 1) / 12)

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def _bits(self, n: int) -> np.ndarray:
        bits: np.ndarray = (
            torch.empty(n, dtype=torch.int64).random_(generator=self.generator).numpy()
        )
        return bits

    def normal(self, shape: tuple[int, ...], std: float, center_rows: bool = False) -> torch.Tensor:
        """Irwin-Hall(4) normals; ``center_rows`` makes each row (dim 0) sum to zero, exactly."""
        n = math.prod(shape)
        bits = self._bits(n)
        out = np.zeros(n, dtype=np.float32)
        if std == 0.0:
            return torch.from_numpy(out).reshape(shape)
        scale = np.float64(std / self.IRWIN_HALL_STD)
        sums = np.empty(n, dtype=np.int64)  # integer sums: exact on every machine
        tmp = np.empty(self.CHUNK, dtype=np.int64)
        for start in range(0, n, self.CHUNK):
            chunk = bits[start : start + self.CHUNK]
            s, t = sums[start : start + chunk.size], tmp[: chunk.size]
            np.bitwise_and(chunk, self.MASK, out=s)
            for shift in (15, 30, 45):
                np.right_shift(chunk, shift, out=t)
                np.bitwise_and(t, self.MASK, out=t)
                np.add(s, t, out=s)
        if center_rows:
            rows = sums.reshape(shape[0], -1)
            means = (
                rows.sum(axis=1, dtype=np.int64) / rows.shape[1]
            )  # one correctly rounded division
            centred = (rows - means[:, None]) * scale
            return torch.from_numpy(centred.astype(np.float32)).reshape(shape)
        for start in range(0, n, self.CHUNK):
            s = sums[start : start + self.CHUNK]
            np.subtract(s, 2 * 32767, out=s)  # each 15-bit uniform has mean 32767/2
            np.multiply(s, scale, out=out[start : start + s.size], casting="unsafe")
        return torch.from_numpy(out).reshape(shape)

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        unit = (self._bits(math.prod(shape)) >> 10).astype(np.float64) * 2.0**-53
        return torch.from_numpy((low + (high - low) * unit).astype(np.float32)).reshape(shape)


def synth_state_dict(spec: SynthSpec, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights with NeMo's keys and shapes (see the module docstring for the recipe)."""
    draws = _Draws(seed)
    state: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}  # tied pos_bias_u/v (untie_biases false): drawn once
    for key, shape, kind in nemo_layout(spec, vocab_size):
        if kind == "pos_bias" and not spec.untie_biases:
            name = key.rsplit(".", 1)[1]
            if name not in shared:
                shared[name] = _fill(key, shape, kind, spec, vocab_size, draws)
            state[key] = shared[name]
        else:
            state[key] = _fill(key, shape, kind, spec, vocab_size, draws)
    return state


def _fill(
    key: str, shape: tuple[int, ...], kind: str, spec: SynthSpec, vocab: int, draws: _Draws
) -> torch.Tensor:
    if kind == "window":
        return torch.hann_window(shape[0], periodic=False, dtype=torch.float32)
    if kind == "fb":
        fb = mel_filterbank(SAMPLE_RATE, N_FFT, spec.features)
        return torch.from_numpy(fb).unsqueeze(0)
    if kind == "count":
        return torch.tensor(0, dtype=torch.int64)
    if kind in ("weight", "embed", "pos_bias"):
        scale = spec.enc_layer_scale if key.startswith("encoder.layers.") else 1.0
        for part, factor in spec.weight_scales:
            scale *= factor if part in key else 1.0
        center = any(part in key for part in spec.centered)
        tensor = draws.normal(shape, scale / math.sqrt(math.prod(shape[1:])), center)
        if kind == "embed":
            tensor[vocab].zero_()  # the blank is the padding row, zero as in trained checkpoints
        if key == "joint.joint_net.2.weight":
            tensor[vocab] *= spec.blank_weight_scale
            tensor[vocab + 1 :] *= spec.duration_weight_scale
        return tensor
    if kind == "bn_mean":
        return draws.normal(shape, 0.1)
    if kind == "bn_var":
        return draws.uniform(shape, 0.5, 1.5)
    if kind == "norm_w":
        return draws.normal(shape, spec.norm_std).add_(1.0)
    if kind == "norm_b":
        return draws.normal(shape, spec.norm_std)
    tensor = draws.normal(shape, spec.bias_std)  # bias, bias_ih, bias_hh, joint_bias
    if kind == "bias_ih":
        hidden = shape[0] // 4
        tensor[hidden : 2 * hidden] += 1.0  # NeMo's forget-gate bias (gates: input, forget, ...)
    if kind == "joint_bias":
        tensor[vocab] += spec.blank_bias
        for index, offset in enumerate(spec.duration_bias):
            tensor[vocab + 1 + index] += offset
    return tensor
