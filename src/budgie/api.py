"""``load_model``: from a name or path to a ready ``Model`` on the chosen device and dtype."""

from __future__ import annotations

import os

import torch

from budgie import cuda_warmup
from budgie.checkpoint import load_checkpoint
from budgie.cpu_decoding import TorchCpuDecoder
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


BACKENDS = ("auto", "torch", "onnx")


def resolve_backend(backend: str, name_or_path: str | os.PathLike[str]) -> str:
    """``auto``: onnx for an ONNX directory or a ``*-onnx`` hub id, torch otherwise."""
    if backend not in BACKENDS:
        raise BudgieError(f"unknown backend {backend!r} (use {', '.join(BACKENDS)})")
    if backend != "auto":
        return backend
    from budgie.backends.onnx_runtime import looks_like_onnx

    return "onnx" if looks_like_onnx(name_or_path) else "torch"


def resolve_decoder_device(decoder_device: str | None, encoder: torch.device) -> torch.device:
    """Where the TDT decoder runs: with the encoder unless told; ``cpu`` is always possible."""
    if decoder_device is None or decoder_device == "auto":
        return encoder
    if decoder_device == "cpu":
        return torch.device("cpu")
    resolved = resolve_device(decoder_device)
    if resolved.type != encoder.type:
        raise BudgieError(f"decoder device {decoder_device!r} with the encoder on {encoder.type}")
    return encoder


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    backend: str = "auto",
    decoder_device: str | None = None,
) -> Model:
    """Load a Parakeet TDT model (.nemo path, HF hub id, or ONNX directory) for inference.

    The frontend and the decoder always run in float32; ``dtype`` sets the encoder's precision.
    ``backend``: ``torch`` (.nemo checkpoints), ``onnx`` (ONNX Runtime on the CPU; ``dtype``
    fp32 or int8 picks the ``*.int8.onnx`` files) or ``auto`` (see ``resolve_backend``).
    ``decoder_device``: ``cpu`` runs the fast CPU decode loop (``budgie.cpu_decoding``) behind
    a GPU encoder, the seed's layout; on the CPU that loop is always used.
    """
    if resolve_backend(backend, name_or_path) == "onnx":
        from budgie.backends.onnx_runtime import load_onnx_model

        if decoder_device not in (None, "auto", "cpu"):
            raise BudgieError("the ONNX backend decodes on the CPU (--decoder-device cpu)")
        if isinstance(dtype, torch.dtype):
            raise BudgieError("the ONNX backend takes dtype 'fp32' or 'int8'")
        return load_onnx_model(name_or_path, device=device, dtype=dtype)
    target = resolve_device(device)
    decoder_target = resolve_decoder_device(decoder_device, target)
    encoder_dtype = resolve_dtype(dtype, target)
    warming = cuda_warmup.start(target)  # CUDA set up while the weights load (and after)
    checkpoint = load_checkpoint(name_or_path)
    network = ParakeetTDT.from_state_dict(checkpoint.config, checkpoint.state_dict)
    if target.type == "cuda":  # exact on CPU; on the GPU one kernel less per layer
        network.encoder.fold_batch_norms()
    network.encoder.set_matmul_dtype(encoder_dtype, target)
    network.to(target)
    tokenizer = Tokenizer(checkpoint.tokenizer_path)
    if tokenizer.vocab_size != checkpoint.config.vocab_size:
        raise BudgieError(
            f"tokenizer has {tokenizer.vocab_size} pieces but the model expects "
            f"{checkpoint.config.vocab_size}"
        )
    source, digest = checkpoint.source, checkpoint.file_hash
    model = Model(network, tokenizer, target, name=source, file_hash=digest)
    model.warming = warming  # the first transcribe waits for what is left of it
    if decoder_target.type == "cpu":
        decoding = checkpoint.config.decoding
        model.cpu_decoder = TorchCpuDecoder(
            network.decoder, network.joint, decoding.durations, decoding.max_symbols
        )
    return model
