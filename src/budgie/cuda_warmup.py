"""Getting CUDA ready while the weights load.

Why: a process's first transcript pays for the CUDA context (~0.2 s on the device hosts), for
loading cuBLAS, cuDNN and cuFFT on their first calls (0.3-0.8 s together) and for the first
use of each kernel (benchmarks/results/gpu_startup_h100_2026-11-24.json). None of that needs
the model's weights, so ``start`` does it in a thread while ``load_model`` reads the checkpoint
and copies the weights to the GPU; the libraries and kernel modules it loads are the process's,
whichever thread uses them next.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

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
    """Tiny calls into each library a transcript uses: the context, cuBLAS (float32 and 16-bit
    GEMMs with bias), cuDNN (2-D convolutions, as in the subsampling), cuFFT (the STFT), SDPA.
    False if one failed: errors are left to the real work to report."""
    try:
        with torch.inference_mode(), torch.cuda.device(device):
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                x = torch.ones(8, 16, device=device, dtype=dtype)
                F.linear(x, torch.ones(32, 16, device=device, dtype=dtype), x[0].repeat(2))
                image = torch.ones(1, 1, 16, 16, device=device, dtype=dtype)
                F.conv2d(image, torch.ones(4, 1, 3, 3, device=device, dtype=dtype), stride=2)
            signal = torch.ones(1, 2048, device=device)
            window = torch.ones(400, device=device)
            torch.stft(signal, 512, 160, 400, window, center=True, return_complex=True)
            q = torch.ones(1, 2, 8, 16, device=device, dtype=torch.bfloat16)
            F.scaled_dot_product_attention(q, q, q, attn_mask=q[..., :8])
            torch.cuda.synchronize(device)
    except Exception:  # a warm-up has nothing to report: the real calls will
        return False
    return True
