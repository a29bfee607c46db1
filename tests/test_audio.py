"""budgie.audio: every format, layout and dtype to mono float32 16 kHz; bad input to AudioError.

References are computed independently of budgie.audio: the signal written into each file,
downmixed by hand and resampled with soxr at VHQ (budgie uses HQ), see tests/audio_factory.py.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from audio_factory import SPECS, Spec, best_lag, expected_16k, jim, wav_bytes, write
from budgie.audio import (
    SAMPLE_RATE,
    _frame_to_mono,
    audio_duration_s,
    describe_source,
    load_audio,
    load_samples,
    resample,
    stack_padded,
    to_float32,
)
from budgie.errors import AudioError, BudgieError


def _no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_formats_decode_to_the_reference(spec: Spec, tmp_path: Path) -> None:
    path = write(spec, tmp_path)
    got = _no_warnings(load_audio, path)
    want = expected_16k(spec)
    assert got.dtype == np.float32 and got.ndim == 1
    if spec.lossless:
        assert len(got) == len(want)
        assert np.max(np.abs(got - want)) < spec.max_err
        assert np.corrcoef(got, want)[0, 1] > spec.min_corr
        return
    lag = best_lag(got, want, int(spec.lag_s * SAMPLE_RATE) + 1)
    assert lag <= spec.lag_s * SAMPLE_RATE + 1
    extra = len(got) - len(want)
    assert -0.005 * SAMPLE_RATE <= extra <= (spec.extra_s + 0.005) * SAMPLE_RATE
    n = min(len(want), len(got) - lag)
    assert np.corrcoef(got[lag : lag + n], want[:n])[0, 1] > spec.min_corr


def test_the_package_recording_matches_librosa_length_rule() -> None:
    """44.1 kHz -> 16 kHz gives ceil(n * 16000 / 44100) samples, as librosa and hence NeMo."""
    samples, rate = jim()
    got = load_audio(str(Path(__file__).parents[1] / "src/budgie/data/life_Jim.wav"))
    assert rate == 44100 and len(samples) == 112102
    assert len(got) == 40672  # ceil(112102 * 16000 / 44100) = ceil(40671.93)
    ref = soxr.resample(samples, 44100, 16000, quality="HQ")
    np.testing.assert_array_equal(got[: len(ref)], ref)


@pytest.mark.parametrize("n", [1, 2, 3, 100, 1001, 44101])
def test_resample_length_is_the_ceiling(n: int) -> None:
    x = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    assert len(resample(x, 44100)) == -(-n * 16000 // 44100)
    assert resample(x, 16000) is x


@pytest.mark.parametrize("name", ["wav16", "flac", "mp3", "m4a_aac_stereo", "mka_s16_stereo"])
def test_bytes_decode_like_the_path(name: str, tmp_path: Path) -> None:
    spec = next(s for s in SPECS if s.name == name)
    path = write(spec, tmp_path)
    for data in (path.read_bytes(), bytearray(path.read_bytes())):
        np.testing.assert_array_equal(load_audio(data), load_audio(path))


def test_pathlike_and_str_agree(tmp_path: Path) -> None:
    path = write(SPECS[0], tmp_path)
    np.testing.assert_array_equal(load_audio(path), load_audio(str(path)))


def test_deterministic(tmp_path: Path) -> None:
    spec = next(s for s in SPECS if s.name == "wav16_48k_stereo")
    path = write(spec, tmp_path)
    assert load_audio(path).tobytes() == load_audio(path).tobytes()


# ---------------------------------------------------------------- numpy arrays


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([-32768, 0, 16384, 32767], np.int16, [-1.0, 0.0, 0.5, 32767 / 32768]),
        ([-(2**31), 2**30, 2**31 - 1], np.int32, [-1.0, 0.5, (2**31 - 1) / 2**31]),
        ([0, 128, 192, 255], np.uint8, [-1.0, 0.0, 0.5, 127 / 128]),
        ([-128, 64], np.int8, [-1.0, 0.5]),
        ([0.25, -2.0, 1.5], np.float64, [0.25, -2.0, 1.5]),
        ([0.25, -0.5], np.float16, [0.25, -0.5]),
    ],
)
def test_array_dtypes_are_scaled(values: list[float], dtype: type, expected: list[float]) -> None:
    got = load_audio(np.array(values, dtype=dtype))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float32))


def test_float32_16k_mono_is_not_copied() -> None:
    x = np.linspace(-1, 1, 1600, dtype=np.float32)
    assert load_audio(x) is x


@pytest.mark.parametrize("layout", ["samples_channels", "channels_samples"])
def test_array_two_dims_mean_downmix(layout: str) -> None:
    left = np.array([1000, -2000, 3000, 400], dtype=np.int16)
    right = np.array([3000, 0, -1000, 400], dtype=np.int16)
    x = np.stack([left, right], axis=1 if layout == "samples_channels" else 0)
    want = (left.astype(np.float64) + right) / 2 / 32768
    np.testing.assert_allclose(load_audio(x), want, atol=1e-7)


@pytest.mark.parametrize("shape", [(5, 1), (1, 5), (3, 3)])
def test_array_degenerate_layouts(shape: tuple[int, int]) -> None:
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 10
    want = x.reshape(-1) if 1 in shape else x.mean(axis=1)  # a tie means (samples, channels)
    np.testing.assert_allclose(load_audio(x), want, atol=1e-7)


def test_array_with_rate_is_resampled() -> None:
    samples, rate = jim()
    pcm = np.round(samples * 32767).astype(np.int16)
    stereo = np.stack([pcm, pcm], axis=1)
    want = soxr.resample(pcm / 32768.0, rate, 16000, quality="VHQ")
    for x in (pcm, pcm.astype(np.int32) << 16, stereo, stereo.T, pcm / 32768.0):
        got = load_audio(x, sample_rate=rate)
        assert len(got) == -(-len(pcm) * 16000 // rate)
        assert np.max(np.abs(got[: len(want)] - want)) < 1e-3


@pytest.mark.parametrize("rate", [16000, 16000.0, np.int64(16000)])
def test_rate_16k_spellings(rate: object) -> None:
    x = np.zeros(160, dtype=np.float32)
    assert len(load_audio(x, sample_rate=rate)) == 160  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "shape", [(0,), (0, 2), (2, 0)], ids=["empty_1d", "empty_samples_ch", "empty_ch_samples"]
)
def test_empty_arrays_give_empty_audio(shape: tuple[int, ...]) -> None:
    got = load_audio(np.zeros(shape, dtype=np.int16), sample_rate=44100)
    assert got.dtype == np.float32 and got.shape == (0,)


# ---------------------------------------------------------------- NaN / Inf


def test_non_finite_array_samples_are_zeroed_with_one_warning() -> None:
    x = np.full(1000, 0.1, dtype=np.float32)
    x[[3, 10, 11]] = np.nan
    x[[20, 30]] = [np.inf, -np.inf]
    original = x.copy()
    with pytest.warns(UserWarning, match=r"<array: \(1000,\)>: 5 non-finite") as record:
        got = load_audio(x)
    assert len(record) == 1
    assert np.all(np.isfinite(got)) and got[3] == 0 and got[20] == 0 and got[0] == np.float32(0.1)
    np.testing.assert_array_equal(x, original)  # the caller's array is untouched


def test_non_finite_samples_in_a_float_wav(tmp_path: Path) -> None:
    x = np.full((4410, 2), 0.1, dtype=np.float32)
    x[100:107, 0] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    with pytest.warns(UserWarning, match="7 non-finite") as record:
        got = load_audio(path)
    assert len(record) == 1 and np.all(np.isfinite(got)) and len(got) == 1600


# ---------------------------------------------------------------- degenerate but valid files


def test_wav_with_zero_frames_is_empty_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.int16), 44100, subtype="PCM_16")
    got = _no_warnings(load_audio, path)
    assert got.dtype == np.float32 and got.shape == (0,)


def test_truncated_wav_returns_what_is_there_with_a_warning(tmp_path: Path) -> None:
    samples, rate = jim()
    data = wav_bytes(samples, rate)
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: 44 + 2 * 20000])  # 44-byte header + 20000 of 112102 frames
    with pytest.warns(UserWarning, match=r"cut\.wav: truncated WAV.*2\.542 s.*0\.454 s"):
        got = load_audio(path)
    assert len(got) == -(-20000 * 16000 // rate)
    want = soxr.resample(samples[:20000], rate, 16000, quality="VHQ")
    assert np.corrcoef(got[: len(want) - 100], want[:-100])[0, 1] > 0.999


def test_wav_cut_right_after_its_header_is_empty_with_a_warning(tmp_path: Path) -> None:
    samples, rate = jim()
    path = tmp_path / "header_only.wav"
    path.write_bytes(wav_bytes(samples, rate)[:44])
    with pytest.warns(UserWarning, match="truncated WAV"):
        assert load_audio(path).shape == (0,)


def test_streamed_wav_with_unknown_length_does_not_warn() -> None:
    """Streaming writers leave the data size 0xFFFFFFFF: unknown, not truncated."""
    samples, rate = jim()
    data = bytearray(wav_bytes(samples[:4410], rate))
    data[40:44] = b"\xff\xff\xff\xff"
    assert len(_no_warnings(load_audio, bytes(data))) == 1600


# ---------------------------------------------------------------- errors


def _random_bytes(n: int) -> bytes:
    return np.random.default_rng(1234).bytes(n)


def _jim_wav_prefix(n: int) -> bytes:
    samples, rate = jim()
    return wav_bytes(samples, rate)[:n]


BAD_FILES = {
    "missing": (None, "not found"),
    "empty": (b"", r"empty file \(0 bytes\)"),
    "text.txt": (b"hello, this is not audio\n" * 40, "no audio stream"),
    "text.wav": (b"hello, this is not audio\n" * 40, "not a readable audio file"),
    "random.wav": (_random_bytes(8192), "not a readable audio file"),
    "random.mp3": (_random_bytes(65536), "not a readable audio file"),
    "random.m4a": (_random_bytes(8192), "not a readable audio file"),
    "cut_in_header.wav": (_jim_wav_prefix(30), "No 'data' chunk"),
    "riff_only.wav": (_jim_wav_prefix(12), "not a readable audio file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_audio_error_naming_the_file(name: str, tmp_path: Path) -> None:
    content, pattern = BAD_FILES[name]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=pattern) as info:
        load_audio(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert isinstance(info.value, BudgieError)


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is a directory") as info:
        load_audio(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unreadable_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.wav"
    path.write_bytes(_jim_wav_prefix(1000))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)  # chmod does not stop root, who runs CI here
    with pytest.raises(
        AudioError, match=r"locked\.wav: cannot read audio file \(Permission denied\)"
    ):
        load_audio(path)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", r"<bytes: 0>: empty audio bytes"),
        (_random_bytes(4096), r"<bytes: 4096>: not a readable audio file"),
        (_jim_wav_prefix(30), r"<bytes: 30>: not a readable audio file"),
    ],
    ids=["empty", "random", "cut_in_header"],
)
def test_bad_bytes(data: bytes, pattern: str) -> None:
    with pytest.raises(AudioError, match=pattern):
        load_audio(data)


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        (np.zeros((2, 3, 4), dtype=np.float32), r"<array: \(2, 3, 4\)>: expected a 1-D or 2-D"),
        (np.array(0.5), r"<array: \(\)>: expected a 1-D or 2-D"),
        (np.zeros(10, dtype=np.int64), "unsupported sample dtype int64"),
        (np.zeros(10, dtype=np.complex64), "unsupported sample dtype complex64"),
        (np.zeros(10, dtype=bool), "unsupported sample dtype bool"),
        (np.array(["a", "b"]), "unsupported sample dtype <U1"),
        (np.zeros((1000, 500), dtype=np.float32), r"<array: \(1000, 500\)>: 500 channels"),
        ([0.0, 0.1], r"<list>: unsupported audio source type"),
        (None, r"<NoneType>: unsupported audio source type"),
    ],
)
def test_bad_arrays_and_types(source: object, pattern: str) -> None:
    with pytest.raises(AudioError, match=pattern):
        load_audio(source)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -16000, 22050.5, "16000", True, float("nan")])
def test_bad_sample_rate(rate: object) -> None:
    with pytest.raises(AudioError, match="sample_rate must be a positive integer"):
        load_audio(np.zeros(10, dtype=np.float32), sample_rate=rate)  # type: ignore[arg-type]


def test_sample_rate_disagreeing_with_the_file_is_an_error(tmp_path: Path) -> None:
    path = write(SPECS[0], tmp_path)
    assert len(load_audio(path, sample_rate=44100)) == 40672
    with pytest.raises(AudioError, match=r"wav16\.wav: sample_rate=16000 given.*44100 Hz"):
        load_audio(path, sample_rate=16000)


# ---------------------------------------------------------------- helpers


def test_describe_source(tmp_path: Path) -> None:
    assert describe_source(tmp_path / "a.wav") == str(tmp_path / "a.wav")
    assert describe_source("x.flac") == "x.flac"
    assert describe_source(b"abc") == "<bytes: 3>"
    assert describe_source(memoryview(b"abcd")) == "<bytes: 4>"
    assert describe_source(np.zeros((3, 2))) == "<array: (3, 2)>"
    assert describe_source(io.BytesIO()) == "<BytesIO>"


def test_audio_duration_s() -> None:
    assert audio_duration_s(np.zeros(24000, dtype=np.float32)) == 1.5
    assert audio_duration_s(np.zeros(0, dtype=np.float32)) == 0.0
    assert audio_duration_s(np.zeros(8000), sample_rate=8000) == 1.0


@pytest.mark.parametrize(
    ("fmt", "planar", "data", "expected"),
    [
        ("s16p", True, np.array([[16384, -32768], [0, 0]], np.int16), [0.25, -0.5]),
        ("s32p", True, np.array([[2**30], [2**30]], np.int32), [0.5]),
        ("dblp", True, np.array([[0.5, 1.0], [0.25, 0.0]]), [0.375, 0.5]),
        ("fltp", True, np.array([[0.5, 1.0]], np.float32), [0.5, 1.0]),
        ("s16", False, np.array([[16384, 0, -32768, -32768]], np.int16), [0.25, -1.0]),
        ("flt", False, np.array([[0.5, 0.25, 1.0, 0.0]], np.float32), [0.375, 0.5]),
        ("u8p", True, np.array([[192, 0]], np.uint8), [0.5, -1.0]),
        ("s64", False, np.array([[2**62, 2**62]], np.int64), [0.5]),
    ],
)
def test_frame_formats(fmt: str, planar: bool, data: np.ndarray, expected: list[float]) -> None:
    """FFmpeg frames: planar (channels, n) or packed (1, n * channels), each sample type."""
    n = len(expected)
    np.testing.assert_allclose(_frame_to_mono(data, fmt, planar, n), expected, atol=1e-7)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_mono_wav_samples_equal_libsndfile_float_conversion(subtype: str, tmp_path: Path) -> None:
    """The PCM_16 fast path (int16 read, numpy scaling) gives libsndfile's floats bit for bit,
    including the extremes -32768 and 32767."""
    rng = np.random.default_rng(7)
    pcm = rng.integers(-32768, 32768, 16000, dtype=np.int64).astype(np.int16)
    pcm[:2] = (-32768, 32767)
    path = tmp_path / f"x_{subtype}.wav"
    sf.write(path, pcm, SAMPLE_RATE, subtype=subtype)
    want, _ = sf.read(path, dtype="float32")
    got = load_audio(path)
    assert got.dtype == np.float32
    assert np.array_equal(got, want)


@pytest.mark.parametrize(
    ("subtype", "rate", "channels", "kept_as"),
    [
        ("PCM_16", SAMPLE_RATE, 1, np.int16),  # the one case kept as integers
        ("PCM_16", 44100, 1, np.float32),  # resampled
        ("PCM_16", SAMPLE_RATE, 2, np.float32),  # downmixed
        ("PCM_24", SAMPLE_RATE, 1, np.float32),
        ("FLOAT", SAMPLE_RATE, 1, np.float32),
    ],
)
def test_load_samples_keeps_16_bit_pcm_and_gives_load_audio_floats(
    subtype: str, rate: int, channels: int, kept_as: type, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32768, (4000, channels), dtype=np.int64).astype(np.int16)
    pcm[:2, 0] = (-32768, 32767)
    path = tmp_path / f"x_{subtype}_{rate}_{channels}.wav"
    sf.write(path, pcm, rate, subtype=subtype)
    kept = load_samples(path)
    assert kept.dtype == kept_as
    assert np.array_equal(to_float32(kept), load_audio(path))
    assert np.array_equal(load_samples(path.read_bytes()), kept)


def test_stack_padded_scales_int16_rows_like_to_float32() -> None:
    rng = np.random.default_rng(4)
    pcm = rng.integers(-32768, 32768, 50, dtype=np.int64).astype(np.int16)
    floats = rng.standard_normal(30).astype(np.float32)
    batch = stack_padded([pcm, floats, pcm[:0]])
    assert batch.dtype == np.float32 and batch.shape == (3, 50)
    assert np.array_equal(batch[0], to_float32(pcm))
    assert np.array_equal(batch[1, :30], floats) and not batch[1, 30:].any()
    assert not batch[2].any()
    assert np.array_equal(stack_padded([pcm])[0], to_float32(pcm))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_single_non_finite_sample_is_found(bad: float) -> None:
    """The finite check looks at the max and the min only: one Inf, -Inf or NaN anywhere must
    still show (NaN propagates through both)."""
    x = np.linspace(-0.5, 0.5, 999, dtype=np.float32)
    x[500] = bad
    with pytest.warns(UserWarning, match="1 non-finite"):
        got = load_audio(x)
    assert got[500] == 0 and np.all(np.isfinite(got))


# --- plain 16 kHz mono PCM16 WAV files are mapped, not decoded ------------------------------


def _pcm16(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, n, dtype=np.int64).astype(np.int16)


def _with_trailing_chunk(path: Path) -> None:
    """Append a LIST chunk after the data chunk (as some editors write) and fix RIFF's size."""
    data = bytearray(path.read_bytes()) + b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_plain_pcm16_wav_is_a_read_only_view_of_the_file(tmp_path: Path) -> None:
    import mmap

    pcm = _pcm16(32003)
    path = tmp_path / "plain.wav"
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
    got = _no_warnings(load_samples, path)
    assert got.dtype == np.int16 and np.array_equal(got, pcm)
    assert isinstance(got.base, memoryview) and isinstance(got.base.obj, mmap.mmap)
    assert not got.flags.writeable
    assert np.array_equal(load_audio(path), to_float32(pcm))
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 1


@pytest.mark.parametrize(
    "kind", ["stereo", "8k", "float", "pcm24", "trailing_chunk", "extensible", "not_mapped"]
)
def test_other_wavs_are_decoded_with_the_same_samples(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything but a plain mono 16-bit 16 kHz WAV whose data chunk ends the file goes through
    libsndfile, and gives what it gave before; with mapping off (non-POSIX) a plain file too."""
    from budgie import audio

    pcm = _pcm16(16001, seed=1)
    path = tmp_path / f"{kind}.wav"
    channels = np.stack([pcm, pcm[::-1]], axis=1) if kind == "stereo" else pcm
    rate = 8000 if kind == "8k" else SAMPLE_RATE
    subtype = {"float": "FLOAT", "pcm24": "PCM_24"}.get(kind, "PCM_16")
    fmt = "WAVEX" if kind == "extensible" else "WAV"
    sf.write(path, channels, rate, subtype=subtype, format=fmt)
    if kind == "trailing_chunk":
        _with_trailing_chunk(path)
    if kind == "not_mapped":
        monkeypatch.setattr(audio, "MAP_WAVS", False)
    got = _no_warnings(load_audio, path)
    monkeypatch.setattr(audio, "MAP_WAVS", False)
    assert np.array_equal(got, _no_warnings(load_audio, io.BytesIO(path.read_bytes()).read()))
    samples = load_samples(path)
    assert samples.flags.writeable  # decoded into memory of its own
    if kind in ("trailing_chunk", "not_mapped", "extensible"):
        assert np.array_equal(samples, pcm)


def test_plain_pcm16_layout_parsing() -> None:
    from budgie.audio import _plain_pcm16_wav

    def header(tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16) -> bytes:
        fmt = (tag).to_bytes(2, "little") + channels.to_bytes(2, "little")
        fmt += rate.to_bytes(4, "little") + (rate * 2).to_bytes(4, "little")
        fmt += (2).to_bytes(2, "little") + bits.to_bytes(2, "little")
        return b"fmt " + (16).to_bytes(4, "little") + fmt

    def wav(*chunks: bytes) -> bytes:
        body = b"WAVE" + b"".join(chunks)
        return b"RIFF" + len(body).to_bytes(4, "little") + body

    data = b"data" + (10).to_bytes(4, "little") + bytes(10)
    junk = b"JUNK" + (3).to_bytes(4, "little") + b"abc" + b"\0"  # odd size: padded
    assert _plain_pcm16_wav(wav(header(), data)) == (44, 5)
    assert _plain_pcm16_wav(wav(junk, header(), data)) == (56, 5)
    for bad in (header(tag=3), header(channels=2), header(rate=8000), header(bits=24)):
        assert _plain_pcm16_wav(wav(bad, data)) is None
    unknown = b"data" + (0xFFFFFFFF).to_bytes(4, "little")
    assert _plain_pcm16_wav(wav(header(), unknown)) is None
    assert _plain_pcm16_wav(wav(data, header())) is None  # data before fmt: not plain
    assert _plain_pcm16_wav(b"RIFX" + wav(header(), data)[4:]) is None


def test_a_file_system_without_mapping_falls_back_to_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from budgie import audio

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(19, "No such device")

    pcm = _pcm16(8000, seed=2)
    path = tmp_path / "plain.wav"
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
    monkeypatch.setattr(audio.mmap, "mmap", refuse)
    got = _no_warnings(load_samples, path)
    assert np.array_equal(got, pcm) and got.flags.writeable
