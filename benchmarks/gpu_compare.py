"""Budgie vs NeMo 3.0.0 on one GPU, same weights, same clips, one process tree, one JSON.

Run on the device (see benchmarks/README.md for the exact command):
    python3 benchmarks/gpu_compare.py --out $OUT/gpu_compare.json [--skip-nemo]

Stages (each recorded even if a later one fails):
 1. synthesize the full-size parakeet-tdt-0.6b-v2 checkpoint (seed 0) and the default bench clips
 2. first transcript after process start (a fresh interpreter, checkpoint cache warm)
 3. Budgie latency mode (B=1) in bf16, fp32 and fp16: per-phase means over the clips
 4. Budgie throughput mode: N x clips from WAV files on disk, several batch sizes, bf16
 5. peak GPU memory for a 30 s clip at B=1 bf16, and the longest single pass that fits
 6. token agreement: GPU fp32 vs CPU fp32, bf16 vs fp32, fp16 vs fp32
 7. NeMo (subprocess): transcribe() at B=1 and batched, bf16 autocast, fp32 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.bench.audioset import default_clips, write_clips  # noqa: E402
from budgie.limits import max_single_pass_seconds  # noqa: E402
from budgie.results import Transcript  # noqa: E402
from budgie.synth import synth_nemo  # noqa: E402

RESULT: dict[str, Any] = {"stages": {}, "errors": {}}


def stage(name: str):  # type: ignore[no-untyped-def]
    def wrap(fn):  # type: ignore[no-untyped-def]
        def run(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                RESULT["stages"][name] = fn(*a, **k)
            except Exception:
                RESULT["errors"][name] = traceback.format_exc()[-3000:]
                print(f"[{name}] FAILED\n{RESULT['errors'][name]}", flush=True)
            print(f"[{name}] {time.perf_counter() - t0:.1f}s", flush=True)
            return RESULT["stages"].get(name)

        return run

    return wrap


def phase_means(results: list[Transcript]) -> dict[str, float]:
    keys = ["load_audio_ms", "preprocess_ms", "encode_ms", "decode_ms", "tokenize_ms", "total_ms"]
    out = {k: statistics.fmean(getattr(r.timings, k) for r in results) for k in keys}
    out["decode_share"] = out["decode_ms"] / out["total_ms"]
    out["audio_s"] = sum(r.duration_s for r in results)
    out["rtfx"] = out["audio_s"] / (sum(r.timings.total_ms for r in results) / 1000)
    out["tokens_mean"] = statistics.fmean(len(r.tokens) for r in results)
    out["steps_mean"] = statistics.fmean(r.decoder_steps for r in results)
    return out


@stage("first_transcript")
def first_transcript(ckpt: Path, clip: Path) -> dict[str, Any]:
    code = (
        "import time; t0=time.perf_counter(); import budgie.api as a; t1=time.perf_counter(); "
        f"m=a.load_model({str(ckpt)!r}, device='cuda', dtype='bf16'); t2=time.perf_counter(); "
        f"r=m.transcribe({str(clip)!r}); t3=time.perf_counter(); "
        "print(t1-t0, t2-t1, t3-t2); print(t3-t0, time.time())"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    runs = []
    for _ in range(2):  # the first run fills the checkpoint cache
        t0, started = time.perf_counter(), time.time()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        lines = out.stdout.strip().splitlines()
        parts = dict(
            zip(("import_s", "load_s", "transcribe_s"), map(float, lines[-2].split()), strict=False)
        )
        in_process, done_at = map(float, lines[-1].split())
        # to_transcript_s: from the spawn to the transcript in hand (wall_s adds the process's
        # exit, CUDA teardown included)
        runs.append(
            {"wall_s": wall, "to_transcript_s": done_at - started, "in_process_s": in_process}
            | parts
        )
    return {"cold_cache": runs[0], "warm_cache": runs[1]}


def latency(ckpt: Path, clips: list[Path], dtype: str, repeats: int) -> dict[str, Any]:
    model = load_model(ckpt, device="cuda", dtype=dtype)
    model.transcribe([str(c) for c in clips])  # warm-up: first use of a bucket runs eagerly,
    model.transcribe([str(c) for c in clips])  # the second captures its graphs
    runs: list[Transcript] = []
    for _ in range(repeats):
        for clip in clips:
            runs.append(model.transcribe(str(clip)))
    ids = [r.token_ids for r in runs[: len(clips)]]
    return {"dtype": dtype, "n": len(runs), **phase_means(runs), "token_ids": ids}


@stage("latency_eager")
def latency_eager(ckpt: Path, clips: list[Path]) -> dict[str, Any]:
    model = load_model(ckpt, device="cuda", dtype="bf16")
    assert model.cuda_runner is not None
    model.cuda_runner.use_graphs = False
    model.transcribe([str(c) for c in clips])
    model.transcribe([str(c) for c in clips])
    runs = [model.transcribe(str(c)) for c in clips]
    return {"dtype": "bf16", "graphs": False, **phase_means(runs)}


@stage("hybrid_gpu_encoder_cpu_decoder")
def hybrid(ckpt: Path, clips: list[Path]) -> dict[str, Any]:
    """The seed's layout: encoder on the GPU, decoder loop on the CPU."""
    model = load_model(ckpt, device="cuda", dtype="bf16", decoder_device="cpu")
    model.transcribe([str(c) for c in clips])
    model.transcribe([str(c) for c in clips])
    runs = [model.transcribe(str(c)) for c in clips]
    return {"dtype": "bf16", **phase_means(runs)}


@stage("profile_latency")
def profile_latency(ckpt: Path, clip: Path) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    model = load_model(ckpt, device="cuda", dtype="bf16")
    for _ in range(3):
        model.transcribe(str(clip))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            model.transcribe(str(clip))
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
    print(table, flush=True)
    return {"table": table}


@stage("throughput")
def throughput(ckpt: Path, files: list[Path], batch_sizes: list[int]) -> dict[str, Any]:
    model = load_model(ckpt, device="cuda", dtype="bf16")
    model.sync_phases = False
    out = {}
    for b in batch_sizes:
        for _ in range(2):  # warm-up: eager first use, then graph capture
            model.transcribe([str(f) for f in files], batch_size=b)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        results = model.transcribe([str(f) for f in files], batch_size=b)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        audio = sum(r.duration_s for r in results if isinstance(r, Transcript))
        out[str(b)] = {"wall_s": wall, "audio_s": audio, "rtfx": audio / wall, "n": len(files)}
        model.sync_phases = True  # one more pass with phase sync: where the time goes
        synced = [
            r
            for r in model.transcribe([str(f) for f in files], batch_size=b)
            if isinstance(r, Transcript)
        ]
        model.sync_phases = False
        seen: set[tuple[float, float]] = set()
        sums = dict.fromkeys(
            ("load_audio_ms", "preprocess_ms", "encode_ms", "decode_ms", "tokenize_ms"), 0.0
        )
        for r in synced:
            sums["load_audio_ms"] += r.timings.load_audio_ms
            sums["tokenize_ms"] += r.timings.tokenize_ms
            key = (r.timings.encode_ms, r.timings.decode_ms)
            if key not in seen:  # batch-shared phases: count each batch once
                seen.add(key)
                for k in ("preprocess_ms", "encode_ms", "decode_ms"):
                    sums[k] += getattr(r.timings, k)
        out[str(b)]["synced_phase_sums_ms"] = sums
        # Phase synchronization must not change a transcript.
        timed_ids = [r.token_ids for r in results if isinstance(r, Transcript)]
        out[str(b)]["same_tokens_as_synced"] = sum(
            x == y for x, y in zip(timed_ids, [r.token_ids for r in synced], strict=True)
        )
        print(
            f"  throughput B={b}: RTFx {audio / wall:.0f}, same tokens as the synced pass: "
            f"{out[str(b)]['same_tokens_as_synced']}/{len(timed_ids)}",
            flush=True,
        )
    return out


@stage("memory")
def memory(ckpt: Path, clip30: Path) -> dict[str, Any]:
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model = load_model(ckpt, device="cuda", dtype="bf16")
    model.transcribe(str(clip30))
    peak = torch.cuda.max_memory_allocated() - base
    reserved = torch.cuda.max_memory_reserved()
    limit = max_single_pass_seconds(model.config, torch.device("cuda"))
    return {
        "peak_allocated_bytes_30s": peak,
        "peak_reserved_bytes": reserved,
        "estimated_max_single_pass_s": limit,
    }


@stage("cpu_fp32_tokens")
def cpu_tokens(ckpt: Path, clips: list[Path]) -> list[list[int]]:
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    model = load_model(ckpt, device="cpu", dtype="fp32")
    return [model.transcribe(str(c)).token_ids for c in clips]


def agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, Any]:
    import difflib

    same = sum(x == y for x, y in zip(a, b, strict=True))
    matched = total = 0
    first_diff = []
    for x, y in zip(a, b, strict=True):
        sm = difflib.SequenceMatcher(a=x, b=y, autojunk=False)
        matched += sum(m.size for m in sm.get_matching_blocks())
        total += max(len(x), len(y))
        first_diff.append(
            next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), None)
        )
    return {
        "identical_clips": same,
        "clips": len(a),
        "token_agreement": matched / max(total, 1),
        "first_diff": first_diff,
    }


NEMO_SCRIPT = r"""
import json, sys, time, statistics, torch, logging
logging.disable(logging.WARNING)
from nemo.utils import logging as nlog
nlog.setLevel(logging.ERROR)
from nemo.collections.asr.models import EncDecRNNTBPEModel
ckpt, clips, big = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}
m = EncDecRNNTBPEModel.restore_from(ckpt, map_location="cuda").eval()
def tr(files, bs):
    r = m.transcribe(files, batch_size=bs, verbose=False)
    m.eval()
    return r
tr(clips[:2], 1)
hyps = tr(clips, 1)
out["fp32_token_ids"] = [h.y_sequence.tolist() for h in hyps]
with torch.autocast("cuda", dtype=torch.bfloat16):
    tr(clips[:4], 1)
    out["bf16_token_ids"] = [h.y_sequence.tolist() for h in tr(clips, 1)]
    times = []
    for c in clips:
        torch.cuda.synchronize(); t0 = time.perf_counter(); tr([c], 1); torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    out["b1_bf16_ms_mean"] = statistics.fmean(times)
    for bs in (32, 128):
        tr(big[:bs], bs)
        torch.cuda.synchronize(); t0 = time.perf_counter(); tr(big, bs); torch.cuda.synchronize()
        out[f"batch{bs}_bf16_wall_s"] = time.perf_counter() - t0
print("NEMO_JSON" + json.dumps(out))
"""


@stage("nemo")
def nemo(ckpt: Path, clips: list[Path], big: list[Path]) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NEMO_SCRIPT,
            str(ckpt),
            json.dumps([str(c) for c in clips]),
            json.dumps([str(b) for b in big]),
        ],
        capture_output=True,
        text=True,
        timeout=420,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("NEMO_JSON")), None)
    if line is None:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(line[len("NEMO_JSON") :])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--copies", type=int, default=8, help="throughput set = copies x clips")
    parser.add_argument("--skip-nemo", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--checkpoint",
        choices=["recipe", "synth"],
        default="recipe",
        help="recipe: NeMo builds it as shared/recipes/nemo_config.py says (issue 4's setup); "
        "synth: budgie synth --preset parakeet-tdt-0.6b-v2",
    )
    args = parser.parse_args()
    RESULT["device"] = torch.cuda.get_device_name()
    RESULT["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    RESULT["command"] = " ".join(sys.argv)
    RESULT["torch"] = torch.__version__
    work = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    ckpt = work / "v2.nemo"
    if args.checkpoint == "recipe":
        builder = HERE / "build_recipe_checkpoint.py"
        subprocess.run([sys.executable, str(builder), str(ckpt)], check=True, capture_output=True)
    else:
        synth_nemo(ckpt, "parakeet-tdt-0.6b-v2", seed=0)
    RESULT["checkpoint"] = args.checkpoint
    RESULT["synth_s"] = time.perf_counter() - t0
    clips = write_clips(default_clips(args.clips), work / "clips")
    RESULT["audio_s_mean"] = statistics.fmean(c.duration_s for c in default_clips(args.clips))
    big = [c for _ in range(args.copies) for c in clips]
    clip30 = write_clips(
        [c for c in default_clips(args.clips) if c.duration_s > 25][:1], work / "c30"
    )[0]

    first_transcript(ckpt, clips[0])
    profile_latency(ckpt, clips[1])
    hybrid(ckpt, clips)
    bf16 = stage("latency_bf16")(latency)(ckpt, clips, "bf16", 1 if args.quick else 3)
    fp32 = stage("latency_fp32")(latency)(ckpt, clips, "fp32", 1)
    fp16 = stage("latency_fp16")(latency)(ckpt, clips, "fp16", 1 if args.quick else 3)
    if not args.quick:
        latency_eager(ckpt, clips)
    throughput(ckpt, big, [32, 128] if args.quick else [32, 64, 128])
    memory(ckpt, clip30)
    cpu = cpu_tokens(ckpt, clips) if not args.quick else None
    if fp32 and bf16:
        RESULT["agreement_bf16_vs_fp32"] = agreement(bf16["token_ids"], fp32["token_ids"])
    if fp32 and fp16:
        RESULT["agreement_fp16_vs_fp32"] = agreement(fp16["token_ids"], fp32["token_ids"])
    if fp32 and cpu:
        RESULT["agreement_gpu_fp32_vs_cpu_fp32"] = agreement(fp32["token_ids"], cpu)
    if not args.skip_nemo:
        ne = nemo(ckpt, clips, big)
        if ne and fp32:
            RESULT["agreement_budgie_fp32_vs_nemo_fp32"] = agreement(
                fp32["token_ids"], ne["fp32_token_ids"]
            )
            RESULT["agreement_nemo_bf16_vs_nemo_fp32"] = agreement(
                ne["bf16_token_ids"], ne["fp32_token_ids"]
            )
            ne["fp32_token_ids"] = ne["bf16_token_ids"] = "omitted"
            audio_big = RESULT["audio_s_mean"] * len(big)
            RESULT["ratios"] = {
                "b1_nemo_over_budgie_bf16": ne["b1_bf16_ms_mean"] / bf16["total_ms"],
                "nemo_best_batch_rtfx": max(audio_big / ne[k] for k in ne if k.startswith("batch")),
            }
    for st in ("latency_bf16", "latency_fp32", "latency_fp16"):
        if st in RESULT["stages"] and RESULT["stages"][st]:
            RESULT["stages"][st]["token_ids"] = "omitted"
    Path(args.out).write_text(json.dumps(RESULT, indent=1, default=str))
    print(
        json.dumps({k: v for k, v in RESULT.items() if k != "errors"}, indent=1, default=str)[:6000]
    )
    print("ERRORS:", list(RESULT["errors"]))


if __name__ == "__main__":
    main()
