"""Where a GPU transcript's time goes: A/B of execution variants plus a kernel profile.

Run on the device (one call, no NeMo needed with ``--checkpoint synth``):
    python3 benchmarks/gpu_profile.py --checkpoint synth --out $OUT/gpu_profile.json

For each variant of the CUDA runner (which parts are torch.compile'd before graph capture) it
records latency-mode (B=1, bf16) phase means over the default clips and throughput-mode RTFx,
then profiles one B=1 transcript of the last variant (kernel time by name, kernel count).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_compare import phase_means  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.bench.audioset import default_clips, write_clips  # noqa: E402
from budgie.cuda_runner import CudaRunner  # noqa: E402
from budgie.pipeline import Model  # noqa: E402
from budgie.results import Transcript  # noqa: E402
from budgie.synth import synth_nemo  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "graphs": {"compile_decoder": False, "compile_encoder": False, "triton": False},
    "graphs_triton": {"compile_decoder": False, "compile_encoder": False, "triton": True},
    "graphs_triton_separate_qkv": {  # q, k, v as three GEMMs in the fused layers
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "fused_qkv": False,
    },
    "graphs_triton_sdpa": {  # attention as query/position/bias kernels + cuDNN SDPA
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "flash_attention": False,
    },
    "graphs_triton_flash_all": {  # the one-kernel attention at every batch size
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "flash_max_batch": 256,
    },
    "graphs_triton_glu_taps": {  # the GLU + depthwise kernel that recomputes GLU per tap
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "glu_window": False,
    },
    "graphs_triton_cudnn_first_conv": {  # the subsampling's first convolution by cuDNN
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "first_conv": False,
    },
    "graphs_triton_eager_subsampling": {  # the subsampling's first stage as eager modules
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "fused_subsampling": False,
    },
    "graphs_triton_steps": {  # the Triton step kernels in graphs instead of the loop kernel
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "loop": False,
    },
    "graphs_triton_barrier_phases": {  # phase timer synchronizing at every phase boundary
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "overlap_phases": False,
    },
    "graphs_triton_window2": {  # the loop decoder's joint phase covers 2 frames ahead
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "loop_window": 2,
    },
    "graphs_triton_window4": {
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "loop_window": 4,
    },
    "graphs_triton_fp32_decoder": {
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "fp32_decoder": True,
    },
    "graphs_triton_unfused": {
        "compile_decoder": False,
        "compile_encoder": False,
        "triton": True,
        "fused": False,
    },
    "compile_decoder": {"compile_decoder": True, "compile_encoder": False, "triton": False},
    "compile_both": {"compile_decoder": True, "compile_encoder": True, "triton": False},
    "compile_both_triton": {"compile_decoder": True, "compile_encoder": True, "triton": True},
}


PASSES = 5  # timed throughput passes per variant (the median is reported)


def runner(
    model: Model,
    compile_decoder: bool,
    compile_encoder: bool,
    triton: bool,
    fused: bool = True,
    fp32_decoder: bool = False,
    loop: bool = True,
    fused_qkv: bool = True,
    fused_subsampling: bool = True,
    flash_attention: bool = True,
    flash_max_batch: int = 4,
    glu_window: bool = True,
    first_conv: bool = True,
    overlap_phases: bool = True,
    loop_window: int = 1,
) -> CudaRunner:
    import budgie.timing

    budgie.timing.OVERLAP_PHASES = overlap_phases
    if triton:
        import budgie.triton_encoder

        budgie.triton_encoder.FUSED_QKV = fused_qkv
        budgie.triton_encoder.FLASH_ATTENTION = flash_attention
        budgie.triton_encoder.FLASH_MAX_BATCH = flash_max_batch
        budgie.triton_encoder.GLU_WINDOW = glu_window
        import budgie.triton_subsampling

        budgie.triton_subsampling.FIRST_CONV = first_conv
    made = CudaRunner(model.network, True, compile_decoder, compile_encoder)
    if not triton or not loop or fp32_decoder:
        made.loop_decoder = None
    if loop_window > 1 and made.loop_decoder is not None:
        from budgie.triton_loop import LoopConfig, LoopDecoder

        class Windowed(LoopDecoder):
            @classmethod
            def network_options(cls, network: Any) -> dict[str, Any]:
                return {
                    **super().network_options(network),
                    "config": LoopConfig(window=loop_window),
                }

        made.loop_decoder = Windowed
    if not triton:
        made.triton_decoder = None
    elif fp32_decoder:  # the Triton step with float32 weights whatever the model's dtype
        from gpu_micro import float32_weights

        from budgie.triton_decoding import TritonStepDecoder

        made.triton_decoder = float32_weights(TritonStepDecoder)
    made.fused_encoder = fused
    made.fused_subsampling = fused_subsampling
    return made


def latency(model: Model, clips: list[str], repeats: int) -> dict[str, Any]:
    for _ in range(2):  # first use of a bucket runs eagerly, the second captures
        model.transcribe(clips)
    runs = [model.transcribe(c) for _ in range(repeats) for c in clips]
    return {**phase_means(runs), "token_ids": [r.token_ids for r in runs[: len(clips)]]}


def throughput(model: Model, files: list[str], batch: int) -> dict[str, Any]:
    model.sync_phases = False
    for _ in range(2):
        model.transcribe(files, batch_size=batch)
    walls = []
    for _ in range(PASSES):  # one pass is ~0.3 s: host noise moves it by up to ~30 %
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        results = model.transcribe(files, batch_size=batch)
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    model.sync_phases = True
    audio = sum(r.duration_s for r in results if isinstance(r, Transcript))
    synced = [r for r in model.transcribe(files, batch_size=batch) if isinstance(r, Transcript)]
    sums = dict.fromkeys(("load_audio", "preprocess", "encode", "decode", "tokenize"), 0.0)
    batches: set[tuple[float, float, float]] = set()
    for r in synced:  # per-input phases add up; batch phases are shared by a batch's members
        sums["load_audio"] += r.timings.load_audio_ms
        sums["tokenize"] += r.timings.tokenize_ms
        batches.add((r.timings.preprocess_ms, r.timings.encode_ms, r.timings.decode_ms))
    for pre, enc, dec in batches:
        sums["preprocess"] += pre
        sums["encode"] += enc
        sums["decode"] += dec
    return {
        "batch": batch,
        "wall_s": wall,
        "wall_s_passes": walls,
        "rtfx": audio / wall,
        "synced_phase_sums_ms": sums,
    }


def kernel_profile(model: Model, clip: str | list[str], batch: int = 1) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    clips = clip if isinstance(clip, list) else [clip]
    for _ in range(2):  # every shape's graphs captured: the steady state is profiled
        model.transcribe(clips, batch_size=batch)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        results = model.transcribe(clips, batch_size=batch)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3
    result = next(r for r in results if isinstance(r, Transcript))
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(event.name, []).append(event.device_time)
    rows = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))
    busy_us, span_us = device_busy(prof.events())
    table = [{"name": k[:120], "count": len(v), "total_us": sum(v)} for k, v in rows[:40]]
    for row in table[:25]:
        print(f"  {row['total_us']:9.1f} us {row['count']:5d}x  {row['name']}", flush=True)
    return {
        "profiled_wall_ms": wall_ms,
        "phases_ms": result.timings.__dict__,
        "kernel_count": sum(len(v) for v in kernels.values()),
        "kernel_total_us": sum(sum(v) for v in kernels.values()),
        "device_busy_us": busy_us,  # union of kernel and copy intervals
        "device_span_us": span_us,  # first start to last end: busy + idle gaps between
        "top": table,
    }


def device_busy(events: Any) -> tuple[float, float]:
    """Time the GPU was busy (union of its activity intervals) and the span from its first
    activity to its last: the difference is where it waited on the host."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in events
        if e.device_type == torch.autograd.DeviceType.CUDA
    )
    if not spans:
        return 0.0, 0.0
    busy, (start, end) = 0.0, spans[0]
    first = start
    for s, e in spans[1:]:
        if s > end:
            busy += end - start
            start, end = s, e
        else:
            end = max(end, e)
    busy += end - start
    return busy, end - first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", choices=["synth", "recipe"], default="synth")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--profile-each", action="store_true", help="a batch-64 kernel profile per variant"
    )
    args = parser.parse_args()
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "variants": {},
    }
    work = Path(tempfile.mkdtemp())
    ckpt = work / "v2.nemo"
    t0 = time.perf_counter()
    if args.checkpoint == "recipe":
        import subprocess

        builder = HERE / "build_recipe_checkpoint.py"
        subprocess.run([sys.executable, str(builder), str(ckpt)], check=True, capture_output=True)
    else:
        synth_nemo(ckpt, "parakeet-tdt-0.6b-v2", seed=0)
    out["checkpoint"], out["checkpoint_s"] = args.checkpoint, time.perf_counter() - t0
    clips = [str(p) for p in write_clips(default_clips(args.clips), work / "clips")]
    out["audio_s_mean"] = statistics.fmean(c.duration_s for c in default_clips(args.clips))
    model = load_model(ckpt, device="cuda", dtype="bf16")
    for run, name in enumerate(args.variants.split(",")):
        t0 = time.perf_counter()
        if name in out["variants"]:  # a repeated variant (alternating A/B runs): keep both
            name = f"{name}#{run}"
        try:
            model.cuda_runner = runner(model, **VARIANTS[name.split("#")[0]])
            entry: dict[str, Any] = {"latency_b1": latency(model, clips, args.repeats)}
            entry["warm_s"] = time.perf_counter() - t0
            entry["throughput"] = throughput(model, clips * args.copies, 64)
            if args.profile_each:
                entry["profile_b64"] = kernel_profile(model, clips * args.copies, batch=64)
            out["variants"][name] = entry
            lat = entry["latency_b1"]
            sums = entry["throughput"]["synced_phase_sums_ms"]
            print(
                f"[{name}] B=1 total {lat['total_ms']:.2f} ms (pre {lat['preprocess_ms']:.2f} "
                f"enc {lat['encode_ms']:.2f} dec {lat['decode_ms']:.2f} load "
                f"{lat['load_audio_ms']:.2f} tok {lat['tokenize_ms']:.2f}) steps "
                f"{lat['steps_mean']:.0f}; B=64 RTFx {entry['throughput']['rtfx']:.0f} "
                f"{ {k: round(v) for k, v in sums.items()} }; "
                f"{time.perf_counter() - t0:.0f}s",
                flush=True,
            )
        except Exception as exc:  # keep going: record what broke
            import traceback

            out["variants"][name] = {"error": traceback.format_exc()[-3000:]}
            print(f"[{name}] FAILED {exc!r}", flush=True)
    done = [v for v in out["variants"].values() if "latency_b1" in v]
    for entry in done[1:]:  # same encoder kernels, so differences come from the decoder
        entry["tokens_equal_to_first_variant"] = sum(
            a == b
            for a, b in zip(
                done[0]["latency_b1"]["token_ids"], entry["latency_b1"]["token_ids"], strict=True
            )
        )
        print(
            "clips with tokens equal to the first variant:", entry["tokens_equal_to_first_variant"]
        )
    for entry in done:
        entry["latency_b1"]["token_ids"] = "omitted"
    out["profile_b1"] = kernel_profile(model, clips[1])
    print("batch 64:", flush=True)
    out["profile_b64"] = kernel_profile(model, clips * args.copies, batch=64)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
