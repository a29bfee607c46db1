"""Loading ``.nemo`` checkpoints without NeMo: archives NeMo wrote and Budgie wrote, tar variants,
the converted cache (hit, invalidation, corruption, interruption), hub ids (mocked), bad files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import budgie.checkpoint as ckpt
from budgie.checkpoint import cache_entry, load_checkpoint
from budgie.config import ModelConfig
from budgie.errors import ModelError
from budgie.nemo_files import mel_filterbank
from budgie.synth import DATA_DIR, synth_nemo, synthesize

FIXTURES = Path(__file__).parent / "fixtures"
NEMO_WRITTEN = FIXTURES / "nemo_written_tiny.nemo"  # built and saved by NeMo 3.0.0


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("BUDGIE_CACHE", str(root))
    return root


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile()
        }


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def edit_config(members: dict[str, bytes], change: Callable[[dict[str, Any]], None]) -> None:
    name = next(n for n in members if n.endswith("model_config.yaml"))
    config = yaml.safe_load(members[name])
    change(config)
    members[name] = yaml.safe_dump(config).encode()


@pytest.mark.parametrize("preset", ["tiny", "bias-xscale"])
def test_round_trip_of_synthetic_checkpoints(preset: str, tmp_path: Path) -> None:
    path = synth_nemo(tmp_path / f"{preset}.nemo", preset, seed=2)
    config, state, tokenizer = synthesize(preset, seed=2)
    loaded = load_checkpoint(path)
    assert loaded.raw_config == json.loads(json.dumps(config))
    assert loaded.config == ModelConfig.from_nemo(config)
    assert list(loaded.state_dict) == list(state)
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in state.items())
    assert loaded.tokenizer_path.read_bytes() == tokenizer.read_bytes()
    assert loaded.file_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.source == str(path) and not loaded.from_cache


def test_checkpoint_written_by_nemo() -> None:
    loaded = load_checkpoint(NEMO_WRITTEN)
    cfg = loaded.config
    assert (cfg.encoder.n_layers, cfg.encoder.d_model, cfg.encoder.n_heads) == (1, 32, 2)
    assert (cfg.prediction.vocab_size, cfg.prediction.pred_hidden, cfg.joint.joint_hidden) == (
        256,
        32,
        32,
    )
    assert cfg.decoding.durations == (0, 1, 2, 3, 4) and cfg.decoding.max_symbols == 10
    assert loaded.tokenizer_path.read_bytes() == (DATA_DIR / "synth-bpe-256.model").read_bytes()
    fb = loaded.state_dict["preprocessor.featurizer.fb"]
    assert fb.shape == (1, 128, 257)
    assert np.abs(fb[0].numpy() - mel_filterbank(16000, 512, 128)).max() <= 1e-6
    assert loaded.state_dict["joint.joint_net.2.weight"].shape == (256 + 1 + 5, 32)


@pytest.mark.parametrize("variant", ["gzip", "no-prefix", "gzip-no-prefix", "plain-names"])
def test_tar_variants_load_the_same(variant: str, tmp_path: Path) -> None:
    members = members_of(NEMO_WRITTEN)
    if "no-prefix" in variant or variant == "plain-names":
        members = {name.removeprefix("./"): data for name, data in members.items()}
    if variant == "plain-names":  # tokenizer referenced by a plain file name, not nemo:<uuid>_...
        old = next(n for n in members if n.endswith("_tokenizer.model"))
        members["tokenizer.model"] = members.pop(old)

        def rename(config: dict[str, Any]) -> None:
            config["tokenizer"]["model_path"] = "tokenizer.model"

        edit_config(members, rename)
    mode = "w:gz" if variant.startswith("gzip") else "w"
    path = write_tar(tmp_path / f"{variant}.nemo", members, mode)
    if variant.startswith("gzip"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    loaded = load_checkpoint(path)
    reference = load_checkpoint(NEMO_WRITTEN)
    assert loaded.config == reference.config
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in reference.state_dict.items())
    assert loaded.tokenizer_path.read_bytes() == reference.tokenizer_path.read_bytes()


def test_second_load_comes_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = synth_nemo(tmp_path / "m.nemo", "tiny")
    first = load_checkpoint(path)
    assert not first.from_cache and first.cache_dir == cache_entry(path)

    def no_extraction(*args: object) -> None:
        raise AssertionError("the archive was read again")

    monkeypatch.setattr(ckpt, "_extract", no_extraction)
    second = load_checkpoint(str(path))
    assert second.from_cache and second.file_hash == first.file_hash
    assert all(torch.equal(second.state_dict[k], v) for k, v in first.state_dict.items())


def test_changed_file_invalidates_the_cache(tmp_path: Path, cache: Path) -> None:
    path = synth_nemo(tmp_path / "m.nemo", "tiny", seed=0)
    first = load_checkpoint(path)
    before = os.stat(path).st_mtime_ns
    synth_nemo(path, "tiny", seed=1)  # same name and size, new content
    os.utime(path, ns=(before, before + 1_000_000))  # a new mtime even on coarse clocks
    second = load_checkpoint(path)
    assert not second.from_cache and second.cache_dir != first.cache_dir
    assert second.file_hash == hashlib.sha256(path.read_bytes()).hexdigest() != first.file_hash
    assert not first.cache_dir.exists()  # the stale version is removed
    assert [p.name for p in cache.iterdir()] == [second.cache_dir.name]


@pytest.mark.parametrize(
    "damage",
    ["truncate-weights", "delete-meta", "garble-meta", "garble-config", "garble-weights-same-size"],
)
def test_corrupted_cache_entry_is_rebuilt(damage: str, tmp_path: Path) -> None:
    path = synth_nemo(tmp_path / "m.nemo", "tiny")
    entry = load_checkpoint(path).cache_dir
    weights = entry / "model_weights.ckpt"
    if damage == "truncate-weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "delete-meta":
        (entry / "meta.json").unlink()
    elif damage == "garble-meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "garble-config":
        size = (entry / "config.json").stat().st_size
        (entry / "config.json").write_bytes(b"x" * size)
    else:
        weights.write_bytes(b"\0" * weights.stat().st_size)
    loaded = load_checkpoint(path)
    assert not loaded.from_cache
    _, state, _ = synthesize("tiny", 0)
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in state.items())
    assert load_checkpoint(path).from_cache


def test_interrupted_extraction_leaves_no_entry(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = synth_nemo(tmp_path / "m.nemo", "tiny")

    def interrupted(temp: Path, entry: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "_publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_checkpoint(path)
    assert list(cache.iterdir()) == []  # neither an entry nor a temporary directory
    monkeypatch.undo()
    monkeypatch.setenv("BUDGIE_CACHE", str(cache))
    assert not load_checkpoint(path).from_cache


def test_unwritable_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("BUDGIE_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelError, match="BUDGIE_CACHE"):
        load_checkpoint(NEMO_WRITTEN)


# --- bad input ---------------------------------------------------------------------------------


def _bad_archive(kind: str, tmp_path: Path) -> Path:
    members = members_of(NEMO_WRITTEN)
    path = tmp_path / "bad.nemo"
    if kind == "empty":
        path.write_bytes(b"")
        return path
    if kind == "not-a-tar":
        path.write_bytes(b"RIFF....WAVEfmt " + bytes(range(256)) * 8)
        return path
    if kind == "truncated":
        path.write_bytes(NEMO_WRITTEN.read_bytes()[:200_000])
        return path
    if kind == "no-config":
        members.pop("./model_config.yaml")
    elif kind == "no-weights":
        members.pop("./model_weights.ckpt")
    elif kind == "no-tokenizer":
        members = {k: v for k, v in members.items() if not k.endswith("_tokenizer.model")}
    elif kind == "bad-tokenizer":
        name = next(k for k in members if k.endswith("_tokenizer.model"))
        members[name] = b"not a sentencepiece model"
    elif kind == "yaml-list":
        members["./model_config.yaml"] = b"- just\n- a list\n"
    elif kind == "yaml-syntax":
        members["./model_config.yaml"] = b"encoder: {d_model: [\n"
    elif kind == "not-tdt":
        edit_config(members, lambda c: (c["decoding"].pop("durations"), c.pop("model_defaults")))
    elif kind == "weights-garbage":
        members["./model_weights.ckpt"] = b"PK\x03\x04 definitely not a checkpoint" * 10
    elif kind == "weights-not-dict":
        buffer = io.BytesIO()
        torch.save([torch.zeros(3)], buffer)
        members["./model_weights.ckpt"] = buffer.getvalue()
    elif kind == "weights-pickle-object":
        buffer = io.BytesIO()
        torch.save({"a": torch.zeros(1), "b": Path("x")}, buffer)
        members["./model_weights.ckpt"] = buffer.getvalue()
    return write_tar(path, members)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "not a .nemo archive"),
        ("not-a-tar", "not a .nemo archive"),
        ("truncated", "not a .nemo archive"),
        ("no-config", "no model_config.yaml"),
        ("no-weights", "no model_weights.ckpt"),
        ("no-tokenizer", "no SentencePiece tokenizer"),
        ("bad-tokenizer", "not a SentencePiece model"),
        ("yaml-list", "not a model config"),
        ("yaml-syntax", "not valid YAML"),
        ("not-tdt", "not a Parakeet TDT config"),
        ("weights-garbage", "not a torch state dict"),
        ("weights-not-dict", "not a torch state dict"),
        ("weights-pickle-object", "not a torch state dict"),
    ],
)
def test_bad_archives(kind: str, message: str, tmp_path: Path, cache: Path) -> None:
    path = _bad_archive(kind, tmp_path)
    with pytest.raises(ModelError, match=message) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == []  # nothing cached
    assert [p for p in cache.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "model file not found"),
        ("directory", "is a directory"),
        ("onnx", "--backend onnx"),
        ("missing.nemo", "model file not found"),
    ],
)
def test_bad_paths(setup: str, message: str, tmp_path: Path) -> None:
    target = tmp_path / "model"
    if setup in ("directory", "onnx"):
        target.mkdir()
    if setup == "onnx":
        (target / "encoder-model.onnx").write_bytes(b"onnx")
    if setup == "missing.nemo":
        target = Path("owner/name.nemo")
    with pytest.raises(ModelError, match=message):
        load_checkpoint(target)


# --- Hugging Face hub (mocked: no network in tests) ---------------------------------------------


def _hub_error(name: str) -> Exception:
    from huggingface_hub import errors

    cls = getattr(errors, name)
    exc: Exception = cls.__new__(cls)
    Exception.__init__(exc, f"{name}: simulated")
    return exc


def test_hub_id_downloads_the_named_nemo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    local = synth_nemo(tmp_path / "parakeet-tdt-0.6b-v2.nemo", "tiny")
    calls: list[tuple[str, str]] = []

    def download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append((repo_id, filename))
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    loaded = load_checkpoint("nvidia/parakeet-tdt-0.6b-v2")
    assert calls == [("nvidia/parakeet-tdt-0.6b-v2", "parakeet-tdt-0.6b-v2.nemo")]
    assert loaded.source == "nvidia/parakeet-tdt-0.6b-v2" and loaded.path == local
    assert loaded.config.vocab_size == 256


def test_hub_repo_with_another_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    local = synth_nemo(tmp_path / "other.nemo", "tiny")

    def download(repo_id: str, filename: str, **kwargs: object) -> str:
        if filename != "checkpoints/other.nemo":
            raise _hub_error("RemoteEntryNotFoundError")
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(
        huggingface_hub,
        "list_repo_files",
        lambda repo_id, **k: ["README.md", "checkpoints/other.nemo"],
    )
    assert load_checkpoint("someone/parakeet-tdt-custom").path == local


@pytest.mark.parametrize(
    "error",
    [
        "LocalEntryNotFoundError",
        "RepositoryNotFoundError",
        "HfHubHTTPError",
        "OfflineModeIsEnabled",
    ],
)
def test_hub_offline_is_one_clear_line(error: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def download(repo_id: str, filename: str, **kwargs: object) -> str:
        raise _hub_error(error)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ModelError) as info:
        load_checkpoint("nvidia/parakeet-tdt-0.6b-v3")
    text = str(info.value)
    assert "nvidia/parakeet-tdt-0.6b-v3" in text and "--model /path/to/model.nemo" in text
    assert "\n" not in text


def test_hub_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def download(repo_id: str, filename: str, **kwargs: object) -> str:
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ModelError, match="Failed to resolve"):
        load_checkpoint("nvidia/parakeet-tdt-0.6b-v2")


def test_hub_repo_without_nemo(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def download(repo_id: str, filename: str, **kwargs: object) -> str:
        raise _hub_error("RemoteEntryNotFoundError")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, **k: ["model.onnx"])
    with pytest.raises(ModelError, match=r"has no \.nemo file"):
        load_checkpoint("istupakov/parakeet-tdt-0.6b-v2-onnx")


def test_gzip_magic_only_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.nemo"
    path.write_bytes(gzip.compress(b"not a tar at all" * 100))
    with pytest.raises(ModelError, match=r"not a \.nemo archive"):
        load_checkpoint(path)


def test_entries_of_deleted_files_are_swept(tmp_path: Path, cache: Path) -> None:
    gone = synth_nemo(tmp_path / "gone.nemo", "tiny")
    kept = synth_nemo(tmp_path / "kept.nemo", "tiny", seed=1)
    gone_entry = load_checkpoint(gone).cache_dir
    kept_entry = load_checkpoint(kept).cache_dir
    gone.unlink()
    fresh = load_checkpoint(synth_nemo(tmp_path / "new.nemo", "tiny", seed=2)).cache_dir
    assert not gone_entry.exists()
    assert kept_entry.exists() and fresh.exists()
    assert load_checkpoint(kept).from_cache
