"""Writing NeMo-format files: the ``.nemo`` tar, tokenizer side files, the slaney mel filterbank.

``write_nemo`` produces what NeMo's ``save_to`` produces (an uncompressed tar of ``./``-prefixed
members: ``model_config.yaml``, ``model_weights.ckpt`` and the tokenizer artifacts), but
reproducibly: sorted members, fixed mtime, uid/gid 0, no user names. The weights go straight
into the archive (header patched once their size is known), so a 2.4 GB checkpoint is written
once, not saved then copied; the file appears under its name only when complete.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tarfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml

from budgie.errors import BudgieError, ModelError

TAR_MTIME = 1_700_000_000  # fixed member time: archives depend only on their content
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
SPECIAL_PIECES = ("<s>", "</s>", "<pad>", "<unk>")


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-scale, slaney-normalised triangular mel filters, shape (n_mels, n_fft // 2 + 1).

    The filterbank NeMo computes for its preprocessor (librosa's
    ``filters.mel(..., norm='slaney')``, float32), reimplemented in numpy so Budgie needs no
    librosa; the rounding follows librosa's order (triangles rounded to float32, then scaled by
    the band widths).
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.arange(n_fft // 2 + 1, dtype=np.float64) * (sample_rate / n_fft)
    mels = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    band_hz = _mel_to_hz(mels)
    widths = np.diff(band_hz)
    ramps = band_hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    area_norm = 2.0 / (band_hz[2 : n_mels + 2] - band_hz[:n_mels])
    filters: np.ndarray = (triangles * area_norm[:, None]).astype(np.float32)
    return filters


_F_SP = 200.0 / 3  # slaney: linear 66.67 Hz per mel below 1 kHz, logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz >= _MIN_LOG_HZ:
        return float(_MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOGSTEP)
    return hz / _F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _F_SP * mels
    log_part = mels >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_part] - _MIN_LOG_MEL))
    return hz


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_pieces(tokenizer: str | os.PathLike[str]) -> list[str]:
    """The pieces of a SentencePiece model, by id; ModelError if the file is not one."""
    import sentencepiece as spm

    path = Path(tokenizer)
    if not path.is_file():
        raise ModelError(f"tokenizer not found: {path}")
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(path.read_bytes())
    except (RuntimeError, OSError, TypeError) as exc:
        raise ModelError(f"{path}: not a SentencePiece model ({_first_line(exc)})") from None
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def tokenizer_side_files(tokenizer: Path) -> tuple[bytes, bytes]:
    """``tokenizer.vocab`` (piece, score) and NeMo's BERT-style ``vocab.txt`` for a model file."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(tokenizer))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    scores = [processor.get_score(i) for i in range(len(pieces))]
    vocab = "".join(f"{piece}\t{score:g}\n" for piece, score in zip(pieces, scores, strict=True))
    bert = []
    for piece in pieces:
        if piece in SPECIAL_PIECES:
            continue
        token = piece[1:] if piece.startswith("▁") else f"##{piece}"
        bert.append(token or piece[0])
    return vocab.encode("utf-8"), "".join(f"{t}\n" for t in bert).encode("utf-8")


def write_nemo(
    path: str | os.PathLike[str],
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    tokenizer: str | os.PathLike[str],
) -> Path:
    """Write a NeMo ``.nemo`` archive; artifact names come from ``config['tokenizer']``."""
    target = Path(path)
    section = config["tokenizer"]
    names = {
        key: str(section[key]).removeprefix("nemo:")
        for key in ("model_path", "spe_tokenizer_vocab", "vocab_path")
    }
    vocab, vocab_txt = tokenizer_side_files(Path(tokenizer))
    small = {
        names["model_path"]: Path(tokenizer).read_bytes(),
        names["spe_tokenizer_vocab"]: vocab,
        names["vocab_path"]: vocab_txt,
        "model_config.yaml": yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode(),
    }
    temp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    except OSError as exc:
        raise BudgieError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            _write_tar(handle, small, state_dict)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise BudgieError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, TAR_MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _write_tar(
    out: IO[bytes], small: dict[str, bytes], state_dict: dict[str, torch.Tensor]
) -> None:
    out.write(_header("./", 0, tarfile.DIRTYPE))
    for name in sorted(small):  # uuid-named files, then model_config.yaml ('m' sorts after hex)
        data = small[name]
        out.write(_header(f"./{name}", len(data)))
        out.write(data + b"\0" * (-len(data) % BLOCK))
    # model_weights.ckpt, last in sorted order: stream torch.save, then patch the header's size.
    start = out.tell()
    out.write(_header("./model_weights.ckpt", 0))
    torch.save(state_dict, out)
    size = out.tell() - start - BLOCK
    out.write(b"\0" * (-size % BLOCK))
    end = out.tell()
    out.seek(start)
    out.write(_header("./model_weights.ckpt", size))
    out.seek(end)
    out.write(b"\0" * (2 * BLOCK))  # end-of-archive marker, then pad to a whole record
    out.write(b"\0" * (-out.tell() % RECORD))
