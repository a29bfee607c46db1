"""Audio input: every source becomes mono float32 at 16 kHz, or an ``AudioError``.

This is the only module that touches audio files. Decoding goes through libsndfile (soundfile)
first, because it is exact and fast for wav/flac/ogg/mp3, and falls back to FFmpeg (PyAV) for
containers libsndfile does not know (m4a/mp4/webm/...). Resampling is soxr at ``HQ`` quality with
librosa's output length, which is exactly what NeMo's ``AudioSegment`` does (librosa >= 0.10
resamples with ``soxr_hq``), so features computed on our samples match NeMo's. soxr is
deterministic: the same input gives bit-identical output on the same machine and library version.

Decisions a user may need to know:

- Arrays: 1-D is mono. 2-D is ``(samples, channels)`` or ``(channels, samples)``: the smaller axis
  is taken as channels (a tie means ``(samples, channels)``, soundfile's layout), at most
  ``MAX_ARRAY_CHANNELS`` channels. Their rate is ``sample_rate``, 16000 when not given.
- Integer PCM is scaled to [-1, 1): int8 / 2**7, int16 / 2**15, int32 / 2**31, uint8 centred on
  128. Float samples are kept as they are (not clipped).
- A WAV whose header promises more data than the file holds (an interrupted recording) gives the
  samples present and a ``UserWarning``; a WAV cut inside its header is an error.
- A valid file with zero samples gives an empty array (the pipeline makes it an empty transcript).
- NaN/Inf samples become 0 with one ``UserWarning`` per input saying how many.
- A plain WAV already in the model's format (mono, 16-bit PCM, 16 kHz, nothing after its data)
  is mapped into memory rather than decoded: ``load_samples`` returns a read-only int16 view of
  the file (cutting such a file short while it is being transcribed is not supported).
"""

from __future__ import annotations

import io
import math
import mmap
import os
import stat
import struct
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from budgie.errors import AudioError

SAMPLE_RATE = 16000
RESAMPLE_QUALITY = "HQ"  # soxr_hq: what librosa, hence NeMo, uses; 20-bit precision, plenty for ASR
MAX_ARRAY_CHANNELS = 64  # a 2-D array with more "channels" is more likely features than audio
READ_BLOCK_FRAMES = 1 << 16  # multichannel files are downmixed block by block to bound memory
WAV_HEADER_SCAN_BYTES = 1 << 16
# Plain mono 16-bit 16 kHz WAV files are mapped into memory instead of decoded (_map_samples):
# POSIX and little-endian only (WAV samples are little-endian; numpy's int16 is native).
MAP_WAVS = os.name == "posix" and sys.byteorder == "little"
MAP_FLAGS = getattr(mmap, "MAP_SHARED", 0) | getattr(mmap, "MAP_POPULATE", 0)

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray
Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]
# load_samples' result: float32, or int16 for 16-bit PCM files at 16 kHz (see to_float32).
Samples = npt.NDArray[np.float32] | npt.NDArray[np.int16]
PCM16_SCALE = np.float32(1.0 / 32768.0)

_INT_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}
_PYAV_INT_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}


def describe_source(source: object) -> str:
    """A short name of an input for messages and error records.

    A path as given, ``<bytes: N>`` or ``<array: shape>``.
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes: {memoryview(source).nbytes}>"
    if isinstance(source, np.ndarray):
        return f"<array: {source.shape}>"
    return f"<{type(source).__name__}>"


def audio_duration_s(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Duration in seconds of a mono signal (16 kHz unless told otherwise)."""
    return float(len(samples)) / sample_rate


def resample(samples: Float32Array, orig_rate: int, target_rate: int = SAMPLE_RATE) -> Float32Array:
    """soxr ``HQ`` resampling with librosa's length ``ceil(n * target / orig)`` (zero padded).

    soxr alone rounds the length; librosa (and so NeMo) fixes it to the ceiling, and the number of
    feature frames depends on it, so we follow librosa.
    """
    if orig_rate == target_rate:
        return samples
    want = math.ceil(len(samples) * target_rate / orig_rate)
    if want == 0:
        return np.zeros(0, dtype=np.float32)
    out = soxr.resample(samples, orig_rate, target_rate, quality=RESAMPLE_QUALITY)
    out = np.asarray(out, dtype=np.float32)
    if len(out) > want:
        return out[:want]
    if len(out) < want:
        return np.concatenate([out, np.zeros(want - len(out), dtype=np.float32)])
    return out


def to_float32(samples: np.ndarray) -> Float32Array:
    """Samples as float32: int16 (16-bit PCM kept by ``load_samples``) scaled by 2^-15, which
    gives libsndfile's float reading bit for bit; float32 as it is."""
    if samples.dtype == np.int16:
        out = np.empty(samples.shape, dtype=np.float32)
        np.multiply(samples, PCM16_SCALE, out=out, casting="unsafe")
        return out
    return _f32(samples)


def stack_padded(arrays: list[np.ndarray]) -> Float32Array:
    """A batch of waveforms (float32, or int16 PCM: see ``to_float32``) as one [B, max N]
    float32 array, zero padded. numpy, not torch: a small torch CPU op wakes the intra-op
    thread pool, milliseconds on many-core hosts."""
    if len(arrays) == 1 and len(arrays[0]) > 0:
        return np.ascontiguousarray(to_float32(arrays[0]))[None]
    out = np.zeros((len(arrays), max(1, *(len(a) for a in arrays))), dtype=np.float32)
    for row, samples in enumerate(arrays):
        if samples.dtype == np.int16:
            np.multiply(samples, PCM16_SCALE, out=out[row, : len(samples)], casting="unsafe")
        else:
            out[row, : len(samples)] = samples
    return out


def _f32(x: object) -> Float32Array:
    """A float32 view of ``x`` (no copy when it already is float32); also pins the type for mypy."""
    return np.asarray(x, dtype=np.float32)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_rate(rate: object, name: str) -> int:
    """Sample rates must be positive whole numbers (22050.0 is fine, 0, -1 and 'x' are not)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise AudioError(f"{name}: sample_rate must be a positive integer, got {rate!r}")
    if not math.isfinite(float(rate)) or rate <= 0 or int(rate) != rate:
        raise AudioError(f"{name}: sample_rate must be a positive integer, got {rate!r}")
    return int(rate)


def _pcm_to_float32(x: np.ndarray, name: str) -> Float32Array:
    """Integer PCM -> float32 in [-1, 1); float -> float32 (no copy when already float32)."""
    if x.dtype in _INT_SCALE:
        return _f32(np.multiply(x, 1.0 / _INT_SCALE[x.dtype], dtype=np.float32))
    if x.dtype == np.uint8:
        out = _f32(np.subtract(x, 128, dtype=np.float32))
        out *= 1.0 / 128
        return out
    if x.dtype.kind == "f" and x.dtype.itemsize <= 8:
        return np.asarray(x, dtype=np.float32)
    raise AudioError(
        f"{name}: unsupported sample dtype {x.dtype} "
        "(use int8/int16/int32/uint8 PCM or float16/float32/float64)"
    )


def _array_to_mono(x: np.ndarray, name: str) -> Float32Array:
    """Downmix a 1-D or 2-D array by the mean over the channel axis (the smaller one)."""
    if x.ndim == 1:
        return _pcm_to_float32(x, name)
    if x.ndim != 2:
        raise AudioError(f"{name}: expected a 1-D or 2-D audio array, got {x.ndim} dimensions")
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    channel_axis = 1 if x.shape[1] <= x.shape[0] else 0
    channels = x.shape[channel_axis]
    if channels > MAX_ARRAY_CHANNELS:
        raise AudioError(
            f"{name}: {channels} channels is not audio; expected (samples, channels) or "
            f"(channels, samples) with at most {MAX_ARRAY_CHANNELS} channels"
        )
    floats = _pcm_to_float32(x, name)
    if channels == 1:
        return np.ravel(floats)
    return _f32(np.mean(floats, axis=channel_axis, dtype=np.float32))


def _zero_non_finite(x: Float32Array, name: str) -> Float32Array:
    """NaN/Inf would spread over the whole signal through the resampler and the normalisation."""
    if x.size == 0 or (np.isfinite(x.max()) and np.isfinite(x.min())):
        return x  # max propagates NaN, and an Inf is the max or the min: two passes, no copy
    bad = ~np.isfinite(x)
    count = int(np.count_nonzero(bad))
    if count == 0:
        return x
    warnings.warn(
        f"{name}: {count} non-finite sample(s) (NaN/Inf) set to 0", UserWarning, stacklevel=4
    )
    out = x.copy()
    out[bad] = 0.0
    return _f32(out)


def _declared_wav_frames(head: bytes) -> int | None:
    """Frames a RIFF/WAVE header promises, or None (not WAV, unknown length, header not found).

    A streaming writer leaves the data size 0 or 0xFFFFFFFF: that means "unknown", not "empty".
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, 0
    while pos + 8 <= len(head):
        chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk_id == b"fmt " and pos + 22 <= len(head):
            block_align = struct.unpack_from("<H", head, pos + 20)[0]
        if chunk_id == b"data":
            if block_align == 0 or size in (0, 0xFFFFFFFF):
                return None
            return int(size // block_align)
        pos += 8 + size + (size & 1)
    return None


def _read_mono(f: sf.SoundFile) -> Samples:
    """Read all frames: mono 16-bit PCM as int16, anything else as float32 (several channels
    averaged block by block: reading a long stereo file whole would hold every channel at once;
    blocks keep the peak near the size of the mono result).
    """
    if f.channels == 1 and f.subtype == "PCM_16":
        # int16: half the memory of float32 and no conversion here. libsndfile's own int16 ->
        # float32 conversion is scalar (~4x slower on a 30 s clip); to_float32's scaling gives
        # the same floats bit for bit (tested).
        return np.asarray(f.read(dtype="int16"), dtype=np.int16)
    if f.channels == 1:
        return np.asarray(f.read(dtype="float32"), dtype=np.float32)
    out = np.empty(max(int(f.frames), 0), dtype=np.float32)
    buf = np.empty((READ_BLOCK_FRAMES, f.channels), dtype=np.float32)
    pos = 0
    while True:
        block = f.read(out=buf)
        n = len(block)
        if n == 0:
            break
        if pos + n > len(out):
            out = np.concatenate([out[:pos], np.empty(pos + n, dtype=np.float32)])
        np.mean(block, axis=1, dtype=np.float32, out=out[pos : pos + n])
        pos += n
    return out[:pos]


def _decode_soundfile(file: str | IO[bytes], name: str, head: bytes) -> tuple[Samples, int]:
    """libsndfile; raises RuntimeError (LibsndfileError) when it does not know the format."""
    with sf.SoundFile(file) as f:
        rate = int(f.samplerate)
        samples = _read_mono(f)
        is_wav = f.format in ("WAV", "WAVEX")
    declared = _declared_wav_frames(head) if is_wav else None
    if declared is not None and len(samples) < declared:
        warnings.warn(
            f"{name}: truncated WAV: the header declares {declared / rate:.3f} s but the file "
            f"holds {len(samples) / rate:.3f} s; using the audio present",
            UserWarning,
            stacklevel=6,  # _decode_soundfile < _decode < _load_* < _load < load_audio < caller
        )
    return samples, rate


def _frame_to_mono(data: np.ndarray, fmt: str, planar: bool, n_samples: int) -> Float32Array:
    """One decoded FFmpeg frame (any sample format, planar or packed) -> mono float32."""
    base = fmt.rstrip("p")
    if base == "u8":
        floats = np.subtract(data, 128, dtype=np.float32)
        floats *= 1.0 / 128
    elif base in _PYAV_INT_SCALE:
        floats = _f32(np.multiply(data, 1.0 / _PYAV_INT_SCALE[base], dtype=np.float32))
    else:  # flt / dbl
        floats = np.asarray(data, dtype=np.float32)
    if not planar:  # packed: (1, samples * channels), interleaved
        floats = floats.reshape(n_samples, -1).T
    if floats.shape[0] == 1:
        return np.ravel(floats)
    return _f32(np.mean(floats, axis=0, dtype=np.float32))


def _decode_pyav(file: str | IO[bytes], name: str) -> tuple[Float32Array, int]:
    """FFmpeg through PyAV: every frame of the first audio stream, downmixed frame by frame."""
    import av  # imported here: loading FFmpeg costs start-up time that WAV/FLAC inputs never need

    chunks: list[Float32Array] = []
    rate = 0
    with av.open(file, mode="r") as container:
        if not container.streams.audio:
            raise AudioError(f"{name}: no audio stream found (format {container.format.name})")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        for frame in container.decode(stream):
            if frame.samples == 0:
                continue
            if rate and frame.sample_rate != rate and chunks:
                raise AudioError(f"{name}: the sample rate changes inside the stream")
            rate = int(frame.sample_rate)
            fmt = frame.format
            chunks.append(
                _frame_to_mono(frame.to_ndarray(), fmt.name, fmt.is_planar, frame.samples)
            )
    if rate <= 0:
        raise AudioError(f"{name}: the audio stream has no sample rate")
    if not chunks:
        return np.zeros(0, dtype=np.float32), rate
    return np.concatenate(chunks), rate


def _libsndfile_reason(error: RuntimeError) -> str:
    """libsndfile's own words, without the 'Error opening <file>:' prefix soundfile adds.

    On data it cannot parse, libsndfile's mp3 probe reports 'File does not exist', which would
    send a user looking for a missing file; say what it means instead.
    """
    reason = _one_line(getattr(error, "error_string", None) or error)
    if "does not exist" in reason:
        return "unrecognised or corrupt data"
    return reason.rstrip(".")


def _decode(opener: Callable[[], str | IO[bytes]], name: str, head: bytes) -> tuple[Samples, int]:
    """soundfile, then PyAV; ``opener()`` gives a fresh path or stream for each attempt."""
    try:
        return _decode_soundfile(opener(), name, head)
    except RuntimeError as sf_error:
        sf_reason = _libsndfile_reason(sf_error)
    import av

    try:
        return _decode_pyav(opener(), name)
    except AudioError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError, EOFError) as av_error:
        raise AudioError(
            f"{name}: not a readable audio file (libsndfile: {sf_reason}; "
            f"FFmpeg: {_one_line(getattr(av_error, 'strerror', None) or av_error)})"
        ) from None


def _load_path(source: str | os.PathLike[str]) -> tuple[Samples, int]:
    name = os.fsdecode(source)
    try:
        info = os.stat(name)  # one call for existence, kind and size
        if stat.S_ISDIR(info.st_mode):
            raise AudioError(f"{name}: is a directory, not an audio file")
        if info.st_size == 0:  # (also pipes and devices: never opened, so never waited on)
            raise AudioError(f"{name}: empty file (0 bytes)")
        with Path(name).open("rb") as fh:
            head = fh.read(WAV_HEADER_SCAN_BYTES)
            layout = _plain_pcm16_wav(head)
            if layout is not None and info.st_size == layout[0] + 2 * layout[1] and MAP_WAVS:
                mapped = _map_samples(fh, *layout)
                if mapped is not None:
                    return mapped, SAMPLE_RATE
    except FileNotFoundError:
        raise AudioError(f"{name}: audio file not found") from None
    except OSError as e:
        raise AudioError(f"{name}: cannot read audio file ({_one_line(e.strerror or e)})") from None
    return _decode(lambda: name, name, head)


def _plain_pcm16_wav(head: bytes) -> tuple[int, int] | None:
    """(data offset, frames) of a plain PCM WAV in the model's own format (mono, 16-bit,
    16 kHz, known data size) whose header lies within ``head``; None for anything else."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, plain = 12, False
    while pos + 8 <= len(head):
        chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk_id == b"fmt " and size >= 16 and pos + 24 <= len(head):
            tag, channels, rate = struct.unpack_from("<HHI", head, pos + 8)
            bits = struct.unpack_from("<H", head, pos + 22)[0]
            plain = (tag, channels, rate, bits) == (1, 1, SAMPLE_RATE, 16)
        if chunk_id == b"data":
            known = size not in (0, 0xFFFFFFFF) and size % 2 == 0
            return (pos + 8, size // 2) if plain and known else None
        pos += 8 + size + (size & 1)
    return None


def _map_samples(fh: IO[bytes], offset: int, frames: int) -> Int16Array | None:
    """The samples of a plain PCM16 WAV as a read-only view of the file mapped into memory,
    its pages mapped in by the kernel at once (MAP_POPULATE): no copy and no page faults on a
    fresh array, 0.08 vs 0.35 ms per 20 s file through libsndfile on a 2-core CPU
    (the same int16 values). None where the platform or file system cannot map files."""
    try:
        mapped = mmap.mmap(fh.fileno(), 0, flags=MAP_FLAGS, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    return np.frombuffer(mapped, dtype=np.int16, count=frames, offset=offset)


def _load_bytes(data: bytes, name: str) -> tuple[Samples, int]:
    if len(data) == 0:
        raise AudioError(f"{name}: empty audio bytes")
    return _decode(lambda: io.BytesIO(data), name, data[:WAV_HEADER_SCAN_BYTES])


def load_samples(source: AudioSource, sample_rate: int | None = None) -> Samples:
    """``load_audio``'s samples, except that a mono 16-bit PCM file at 16 kHz stays int16
    (``to_float32`` gives the floats): half the memory to fill and to copy to a GPU, which
    scales them there. Integers need no NaN/Inf check and no resampling."""
    return _load(source, sample_rate, keep_pcm16=True)


def _load(source: AudioSource, sample_rate: int | None, keep_pcm16: bool) -> Samples:
    """load_samples and load_audio (both call it directly: warnings' stack levels count on it)."""
    name = describe_source(source)
    if isinstance(source, np.ndarray):
        rate = SAMPLE_RATE if sample_rate is None else _check_rate(sample_rate, name)
        samples: Samples = _array_to_mono(source, name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        samples, rate = _load_bytes(bytes(source), name)
    elif isinstance(source, (str, os.PathLike)):
        samples, rate = _load_path(source)
    else:
        raise AudioError(
            f"{name}: unsupported audio source type (use a path, bytes or a numpy array)"
        )
    from_file = not isinstance(source, np.ndarray)
    if from_file and sample_rate is not None and _check_rate(sample_rate, name) != rate:
        raise AudioError(
            f"{name}: sample_rate={sample_rate} given, but the file says {rate} Hz "
            "(sample_rate applies to arrays only)"
        )
    if samples.dtype == np.int16 and rate == SAMPLE_RATE:
        return samples if keep_pcm16 else to_float32(samples)
    floats = _zero_non_finite(to_float32(samples), name)
    return resample(floats, rate, SAMPLE_RATE)


def load_audio(source: AudioSource, sample_rate: int | None = None) -> Float32Array:
    """Decode ``source`` into mono float32 samples at 16 kHz (``SAMPLE_RATE``).

    ``source`` is a path, the bytes of an audio file, or a numpy array of samples (see the module
    docstring for layouts and scaling). ``sample_rate`` is the rate of an array (16000 when not
    given); files and bytes carry their own rate, and a ``sample_rate`` that disagrees with it is
    an error rather than silently ignored. A float32 mono 16 kHz array without NaN/Inf is returned
    as it is, without a copy. Bad input raises ``AudioError`` with a one-line message naming it.
    """
    return to_float32(_load(source, sample_rate, keep_pcm16=False))
