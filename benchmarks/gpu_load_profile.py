"""Where the first transcript's time goes: import, checkpoint cache, model build, GPU transfer.

Run on the device (no NeMo needed), after a first load has filled the checkpoint cache:
    python3 benchmarks/gpu_load_profile.py --out $OUT/gpu_load_profile.json
Each stage runs in a fresh interpreter twice (the second is the warm-cache figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import time, json, sys
t = {}
def timed(name, fn):
    t0 = time.perf_counter()
    out = fn()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        sys.modules["torch"].cuda.synchronize()
    t[name] = time.perf_counter() - t0
    return out
torch = timed("import_torch", lambda: __import__("torch"))
timed("cuda_init", lambda: torch.zeros(1, device="cuda"))
api = timed("import_budgie", lambda: __import__("budgie.api", fromlist=["load_model"]))
from budgie.checkpoint import load_checkpoint
from budgie.model import ParakeetTDT
from budgie.text import Tokenizer
ck = timed("load_checkpoint", lambda: load_checkpoint(sys.argv[1]))
net = timed("from_state_dict", lambda: ParakeetTDT.from_state_dict(ck.config, ck.state_dict))
timed("fold", net.encoder.fold_batch_norms)
cuda = torch.device("cuda")
timed("encoder_to_gpu_bf16", lambda: net.encoder.set_matmul_dtype(torch.bfloat16, cuda))
timed("rest_to_gpu", lambda: net.to(cuda))
timed("tokenizer", lambda: Tokenizer(ck.tokenizer_path))
m = timed("load_model_again", lambda: api.load_model(sys.argv[1], device="cuda", dtype="bf16"))
timed("first_transcribe", lambda: m.transcribe(sys.argv[2]))
timed("second_transcribe", lambda: m.transcribe(sys.argv[2]))
print("JSON" + json.dumps(t))
"""


FIRST = r"""
import sys, time
t0 = time.perf_counter()
import budgie.api as api
t1 = time.perf_counter()
model = api.load_model(sys.argv[1], device="cuda", dtype="bf16")
t2 = time.perf_counter()
model.transcribe(sys.argv[2])
t3 = time.perf_counter()
print("JSON" + __import__("json").dumps(
    {"import_s": t1 - t0, "load_s": t2 - t1, "transcribe_s": t3 - t2, "total_s": t3 - t0}))
"""


def child(code: str, *argv: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("JSON")), None)
    if line is None:
        raise RuntimeError(out.stderr[-3000:])
    result: dict[str, float] = json.loads(line[4:])
    print({k: round(v, 3) for k, v in result.items()}, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "src"))
    from gpu_micro import synth_v2_clips

    checkpoint, clips = synth_v2_clips(1)
    clip = clips[0]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # First transcript after process start, as gpu_compare.py measures it (the first call
    # fills the checkpoint cache), then the stages one by one.
    first = [child(FIRST, str(checkpoint), clip, env=env) for _ in range(3)]
    runs = [child(CHILD, str(checkpoint), clip, env=env) for _ in range(2)]
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "first_transcript": first,
        "stages": runs,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
