"""Checkpoints without NeMo: ``.nemo`` archives from disk or the Hugging Face hub, loaded fast.

A ``.nemo`` file is a tar (plain or gzip) holding ``model_config.yaml``, ``model_weights.ckpt``
(a torch state dict) and tokenizer artifacts named ``<uuid>_tokenizer.model`` that the config
references as ``nemo:<uuid>_tokenizer.model``; members may be prefixed ``./``.

Reading a 2.4 GB tar on every start would cost more than the 5 s a second load may take, so the
first load unpacks the archive once into a cache entry and later loads memory-map the weights
from there (``torch.load(mmap=True)``: no copy, pages come in as the model touches them).

Cache: ``$BUDGIE_CACHE`` or ``~/.cache/budgie``, one directory per file version named
``<sha256(real path)[:16]>-<sha256(real path, size, mtime_ns)[:16]>``. Replacing or touching the
``.nemo`` changes its size or mtime, so the next load builds a new entry (and removes the stale
entries of the same path, and entries whose ``.nemo`` no longer exists). An entry holds the
extracted weights, config (YAML and parsed JSON), tokenizer artifacts and ``meta.json`` (source,
size, mtime, the file's sha256, file sizes). It is built in a temporary directory and renamed
into place only once complete and validated, so an interrupted extraction leaves no entry; an
entry that fails its checks (missing or resized file, unreadable JSON, weights torch cannot load)
is deleted and rebuilt from the ``.nemo``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import torch
import yaml

from budgie.config import ModelConfig
from budgie.errors import ModelError

CACHE_FORMAT = 1
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
WEIGHTS, CONFIG_YAML, CONFIG_JSON, META = (
    "model_weights.ckpt",
    "model_config.yaml",
    "config.json",
    "meta.json",
)
ARTIFACTS = "artifacts"
STALE_TEMP_S = 3600.0


@dataclass
class Checkpoint:
    """A loaded checkpoint: typed and raw config, NeMo-named tensors, tokenizer file, provenance."""

    config: ModelConfig
    raw_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer_path: Path
    source: str
    file_hash: str
    path: Path
    cache_dir: Path
    from_cache: bool = False


def cache_root() -> Path:
    """Where converted checkpoints live: ``$BUDGIE_CACHE``, else ``~/.cache/budgie``."""
    configured = os.environ.get("BUDGIE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "budgie"


def load_checkpoint(name_or_path: str | os.PathLike[str]) -> Checkpoint:
    """Load a ``.nemo`` file or a Hugging Face hub id (``owner/name``); ModelError if unusable."""
    source = os.fspath(name_or_path)
    path = resolve_model_file(source)
    checkpoint = _load_nemo(path)
    checkpoint.source = source
    return checkpoint


def resolve_model_file(source: str) -> Path:
    """The local ``.nemo`` file behind a path or a hub id (huggingface_hub downloads and caches)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "encoder-model.onnx").exists():
            raise ModelError(f"{source}: an ONNX model directory; load it with --backend onnx")
        raise ModelError(f"{source} is a directory; expected a .nemo file")
    if path.is_file():
        return path
    if HUB_ID.match(source) and not source.endswith(".nemo"):
        return download_from_hub(source)
    raise ModelError(f"model file not found: {source}")


def download_from_hub(repo_id: str) -> Path:
    """``<name>.nemo`` of the repository (else its only .nemo file), through huggingface_hub."""
    advice = "download it on a machine with network and pass --model /path/to/model.nemo"
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError:
        raise ModelError(
            f"cannot fetch {repo_id}: huggingface_hub is not installed; {advice}"
        ) from None
    remote_missing = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)
    name = repo_id.rsplit("/", 1)[1]
    try:
        try:
            return Path(huggingface_hub.hf_hub_download(repo_id, f"{name}.nemo"))
        except remote_missing as exc:
            if isinstance(exc, errors.LocalEntryNotFoundError):
                raise
        files = sorted(f for f in huggingface_hub.list_repo_files(repo_id) if f.endswith(".nemo"))
        if not files:
            raise ModelError(f"{repo_id}: the Hugging Face repository has no .nemo file")
        return Path(huggingface_hub.hf_hub_download(repo_id, files[0]))
    except ModelError:
        raise
    except Exception as exc:  # offline, unknown repo, HTTP errors: one line, never a traceback
        reason = _first_line(exc) or type(exc).__name__
        raise ModelError(
            f"cannot get {repo_id} from the Hugging Face hub ({type(exc).__name__}: {reason}); "
            f"{advice}"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def cache_entry(path: Path) -> Path:
    """The cache directory of this version (real path, size, mtime) of a ``.nemo`` file."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    version = f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return cache_root() / f"{_short_hash(real)}-{_short_hash(version)}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _load_nemo(path: Path) -> Checkpoint:
    entry = cache_entry(path)
    meta = _valid_meta(entry, path)
    if meta is not None:
        try:
            return _from_entry(entry, meta, path, from_cache=True)
        except ModelError:
            shutil.rmtree(entry, ignore_errors=True)  # corrupted entry: rebuild from the archive
    meta = _build_entry(path, entry)
    return _from_entry(entry, meta, path, from_cache=False)


def _valid_meta(entry: Path, path: Path) -> dict[str, Any] | None:
    """The entry's metadata if every recorded file is there with its recorded size."""
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        stat = os.stat(os.path.realpath(path))
        if meta["format"] != CACHE_FORMAT or meta["size"] != stat.st_size:
            return None
        if meta["mtime_ns"] != stat.st_mtime_ns:
            return None
        for name, size in meta["files"].items():
            if (entry / name).stat().st_size != size:
                return None
        return dict(meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _from_entry(entry: Path, meta: dict[str, Any], path: Path, from_cache: bool) -> Checkpoint:
    try:
        raw = json.loads((entry / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cached config unreadable ({exc})") from None
    tokenizer = entry / ARTIFACTS / meta["tokenizer"]
    return Checkpoint(
        config=_model_config(raw, tokenizer, path),
        raw_config=raw,
        state_dict=_load_weights(entry / WEIGHTS, path),
        tokenizer_path=tokenizer,
        source=str(path),
        file_hash=str(meta["sha256"]),
        path=path,
        cache_dir=entry,
        from_cache=from_cache,
    )


def _model_config(raw: dict[str, Any], tokenizer: Path, path: Path) -> ModelConfig:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(tokenizer.read_bytes())
    except (OSError, RuntimeError, TypeError):
        raise ModelError(
            f"{path}: tokenizer {tokenizer.name} is not a SentencePiece model"
        ) from None
    try:
        return ModelConfig.from_nemo(raw, vocab_size=processor.get_piece_size())
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None


def _load_weights(weights: Path, path: Path) -> dict[str, torch.Tensor]:
    """Memory-mapped when the file is torch's zip format (every checkpoint since torch 1.6)."""
    try:
        loaded = torch.load(
            weights, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(weights)
        )
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        reason = _first_line(exc) or type(exc).__name__
        raise ModelError(f"{path}: {WEIGHTS} is not a torch state dict ({reason})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a Lightning checkpoint
    if not isinstance(loaded, dict) or not loaded:
        raise ModelError(f"{path}: {WEIGHTS} is not a torch state dict")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise ModelError(f"{path}: {WEIGHTS} holds objects other than named tensors")
    return loaded


class _HashingReader:
    """A read-only file wrapper that hashes what passes through (the tar is read exactly once)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        while self.read(1 << 22):
            pass
        return self.digest.hexdigest()


def _build_entry(path: Path, entry: Path) -> dict[str, Any]:
    root = entry.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(root)
        _remove_orphans(root)
        temp = root / f".tmp-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
        (temp / ARTIFACTS).mkdir(parents=True)
    except OSError as exc:
        raise ModelError(
            f"cannot write the model cache {root} ({exc.strerror or exc}); "
            "set BUDGIE_CACHE to a writable directory"
        ) from None
    try:
        meta = _extract(path, temp)
        (temp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _publish(temp, entry)
    except OSError as exc:
        raise ModelError(f"{path}: cannot unpack into the cache {root} ({exc})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    _remove_other_versions(entry)
    return meta


def _extract(path: Path, temp: Path) -> dict[str, Any]:
    stat = os.stat(os.path.realpath(path))
    found: dict[str, int] = {}
    with open(path, "rb") as handle:
        reader = _HashingReader(handle)
        try:
            with tarfile.open(fileobj=reader, mode="r|*", bufsize=1 << 20) as archive:  # type: ignore[call-overload]
                for member in archive:
                    if not member.isfile():
                        continue
                    name = PurePosixPath(member.name).name
                    relative = name if name in (WEIGHTS, CONFIG_YAML) else f"{ARTIFACTS}/{name}"
                    source = archive.extractfile(member)
                    if source is None:
                        continue
                    with source, open(temp / relative, "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 22)
                    found[relative] = member.size
            file_hash = reader.finish()
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ModelError(f"{path}: not a .nemo archive (unreadable tar: {exc})") from None
    for required in (CONFIG_YAML, WEIGHTS):
        if required not in found:
            raise ModelError(f"{path}: not a .nemo archive (no {required} inside)")
    raw = _parse_config(temp / CONFIG_YAML, path)
    tokenizer = _tokenizer_member(raw, found, path)
    _model_config(raw, temp / ARTIFACTS / tokenizer, path)
    _load_weights(temp / WEIGHTS, path)
    (temp / CONFIG_JSON).write_text(json.dumps(raw), encoding="utf-8")
    found[CONFIG_JSON] = (temp / CONFIG_JSON).stat().st_size
    return {
        "format": CACHE_FORMAT,
        "source": os.path.realpath(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": file_hash,
        "tokenizer": tokenizer,
        "files": found,
    }


def _parse_config(config_file: Path, path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        raw = yaml.load(config_file.read_text(encoding="utf-8"), Loader=loader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = _first_line(exc)
        raise ModelError(f"{path}: {CONFIG_YAML} is not valid YAML ({reason})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: {CONFIG_YAML} is not a model config")
    return raw


def _tokenizer_member(raw: dict[str, Any], found: dict[str, int], path: Path) -> str:
    """The SentencePiece model the config names (``nemo:<uuid>_tokenizer.model`` or a file name)."""
    section = raw.get("tokenizer")
    named = section.get("model_path") if isinstance(section, dict) else None
    artifacts = {r.split("/", 1)[1] for r in found if r.startswith(ARTIFACTS + "/")}
    if isinstance(named, str) and named:
        name = PurePosixPath(named.removeprefix("nemo:")).name
        if name in artifacts:
            return name
    candidates = sorted(a for a in artifacts if a.endswith("tokenizer.model"))
    if len(candidates) == 1:
        return candidates[0]
    wanted = f" ({named})" if named else ""
    raise ModelError(f"{path}: no SentencePiece tokenizer{wanted} inside the archive")


def _publish(temp: Path, entry: Path) -> None:
    """Rename the finished entry into place; a concurrent loader may have published it first."""
    shutil.rmtree(entry, ignore_errors=True)  # a corrupted entry being rebuilt
    try:
        os.rename(temp, entry)
    except OSError:
        if not (entry / META).exists():
            raise


def _remove_other_versions(entry: Path) -> None:
    prefix = entry.name.split("-", 1)[0] + "-"
    for sibling in entry.parent.glob(prefix + "*"):
        if sibling != entry and sibling.is_dir():
            shutil.rmtree(sibling, ignore_errors=True)


def _remove_orphans(root: Path) -> None:
    """Entries whose ``.nemo`` is gone (deleted downloads, test files): they can never hit again."""
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            source = json.loads((entry / META).read_text(encoding="utf-8"))["source"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours: leave it
        if isinstance(source, str) and not os.path.exists(source):
            shutil.rmtree(entry, ignore_errors=True)


def _remove_stale_temps(root: Path) -> None:
    """Leftovers of interrupted extractions (older than an hour: not one still running)."""
    now = time.time()
    for temp in root.glob(".tmp-*"):
        try:
            if now - temp.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(temp, ignore_errors=True)
        except OSError:
            continue
