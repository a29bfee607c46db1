"""From audio inputs to Transcripts: batching, phase timing, error isolation.

``Model.transcribe`` is the one entry point. A list input is split into batches (sorted by
length when ``batch_size > 1`` so padding stays small, results returned in input order); each
input that fails (unreadable) becomes a ``TranscriptionError`` record and the others are still
transcribed; one too long for an encoder pass is cut into pieces (``budgie.long_audio``).
Phases: load_audio (per input), preprocess, encode and decode (per batch, shared by its
members), tokenize (per input); total is their sum for the input.

Three kinds of threads overlap: loader threads decode audio one window ahead, the calling thread
runs the model batch by batch, and one text thread turns a batch's hypotheses into Transcripts
while the next batch runs on the GPU (``budgie.batching``: the loading, and the order of work).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast, overload

import numpy as np
import torch

from budgie.audio import SAMPLE_RATE, describe_source, load_samples, stack_padded
from budgie.batching import LOAD_THREADS, Loaded, WindowedLoader
from budgie.config import ModelConfig
from budgie.cpu_decoding import CpuDecoder
from budgie.cuda_runner import CudaRunner, Staged
from budgie.decoding import Hypothesis, greedy_decode_batched, greedy_decode_single
from budgie.errors import AudioError, BudgieError
from budgie.limits import (
    FP16_OVERFLOW,
    OverflowCheck,
    fits_single_pass,
    max_single_pass_seconds,
    pieces_per_batch,
    too_long_message,
)
from budgie.long_audio import TooLong, cut_points, frame_samples, join, piece_length
from budgie.model import ParakeetTDT
from budgie.results import PhaseTimings, Transcript, TranscriptionError
from budgie.text import Tokenizer, build_text_and_timestamps
from budgie.timing import PhaseClock

AudioInput = str | os.PathLike[str] | bytes | np.ndarray
Result = Transcript | TranscriptionError
# Stage (pack) the next batch while the GPU encodes this one, when phases are not synced one
# by one (False: after this batch's decode, for A/B runs).
STAGE_AHEAD = True
ProgressCallback = Callable[[int], None]


@dataclass
class _Inferred:
    """What the model gives for a batch: hypotheses, encoder frames, batch phase times."""

    hyps: list[Hypothesis]
    frames: list[int]
    phase_ms: dict[str, float]
    overflowed: list[bool]  # rows whose fp16 encoder output is not finite (limits.py)


@dataclass
class _Staged:
    """A batch whose samples are on the host side of the frontend (CudaRunner.stage)."""

    batch: list[Loaded]
    clock: PhaseClock
    samples: Staged | None  # CudaRunner.stage's; None off CUDA


@dataclass
class _Started:
    """A batch whose frontend and encoder have been launched: what its decode needs."""

    batch: list[Loaded]
    clock: PhaseClock
    encoded: torch.Tensor
    lengths: torch.Tensor
    overflow: OverflowCheck | None  # fp16 on CUDA


class Model:
    """A loaded Parakeet TDT model, ready to transcribe. Build it with ``budgie.load_model``."""

    def __init__(
        self,
        network: ParakeetTDT,
        tokenizer: Tokenizer,
        device: torch.device,
        name: str = "",
        file_hash: str = "",
    ) -> None:
        self.network = network
        self.tokenizer = tokenizer
        self.device = device
        self.name = name
        self.file_hash = file_hash
        self.sync_phases = True
        self.cuda_runner = CudaRunner(network) if device.type == "cuda" else None
        # The fast CPU decode loop (budgie.cpu_decoding); set by load_model on the CPU and for
        # --decoder-device cpu. None: the decoders in budgie.decoding / the CUDA runner.
        self.cpu_decoder: CpuDecoder | None = None
        # load_model's CUDA warm-up (budgie.cuda_warmup) while it may still run: the first
        # transcribe waits for it, so load_model returns as soon as the weights are in place.
        self.warming: threading.Thread | None = None

    @property
    def config(self) -> ModelConfig:
        return self.network.cfg

    @property
    def dtype(self) -> torch.dtype:
        return self.network.encoder_dtype

    @overload
    def transcribe(  # type: ignore[overload-overlap]  # a str is also a Sequence
        self,
        audio: AudioInput,
        *,
        batch_size: int = ...,
        timestamps: bool = ...,
        confidence: bool = ...,
        progress: ProgressCallback | None = ...,
    ) -> Transcript: ...

    @overload
    def transcribe(
        self,
        audio: Sequence[AudioInput],
        *,
        batch_size: int = ...,
        timestamps: bool = ...,
        confidence: bool = ...,
        progress: ProgressCallback | None = ...,
    ) -> list[Result]: ...

    def transcribe(
        self,
        audio: AudioInput | Sequence[AudioInput],
        *,
        batch_size: int = 1,
        timestamps: bool = True,
        confidence: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Transcript | list[Result]:
        """Transcribe one input (raises ``BudgieError`` if it is unusable) or a list of them.

        For a list, failures do not stop the others: each one becomes a ``TranscriptionError``
        in its place. ``progress`` is called with the number of inputs finished so far.
        """
        if batch_size < 1:
            raise BudgieError(f"batch_size must be >= 1, got {batch_size}")
        if self.warming is not None:
            self.warming.join()
            self.warming = None
        single = isinstance(audio, (str, os.PathLike, bytes, np.ndarray))
        inputs: list[AudioInput] = (
            [cast(AudioInput, audio)] if single else list(cast(Sequence[AudioInput], audio))
        )
        results = self._run(inputs, batch_size, timestamps, confidence, progress)
        finished = sum(not isinstance(r, TooLong) for r in results)
        for i, result in enumerate(results):  # inputs too long for one pass, in pieces
            if isinstance(result, TooLong):
                results[i] = self._in_pieces(result, batch_size, timestamps, confidence)
                finished += 1
                if progress:
                    progress(finished)
        if single:
            result = results[0]
            if isinstance(result, TranscriptionError):
                raise AudioError(result.error)
            return result
        return results

    def _run(
        self,
        inputs: list[AudioInput],
        batch_size: int,
        timestamps: bool,
        confidence: bool,
        progress: ProgressCallback | None,
    ) -> list[Result]:
        """Loader threads decode audio a window ahead; the calling thread runs the model; one
        text thread turns each batch's hypotheses into Transcripts while the next batch runs."""
        results: list[Result | None] = [None] * len(inputs)
        done = 0
        finishing: deque[tuple[list[Loaded], Future[list[Result]]]] = deque()

        def settle(wait: bool) -> None:
            nonlocal done
            while finishing and (wait or finishing[0][1].done()):
                batch, future = finishing.popleft()
                for item, result in zip(batch, future.result(), strict=True):
                    results[item.index] = result
                done += len(batch)
                if progress:
                    progress(done)

        workers = min(LOAD_THREADS, max(1, len(inputs)))
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="budgie-load") as loaders,
            ThreadPoolExecutor(1, thread_name_prefix="budgie-text") as text,
        ):
            # A single input has nothing to overlap with: it is loaded and finished in the
            # calling thread, without threads to hand it over to and back from.
            single = len(inputs) == 1

            def hand_over(batch: list[Loaded], inferred: _Inferred) -> None:
                if single:
                    future: Future[list[Result]] = Future()
                    future.set_result(self._finish_batch(batch, inferred, timestamps))
                else:
                    future = text.submit(self._finish_batch, batch, inferred, timestamps)
                finishing.append((batch, future))
                settle(wait=False)

            def failed(error: TranscriptionError, index: int) -> None:
                nonlocal done
                results[index] = error
                done += not isinstance(error, TooLong)  # (done once its pieces are)

            # Unless phases are timed one by one, the next batch is staged (packed into pinned
            # memory) while the GPU encodes this one; a decoded batch goes to the text thread
            # only after that, and each window's loading waits until the previous window's first
            # batch has been staged (budgie.batching says why).
            look_ahead = STAGE_AHEAD and self.cuda_runner is not None and not self.sync_phases
            loader = WindowedLoader(
                inputs, batch_size, self._load_many, None if single else loaders, workers
            )
            queue = loader.batches(failed, hold_next=look_ahead)

            def following() -> _Staged | None:
                batch = next(queue, None)
                return None if batch is None else self._stage_batch(batch)

            decoded: tuple[list[Loaded], _Inferred] | None = None  # not handed over yet
            staged = following()
            while staged is not None:
                started = self._start_batch(staged)
                if look_ahead:
                    staged = following()
                if decoded is not None:
                    hand_over(*decoded)
                decoded = (started.batch, self._end_batch(started, confidence))
                if not look_ahead:
                    staged = following()
            if decoded is not None:
                hand_over(*decoded)
            settle(wait=True)
        return [r for r in results if r is not None]

    def _load_many(self, items: list[tuple[int, AudioInput]]) -> list[Loaded | TranscriptionError]:
        return [self._load_one(index, source) for index, source in items]

    def _load_one(self, index: int, source: AudioInput) -> Loaded | TranscriptionError:
        """Decode one input (runs in a loader thread; soundfile and soxr release the GIL)."""
        clock = PhaseClock(self.device, sync=False)
        try:
            with clock.phase("load_audio"):
                samples = load_samples(source)  # 16-bit PCM stays int16 (half the memory)
        except BudgieError as exc:
            return TranscriptionError(describe_source(source), str(exc))
        name = describe_source(source)
        if not fits_single_pass(self.config, len(samples), self.device):  # transcribe() cuts it
            message = too_long_message(self.config, len(samples), self.device)
            limit_s = max_single_pass_seconds(self.config, self.device)
            return TooLong(name, message, samples, clock.ms["load_audio"], limit_s)
        return Loaded(index, name, samples, clock.ms["load_audio"])

    def _in_pieces(
        self, whole: TooLong, batch_size: int, timestamps: bool, confidence: bool
    ) -> Result:
        """An input past the single-pass limit, cut at quiet points (budgie.long_audio) and
        transcribed as a batch of its pieces; refused when even a piece would not fit."""
        piece = piece_length(self.config, whole.limit_s, SAMPLE_RATE)
        if piece is None:
            return TranscriptionError(whole.source, whole.error)
        cuts = cut_points(whole.samples, piece, frame_samples(self.config))
        arrays: list[AudioInput] = [whole.samples[a:b] for a, b in itertools.pairwise(cuts)]
        rows = min(batch_size, pieces_per_batch(self.config, piece, self.device))
        pieces = self._run(arrays, max(1, rows), True, confidence, None)
        for start, result in zip(cuts[:-1], pieces, strict=True):
            if isinstance(result, TranscriptionError):
                at = f"the piece at {start / SAMPLE_RATE:.1f} s"
                return TranscriptionError(whole.source, f"{whole.source}: {at}: {result.error}")
        joined = join(
            [p for p in pieces if isinstance(p, Transcript)],
            cuts[:-1],
            self.tokenizer,
            self.config,
            whole,
            len(whole.samples) / SAMPLE_RATE,
        )
        if not timestamps:
            joined.words, joined.segments = [], []
        return joined

    def _stage_batch(self, batch: list[Loaded]) -> _Staged:
        """The host's part of a batch's preprocessing (CudaRunner.stage; nothing elsewhere)."""
        clock = PhaseClock(self.device, sync=self.sync_phases)
        if self.cuda_runner is None:
            return _Staged(batch, clock, None)
        with clock.phase("preprocess"):
            staged = self.cuda_runner.stage([item.samples for item in batch])
        return _Staged(batch, clock, staged)

    @torch.inference_mode()
    def _start_batch(self, staged: _Staged) -> _Started:
        """Frontend and encoder of a staged batch: on CUDA launched, maybe not finished."""
        batch, clock = staged.batch, staged.clock
        with clock.phase("preprocess"):
            if staged.samples is not None and self.cuda_runner is not None:
                features, feature_lengths = self.cuda_runner.launch(staged.samples)
            else:
                features, feature_lengths = self._preprocess_rows([i.samples for i in batch])
        with clock.phase("encode"):
            encoded, enc_lengths = self._encode(features, feature_lengths)
            overflow = None
            if self.dtype == torch.float16 and encoded.is_cuda:
                overflow = OverflowCheck(encoded, enc_lengths)
        return _Started(batch, clock, encoded, enc_lengths, overflow)

    @torch.inference_mode()
    def _end_batch(self, started: _Started, confidence: bool) -> _Inferred:
        clock = started.clock
        with clock.phase("decode"):
            hyps = self._decode(started.encoded, started.lengths, confidence)
            frames = started.lengths.tolist()
        overflow = started.overflow
        overflowed = overflow.rows() if overflow is not None else [False] * len(hyps)
        return _Inferred(hyps, frames, dict(clock.ms), overflowed)

    def _finish_batch(
        self, batch: list[Loaded], inferred: _Inferred, timestamps: bool
    ) -> list[Result]:
        """Hypotheses -> Transcripts (text, timestamps, timings); runs in the text thread."""
        phase_ms = inferred.phase_ms
        out: list[Result] = []
        for item, hyp, n_frames, overflowed in zip(
            batch, inferred.hyps, inferred.frames, inferred.overflowed, strict=True
        ):
            if overflowed:
                out.append(TranscriptionError(item.source, f"{item.source}: {FP16_OVERFLOW}"))
                continue
            tclock = PhaseClock(self.device, sync=False)
            with tclock.phase("tokenize"):
                text, tokens, words, segments = build_text_and_timestamps(
                    self.tokenizer,
                    hyp.token_ids,
                    hyp.frames,
                    hyp.durations,
                    hyp.confidences,
                    self.config.frame_shift_s,
                )
            timings = PhaseTimings(
                load_audio_ms=item.load_ms,
                preprocess_ms=phase_ms["preprocess"],
                encode_ms=phase_ms["encode"],
                decode_ms=phase_ms["decode"],
                tokenize_ms=tclock.ms["tokenize"],
            )
            timings.total_ms = timings.phases_ms()
            out.append(
                Transcript(
                    text=text,
                    tokens=tokens,
                    words=words if timestamps else [],
                    segments=segments if timestamps else [],
                    duration_s=len(item.samples) / SAMPLE_RATE,
                    timings=timings,
                    decoder_steps=hyp.steps,
                    encoder_frames=int(n_frames),
                    batch_size=len(batch),
                    source=item.source,
                )
            )
        return out

    def _preprocess_rows(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's waveforms -> features; on CUDA straight into the frontend's graph inputs."""
        if self.cuda_runner is not None:
            return self.cuda_runner.preprocess(rows)
        audio = torch.from_numpy(stack_padded(rows))
        return self._preprocess(audio, torch.tensor([len(r) for r in rows]))

    def _preprocess(
        self, audio: torch.Tensor, num_samples: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Host waveforms [B, N] -> log-mel features and lengths on the model's device (a
        backend hook, like ``_encode``)."""
        device = self.device
        features, lengths = self.network.preprocessor(audio.to(device), num_samples.to(device))
        return features, lengths

    def _encode(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features -> float32 encoder output [B, T, D] and frame counts (ONNX overrides it)."""
        net = self.network
        if self.cuda_runner is not None:
            encoded, enc_lengths = self.cuda_runner.encode(features, lengths)
        else:
            encoded, enc_lengths = net.encoder(features, lengths)
        return encoded.float(), enc_lengths

    def _decode(
        self, encoded: torch.Tensor, lengths: torch.Tensor, confidence: bool
    ) -> list[Hypothesis]:
        if self.cpu_decoder is not None:
            return self.cpu_decoder.decode(encoded, lengths, confidence)
        net = self.network
        if self.cuda_runner is not None and not confidence:
            return self.cuda_runner.decode(encoded, lengths)
        durations, max_symbols = net.cfg.decoding.durations, net.cfg.decoding.max_symbols
        if encoded.shape[0] == 1 or self.device.type == "cpu":
            # On the CPU a plain loop per utterance beats tensor bookkeeping for the batch.
            return [
                greedy_decode_single(
                    net.decoder,
                    net.joint,
                    encoded[row, : int(n)],
                    durations,
                    max_symbols,
                    confidence,
                )
                for row, n in enumerate(lengths.tolist())
            ]
        return greedy_decode_batched(
            net.decoder, net.joint, encoded, lengths, durations, max_symbols, confidence
        )
