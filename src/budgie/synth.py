"""Synthetic Parakeet TDT checkpoints in NeMo's own ``.nemo`` format (tests, demos, benchmarks).

No model hub is reachable here, so every test and benchmark runs on checkpoints made by this
module: NeMo's config layout, NeMo's state-dict names and shapes, a SentencePiece tokenizer, and
seeded random weights scaled so that greedy TDT decoding behaves like a speech model (varied
tokens, a few per second, every decoding branch). NeMo restores these files unchanged
(scripts/check_synth_with_nemo.py proves it and calibrates the presets; docs/synth.md has the
numbers).

How the weights are drawn, reproducibly on any machine: see ``budgie.synth_weights``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from budgie.errors import BudgieError
from budgie.nemo_files import mel_filterbank, read_pieces, sha256_file, write_nemo
from budgie.synth_weights import (
    N_FFT,
    SAMPLE_RATE,
    WINDOW_SIZE,
    WINDOW_STRIDE,
    nemo_layout,
    synth_state_dict,
)

__all__ = [
    "PRESETS",
    "SynthSpec",
    "mel_filterbank",
    "nemo_config",
    "nemo_layout",
    "synth_nemo",
    "synth_state_dict",
    "synthesize",
    "write_nemo",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
NEMO_TARGET = "nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel"


@dataclass(frozen=True)
class SynthSpec:
    """Shapes of a synthetic checkpoint (NeMo's config names) and the knobs of its weights."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    ff_expansion_factor: int = 4
    conv_kernel_size: int = 9
    subsampling_factor: int = 8
    subsampling_conv_channels: int = 256
    features: int = 128
    use_bias: bool = False
    xscaling: bool = False
    untie_biases: bool = True
    pred_hidden: int = 640
    pred_rnn_layers: int = 2
    joint_hidden: int = 640
    durations: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_symbols: int = 10
    tokenizer: str = "synth-bpe-1024.model"  # a file in budgie/data unless --tokenizer is given
    enc_layer_scale: float = 0.3
    blank_bias: float = 2.5625
    bias_std: float = 0.0
    norm_std: float = 0.0
    weight_scales: tuple[tuple[str, float], ...] = ()  # (key substring, std multiplier)
    # Linear maps that follow a ReLU/SiLU get zero-mean rows: random ReLU features share a large
    # positive mean, which would otherwise make every frame prefer the same few tokens.
    centered: tuple[str, ...] = ("pre_encode.out", "linear2", "joint_net.2")
    duration_bias: tuple[float, ...] = ()  # added to the duration logits' biases
    blank_weight_scale: float = 1.0  # joint output row of the blank: how much it follows the audio
    duration_weight_scale: float = 1.0  # joint output rows of the durations


PRESETS: dict[str, SynthSpec] = {
    spec.name: spec
    for spec in (
        # Small enough for every unit test (< 3 MB as a .nemo), with the real 128 mel features.
        SynthSpec(
            name="tiny",
            n_layers=2,
            d_model=64,
            n_heads=2,
            subsampling_conv_channels=16,
            pred_hidden=64,
            joint_hidden=64,
            tokenizer="synth-bpe-256.model",
            bias_std=0.02,
            norm_std=0.1,
            enc_layer_scale=0.3,
            blank_bias=2.46,
            weight_scales=(("dec_rnn", 1.5), ("joint.pred.", 4.0)),
            blank_weight_scale=2.0,
            duration_weight_scale=2.0,
            duration_bias=(0.74, -0.54, 0.11, -0.77, -0.44),
        ),
        # The real model's widths (d_model, heads, FF, subsampling, prediction, joint), 2 layers.
        SynthSpec(
            name="wide-2l",
            n_layers=2,
            d_model=1024,
            n_heads=8,
            bias_std=0.02,
            norm_std=0.1,
            enc_layer_scale=0.3,
            blank_bias=0.87,
            weight_scales=(("prediction.embed", 4.0), ("dec_rnn", 2.5)),
            blank_weight_scale=2.0,
            duration_weight_scale=2.0,
            duration_bias=(-0.48, 0.53, 0.06, -0.29, -0.26),
        ),
        # Every optional path on: layer biases, xscaling; and sizes unlike the real model's
        # (80 mels, FF x2, kernel 7, one LSTM layer) so nothing can hide behind a constant.
        SynthSpec(
            name="bias-xscale",
            n_layers=3,
            d_model=96,
            n_heads=4,
            ff_expansion_factor=2,
            conv_kernel_size=7,
            subsampling_conv_channels=24,
            features=80,
            use_bias=True,
            xscaling=True,
            untie_biases=True,
            pred_hidden=96,
            pred_rnn_layers=1,
            joint_hidden=80,
            tokenizer="synth-bpe-256.model",
            bias_std=0.05,
            norm_std=0.1,
            enc_layer_scale=0.3,
            blank_bias=1.08,
            weight_scales=(("dec_rnn", 1.5), ("joint.pred.", 2.0)),
            blank_weight_scale=3.0,
            duration_weight_scale=2.0,
            duration_bias=(-0.8, 0.39, 0.29, 0.83, 0.53),
        ),
        # Exactly parakeet-tdt-0.6b-v2's shapes (617.8M parameters), no bias or norm noise.
        SynthSpec(
            name="parakeet-tdt-0.6b-v2",
            n_layers=24,
            d_model=1024,
            n_heads=8,
            enc_layer_scale=0.3,
            blank_bias=1.89,
            weight_scales=(("dec_rnn", 2.5), ("joint.pred.", 4.0)),
            duration_weight_scale=2.0,
            duration_bias=(1.05, 0.45, 0.16, 0.78, -0.89),
        ),
    )
}


def resolve_spec(preset: str | SynthSpec) -> SynthSpec:
    if isinstance(preset, SynthSpec):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        names = ", ".join(PRESETS)
        raise BudgieError(f"unknown synth preset {preset!r} (choose from {names})") from None


def nemo_config(
    spec: SynthSpec, pieces: list[str], names: dict[str, str], seed: int
) -> dict[str, Any]:
    """A ``model_config.yaml`` as NeMo writes it for an EncDecRNNTBPEModel (see the module doc)."""
    durations = list(spec.durations)
    return {
        "sample_rate": SAMPLE_RATE,
        "labels": list(pieces),
        "tokenizer": {
            "dir": None,
            "type": "bpe",
            "model_path": f"nemo:{names['model']}",
            "vocab_path": f"nemo:{names['vocab_txt']}",
            "spe_tokenizer_vocab": f"nemo:{names['vocab']}",
        },
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": SAMPLE_RATE,
            "normalize": "per_feature",
            "window_size": WINDOW_SIZE,
            "window_stride": WINDOW_STRIDE,
            "window": "hann",
            "features": spec.features,
            "n_fft": N_FFT,
            "log": True,
            "frame_splicing": 1,
            "dither": 1.0e-05,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "encoder": _encoder_config(spec),
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {
                "pred_hidden": spec.pred_hidden,
                "pred_rnn_layers": spec.pred_rnn_layers,
                "t_max": None,
                "dropout": 0.2,
            },
            "vocab_size": len(pieces),
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": True,
            "fused_batch_size": 4,
            "jointnet": {
                "joint_hidden": spec.joint_hidden,
                "activation": "relu",
                "dropout": 0.2,
                "encoder_hidden": spec.d_model,
                "pred_hidden": spec.pred_hidden,
            },
            "num_extra_outputs": len(durations),
            "num_classes": len(pieces),
            "vocabulary": list(pieces),
        },
        "decoding": {
            "strategy": "greedy_batch",
            "model_type": "tdt",
            "durations": durations,
            "greedy": {"max_symbols": spec.max_symbols},
        },
        "loss": {
            "loss_name": "tdt",
            "tdt_kwargs": {
                "fastemit_lambda": 0.0,
                "clamp": -1.0,
                "durations": durations,
                "sigma": 0.02,
                "omega": 0.1,
            },
        },
        "model_defaults": {
            "enc_hidden": spec.d_model,
            "pred_hidden": spec.pred_hidden,
            "joint_hidden": spec.joint_hidden,
            "tdt_durations": durations,
            "num_tdt_durations": len(durations),
        },
        "optim": None,
        "validation_ds": {
            "manifest_filepath": None,
            "sample_rate": SAMPLE_RATE,
            "batch_size": 4,
            "shuffle": False,
            "use_start_end_token": False,
        },
        "target": NEMO_TARGET,
        "budgie_synth": {"preset": spec.name, "seed": seed, "weights": "synthetic random"},
    }


def _encoder_config(spec: SynthSpec) -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": spec.features,
        "feat_out": -1,
        "n_layers": spec.n_layers,
        "d_model": spec.d_model,
        "use_bias": spec.use_bias,
        "subsampling": "dw_striding",
        "subsampling_factor": spec.subsampling_factor,
        "subsampling_conv_channels": spec.subsampling_conv_channels,
        "causal_downsampling": False,
        "ff_expansion_factor": spec.ff_expansion_factor,
        "self_attention_model": "rel_pos",
        "n_heads": spec.n_heads,
        "att_context_size": [-1, -1],
        "att_context_style": "regular",
        "xscaling": spec.xscaling,
        "untie_biases": spec.untie_biases,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": spec.conv_kernel_size,
        "conv_norm_type": "batch_norm",
        "conv_context_size": None,
        "dropout": 0.1,
        "dropout_pre_encoder": 0.1,
        "dropout_emb": 0.0,
        "dropout_att": 0.1,
    }


def _artifact_names(spec: SynthSpec, seed: int, tokenizer_hash: str) -> dict[str, str]:
    """NeMo's ``<uuid>_<name>`` names, the uuids derived from the inputs (reproducible)."""

    def uid(role: str) -> str:
        text = f"budgie-synth:{spec.name}:{seed}:{tokenizer_hash}:{role}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    return {
        "model": f"{uid('model')}_tokenizer.model",
        "vocab": f"{uid('vocab')}_tokenizer.vocab",
        "vocab_txt": f"{uid('vocab_txt')}_vocab.txt",
    }


def synthesize(
    preset: str | SynthSpec, seed: int = 0, tokenizer: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """Config dict, state dict and tokenizer path of a synthetic checkpoint (nothing written)."""
    spec = resolve_spec(preset)
    if not 0 <= seed < 2**63:
        raise BudgieError(f"seed must be >= 0 and < 2**63, got {seed}")
    tokenizer_path = Path(tokenizer) if tokenizer is not None else DATA_DIR / spec.tokenizer
    pieces = read_pieces(tokenizer_path)
    names = _artifact_names(spec, seed, sha256_file(tokenizer_path))
    config = nemo_config(spec, pieces, names, seed)
    return config, synth_state_dict(spec, len(pieces), seed), tokenizer_path


def synth_nemo(
    path: str | os.PathLike[str],
    preset: str | SynthSpec,
    seed: int = 0,
    tokenizer: str | os.PathLike[str] | None = None,
) -> Path:
    """Synthesize and write a ``.nemo`` file in one call; returns its path."""
    config, state, tokenizer_path = synthesize(preset, seed, tokenizer)
    return write_nemo(path, config, state, tokenizer_path)
