"""How long an input one encoder pass can take on a device, before it is attempted.

Full self-attention holds [heads, T, T] score tensors, so memory grows with the square of the
duration: a 1-hour file needs hundreds of GB in one pass. Rather than let the allocator fail
mid-way (or the OS kill the process), inputs whose estimated peak exceeds what the device has
free are refused up front with a message that says what to do.
"""

from __future__ import annotations

import os
import time

import torch

from budgie.audio import SAMPLE_RATE
from budgie.config import ModelConfig
from budgie.errors import AudioError

# Live [T, T] float32 tensors per head at the attention peak (position scores, masked scores,
# softmax weights, plus slack for the allocator); measured peaks on CPU stay below this.
ATTENTION_TENSORS = 5
# Share of free memory one pass may plan to use.
USABLE_FRACTION = 0.8
# A GPU's free memory is asked for at most this often: every input is checked, and a driver
# call per input showed in the loader threads' profile of a 160-file batch (~5 % of samples).
FREE_MEMORY_MAX_AGE_S = 0.25
_gpu_free: dict[str, tuple[float, int]] = {}  # device -> (time.monotonic(), free bytes)


def encoder_frames(cfg: ModelConfig, num_samples: int) -> int:
    frames = num_samples // cfg.preprocessor.hop_length
    for _ in range(cfg.encoder.subsampling_factor.bit_length() - 1):
        frames = (frames - 1) // 2 + 1
    return max(frames, 0)


def estimated_peak_bytes(cfg: ModelConfig, num_samples: int) -> int:
    """Activation memory of one utterance's encoder pass (weights not included)."""
    t = encoder_frames(cfg, num_samples)
    enc = cfg.encoder
    attention = ATTENTION_TENSORS * enc.n_heads * t * t * 4
    activations = 8 * t * max(enc.d_ff, 2 * enc.d_model) * 4
    n_features = num_samples // cfg.preprocessor.hop_length + 1
    subsampling = 2 * enc.subsampling_conv_channels * n_features * cfg.encoder.feat_in // 4 * 4
    return attention + activations + subsampling


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        now = time.monotonic()
        asked_at, free = _gpu_free.get(str(device), (-FREE_MEMORY_MAX_AGE_S, 0))
        if now - asked_at >= FREE_MEMORY_MAX_AGE_S:
            free = int(torch.cuda.mem_get_info(device)[0])
            _gpu_free[str(device)] = (now, free)
        return free
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def max_single_pass_seconds(cfg: ModelConfig, device: torch.device) -> float:
    """Longest input (seconds) whose estimated peak fits in the device's free memory now."""
    budget = free_memory_bytes(device) * USABLE_FRACTION
    low, high = 0, SAMPLE_RATE * 60 * 60 * 24
    while low < high:  # the estimate grows monotonically with length
        mid = (low + high + 1) // 2
        if estimated_peak_bytes(cfg, mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low / SAMPLE_RATE


def fits_single_pass(cfg: ModelConfig, num_samples: int, device: torch.device) -> bool:
    """Whether one encoder pass over ``num_samples`` fits the device's free memory now."""
    budget = free_memory_bytes(device) * USABLE_FRACTION
    return estimated_peak_bytes(cfg, num_samples) <= budget


def too_long_message(cfg: ModelConfig, num_samples: int, device: torch.device) -> str:
    """Why an input cannot go through one pass, and what to do (one line)."""
    needed = estimated_peak_bytes(cfg, num_samples)
    free = free_memory_bytes(device)
    limit = max_single_pass_seconds(cfg, device)
    return (
        f"audio is {num_samples / SAMPLE_RATE:.1f} s long; one pass on {device.type} "
        f"fits about {limit:.0f} s with the memory free now (needs ~{needed / 2**30:.1f} GiB, "
        f"{free / 2**30:.1f} GiB free), too little to transcribe it in pieces: free memory, "
        "split the file (e.g. `ffmpeg -i in.wav -f segment -segment_time 300 out%03d.wav`) or "
        "use a device with more memory"
    )


def check_single_pass(cfg: ModelConfig, num_samples: int, device: torch.device) -> None:
    """AudioError (too_long_message) unless one pass over ``num_samples`` fits."""
    if not fits_single_pass(cfg, num_samples, device):
        raise AudioError(too_long_message(cfg, num_samples, device))


def pieces_per_batch(cfg: ModelConfig, piece_samples: int, device: torch.device) -> int:
    """How many pieces of ``piece_samples`` one batch may hold in the free memory now."""
    budget = free_memory_bytes(device) * USABLE_FRACTION
    return max(1, int(budget // max(1, estimated_peak_bytes(cfg, piece_samples))))


FP16_OVERFLOW = (
    "the encoder's fp16 activations overflowed (values past fp16's range of 65504 became "
    "inf/NaN); transcribe it with dtype bf16 or fp32"
)


def overflowed_rows(encoded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B] bool: rows with inf/NaN among their valid frames. In fp16 an activation past 65504
    becomes inf and spreads through the row's attention, never into other rows, so a row's
    own frames say whether its transcript can be trusted."""
    frames = torch.arange(encoded.shape[1], device=encoded.device)
    valid = frames[None, :] < lengths[:, None].to(encoded.device)
    return (~torch.isfinite(encoded).all(dim=-1) & valid).any(dim=1)


class OverflowCheck:
    """``overflowed_rows`` of a batch, copied to the host behind the encoder without waiting
    for it (the flags are read once the batch's decode has returned)."""

    def __init__(self, encoded: torch.Tensor, lengths: torch.Tensor) -> None:
        flags = overflowed_rows(encoded, lengths)
        self._host = torch.empty(flags.shape, dtype=torch.bool, pin_memory=True)
        self._host.copy_(flags, non_blocking=True)
        self._copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._copied.record()

    def rows(self) -> list[bool]:
        self._copied.synchronize()
        return [bool(flag) for flag in self._host.tolist()]
