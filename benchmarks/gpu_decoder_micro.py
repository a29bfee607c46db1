"""GPU decoder micro-benchmark: torch StepDecoder (graphed, with and without torch.compile),
TritonStepDecoder (graphed; float32 and bf16 weights), LoopDecoder (one launch per decode,
triton_loop.py) and KernelLoopDecoder (one launch of the shared-memory CUDA kernel,
cuda_loop.py; bf16 and fp16), per batch size, on a full-size parakeet-tdt-0.6b-v2
decoder+joint. Hypotheses are compared with the first variant of the same weight precision
(torch graphed for float32 and fp16, Triton graphed bf16 for bf16).

No checkpoint and no NeMo: the prediction network and joint are built on the GPU with the
synthetic recipe's weights (budgie.synth preset parakeet-tdt-0.6b-v2: pred hidden 640, 2 LSTM
layers, joint hidden 640, vocabulary 1024, durations 0..4). The encoder is replaced by random
normal encoder outputs (T frames per row) projected by the joint's encoder projection.

Random inputs do not decode like speech (measured on the CPU with this network, T=250: at
encoder-output scale 0.5 no row emits a token; from about 0.8 on nearly every step emits; speech
through the real model emits on ~26 % of steps: 39.4 tokens in 153 steps, gpu_compare H100
2026-11-24). So two regimes are timed and a step's cost at an emission rate r is
(1 - r) x blank + r x emit:
- ``blank``: scale 0.5, every step is a blank (Triton's LSTM/projection programs exit early);
- ``emit``: scale 3.0, nearly every step emits (each step runs the whole network).

Run on a CUDA machine (well under 3 minutes on an H100):
    python3 benchmarks/gpu_decoder_micro.py --out $OUT/gpu_decoder_micro.json

Per (variant, batch, regime) it records the median decode time over --reps decodes (reset +
graph replays + hypotheses, as cuda_runner does), the decoder steps executed (16 per replay),
the time per step, the emission rate, and the rows whose hypotheses differ from the first
variant's (torch graphed). A variant that fails is recorded with its traceback and the run
goes on; variants left when --budget-s is spent are listed as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402

from budgie.config import DecodingConfig, JointConfig, ModelConfig, PredictionConfig  # noqa: E402
from budgie.gpu_decoding import STEPS_PER_GRAPH, GraphedStepDecoder, StepDecoder  # noqa: E402
from budgie.synth import PRESETS  # noqa: E402
from budgie.synth_weights import _Draws, _fill, nemo_layout  # noqa: E402
from budgie.transducer import Decoder, Joint  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32, 64)
MAX_FRAMES = 512  # cuda_runner.DECODER_FRAMES
SPEC = PRESETS["parakeet-tdt-0.6b-v2"]
VOCAB = 1024
REGIMES = {"blank": 0.5, "emit": 3.0}  # encoder-output scale (see the module doc)
SPEECH_EMIT_RATE = 0.26


def build_network(device: torch.device, seed: int) -> tuple[Decoder, Joint, ModelConfig]:
    """Decoder and joint with the synthetic recipe's weights (only those tensors are drawn)."""
    cfg = ModelConfig(
        prediction=PredictionConfig(VOCAB, SPEC.pred_hidden, SPEC.pred_rnn_layers),
        joint=JointConfig(SPEC.joint_hidden, "relu", SPEC.d_model, SPEC.pred_hidden),
        decoding=DecodingConfig(SPEC.durations, SPEC.max_symbols),
    )
    draws = _Draws(seed)
    state = {
        key: _fill(key, shape, kind, SPEC, VOCAB, draws)
        for key, shape, kind in nemo_layout(SPEC, VOCAB)
        if key.startswith(("decoder.", "joint."))
    }
    decoder, joint = Decoder(cfg).to(device).eval(), Joint(cfg).to(device).eval()
    for prefix, module in (("decoder.", decoder), ("joint.", joint)):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(part, strict=True)
    return decoder, joint, cfg


def outcome(machine: StepDecoder, batch: int) -> list[tuple[list[int], list[int], list[int]]]:
    return [(h.token_ids, h.frames, h.durations) for h in machine.hypotheses(batch)]


def decode(
    machine: StepDecoder,
    graphed: GraphedStepDecoder | None,
    enc_proj: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[float, int, list[Any]]:
    """One decode as cuda_runner does it: (milliseconds, steps executed, hypotheses). Without
    a graph the machine runs to the end in one ``step`` (the loop kernel): its steps executed
    are the longest row's."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    machine.reset(enc_proj, lengths)
    replays = 0
    while machine.any_active():
        if graphed is None:
            machine.step()
        else:
            graphed.graph.replay()
            replays += 1
    hyps = outcome(machine, enc_proj.shape[0])
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1000
    if graphed is None:
        return ms, int(machine.steps[: enc_proj.shape[0]].max()), hyps
    return ms, replays * STEPS_PER_GRAPH, hyps


def time_variant(
    make: Callable[[], StepDecoder],
    mode: str,
    regimes: dict[str, tuple[torch.Tensor, torch.Tensor]],
    reps: int,
) -> dict[str, Any]:
    """mode: "graph" (replays of a captured step), "compile" (the same, torch.compile'd) or
    "loop" (the machine decodes in one step, no graph)."""
    machine = make()
    t0 = time.perf_counter()
    graphed = None if mode == "loop" else GraphedStepDecoder(machine, compile=mode == "compile")
    out: dict[str, Any] = {"setup_s": round(time.perf_counter() - t0, 2)}
    for regime, (enc_proj, lengths) in regimes.items():
        decode(machine, graphed, enc_proj, lengths)  # warm-up
        runs = [decode(machine, graphed, enc_proj, lengths) for _ in range(reps)]
        ms = statistics.median(r[0] for r in runs)
        steps = runs[-1][1]
        hyps = runs[-1][2]
        row_steps = int(machine.steps[: enc_proj.shape[0]].sum())
        out[regime] = {
            "decode_ms_median": round(ms, 3),
            "decode_ms_all": [round(r[0], 3) for r in runs],
            "steps_executed": steps,
            "us_per_step": round(ms * 1000 / steps, 2),
            "emit_rate": round(sum(len(h[0]) for h in hyps) / max(row_steps, 1), 3),
            "hypotheses": hyps,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=140.0, help="start no variant after this")
    parser.add_argument("--no-sweep", action="store_true", help="skip the Triton tiling sweep")
    parser.add_argument("--only", nargs="*", help="variants whose names start with these")
    parser.add_argument("--batches", type=int, nargs="*", help="only these batch sizes")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs CUDA")
    started = time.perf_counter()
    device = torch.device("cuda")
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "frames": args.frames,
        "max_frames": MAX_FRAMES,
        "runs": [],
        "errors": {},
        "skipped": [],
    }
    try:
        import triton

        from budgie.triton_decoding import TritonConfig, TritonStepDecoder
        from budgie.triton_loop import LOOP_MAX_BATCH, LoopConfig, LoopDecoder

        result["triton"] = triton.__version__
    except Exception:
        result["errors"]["import triton"] = traceback.format_exc()[-3000:]
        TritonStepDecoder = LoopDecoder = None  # type: ignore[assignment,misc]
    decoder, joint, cfg = build_network(device, args.seed)
    durations, max_symbols = cfg.decoding.durations, cfg.decoding.max_symbols
    gen = torch.Generator(device=device).manual_seed(args.seed)
    inputs: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    with torch.inference_mode():
        for b in BATCHES:
            encoded = torch.randn(b, args.frames, SPEC.d_model, device=device, generator=gen)
            lengths = torch.full((b,), args.frames, dtype=torch.long, device=device)
            inputs[b] = {
                regime: (joint.project_encoder(encoded * scale), lengths)
                for regime, scale in REGIMES.items()
            }

    def torch_machine(b: int) -> Callable[[], StepDecoder]:
        return lambda: StepDecoder(decoder, joint, b, MAX_FRAMES, durations, max_symbols, device)

    def triton_machine(
        b: int, config: Any = None, dtype: torch.dtype = torch.float32, kind: Any = None
    ) -> Callable[[], StepDecoder]:
        machine = kind or TritonStepDecoder
        return lambda: machine(  # type: ignore[no-any-return]
            decoder, joint, b, MAX_FRAMES, durations, max_symbols, device, config, dtype
        )

    bf16 = torch.bfloat16
    plan: list[tuple[str, int, Callable[[], StepDecoder], str]] = []
    for b in BATCHES:
        plan.append(("torch_graphed", b, torch_machine(b), "graph"))
        if TritonStepDecoder is not None:
            plan.append(("triton_graphed", b, triton_machine(b), "graph"))
            plan.append(("triton_graphed_bf16", b, triton_machine(b, dtype=bf16), "graph"))
            if b >= 8:  # the argmaxes in every LSTM program, as before _select_kernel
                unselected = TritonConfig(select_rows=1 << 20)
                make = triton_machine(b, unselected, bf16)
                plan.append(("triton_unselected_bf16", b, make, "graph"))
                # CUDA-core products where the default from 16 rows on is tensor cores
                make = triton_machine(b, TritonConfig(), bf16)
                plan.append(("triton_cuda_cores_bf16", b, make, "graph"))
    if TritonStepDecoder is not None:  # tensor-core tilings (for_batch's LARGE_BATCH first)
        from budgie.triton_decoding import LARGE_BATCH

        def tensor_cores(**changes: int) -> Any:
            return dataclasses.replace(LARGE_BATCH, **changes)

        tc = {"tc_default": LARGE_BATCH}
        if not args.no_sweep:
            tc |= {
                "tc_b32_k64": tensor_cores(block_b=32, dot_k=64),  # first measured tiling
                "tc_b16_k64": tensor_cores(dot_k=64),
                "tc_h16": tensor_cores(block_h=16),
                "tc_b32_h32": tensor_cores(block_b=32, block_h=32),
                "tc_b64": tensor_cores(block_b=64),
                "tc_n64_j64": tensor_cores(block_n=64, block_j=64),
                "tc_n16_j16": tensor_cores(block_n=16, block_j=16),
                "tc_k32": tensor_cores(dot_k=32),
                "tc_w8": tensor_cores(num_warps=8),
            }
        for name, config in tc.items():
            for b in (8, 16, 32, 64):
                plan.append((f"{name}_bf16", b, triton_machine(b, config, bf16), "graph"))
    if LoopDecoder is not None:  # the one-launch decoder, its default and a sweep
        loops: dict[str, Any] = {"loop": LoopConfig()}
        if not args.no_sweep:
            loops |= {
                "loop_ahead2": LoopConfig(window=2),
                "loop_ahead4": LoopConfig(window=4),
                "loop_ahead8": LoopConfig(window=8),
                "loop_p80_bn16": LoopConfig(programs=80, block_n=16),
                "loop_p80_bn16_bj8_tile8k": LoopConfig(programs=80, block_n=16, tile=8192),
                "loop_tile8k": LoopConfig(tile=8192),
                "loop_tile32k": LoopConfig(tile=32768),
                "loop_bh4": LoopConfig(block_h=4),
                "loop_bh4_tile8k": LoopConfig(block_h=4, tile=8192),
                "loop_w4_tile4k": LoopConfig(num_warps=4, tile=4096),
                "loop_bh1": LoopConfig(block_h=1),
            }
        for name, config in loops.items():
            for b in [b for b in BATCHES if b <= LOOP_MAX_BATCH]:
                for dtype, suffix in ((torch.float32, ""), (bf16, "_bf16")):
                    make = triton_machine(b, config, dtype, LoopDecoder)
                    plan.append((name + suffix, b, make, "loop"))
    try:  # the shared-memory CUDA kernels (cuda_loop.py, cuda_cluster.py), 16-bit weights
        from budgie.cuda_cluster import ClusterLoopDecoder
        from budgie.cuda_loop import MAX_ROWS, KernelLoopDecoder

        kinds = {"kernel_loop": KernelLoopDecoder, "cluster_loop": ClusterLoopDecoder}
        for b in [b for b in BATCHES if b <= MAX_ROWS]:
            for (prefix, kind), (dtype, suffix) in itertools.product(
                kinds.items(), ((bf16, "_bf16"), (torch.float16, "_fp16"))
            ):

                def kernel_machine(
                    b: int = b, dtype: torch.dtype = dtype, kind: type = kind
                ) -> StepDecoder:
                    return kind(  # type: ignore[no-any-return]
                        decoder, joint, b, MAX_FRAMES, durations, max_symbols, device, dtype
                    )

                plan.append((prefix + suffix, b, kernel_machine, "loop"))
    except Exception:
        result["errors"]["import cuda_loop"] = traceback.format_exc()[-3000:]
    # torch.compile takes ~10-30 s per batch size: the most telling sizes first.
    plan += [("torch_compiled_graphed", b, torch_machine(b), "compile") for b in (1, 8, 32)]
    if TritonStepDecoder is not None and not args.no_sweep:  # tilings to try, for tuning
        sweep = {
            "bh2_bn4_bj2": TritonConfig(block_h=2, block_n=4, block_j=2),
            "bh8_bn16_bj8": TritonConfig(block_h=8, block_n=16, block_j=8),
            "tile8k_w8": TritonConfig(tile=8192, num_warps=8),
        }
        for name, config in sweep.items():
            for b in (1, 8):
                plan.append((f"triton_{name}", b, triton_machine(b, config), "graph"))
        large = {  # wider tiles for many rows: fewer programs re-reading the same rows
            "n16_h4_j8": TritonConfig(block_n=16, block_h=4, block_j=8),
            "n32_h8_j16": TritonConfig(block_n=32, block_h=8, block_j=16),
            "n32_h8_j16_t8k": TritonConfig(block_n=32, block_h=8, block_j=16, tile=8192),
            "n32_h8_j16_t16k_w8": TritonConfig(
                block_n=32, block_h=8, block_j=16, tile=16384, num_warps=8
            ),
            "b16_n16_h4_j8_t8k_w8": TritonConfig(
                block_b=16, block_n=16, block_h=4, block_j=8, tile=8192, num_warps=8
            ),
            "n64_h16_j32_t16k_w8": TritonConfig(
                block_n=64, block_h=16, block_j=32, tile=16384, num_warps=8
            ),
        }
        for name, config in large.items():
            for b in (16, 32, 64):
                make = triton_machine(b, config, bf16)
                plan.append((f"triton_large_{name}_bf16", b, make, "graph"))
    if args.only:
        plan = [p for p in plan if any(p[0].startswith(o) for o in args.only)]
    if args.batches:
        plan = [p for p in plan if p[1] in args.batches]

    reference: dict[tuple[int, str, bool], tuple[str, Any]] = {}  # per batch, regime, bf16
    for name, b, make, mode in plan:
        if time.perf_counter() - started > args.budget_s:
            result["skipped"].append(f"{name}@B={b}")
            continue
        try:
            run = time_variant(make, mode, inputs[b], args.reps)
        except Exception:
            result["errors"][f"{name}@B={b}"] = traceback.format_exc()[-3000:]
            print(f"{name} B={b} FAILED\n{result['errors'][f'{name}@B={b}']}", flush=True)
            continue
        for regime in REGIMES:
            hyps = run[regime].pop("hypotheses")
            ref_name, ref = reference.setdefault((b, regime, name.endswith("_bf16")), (name, hyps))
            pairs = enumerate(zip(hyps, ref, strict=True))
            run[regime].update(
                reference=ref_name, differing_rows=[i for i, (h, r) in pairs if h != r]
            )
        blank, emit = run["blank"]["us_per_step"], run["emit"]["us_per_step"]
        run["speech_like_us_per_step"] = round(
            (1 - SPEECH_EMIT_RATE) * blank + SPEECH_EMIT_RATE * emit, 2
        )
        run.update(variant=name, batch=b)
        result["runs"].append(run)
        print(
            f"{name:28s} B={b:3d} blank {blank:8.2f} emit {emit:8.2f} "
            f"speech-like {run['speech_like_us_per_step']:8.2f} us/step, "
            f"emit rates {run['blank']['emit_rate']}/{run['emit']['emit_rate']}, "
            f"differing rows {run['blank']['differing_rows']}/{run['emit']['differing_rows']}, "
            f"setup {run['setup_s']} s",
            flush=True,
        )
    result["total_s"] = round(time.perf_counter() - started, 1)
    print_table(result["runs"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {result['total_s']} s")


def print_table(runs: list[dict[str, Any]]) -> None:
    """Speech-like us per step (blank / emit): one line per variant, one column per batch."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    cell = {
        (r["variant"], r["batch"]): (
            f"{r['speech_like_us_per_step']:.1f} ({r['blank']['us_per_step']:.0f}/"
            f"{r['emit']['us_per_step']:.0f})"
        )
        for r in runs
    }
    print(f"\nus/step at emit rate {SPEECH_EMIT_RATE} (blank/emit)")
    print(f"{'variant':24s}" + "".join(f"{'B=' + str(b):>18s}" for b in BATCHES))
    for v in variants:
        print(f"{v:24s}" + "".join(f"{cell.get((v, b), '-'):>18s}" for b in BATCHES))


if __name__ == "__main__":
    main()
