"""Typed view of a NeMo ``model_config.yaml`` for Parakeet TDT models.

Every size the modules need comes from here, never from constants: the same code serves the tiny
synthetic checkpoints of the tests and the 0.6B models. Unknown keys are ignored; keys that change
the math in ways Budgie does not implement are rejected with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from budgie.errors import ModelError


@dataclass(frozen=True)
class PreprocessorConfig:
    sample_rate: int = 16000
    window_size: float = 0.025
    window_stride: float = 0.01
    n_fft: int = 512
    features: int = 128
    normalize: str = "per_feature"
    preemph: float = 0.97
    log_zero_guard_value: float = 2.0**-24
    mag_power: float = 2.0
    pad_to: int = 0
    pad_value: float = 0.0

    @property
    def win_length(self) -> int:
        return int(self.window_size * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return int(self.window_stride * self.sample_rate)


@dataclass(frozen=True)
class EncoderConfig:
    feat_in: int = 128
    n_layers: int = 24
    d_model: int = 1024
    n_heads: int = 8
    ff_expansion_factor: int = 4
    conv_kernel_size: int = 9
    subsampling_factor: int = 8
    subsampling_conv_channels: int = 256
    use_bias: bool = True
    xscaling: bool = True
    untie_biases: bool = True
    pos_emb_max_len: int = 5000

    @property
    def d_ff(self) -> int:
        return self.d_model * self.ff_expansion_factor


@dataclass(frozen=True)
class PredictionConfig:
    vocab_size: int = 1024
    pred_hidden: int = 640
    pred_rnn_layers: int = 2


@dataclass(frozen=True)
class JointConfig:
    joint_hidden: int = 640
    activation: str = "relu"
    encoder_hidden: int = 1024
    pred_hidden: int = 640


@dataclass(frozen=True)
class DecodingConfig:
    durations: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_symbols: int = 10


@dataclass(frozen=True)
class ModelConfig:
    preprocessor: PreprocessorConfig = field(default_factory=PreprocessorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    prediction: PredictionConfig = field(default_factory=PredictionConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    @property
    def vocab_size(self) -> int:
        return self.prediction.vocab_size

    @property
    def blank_id(self) -> int:
        """The blank is the last label, right after the vocabulary (NeMo's blank_as_pad layout)."""
        return self.prediction.vocab_size

    @property
    def frame_shift_s(self) -> float:
        """Seconds per encoder frame (0.08 s for Parakeet: 10 ms hop x 8 subsampling)."""
        return self.preprocessor.window_stride * self.encoder.subsampling_factor

    @classmethod
    def from_nemo(cls, cfg: dict[str, Any], vocab_size: int | None = None) -> ModelConfig:
        """Build from the dict of a NeMo ``model_config.yaml``.

        ``vocab_size`` (from the tokenizer) is used when the config leaves it unset, as NeMo's
        training configs do before the model has been built.
        """
        try:
            return _from_nemo(cfg, vocab_size)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model config is not a Parakeet TDT config: {exc}") from None


def _pick(section: dict[str, Any], dataclass_type: type, **overrides: Any) -> Any:
    names = {f.name for f in fields(dataclass_type)}
    values = {k: v for k, v in section.items() if k in names and v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return dataclass_type(**values)


def _from_nemo(cfg: dict[str, Any], vocab_size: int | None) -> ModelConfig:
    pre = dict(cfg.get("preprocessor") or {})
    enc = dict(cfg["encoder"])
    dec = dict(cfg["decoder"])
    joint = dict(cfg["joint"])
    decoding = dict(cfg.get("decoding") or {})

    if pre.get("normalize", "per_feature") != "per_feature":
        raise ValueError(f"preprocessor.normalize={pre.get('normalize')!r} (only per_feature)")
    if int(pre.get("frame_splicing", 1)) != 1:
        raise ValueError("preprocessor.frame_splicing != 1")
    if enc.get("subsampling", "dw_striding") != "dw_striding":
        raise ValueError(f"encoder.subsampling={enc.get('subsampling')!r} (only dw_striding)")
    if enc.get("self_attention_model", "rel_pos") != "rel_pos":
        raise ValueError("encoder.self_attention_model must be rel_pos")
    if enc.get("conv_norm_type", "batch_norm") != "batch_norm":
        raise ValueError("encoder.conv_norm_type must be batch_norm")
    if list(enc.get("att_context_size") or [-1, -1]) != [-1, -1]:
        raise ValueError("limited attention context is not supported")

    prednet = dict(dec.get("prednet") or {})
    jointnet = dict(joint.get("jointnet") or {})
    vocab = dec.get("vocab_size") or joint.get("num_classes") or vocab_size
    if vocab is None:
        raise ValueError("vocabulary size unknown (decoder.vocab_size unset and no tokenizer)")
    model_defaults = dict(cfg.get("model_defaults") or {})
    durations = decoding.get("durations") or model_defaults.get("tdt_durations")
    if not durations:
        raise ValueError("no TDT durations (decoding.durations): not a TDT model")
    n_extra = joint.get("num_extra_outputs")
    if n_extra is not None and int(n_extra) != len(durations):
        raise ValueError(f"joint.num_extra_outputs={n_extra} but {len(durations)} durations")
    greedy = dict(decoding.get("greedy") or {})
    max_symbols = greedy.get("max_symbols") or greedy.get("max_symbols_per_step") or 10

    return ModelConfig(
        preprocessor=_pick(pre, PreprocessorConfig),
        encoder=_pick(enc, EncoderConfig),
        prediction=_pick(prednet, PredictionConfig, vocab_size=int(vocab)),
        joint=_pick(jointnet, JointConfig),
        decoding=DecodingConfig(
            durations=tuple(int(d) for d in durations), max_symbols=int(max_symbols)
        ),
    )
