"""Which GPU decoder is right where they disagree? Torch step vs Triton step vs float64.

Run on the device (no NeMo needed):
    python3 benchmarks/gpu_decoder_check.py --out $OUT/gpu_decoder_check.json

Encodes the default clips once (float32 encoder on the GPU), then decodes the same encoder
output three ways: the torch StepDecoder on the GPU, the Triton step on the GPU, and the
StepDecoder on the CPU in float64 (the reference: rounding far below float32's). For each clip it
records whether each float32 decoder matches the float64 tokens, and the smallest top-2 logit
gap (labels and durations) met along the float64 path: a float32 decoder can only legitimately
differ from float64 where that gap is comparable to float32 rounding (~1e-6 of the logits).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from gpu_micro import synth_v2_clips  # noqa: E402

from budgie.api import load_model  # noqa: E402
from budgie.gpu_decoding import StepDecoder, decode_with_steps  # noqa: E402


def float64_path(net: Any, enc_proj: torch.Tensor, length: int) -> tuple[list[int], float, float]:
    """Token ids of the float64 step machine and the smallest label / duration top-2 gaps."""
    machine = StepDecoder.for_network(net, 1, enc_proj.shape[1], torch.device("cpu"))
    for name in ("enc_proj", "h", "c", "pred_proj"):
        setattr(machine, name, getattr(machine, name).double())
    machine.reset(enc_proj, torch.tensor([length]))
    label_gap = duration_gap = float("inf")
    with torch.inference_mode():
        while machine.any_active():
            frame = torch.minimum(machine.time, (machine.lengths - 1).clamp(min=0))
            logits = net.joint.logits(machine.enc_proj[machine.rows, frame], machine.pred_proj)
            labels = logits[0, : machine.num_labels].topk(2).values
            durations = logits[0, machine.num_labels :].topk(2).values
            label_gap = min(label_gap, float(labels[0] - labels[1]))
            duration_gap = min(duration_gap, float(durations[0] - durations[1]))
            machine.step()
    return machine.hypotheses(1)[0].token_ids, label_gap, duration_gap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--clips", type=int, default=20)
    args = parser.parse_args()
    from budgie.triton_decoding import TritonStepDecoder

    checkpoint, clips = synth_v2_clips(args.clips)
    model = load_model(checkpoint, device="cuda", dtype="fp32")
    net = model.network
    cpu64 = copy.deepcopy(net).cpu().double()
    rows = []
    for clip in clips:
        with torch.inference_mode():
            from budgie.audio import load_audio

            samples = load_audio(str(clip))
            features, lengths = model._preprocess_rows([samples])
            encoded, enc_lengths = net.encoder(features, lengths)
            enc_proj = net.joint.project_encoder(encoded.float())
        n = int(enc_lengths[0])
        gpu = {}
        for name, kind in (("torch", StepDecoder), ("triton", TritonStepDecoder)):
            machine = kind.for_network(net, 1, 512 * (1 + n // 512), enc_proj.device)
            gpu[name] = decode_with_steps(machine, enc_proj, enc_lengths, None)[0].token_ids
        ref, label_gap, duration_gap = float64_path(cpu64, enc_proj.double().cpu(), n)
        row = {
            "clip": clip.name,
            "tokens": len(ref),
            "torch_equals_f64": gpu["torch"] == ref,
            "triton_equals_f64": gpu["triton"] == ref,
            "torch_equals_triton": gpu["torch"] == gpu["triton"],
            "min_label_gap_f64": label_gap,
            "min_duration_gap_f64": duration_gap,
        }
        rows.append(row)
        print(row, flush=True)
    out = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "clips": rows,
        "torch_equals_f64": sum(r["torch_equals_f64"] for r in rows),
        "triton_equals_f64": sum(r["triton_equals_f64"] for r in rows),
    }
    print({k: v for k, v in out.items() if k != "clips"})
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
