"""What the GPU benchmarks share: timing a call inside a CUDA graph (as the encoder's graphs
run it: no launch costs), the record's header, one conformer layer as the fused runner holds
it, the synthetic full-size checkpoint with its clips for the scripts that need no NeMo, host
timers wrapped around a method, and Triton decoders kept in float32."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPLAYED = 10  # calls captured per graph; a time is one replay divided by this


def graph_timed(fn: Callable[[], object], reps: int = 10) -> float:
    """Median milliseconds per call of ``fn`` captured REPLAYED times in a CUDA graph."""
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPLAYED):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times: list[float] = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)) / REPLAYED)
    return sorted(times)[len(times) // 2]


def gpu_record() -> dict[str, Any]:
    """A result record's header: device, date, command; its runs go under "runs"."""
    return {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "runs": [],
    }


def one_layer_encoder() -> Any:
    """A one-layer full-size encoder (random weights) on the GPU as the fused runner holds it:
    BatchNorm folded into the depthwise convolution, linear and convolution weights in bf16."""
    from budgie.config import EncoderConfig
    from budgie.encoder import ConformerEncoder

    encoder = ConformerEncoder(EncoderConfig(n_layers=1)).to(torch.device("cuda"))
    encoder.fold_batch_norms()
    encoder.set_matmul_dtype(torch.bfloat16)
    return encoder


def synth_v2_clips(count: int) -> tuple[Path, list[str]]:
    """The full-size synthetic parakeet-tdt-0.6b-v2 checkpoint (seed 0) and the first ``count``
    default bench clips as WAV files, written to a fresh temporary directory."""
    from budgie.bench.audioset import default_clips, write_clips
    from budgie.synth import synth_nemo

    work = Path(tempfile.mkdtemp())
    checkpoint = work / "v2.nemo"
    synth_nemo(checkpoint, "parakeet-tdt-0.6b-v2", seed=0)
    return checkpoint, [str(p) for p in write_clips(default_clips(count), work / "clips")]


def time_calls(owner: Any, name: str, record: Callable[[float, float], None]) -> Callable[[], None]:
    """Wrap ``owner.name`` so every call reports its host start and end (perf_counter seconds)
    to ``record``; nothing is synchronized. Returns the function that undoes the wrapping."""
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            record(t0, time.perf_counter())

    setattr(owner, name, timed)
    return lambda: setattr(owner, name, original)


def float32_weights(machine: Any) -> Any:
    """A Triton decoder class (step or loop) that keeps float32 weights whatever the model's
    dtype (they are bf16/fp16 in a 16-bit model: ``network_options``)."""

    class Float32Weights(machine):  # type: ignore[misc,valid-type]
        @classmethod
        def network_options(cls, network: Any) -> dict[str, Any]:
            options = dict(super().network_options(network))
            options.pop("weight_dtype", None)
            return options

    return Float32Weights
