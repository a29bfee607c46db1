"""``load_model``: from a name or path to a ready ``Model`` on the chosen device and dtype."""

from __future__ import annotations

import os

import torch

from budgie.checkpoint import load_checkpoint
from budgie.errors import BudgieError
from budgie.model import ParakeetTDT
from budgie.pipeline import Model
from budgie.text import Tokenizer

DEFAULT_MODEL = "nvidia/parakeet-tdt-0.6b-v2"

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BudgieError(f"device {device!r} requested but CUDA is not available here")
    if device != "cpu" and not device.startswith("cuda"):
        raise BudgieError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The encoder's dtype. fp32 (NeMo-exact) unless asked; fp16/bf16 need a GPU to pay off."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype in DTYPES:
        resolved = DTYPES[dtype]
    else:
        raise BudgieError(f"unknown dtype {dtype!r} (use fp32, bf16 or fp16)")
    if resolved == torch.float16 and device.type == "cpu":
        raise BudgieError("fp16 is not supported on the CPU; use fp32 or bf16")
    return resolved


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
) -> Model:
    """Load a Parakeet TDT checkpoint (.nemo path or HF hub id) for inference.

    The frontend and the decoder always run in float32; ``dtype`` sets the encoder's precision.
    """
    target = resolve_device(device)
    encoder_dtype = resolve_dtype(dtype, target)
    checkpoint = load_checkpoint(name_or_path)
    network = ParakeetTDT.from_state_dict(checkpoint.config, checkpoint.state_dict)
    if target.type == "cuda":  # exact on CPU; on the GPU one kernel less per layer
        network.encoder.fold_batch_norms()
    network.encoder.to(encoder_dtype)  # cast before the move: the GPU never holds fp32 copies
    network.to(target)
    tokenizer = Tokenizer(checkpoint.tokenizer_path)
    if tokenizer.vocab_size != checkpoint.config.vocab_size:
        raise BudgieError(
            f"tokenizer has {tokenizer.vocab_size} pieces but the model expects "
            f"{checkpoint.config.vocab_size}"
        )
    return Model(network, tokenizer, target, name=checkpoint.source, file_hash=checkpoint.file_hash)
