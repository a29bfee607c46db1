"""Audio files of many formats, written at test time from the real recording shipped in the package.

Nothing binary is committed: each test writes what it needs into its ``tmp_path``. The source is
``budgie/data/life_Jim.wav`` (real speech, 44.1 kHz mono 16-bit), read through importlib.resources
so the tests do not depend on ``../shared``. libsndfile writes what it can (wav, flac, ogg, mp3);
PyAV (FFmpeg) writes the containers libsndfile cannot (m4a/aac, webm/opus, Matroska with raw PCM of
every sample format, mp2, alac), which are exactly the files that exercise the PyAV fallback.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr


def jim() -> tuple[np.ndarray, int]:
    """The real recording as float32 mono and its rate (44100)."""
    data = resources.files("budgie").joinpath("data/life_Jim.wav").read_bytes()
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, int(rate)


@dataclass(frozen=True)
class Spec:
    """One file to write: container/codec, rate and channels; how exact its decoding must be.

    ``lag_s`` is the largest shift allowed between written and decoded audio (encoder priming),
    ``extra_s`` how much longer the decoded audio may be than written (padding to codec frames).
    PyAV's mp4 muxer does not record AAC's 1024 priming samples in an edit list, so FFmpeg plays
    them back: 23 ms of lag and up to two AAC frames of extra length at 44.1 kHz.
    """

    name: str
    suffix: str
    rate: int = 44100
    channels: int = 1
    writer: str = "soundfile"  # or "pyav"
    sf_format: str | None = None
    subtype: str | None = None
    av_format: str | None = None
    codec: str | None = None
    lossless: bool = True
    min_corr: float = 0.9999
    max_err: float = 2e-3  # lossless only: max abs difference from the reference at 16 kHz
    lag_s: float = 0.0
    extra_s: float = 0.0


SPECS = [
    Spec("wav16", ".wav", sf_format="WAV", subtype="PCM_16"),
    Spec("wav_float32", ".wav", sf_format="WAV", subtype="FLOAT"),
    Spec("wav24_stereo", ".wav", channels=2, sf_format="WAV", subtype="PCM_24"),
    Spec("wav16_8k", ".wav", rate=8000, sf_format="WAV", subtype="PCM_16"),
    Spec("wav16_48k_stereo", ".wav", rate=48000, channels=2, sf_format="WAV", subtype="PCM_16"),
    Spec("flac", ".flac", sf_format="FLAC", subtype="PCM_16"),
    Spec("flac_16k", ".flac", rate=16000, sf_format="FLAC", subtype="PCM_16"),
    Spec("ogg_vorbis", ".ogg", sf_format="OGG", subtype="VORBIS", lossless=False, min_corr=0.98),
    Spec("mp3", ".mp3", sf_format="MP3", subtype="MPEG_LAYER_III", lossless=False, min_corr=0.98),
    Spec(
        "m4a_aac_stereo",
        ".m4a",
        channels=2,
        writer="pyav",
        av_format="mp4",
        codec="aac",
        lossless=False,
        min_corr=0.98,
        lag_s=0.025,
        extra_s=0.05,
    ),
    Spec(
        "webm_opus",
        ".webm",
        rate=48000,
        writer="pyav",
        av_format="webm",
        codec="libopus",
        lossless=False,
        min_corr=0.98,
    ),
    Spec(
        "mka_s16_stereo", ".mka", channels=2, writer="pyav", av_format="matroska", codec="pcm_s16le"
    ),
    Spec("mka_s32", ".mka", writer="pyav", av_format="matroska", codec="pcm_s32le"),
    Spec(
        "mka_flt_stereo", ".mka", channels=2, writer="pyav", av_format="matroska", codec="pcm_f32le"
    ),
    Spec("mka_dbl", ".mka", writer="pyav", av_format="matroska", codec="pcm_f64le"),
    Spec(
        "mka_u8",
        ".mka",
        writer="pyav",
        av_format="matroska",
        codec="pcm_u8",
        max_err=1e-2,
        min_corr=0.995,
    ),
    Spec(
        "mka_alac_s32p_stereo",
        ".mka",
        channels=2,
        writer="pyav",
        av_format="matroska",
        codec="alac",
    ),
    Spec(
        "mka_mp2_s16p",
        ".mka",
        writer="pyav",
        av_format="matroska",
        codec="mp2",
        lossless=False,
        min_corr=0.98,
        lag_s=0.0,
        extra_s=0.05,
    ),
]


def channels_of(mono: np.ndarray, channels: int) -> np.ndarray:
    """(samples, channels) with different content per channel, so a mean downmix is checkable.

    Channel k carries ``mono * (1 - 0.5 k / channels)``: the mean is ``mono`` times a known gain.
    """
    gains = 1.0 - 0.5 * np.arange(channels) / channels
    return (mono[:, None] * gains[None, :]).astype(np.float32)


def downmix_gain(channels: int) -> float:
    return float(np.mean(1.0 - 0.5 * np.arange(channels) / channels))


def written_signal(spec: Spec) -> np.ndarray:
    """What the file holds before encoding: the recording at ``spec.rate``, (samples, channels)."""
    samples, rate = jim()
    if spec.rate != rate:
        samples = soxr.resample(samples, rate, spec.rate, quality="VHQ").astype(np.float32)
    # Keep clear of full scale so resampling overshoot never clips in integer formats.
    samples = np.clip(samples, -0.95, 0.95)
    return channels_of(samples, spec.channels)


def _write_pyav(path: Path, spec: Spec, signal: np.ndarray) -> None:
    layout = "stereo" if spec.channels == 2 else "mono"
    with av.open(str(path), "w", format=spec.av_format) as container:
        stream = container.add_stream(spec.codec, rate=spec.rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(signal.T), format="fltp", layout=layout
        )
        frame.sample_rate = spec.rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write(spec: Spec, directory: Path) -> Path:
    """Write ``spec``'s file into ``directory`` and return its path."""
    path = directory / f"{spec.name}{spec.suffix}"
    signal = written_signal(spec)
    if spec.writer == "soundfile":
        sf.write(path, signal, spec.rate, format=spec.sf_format, subtype=spec.subtype)
    else:
        _write_pyav(path, spec, signal)
    return path


def expected_16k(spec: Spec) -> np.ndarray:
    """The reference: the written signal, downmixed by hand and resampled to 16 kHz with soxr."""
    mono = written_signal(spec)[:, 0] * downmix_gain(spec.channels)
    if spec.rate == 16000:
        return mono.astype(np.float32)
    return soxr.resample(mono, spec.rate, 16000, quality="VHQ").astype(np.float32)


def best_lag(decoded: np.ndarray, expected: np.ndarray, max_lag: int) -> int:
    """The shift of ``decoded`` against ``expected`` (0..max_lag) with the largest dot product."""
    n = min(len(expected), len(decoded) - max_lag)
    scores = [float(np.dot(decoded[k : k + n], expected[:n])) for k in range(max_lag + 1)]
    return int(np.argmax(scores))


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()
