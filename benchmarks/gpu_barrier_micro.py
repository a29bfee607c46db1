# mypy: disable-error-code="misc,no-untyped-def,untyped-decorator"
"""What one grid-wide barrier of the loop decoder costs, alone and with a phase's L2 round trip.

The one-launch decoder (budgie.triton_loop) meets at ``_grid_sync`` between the phases of a
step: one per blank step, four per emitting step at batch 1 (~5 and ~18 us on an H100). This
times that barrier in a kernel that does nothing else, so a step's time can be split into
barriers and work:

- ``barrier``: N barriers in a row;
- ``barrier+load``: before each barrier every program reads a vector another program wrote
  before the previous barrier (past L1, as the decoder reads state) and writes its own, the
  smallest dependent work a phase has;
- ``barrier+weights``: as ``barrier+load``, plus a read of its own weight tile of
  ``--tile-kb`` KB per program (what the LSTM phases stream from L2: ~80 KB at batch 1).

Per variant and program count, the median over --reps launches of N barriers, in us per
barrier. Run on a CUDA machine (no checkpoint, no NeMo; ~20 s):
    python3 benchmarks/gpu_barrier_micro.py --out $OUT/gpu_barrier_micro.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from gpu_micro import gpu_record  # noqa: E402

from budgie.triton_loop import _grid_sync, resident_programs  # noqa: E402

VARIANTS = {"barrier": 0, "barrier+load": 1, "barrier+weights": 2}


@triton.jit
def _barriers(counter_ptr, buf_ptr, w_ptr, N, W_ELEMS, WORK: tl.constexpr, BC: tl.constexpr):
    pid = tl.program_id(0)
    P = tl.num_programs(0)
    cols = tl.arange(0, BC)
    acc = tl.zeros([BC], dtype=tl.float32)
    for i in range(N):
        if WORK >= 1:  # read a neighbour's vector of the last phase, write this program's
            old, new = (i % 2) * P * BC, ((i + 1) % 2) * P * BC
            v = tl.load(buf_ptr + old + ((pid + 1) % P) * BC + cols, cache_modifier=".cg")
            if WORK == 2:  # this program's weight tile, streamed from L2
                for k0 in range(0, W_ELEMS, BC):
                    acc += tl.load(w_ptr + pid * W_ELEMS + k0 + cols).to(tl.float32)
            tl.store(buf_ptr + new + pid * BC + cols, v + acc)
        _grid_sync(counter_ptr, i + 1, P)


def time_barriers(programs: int, work: int, n: int, reps: int, tile_kb: int) -> float:
    """Median us per barrier over ``reps`` launches of ``n`` barriers."""
    device = torch.device("cuda")
    bc = 256
    buf = torch.zeros(2 * programs * bc, device=device)
    w_elems = tile_kb * 1024 // 2 // bc * bc  # bf16 elements, a multiple of the block
    weights = torch.ones(max(programs * w_elems, 1), device=device, dtype=torch.bfloat16)
    counter = torch.zeros(1, dtype=torch.int32, device=device)
    times = []
    for rep in range(reps + 1):  # the first launch compiles
        counter.zero_()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        _barriers[(programs,)](counter, buf, weights, n, w_elems, WORK=work, BC=bc, num_warps=8)
        torch.cuda.synchronize()
        if rep:
            times.append((time.perf_counter() - t0) * 1e6 / n)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--barriers", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tile-kb", type=int, default=80)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs CUDA")
    sms = resident_programs(torch.device("cuda"))
    counts = sorted({sms, 80, 32, 8, 1})
    out: dict[str, Any] = gpu_record() | {"barriers": args.barriers, "tile_kb": args.tile_kb}
    out["us_per_barrier"] = {}
    for name, work in VARIANTS.items():
        for programs in counts:
            us = time_barriers(programs, work, args.barriers, args.reps, args.tile_kb)
            out["us_per_barrier"][f"{name}@{programs}"] = round(us, 3)
            print(f"{name:16s} {programs:4d} programs: {us:7.3f} us per barrier", flush=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
