"""Getting CUDA ready while the weights load.

Why: a process's first transcript pays for the CUDA context (~0.2 s on the device hosts), for
loading cuBLAS, cuDNN and cuFFT on their first calls (0.3-0.8 s together) and for the first
use of each kernel (benchmarks/results/gpu_startup_h100_2026-11-24.json). None of that needs
the model's weights, so ``start`` does it in a thread while ``load_model`` reads the checkpoint
and copies the weights to the GPU; the libraries and kernel modules it loads are the process's,
whichever thread uses them next. ``load_model`` does not wait for it: the model's first
``transcribe`` does (``Model.warming``), and its eager frontend then finds its kernels loaded.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from budgie.audio import SAMPLE_RATE
from budgie.config import PreprocessorConfig
from budgie.frontend import MelFeaturizer

# Set to False to load models without the warm-up thread (for A/B measurements).
ENABLED = True


def start(device: torch.device) -> threading.Thread | None:
    """A running warm-up thread for ``device`` (None for a CPU device or when disabled)."""
    if device.type != "cuda" or not ENABLED:
        return None
    thread = threading.Thread(target=warm_up, args=(device,), name="budgie-cuda-warmup")
    thread.daemon = True  # never keeps a failing load_model's process alive
    thread.start()
    return thread


def warm_up(device: torch.device) -> bool:
    """Tiny calls into each library a transcript uses (the context, cuBLAS in float32 and 16
    bits, cuDNN, cuFFT, SDPA), then one eager pass of a frontend of the usual sizes: its ~50
    kernels' modules load here, not in the first transcript (its eager frontend took ~0.3 s
    there with cuFFT already loaded). An encoder layer too was measured and dropped: it saved
    the first transcript 30-70 ms but made the thread outlast the weights' copy by ~0.6 s
    (benchmarks/results/gpu_startup_h100_2026-11-24_warm_frontend_encoder.json). False if a
    call failed: errors are left to the real work to report."""
    try:
        with torch.cuda.device(device):
            featurizer = MelFeaturizer(PreprocessorConfig()).to(device)
            with torch.inference_mode():
                for kind in (torch.float32, torch.bfloat16, torch.float16):
                    x = torch.ones(8, 16, device=device, dtype=kind)
                    F.linear(x, torch.ones(32, 16, device=device, dtype=kind), x[0].repeat(2))
                    image = torch.ones(1, 1, 16, 16, device=device, dtype=kind)
                    F.conv2d(image, torch.ones(4, 1, 3, 3, device=device, dtype=kind), stride=2)
                q = torch.ones(1, 2, 8, 16, device=device, dtype=torch.bfloat16)
                F.scaled_dot_product_attention(q, q, q, attn_mask=q[..., :8])
                second = torch.tensor([SAMPLE_RATE], device=device)
                featurizer(torch.randn(1, SAMPLE_RATE, device=device), second)
            torch.cuda.synchronize(device)
    except Exception:  # a warm-up has nothing to report: the real calls will
        return False
    return True
