"""CPU comparison: Budgie (torch, ONNX fp32, ONNX int8) vs NeMo 3.0.0 transcribe() vs onnx-asr.

Every system transcribes the same WAV clips (budgie.bench.audioset.default_clips, batch 1, file
paths in, text out) in its own subprocess, so each peak RSS is its own; one untimed warm-up clip
first. NeMo runs from its own virtualenv (``--nemo-python``) on the same .nemo; onnx-asr and
Budgie's ONNX backend run the same exported directory. Systems run in rounds (the order
reversed every other round) and the median round counts, because other processes on a shared
2-core machine slow whichever system happens to run beside them; load averages are recorded.

    python benchmarks/cpu_compare.py --nemo full.nemo --onnx-dir full-onnx --clips 10 \
        -o benchmarks/results/cpu_compare.json
    python benchmarks/cpu_compare.py --micro --nemo full.nemo --onnx-dir full-onnx -o micro.json

``--profile`` runs ONNX Runtime's profiler on the standard and on Budgie's unpadded encoder
graph for one ~20 s clip and sums kernel time by op type (plus the ``linear_pos`` MatMuls and the
subsampling), with the frontend and decode times of the same clip.

``--micro`` times the decoder's pieces instead: the joint step (torch vs numpy, 1 vs 2 threads),
the prediction step (lstm_cell vs nn.LSTM vs ONNX Runtime), the frontend (1 vs 2 threads), and
one batch of utterances decoded by the per-utterance fast loop vs the batched tensor decoder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# budgie-onnx-fp32 runs Budgie's unpadded encoder graph when the export has it
# (budgie.backends.onnx_fast); -standard forces encoder-model.onnx, the graph onnx-asr runs.
BUDGIE_SYSTEMS = (
    "budgie-torch-fp32",
    "budgie-onnx-fp32",
    "budgie-onnx-fp32-standard",
    "budgie-onnx-int8",
)
SYSTEMS = (*BUDGIE_SYSTEMS, "onnx-asr-fp32", "nemo-fp32")

NEMO_WORKER = r"""
import json, logging, resource, sys, time, warnings
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import torch
from nemo.collections.asr.models import ASRModel
from nemo.utils import logging as nemo_logging
nemo_logging.setLevel(logging.ERROR)
nemo, clips = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
model = ASRModel.restore_from(nemo, map_location="cpu").eval()
load_s = time.perf_counter() - t0
model.transcribe([clips[0]], batch_size=1, verbose=False)
runs = []
for clip in clips:
    t0 = time.perf_counter()
    (hyp,) = model.transcribe([clip], batch_size=1, verbose=False)
    runs.append({"clip": clip, "wall_s": time.perf_counter() - t0, "text": hyp.text,
                 "ids": [int(i) for i in hyp.y_sequence]})
print(json.dumps({"load_s": load_s, "runs": runs, "threads": torch.get_num_threads(),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nemo", type=Path, required=True, help="full-size synthetic .nemo")
    parser.add_argument("--onnx-dir", type=Path, required=True, help="its budgie export")
    parser.add_argument("--clips", type=int, default=10, help="default bench clips (first N)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all systems")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--nemo-python", default="/work/nemo-venv/bin/python")
    parser.add_argument("--micro", action="store_true", help="decoder micro-benchmarks instead")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="ORT profile of both fp32 encoder graphs on one clip (--clip-index), by op type",
    )
    parser.add_argument(
        "--clip-index", type=int, default=0, help="--profile: clip of the --clips set"
    )
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="token agreement when noise is added to the fp32 encoder output (no timing)",
    )
    parser.add_argument(
        "--worker", choices=(*BUDGIE_SYSTEMS, "onnx-asr-fp32"), help=argparse.SUPPRESS
    )
    parser.add_argument("--clip-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", type=Path, help="write the JSON record here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args)))
        return 0
    modes = {"sensitivity": sensitivity, "micro": micro, "profile": profile}
    record = next((f for name, f in modes.items() if getattr(args, name)), compare)(args)
    record.update(provenance())
    text = json.dumps(record, indent=1)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    print(summary(record) if "systems" in record else text)
    return 0


def provenance() -> dict[str, Any]:
    import torch

    from budgie.bench.hardware import hardware_profile, utc_now

    return {
        "date": utc_now(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": hardware_profile(torch.device("cpu")),
        "host": platform.node(),
    }


def clip_paths(n: int, directory: Path) -> tuple[list[Path], list[float]]:
    from budgie.bench.audioset import default_clips, write_clips

    clips = default_clips(n)
    return write_clips(clips, directory), [c.duration_s for c in clips]


# ---- workers (one per system, in a subprocess) -----------------------------------------------


def run_worker(system: str, args: argparse.Namespace) -> dict[str, Any]:
    clips = sorted(str(p) for p in args.clip_dir.glob("clip*.wav"))
    started = time.perf_counter()
    if system == "onnx-asr-fp32":
        transcribe, info = onnx_asr_system(args.onnx_dir)
    else:
        transcribe, info = budgie_system(system, args)
    load_s = time.perf_counter() - started
    transcribe(clips[0])  # warm-up
    runs = []
    for clip in clips:
        t0 = time.perf_counter()
        result = transcribe(clip)
        runs.append({"clip": clip, "wall_s": time.perf_counter() - t0, **result})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"load_s": load_s, "runs": runs, "peak_rss_bytes": peak, **info}


def budgie_system(system: str, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    import torch

    from budgie.api import load_model

    if system == "budgie-torch-fp32":
        model = load_model(args.nemo, device="cpu", backend="torch")
    elif system == "budgie-onnx-fp32-standard":
        from budgie.backends.onnx_runtime import load_onnx_model

        model = load_onnx_model(args.onnx_dir, fast=False)
    else:
        dtype = "int8" if system.endswith("int8") else "fp32"
        model = load_model(args.onnx_dir, backend="onnx", dtype=dtype)

    def transcribe(clip: str) -> dict[str, Any]:
        result = model.transcribe(clip)
        return {
            "text": result.text,
            "ids": [t.id for t in result.tokens],
            "duration_s": result.duration_s,
            "timings": vars(result.timings),
            "decoder_steps": result.decoder_steps,
        }

    threads = {"torch_intraop": torch.get_num_threads(), "decode_loop": 1, "frontend_onnx": 1}
    session = getattr(model, "encoder_session", None)
    if session is not None:
        threads["ort_encoder_intraop"] = session.get_session_options().intra_op_num_threads
        threads["ort_decoder_intraop"] = 1  # encoder projection and joint output graphs
        parts = model.cpu_decoder.parts  # type: ignore[attr-defined]
        options = parts.prediction_session.get_session_options()
        threads["ort_prediction_intraop"] = options.intra_op_num_threads
    files = getattr(model, "files", {})
    return transcribe, {"threads": threads, "graphs": files}


def onnx_asr_system(directory: Path) -> tuple[Any, dict[str, Any]]:
    import onnx_asr

    asr = onnx_asr.load_model("nemo-conformer-tdt", directory)

    def transcribe(clip: str) -> dict[str, Any]:
        return {"text": asr.recognize(clip)}

    return transcribe, {"threads": {"ort": "onnx-asr defaults"}}


def launch(system: str, args: argparse.Namespace, clip_dir: Path, paths: list[Path]) -> Any:
    if system == "nemo-fp32":
        command = [args.nemo_python, "-c", NEMO_WORKER, str(args.nemo), *map(str, paths)]
    else:
        command = [sys.executable, __file__, "--worker", system, "--clip-dir", str(clip_dir)]
        command += ["--nemo", str(args.nemo), "--onnx-dir", str(args.onnx_dir)]
    load_before = os.getloadavg()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{system} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    return result


# ---- the comparison --------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as temp:
        clip_dir = Path(temp)
        paths, durations = clip_paths(args.clips, clip_dir)
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            order = args.systems if index % 2 == 0 else list(reversed(args.systems))
            rounds.append({s: launch(s, args, clip_dir, paths) for s in order})
    audio_s = sum(durations)
    systems = {}
    for system in args.systems:
        results = [r[system] for r in rounds]
        walls = [sum(run["wall_s"] for run in r["runs"]) for r in results]
        best = results[walls.index(statistics.median_low(walls))]
        systems[system] = system_summary(best, audio_s, walls)
    record: dict[str, Any] = {
        "clips": {"n": len(paths), "audio_s": audio_s, "durations_s": durations},
        "batch_size": 1,
        "systems": systems,
        "rounds": rounds,
    }
    record["agreement"] = agreements(rounds[0])
    record["ratios"] = ratios(systems)
    return record


def system_summary(result: dict[str, Any], audio_s: float, walls: list[float]) -> dict[str, Any]:
    wall = sum(run["wall_s"] for run in result["runs"])
    out = {
        "rtfx": audio_s / wall,
        "wall_s": wall,
        "wall_s_per_round": walls,
        "load_s": result["load_s"],
        "peak_rss_gib": result["peak_rss_bytes"] / 2**30,
        "threads": result.get("threads"),
        "graphs": result.get("graphs"),
        "loadavg": [result["loadavg_before"], result["loadavg_after"]],
    }
    if result["runs"] and "timings" in result["runs"][0]:
        for phase in ("preprocess_ms", "encode_ms", "decode_ms", "tokenize_ms", "load_audio_ms"):
            out[phase] = sum(run["timings"][phase] for run in result["runs"])
        out["decode_over_encode"] = out["decode_ms"] / out["encode_ms"]
        out["decoder_steps"] = sum(run["decoder_steps"] for run in result["runs"])
    return out


def token_agreement(reference: list[list[Any]], other: list[list[Any]]) -> float:
    """1 - (token edit distance summed over clips) / (reference tokens): 1.0 is identical."""
    from budgie.bench.wer import edit_distance

    errors = sum(
        edit_distance(tuple(map(str, a)), tuple(map(str, b)))
        for a, b in zip(reference, other, strict=True)
    )
    total = sum(len(a) for a in reference)
    return 1.0 - errors / total if total else 1.0


def agreements(round_: dict[str, Any]) -> dict[str, Any]:
    ids = {s: [run["ids"] for run in r["runs"]] for s, r in round_.items() if "ids" in r["runs"][0]}
    texts = {s: [run["text"] for run in r["runs"]] for s, r in round_.items()}
    out: dict[str, Any] = {}
    base = "budgie-onnx-fp32" if "budgie-onnx-fp32" in ids else "budgie-torch-fp32"
    for system in ids:
        if system != base and base in ids:
            out[f"{system} vs {base} (token ids)"] = token_agreement(ids[base], ids[system])
    for system in texts:
        if system != base and base in texts:
            same = sum(a == b for a, b in zip(texts[base], texts[system], strict=True))
            out[f"{system} vs {base} (identical texts)"] = f"{same}/{len(texts[base])}"
    return out


def ratios(systems: dict[str, Any]) -> dict[str, float]:
    budgie_fp32 = [s for s in ("budgie-torch-fp32", "budgie-onnx-fp32") if s in systems]
    if not budgie_fp32:
        return {}
    fastest = max(budgie_fp32, key=lambda s: systems[s]["rtfx"])
    out = {"fastest_budgie_fp32": fastest}
    for other in ("nemo-fp32", "onnx-asr-fp32"):
        if other in systems:
            out[f"{fastest} / {other}"] = systems[fastest]["rtfx"] / systems[other]["rtfx"]
    if "budgie-onnx-int8" in systems:
        out[f"budgie-onnx-int8 / {fastest}"] = (
            systems["budgie-onnx-int8"]["rtfx"] / systems[fastest]["rtfx"]
        )
    return out


def summary(record: dict[str, Any]) -> str:
    lines = [f"{record['clips']['n']} clips, {record['clips']['audio_s']:.1f} s of audio, batch 1"]
    for name, s in record["systems"].items():
        extra = ""
        if "encode_ms" in s:
            share = 100 * s["decode_over_encode"]
            extra = f"  encode {s['encode_ms'] / 1000:.1f} s, decode {s['decode_ms'] / 1000:.2f} s"
            extra += f" ({share:.1f} % of encode)"
        lines.append(
            f"{name:18s} RTFx {s['rtfx']:6.2f}  peak RSS {s['peak_rss_gib']:.2f} GiB{extra}"
        )
    lines += [
        f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}"
        for k, v in record["ratios"].items()
    ]
    lines += [
        f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
        for k, v in record["agreement"].items()
    ]
    return "\n".join(lines)


# ---- micro-benchmarks ------------------------------------------------------------------------


def timed(fn: Any, repeats: int) -> float:
    """Median of 5 batches of ``repeats`` calls, in microseconds per call."""
    fn()
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        samples.append((time.perf_counter() - t0) / repeats * 1e6)
    return statistics.median(samples)


def micro(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from budgie.api import load_model
    from budgie.audio import load_audio
    from budgie.cpu_decoding import NumpyJoint, decode_threads
    from budgie.decoding import greedy_decode_batched, greedy_decode_single

    torch_model = load_model(args.nemo, device="cpu", backend="torch")
    onnx_model = load_model(args.onnx_dir, backend="onnx")
    fast = torch_model.cpu_decoder
    net = torch_model.network
    rng = np.random.default_rng(0)
    f, g = rng.standard_normal((2, net.cfg.joint.joint_hidden)).astype(np.float32)
    out: dict[str, Any] = {"loadavg_before": os.getloadavg()}
    joint = fast.step
    numpy_joint = NumpyJoint(joint.weight.numpy(), joint.bias.numpy())
    prediction = net.decoder.prediction
    label = torch.tensor([5])
    state = prediction.initial_state(1, torch.device("cpu"), torch.float32)
    ort_predictor = onnx_model.cpu_decoder.predictor
    ort_predictor.start()
    fast.predictor.start()
    for threads in (1, 2):
        with decode_threads(threads), torch.inference_mode():
            out[f"threads={threads}"] = {
                "joint_step_torch_us": timed(lambda: joint(f, g), 300),
                "joint_step_numpy_us": timed(lambda: numpy_joint(f, g), 300),
                "predict_lstm_cell_us": timed(lambda: fast.predictor.advance(5), 50),
                "predict_nn_lstm_us": timed(lambda: prediction(label, state), 50),
                "predict_onnxruntime_us": timed(lambda: ort_predictor.advance(5), 50),
            }
    with tempfile.TemporaryDirectory() as temp:
        paths, _ = clip_paths(4, Path(temp))
        waves = [load_audio(p) for p in paths]
    n = torch.tensor([len(w) for w in waves])
    audio = torch.zeros(len(waves), int(n.max()))
    for row, wave in enumerate(waves):
        audio[row, : len(wave)] = torch.from_numpy(wave)
    with torch.inference_mode():
        for threads in (1, 2):
            with decode_threads(threads):
                out[f"threads={threads}"]["frontend_4_clips_ms"] = (
                    timed(lambda: net.preprocessor(audio, n), 2) / 1e3
                )
        features, lengths = net.preprocessor(audio, n)
        encoded, enc_lengths = net.encoder(features, lengths)
    durations, cap = net.cfg.decoding.durations, net.cfg.decoding.max_symbols
    with decode_threads(1), torch.inference_mode():
        out["decode_4_clips_ms"] = {
            "fast_loop_per_utterance": timed(lambda: fast.decode(encoded, enc_lengths, False), 1)
            / 1e3,
            "reference_loop_per_utterance": timed(
                lambda: [
                    greedy_decode_single(
                        net.decoder, net.joint, encoded[i, : int(k)], durations, cap
                    )
                    for i, k in enumerate(enc_lengths)
                ],
                1,
            )
            / 1e3,
            "batched_tensor_decoder": timed(
                lambda: greedy_decode_batched(
                    net.decoder, net.joint, encoded, enc_lengths, durations, cap
                ),
                1,
            )
            / 1e3,
            "frames": enc_lengths.tolist(),
        }
    out["loadavg_after"] = os.getloadavg()
    return out


def profile(args: argparse.Namespace, repeats: int = 4) -> dict[str, Any]:
    import collections

    import torch

    from budgie.backends.onnx_runtime import OnnxModel, load_onnx_model, session_options
    from budgie.bench.audioset import default_clips

    clip = default_clips(args.clips)[args.clip_index]
    out: dict[str, Any] = {"clip_s": clip.duration_s, "repeats": repeats}
    out["loadavg_before"] = os.getloadavg()
    for fast in (False, True):
        model = load_onnx_model(args.onnx_dir, fast=fast)
        assert isinstance(model, OnnxModel)
        audio = torch.from_numpy(clip.samples)[None]
        features, lengths = model._preprocess(audio, torch.tensor([audio.shape[1]]))
        options = session_options(model.encoder_session.get_session_options().intra_op_num_threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "budgie-encoder")
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(args.onnx_dir / model.files["encoder"]), options, providers=["CPUExecutionProvider"]
        )
        if model.fast_encoder is not None:
            model.fast_encoder.session = session
        else:
            model.encoder_session = session
        model._encode(features, lengths)  # warm-up (and the position table)
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model._encode(features, lengths)
            walls.append(time.perf_counter() - t0)
        events = json.loads(Path(session.end_profiling()).read_text())
        kernels = [
            e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        ]
        runs = repeats + 1
        by_op: collections.Counter[str] = collections.Counter()
        groups: collections.Counter[str] = collections.Counter()
        for event in kernels:
            by_op[event["args"]["op_name"]] += event["dur"]
            name = event["name"]
            groups["linear_pos MatMuls"] += event["dur"] if "linear_pos" in name else 0
            groups["subsampling (pre_encode/conv)"] += (
                event["dur"]
                if "pre_encode" in name or name.startswith(("/conv/", "/out/", "Reorder"))
                else 0
            )
        total = sum(by_op.values())
        timing = model.transcribe(clip.samples).timings
        out["fast" if fast else "standard"] = {
            "graph": model.files["encoder"],
            "encode_wall_ms_median": statistics.median(walls) * 1e3,
            "kernel_ms_per_run": total / runs / 1e3,
            "by_op_ms": {op: d / runs / 1e3 for op, d in by_op.most_common()},
            "by_op_share": {op: d / total for op, d in by_op.most_common()},
            "groups_ms": {g: d / runs / 1e3 for g, d in groups.items()},
            "pipeline_ms": {
                k: getattr(timing, k) for k in ("preprocess_ms", "encode_ms", "decode_ms")
            },
        }
    out["loadavg_after"] = os.getloadavg()
    return {"profile": out}


def sensitivity(args: argparse.Namespace) -> dict[str, Any]:
    """How far the model's own decisions are from ties: Gaussian noise of a given size (relative
    to the encoder output's std) is added before decoding, and tokens are compared with the
    noise-free ones. int8's activation rounding is noise of about 1 % of that scale."""
    import numpy as np
    import torch

    from budgie.api import load_model
    from budgie.audio import load_audio

    model = load_model(args.onnx_dir, backend="onnx")
    with tempfile.TemporaryDirectory() as temp:
        paths, _ = clip_paths(args.clips, Path(temp))
        encoded = []
        for path in paths:
            audio = torch.from_numpy(load_audio(path))[None]
            features, lengths = model._preprocess(audio, torch.tensor([audio.shape[1]]))
            encoded.append(model._encode(features, lengths))
    decoder = model.cpu_decoder
    reference = [decoder.decode(e, n, False)[0].token_ids for e, n in encoded]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"clips": len(paths), "tokens": sum(map(len, reference))}
    for scale in (1e-3, 3e-3, 1e-2, 3e-2):
        noisy = []
        for e, n in encoded:
            noise = torch.from_numpy(rng.standard_normal(tuple(e.shape)).astype(np.float32))
            noisy.append(decoder.decode(e + scale * float(e.std()) * noise, n, False)[0].token_ids)
        out[f"noise {scale:g} x std"] = token_agreement(reference, noisy)
    return {"sensitivity": out}


if __name__ == "__main__":
    sys.exit(main())
