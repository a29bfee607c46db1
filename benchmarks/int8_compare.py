"""Two int8 ONNX directories side by side: token agreement with fp32 and speed, alternating.

Used to choose the int8 quantization (per-tensor vs per-channel weight scales). The fp32 token
ids come from a cpu_compare.py record of the same clips (its budgie-onnx-fp32 runs):

    python benchmarks/int8_compare.py --fp32-record benchmarks/results/cpu_compare-....json \\
        --clips 10 --rounds 3 DIR_A DIR_B -o RESULT.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from cpu_compare import token_agreement  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.bench.audioset import default_clips, write_clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--fp32-record", required=True)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args()
    record = json.loads(Path(args.fp32_record).read_text())
    reference = [run["ids"] for run in record["rounds"][0]["budgie-onnx-fp32"]["runs"]]
    clips = write_clips(default_clips(args.clips), Path(tempfile.mkdtemp()))
    models = {d: load_model(d, backend="onnx", dtype="int8") for d in args.dirs}
    walls: dict[str, list[float]] = {d: [] for d in args.dirs}
    agreement: dict[str, float] = {}
    for _ in range(args.rounds):
        for directory, model in models.items():  # alternate, so load changes hit both
            model.transcribe(str(clips[0]))
            t0 = time.perf_counter()
            ids = [model.transcribe(str(c)).token_ids for c in clips]
            walls[directory].append(time.perf_counter() - t0)
            agreement[directory] = token_agreement(reference, ids)
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "audio_s": sum(c.duration_s for c in default_clips(args.clips)),
        "systems": {
            d: {
                "wall_s": walls[d],
                "median_wall_s": statistics.median(walls[d]),
                "token_agreement_with_fp32": agreement[d],
            }
            for d in args.dirs
        },
    }
    print(json.dumps(out["systems"], indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
