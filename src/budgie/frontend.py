"""Log-mel features with NeMo's ``AudioToMelSpectrogramPreprocessor`` semantics (NeMo >= 2.5).

The window and the mel filterbank are buffers taken from the checkpoint
(``preprocessor.featurizer.window`` / ``.fb``), so the features match the ones the model was
trained on even where a checkpoint deviates from the textbook Hann window or slaney filterbank.
The whole frontend runs in float32: fp16/bf16 would overflow the power spectrum.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from budgie.config import PreprocessorConfig

# Added to the std of every feature row; NeMo's ``CONSTANT``.
STD_EPSILON = 1e-5


def feature_lengths(num_samples: Tensor, hop_length: int) -> Tensor:
    """Valid feature frames for each input: N // hop (center padding of n_fft//2 on each side)."""
    return torch.div(num_samples, hop_length, rounding_mode="floor").long()


def preemphasis(audio: Tensor, num_samples: Tensor, coefficient: float) -> Tensor:
    """y[n] = x[n] - a*x[n-1], then zero everything past each input's length."""
    shifted = torch.cat((audio[:, :1], audio[:, 1:] - coefficient * audio[:, :-1]), dim=1)
    valid = torch.arange(audio.shape[1], device=audio.device)[None, :] < num_samples[:, None]
    return shifted.masked_fill(~valid, 0.0)


def normalize_per_feature(features: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit (unbiased) std per mel bin over the valid frames; padding frames -> 0."""
    valid = torch.arange(features.shape[2], device=features.device)[None, :] < lengths[:, None]
    valid3 = valid[:, None, :]
    count = valid.sum(dim=1, keepdim=True).to(features.dtype)  # [B, 1]
    mean = torch.where(valid3, features, 0.0).sum(dim=2) / count
    centered = torch.where(valid3, features - mean[:, :, None], 0.0)
    std = torch.sqrt(centered.pow(2).sum(dim=2) / (count - 1.0))
    std = std.masked_fill(std.isnan(), 0.0) + STD_EPSILON  # one valid frame: std is 0/0
    normalized = (features - mean[:, :, None]) / std[:, :, None]
    return normalized.masked_fill(~valid3, 0.0)


class MelFeaturizer(nn.Module):
    """Waveforms [B, N] (float32, 16 kHz, zero padded) -> normalized log-mel [B, n_mels, T]."""

    window: Tensor
    fb: Tensor

    def __init__(self, cfg: PreprocessorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Placeholders: the checkpoint provides both (an arange here would pull in torch._dynamo
        # on the meta device, a 1.5 s import).
        self.register_buffer("window", torch.zeros(cfg.win_length))
        self.register_buffer("fb", torch.zeros(1, cfg.features, cfg.n_fft // 2 + 1))

    def forward(self, audio: Tensor, num_samples: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        lengths = feature_lengths(num_samples, cfg.hop_length)
        audio = preemphasis(audio.float(), num_samples, cfg.preemph)
        spec = torch.stft(
            audio,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window.float(),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        # |X| then ^mag_power, in NeMo's order, so float32 rounding matches the reference.
        magnitude = torch.view_as_real(spec).pow(2).sum(-1).sqrt()
        if cfg.mag_power != 1.0:
            magnitude = magnitude.pow(cfg.mag_power)
        mel = torch.matmul(self.fb.float(), magnitude)
        log_mel = torch.log(mel + cfg.log_zero_guard_value)
        return normalize_per_feature(log_mel, lengths), lengths


class Preprocessor(nn.Module):
    """Holds the featurizer under NeMo's name, so checkpoint keys load unchanged."""

    def __init__(self, cfg: PreprocessorConfig) -> None:
        super().__init__()
        self.featurizer = MelFeaturizer(cfg)

    def forward(self, audio: Tensor, num_samples: Tensor) -> tuple[Tensor, Tensor]:
        features, lengths = self.featurizer(audio, num_samples)
        return features, lengths
