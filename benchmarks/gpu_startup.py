"""Where the first transcript's seconds go: load_model's steps and the first transcribe, timed
one by one in fresh interpreters (checkpoint cache warm).

Builds the full-size synthetic v2 checkpoint, fills Budgie's checkpoint cache, then runs
``--runs`` fresh processes that each time: importing torch and budgie, creating the CUDA
context, reading the cached checkpoint, building the module, moving/casting it to the GPU in
bf16, the tokenizer, the first cuBLAS, cuDNN and cuFFT calls, and the first transcribe of one
clip with its phases; then load_model and the first transcribe as they are, and without the
warm-up thread (cuda_warmup) and the first-use decoder graph (cuda_runner.GRAPH_FIRST_DECODE),
alternating. Run on the device:
    python3 benchmarks/gpu_startup.py --out $OUT/gpu_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
marks = {}
def mark(name):
    marks[name] = round(time.perf_counter() - t0, 4)
import torch; mark("import_torch")
import budgie.api as api; mark("import_budgie")
from budgie.checkpoint import load_checkpoint
from budgie.model import ParakeetTDT
from budgie.text import Tokenizer
ckpt_path, clip, split = sys.argv[1], sys.argv[2], sys.argv[3] == "split"
if sys.argv[3] == "load_model_baseline":  # without the warm-up thread and first-use decode graph
    import budgie.cuda_runner, budgie.cuda_warmup
    budgie.cuda_warmup.ENABLED = False
    budgie.cuda_runner.GRAPH_FIRST_DECODE = False
if split:
    torch.zeros(1, device="cuda"); torch.cuda.synchronize(); mark("cuda_context")
    ckpt = load_checkpoint(ckpt_path); mark("read_checkpoint")
    net = ParakeetTDT.from_state_dict(ckpt.config, ckpt.state_dict); mark("build_module")
    net.encoder.fold_batch_norms()
    net.encoder.set_matmul_dtype(torch.bfloat16, torch.device("cuda"))
    net.to("cuda"); torch.cuda.synchronize(); mark("to_gpu_bf16")
    Tokenizer(ckpt.tokenizer_path); mark("tokenizer")
    a = torch.randn(64, 64, device="cuda"); (a @ a).sum().item(); mark("first_cublas")
    x = torch.randn(1, 1, 64, 64, device="cuda")
    torch.nn.functional.conv2d(x, torch.randn(4, 1, 3, 3, device="cuda")).sum().item()
    mark("first_cudnn")
    torch.stft(torch.randn(4000, device="cuda"), 512, 160, return_complex=True).abs().sum().item()
    mark("first_cufft")
    for n in (320000, 300007):  # a 20 s signal, then another size: new cuFFT plans
        torch.stft(torch.randn(n, device="cuda"), 512, 160, return_complex=True).abs().sum().item()
        mark(f"cufft_{n}")
    for n in (320000, 300007):  # the frontend itself, eagerly
        audio = torch.randn(1, n, device="cuda")
        net.preprocessor(audio, torch.tensor([n], device="cuda"))[0].sum().item()
        mark(f"frontend_{n}")
else:
    model = api.load_model(ckpt_path, device="cuda", dtype="bf16"); mark("load_model")
    r = model.transcribe(clip); mark("first_transcribe")
    marks["first_phases_ms"] = {k: round(v, 2) for k, v in vars(r.timings).items()}
    r = model.transcribe(clip); mark("second_transcribe")
print(json.dumps(marks))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    from gpu_micro import gpu_record, synth_v2_clips

    from budgie.api import load_model

    ckpt, clips = synth_v2_clips(1)
    clip = clips[0]
    load_model(ckpt, device="cpu")  # fills the checkpoint cache
    record = gpu_record()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for kind in ["split"] + ["load_model_baseline", "load_model"] * args.runs:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(ckpt), clip, kind],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        marks = json.loads(out.stdout.strip().splitlines()[-1])
        print(kind, marks, flush=True)
        record["runs"].append({"kind": kind, "marks_s": marks})
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
