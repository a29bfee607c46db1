"""Where a step of the shared-memory decode kernel (cuda_loop.py) spends its time, on a
full-size parakeet-tdt-0.6b-v2 prediction network and joint (gpu_decoder_micro.py's synthetic
weights and random encoder outputs, its "blank" and "emit" regimes).

Per batch (1, 2, 4) and regime: microseconds per step of the plain kernel (tdt_loop.cu), of
the cluster kernel (cuda_cluster.py, the joint on a thread-block cluster) and of the Triton loop
kernel in bf16 (medians of --reps decodes, alternated), whether the two CUDA kernels' tokens
agree, and, from -DPROFILE builds, block 0's SM cycles per part of the loop converted to
microseconds per step (the clock rate the driver reports).

    python3 benchmarks/gpu_kernel_loop_profile.py --out $OUT/gpu_kernel_loop_profile.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_decoder_micro import MAX_FRAMES, REGIMES, SPEC, build_network  # noqa: E402

from budgie import cuda_driver  # noqa: E402
from budgie.cuda_cluster import ClusterLoopDecoder  # noqa: E402
from budgie.cuda_loop import KernelLoopDecoder  # noqa: E402
from budgie.gpu_decoding import StepDecoder  # noqa: E402

SLOTS = (  # the kernel's PROFILE slots (kernels/tdt_loop.cu)
    "joint_load",
    "joint_product",
    "joint_barrier",
    "select",
    "layer0_from_table",
    "emit_barrier_waits",
    "emit_input_loads",
    "emit_products_and_cells",
    "recurrent_products_while_waiting",
    "loop_control",
)
CLUSTER_SLOTS = (  # the cluster kernel's (kernels/tdt_cluster.cu), its joint block 0
    "publish_and_pred_wait",
    "joint_input",
    "joint_product_and_warp_candidates",
    "block_candidates_and_cluster_barrier",
    "select_and_row_state",
)


def per_step(machine: Any, slots: tuple[str, ...], clock_ghz: float) -> dict[str, Any]:
    """A profiled machine's cycles of its last decode, in microseconds per step."""
    counts = machine.profile.tolist()
    loop_steps = max(counts[-1], 1)
    split = {
        slot: round(c / clock_ghz / 1000 / loop_steps, 3)
        for slot, c in zip(slots, counts[:-1], strict=True)
    }
    return {"us_per_step": split, "steps": loop_steps}


def timed(machine: StepDecoder, enc: torch.Tensor, lengths: torch.Tensor) -> tuple[float, int]:
    """(milliseconds, steps of the longest row) of one decode with its hypotheses."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    machine.reset(enc, lengths)
    machine.step()
    machine.hypotheses(enc.shape[0])
    ms = (time.perf_counter() - t0) * 1000
    return ms, int(machine.steps[: enc.shape[0]].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 2, 4])
    args = parser.parse_args()
    device = torch.device("cuda")
    decoder, joint, cfg = build_network(device, 0)
    durations, max_symbols = cfg.decoding.durations, cfg.decoding.max_symbols
    clock_ghz = cuda_driver.device_attribute(device, cuda_driver.CLOCK_RATE_KHZ) / 1e6
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "clock_ghz": clock_ghz,
        "frames": args.frames,
        "runs": [],
    }
    try:
        from budgie.triton_loop import LoopDecoder
    except ImportError:
        LoopDecoder = None  # type: ignore[assignment,misc]
    gen = torch.Generator(device=device).manual_seed(0)
    bf16 = torch.bfloat16
    for b in args.batches:
        encoded = torch.randn(b, args.frames, SPEC.d_model, device=device, generator=gen)
        lengths = torch.full((b,), args.frames, dtype=torch.long, device=device)
        make = (decoder, joint, b, MAX_FRAMES, durations, max_symbols, device)

        machines: dict[str, StepDecoder] = {
            "kernel": KernelLoopDecoder(*make, bf16),  # type: ignore[arg-type]
            "cluster": ClusterLoopDecoder(*make, bf16),  # type: ignore[arg-type]
        }
        if LoopDecoder is not None:
            machines["triton_loop"] = LoopDecoder(*make, None, bf16)  # type: ignore[arg-type]
        profiled = {
            "kernel": (KernelLoopDecoder(*make, bf16, profile=True), SLOTS),  # type: ignore[arg-type]
            "cluster": (ClusterLoopDecoder(*make, bf16, profile=True), CLUSTER_SLOTS),  # type: ignore[arg-type]
        }
        for regime, scale in REGIMES.items():
            with torch.inference_mode():
                enc = joint.project_encoder(encoded * scale)
            times: dict[str, list[float]] = {name: [] for name in machines}
            steps = 0
            for machine in machines.values():
                timed(machine, enc, lengths)  # warm-up
            for _ in range(args.reps):  # alternating
                for name, machine in machines.items():
                    ms, steps = timed(machine, enc, lengths)
                    times[name].append(ms)
            tokens = {}
            for name in ("kernel", "cluster"):
                machines[name].reset(enc, lengths)
                machines[name].step()
                tokens[name] = [h.token_ids for h in machines[name].hypotheses(b)]
            breakdown = {}
            for name, (machine, slots) in profiled.items():
                timed(machine, enc, lengths)
                breakdown[name] = per_step(machine, slots, clock_ghz)
            run = {
                "batch": b,
                "regime": regime,
                "steps": steps,
                "us_per_step": {
                    n: round(statistics.median(t) * 1000 / steps, 2) for n, t in times.items()
                },
                "same_tokens_kernel_cluster": tokens["kernel"] == tokens["cluster"],
                "profile": breakdown,
            }
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
