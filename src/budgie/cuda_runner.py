"""The CUDA execution path: graph-captured encoder per shape bucket, graph-replayed decoding.

Why: at batch 1 a 24-layer encoder issues about a thousand small kernels; launched one by one
from Python they cost more than the arithmetic. A CUDA graph per (batch, length bucket)
replays them with one launch. Lengths are rounded up to a bucket (padding is masked, so results
do not depend on the bucket) to keep the number of graphs small. Decoding replays a graph of
``STEPS_PER_GRAPH`` decoder steps (gpu_decoding.py) until every row is done.

Graphs are captured lazily, the second time a shape bucket is seen (the first call runs eagerly,
so a one-off transcript never pays for a capture), and kept for the life of the model. A batch
then decodes in one launch of a persistent kernel, no graph: in bf16/fp16 up to 8 rows the CUDA
C++ one that keeps the decoder's weights in shared memory (cuda_loop.py; from the first use
once compiled), else (float32, or where it cannot build) up to 4 rows the Triton one
(triton_loop.py). Up to ``TRITON_MAX_BATCH``
rows the captured decoder step is the Triton one (triton_decoding.py), and larger batches are
decoded in slices of that many rows. In bf16/fp16 the captured encoder layers run with
Triton-fused elementwise kernels (triton_encoder.py; float32 keeps the eager layers).

torch.compile is opt-in (``BUDGIE_COMPILE=encoder,decoder`` or ``all``: one conformer layer and
the torch decoder step, before capture): it stalls the capturing call 15-30 s on the device
hosts, and the fused layers measured as fast on the encoder.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from budgie.audio import stack_padded, to_float32
from budgie.cuda_frontend import FILL_THREADS, FrontendGraph, PinnedStaging, capture_graph
from budgie.decoding import Hypothesis
from budgie.encoder import (
    ConformerLayer,
    FusedSubsampling,
    LayerRunner,
    keep_position_bias_eager,
)
from budgie.gpu_decoding import (
    GraphedStepDecoder,
    StepDecoder,
    decode_with_steps,
    unchecked_replays,
)
from budgie.model import ParakeetTDT

# Feature frames per length bucket: 16 encoder frames (1.28 s) at 8x subsampling.
FEATURE_BUCKET = 128
# Decoder machines hold this many encoder frames at a time (40 s); longer inputs get a larger one.
DECODER_FRAMES = 512
# Up to this batch the decoder step runs as Triton kernels (triton_decoding.py). Speech-like
# step times on an H100 in bf16 (benchmarks/results/gpu_decoder_micro_h100_2026-11-24_select.json),
# Triton vs the graphed torch step: 14 vs 117 us at batch 1, 61 vs 134 at 8, 54 vs 184 at 16,
# 111 vs 186 at 32, 189 vs 223 at 64; the torch.compile'd step (BUDGIE_COMPILE=decoder) took
# 49, 73, 109, 109 at 1, 8, 16, 32 (gpu_decoder_micro_h100_2026-11-24.json), so with it Triton
# stops at TRITON_MAX_BATCH_COMPILED.
TRITON_MAX_BATCH = 64
TRITON_MAX_BATCH_COMPILED = 8
# A batch of more rows than that is decoded in slices of TRITON_MAX_BATCH rows, each on a Triton
# machine, when Triton is there and the torch step is not compiled: rows decode independently,
# so the hypotheses are the same, and a 128-row torch step costs more than two 64-row Triton
# ones (160 files at batch 128 on an H100: median wall 377.6 vs 462.5 ms over 8 alternating
# passes, benchmarks/results/gpu_throughput_timeline_h100_2026-11-25_split_large_batches_ab.json;
# False: one torch-step machine for the whole batch, for A/B runs).
SPLIT_LARGE_BATCHES = True
# A shape's first decode replays the torch step from a graph captured on the spot, not its ~50
# kernels per step eagerly: a capture costs ~20 eager steps, a decode takes 100-400 steps.
GRAPH_FIRST_DECODE = True
# Inputs shorter than this many encoder frames do not update the steps-per-frame estimate.
MIN_FRAMES_FOR_RATE = 32
# Batch sizes are rounded up to these (extra rows have length 0 and are ignored).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket_batch(batch: int) -> int:
    return next((b for b in BATCH_BUCKETS if b >= batch), batch)


def bucket_frames(frames: int) -> int:
    return max(FEATURE_BUCKET, -(-frames // FEATURE_BUCKET) * FEATURE_BUCKET)


def samples_bucket(num_samples: int, hop: int) -> int:
    """Samples per frontend bucket: the STFT (center=True) of S samples has S // hop + 1
    frames, so S = K * hop - 1 gives exactly K = an encoder bucket's feature frames."""
    return bucket_frames(num_samples // hop + 1) * hop - 1


def compile_targets(setting: str) -> set[str]:
    """BUDGIE_COMPILE's value -> the parts to torch.compile: "encoder", "decoder" or both
    ("1", "all"); "", "0" or anything else: none."""
    parts = {part.strip().lower() for part in setting.split(",")}
    if parts & {"1", "all", "true"}:
        return {"encoder", "decoder"}
    return parts & {"encoder", "decoder"}


def _triton_part(module: str, name: str) -> object | None:
    """``name`` from one of the Triton modules, or None without triton (CPU-only installs) or
    with BUDGIE_TRITON=0."""
    if os.environ.get("BUDGIE_TRITON", "1") == "0":
        return None
    try:
        return cast(object, getattr(importlib.import_module(module), name))
    except ImportError:
        return None


_UNRESOLVED = object()  # a Triton class not looked up yet


def triton_step_decoder() -> type[StepDecoder] | None:
    """The Triton step machine (triton_decoding.py), when Triton is there and allowed."""
    return cast(
        "type[StepDecoder] | None", _triton_part("budgie.triton_decoding", "TritonStepDecoder")
    )


def loop_decoder() -> type[StepDecoder] | None:
    """The one-launch decode machine (triton_loop.py), when Triton is there and allowed."""
    return cast("type[StepDecoder] | None", _triton_part("budgie.triton_loop", "LoopDecoder"))


def kernel_loop_decoder() -> type[StepDecoder] | None:
    """The shared-memory CUDA kernel machine (cuda_loop.py; it needs no Triton), unless
    BUDGIE_CUDA_KERNEL=0."""
    if os.environ.get("BUDGIE_CUDA_KERNEL", "1") == "0":
        return None
    from budgie.cuda_loop import KernelLoopDecoder

    return KernelLoopDecoder


def fused_layer_runner(network: ParakeetTDT) -> LayerRunner | None:
    """The Triton-fused layer (triton_encoder.py) for 16-bit encoder weights; None in float32
    (kept exactly eager), or when Triton is missing or not allowed."""
    if network.encoder.matmul_dtype == torch.float32:
        return None
    return cast("LayerRunner | None", _triton_part("budgie.triton_encoder", "fused_layer"))


def fused_subsampling(network: ParakeetTDT) -> FusedSubsampling | None:
    """The fused subsampling kernels (triton_subsampling.py) for 16-bit encoder weights; None
    in float32 or without Triton, as for the fused layers."""
    if network.encoder.matmul_dtype == torch.float32:
        return None
    part = _triton_part("budgie.triton_subsampling", "fused_stages")
    return cast("FusedSubsampling | None", part)


def compiled_layer_runner() -> LayerRunner:
    """One Inductor-compiled conformer layer for every layer and length (dynamic shapes):
    the ~60 small kernels of a layer become ~20, which is what bounds a layer at small batch.
    Parameters are graph inputs, so the 24 layers share one compilation."""

    keep_position_bias_eager()

    def run_layer(
        layer: ConformerLayer, x: Tensor, positions: Tensor, valid: Tensor | None
    ) -> Tensor:
        out: Tensor = layer(x, positions, valid)
        return out

    return cast(LayerRunner, torch.compile(run_layer, dynamic=True))


class _EncoderGraph:
    def __init__(
        self,
        network: ParakeetTDT,
        batch: int,
        frames: int,
        run_layer: LayerRunner | None,
        subsampling: FusedSubsampling | None = None,
    ) -> None:
        cfg = network.cfg
        device = next(network.parameters()).device
        self.features = torch.zeros(batch, cfg.preprocessor.features, frames, device=device)
        self.lengths = torch.full((batch,), frames, device=device, dtype=torch.long)
        self.graph = torch.cuda.CUDAGraph()

        def encode() -> None:
            self.out, self.out_lengths = network.encoder(
                self.features, self.lengths, True, run_layer, subsampling
            )

        capture_graph(self.graph, encode)

    def run(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Features of the graph's shape (the frontend's buckets match the encoder's) are
        copied whole; smaller ones into zeros."""
        b, _, t = features.shape
        if features.shape != self.features.shape:
            self.features.zero_()
        self.features[:b, :, :t].copy_(features)
        if b != self.lengths.shape[0]:
            self.lengths.zero_()
        self.lengths[:b].copy_(lengths)
        self.graph.replay()
        return self.out[:b], self.out_lengths[:b]


@dataclass
class Staged:
    """A batch's samples on the host side of the frontend: packed into pinned memory for the
    shape's graph, or (first use of a shape) the rows as they are."""

    rows: list[np.ndarray]
    graph: FrontendGraph | None
    padded: Tensor | None


class CudaRunner:
    """Owns the graphs of one model on one GPU."""

    def __init__(
        self,
        network: ParakeetTDT,
        use_graphs: bool = True,
        compile_decoder: bool | None = None,
        compile_encoder: bool | None = None,
    ) -> None:
        self.network = network
        self.use_graphs = use_graphs
        wanted = compile_targets(os.environ.get("BUDGIE_COMPILE", ""))
        if compile_decoder is None:
            compile_decoder = "decoder" in wanted
        if compile_encoder is None:
            compile_encoder = "encoder" in wanted
        self.compile_decoder = compile_decoder
        self.compile_encoder = compile_encoder
        # The Triton decoder classes, looked up when a shape's graphs are first due: importing
        # Triton took 0.3-0.6 s on the device hosts (`python3 -c "import torch, time;
        # t = time.perf_counter(); import triton; print(time.perf_counter() - t)"`), and a
        # process's first transcript runs eagerly without it (set them to None or another
        # class to choose).
        self._triton_decoder: type[StepDecoder] | object | None = _UNRESOLVED
        self._loop_decoder: type[StepDecoder] | object | None = _UNRESOLVED
        self._kernel_decoder: type[StepDecoder] | object | None = _UNRESOLVED
        self.fused_encoder = True  # Triton-fused layers in 16-bit when available
        self.fused_subsampling = True  # and the fused subsampling kernels with them
        self._layer_runner: LayerRunner | None = None
        self._frontends: dict[tuple[int, int, torch.dtype], FrontendGraph] = {}
        self._staging = PinnedStaging()
        self._fill_pool: ThreadPoolExecutor | None = None
        self._encoders: dict[tuple[int, int], _EncoderGraph] = {}
        self._decoders: dict[tuple[int, int], tuple[StepDecoder, GraphedStepDecoder | None]] = {}
        self._final_decoders: set[tuple[int, int]] = set()  # built for repeated use
        self._host_lengths: Tensor | None = None  # pinned, for the decoded lengths
        self._uses: dict[tuple[str, int, int], int] = {}
        self._compiling: object | None = None  # the CUDA decode kernel's compile, started early
        if use_graphs and self.kernel_decoder is not None:  # (16-bit weights on CUDA only)
            from budgie.cuda_loop import compile_in_background, joint_sizes

            device = next(network.parameters()).device
            dtype, sizes = network.encoder.matmul_dtype, joint_sizes(network)
            self._compiling = compile_in_background(device, dtype, sizes)
        # Decoder steps per encoder frame, a low running estimate (see unchecked_replays):
        # starts at 1/4, the bound the largest duration (4 frames per step) gives.
        self._steps_per_frame = 0.25

    @property
    def triton_decoder(self) -> type[StepDecoder] | None:
        """The Triton step machine class (None: not available or not wanted)."""
        if self._triton_decoder is _UNRESOLVED:
            self._triton_decoder = triton_step_decoder()
        return cast("type[StepDecoder] | None", self._triton_decoder)

    @triton_decoder.setter
    def triton_decoder(self, machine: type[StepDecoder] | None) -> None:
        self._triton_decoder = machine

    @property
    def loop_decoder(self) -> type[StepDecoder] | None:
        """The one-launch loop machine class (None: not available or not wanted)."""
        if self._loop_decoder is _UNRESOLVED:
            self._loop_decoder = loop_decoder()
        return cast("type[StepDecoder] | None", self._loop_decoder)

    @loop_decoder.setter
    def loop_decoder(self, machine: type[StepDecoder] | None) -> None:
        self._loop_decoder = machine

    @property
    def kernel_decoder(self) -> type[StepDecoder] | None:
        """The shared-memory CUDA kernel machine class (None: not available or not wanted)."""
        if self._kernel_decoder is _UNRESOLVED:
            self._kernel_decoder = kernel_loop_decoder()
        return cast("type[StepDecoder] | None", self._kernel_decoder)

    @kernel_decoder.setter
    def kernel_decoder(self, machine: type[StepDecoder] | None) -> None:
        self._kernel_decoder = machine

    def _graph_now(self, kind: str, key: tuple[int, int]) -> bool:
        """True from the second use of a shape on: one-off shapes stay eager."""
        counter = (kind, key[0], key[1])
        uses = self._uses[counter] = self._uses.get(counter, 0) + 1
        return self.use_graphs and uses >= 2

    def preprocess(self, rows: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Host waveforms (one array per input: float32, or int16 PCM as audio.load_samples
        keeps it) -> features and lengths on the GPU."""
        return self.launch(self.stage(rows))

    def stage(self, rows: list[np.ndarray]) -> Staged:
        """The host's part of ``preprocess``: a batch of int16 rows is packed as int16 (half
        the bytes), a mixed batch as float32, into pinned memory when the shape's frontend
        graph exists. Safe while the GPU still runs an earlier batch (the pinned buffer is
        refilled only after its last copy): throughput runs stage the next batch then."""
        net = self.network
        hop = net.cfg.preprocessor.hop_length
        longest = max(1, *(len(r) for r in rows))
        pcm16 = all(r.dtype == np.int16 for r in rows)
        if not pcm16:
            rows = [to_float32(r) for r in rows]
        shape = (bucket_batch(len(rows)), samples_bucket(longest, hop))
        key = (*shape, torch.int16 if pcm16 else torch.float32)
        graph = self._frontends.get(key)
        if graph is None and self._graph_now("frontend_pcm16" if pcm16 else "frontend", shape):
            graph = self._frontends[key] = FrontendGraph(net, *key)
        if graph is None:
            return Staged(rows, None, None)
        if self._fill_pool is None and len(rows) > 1:
            self._fill_pool = ThreadPoolExecutor(FILL_THREADS, "budgie-stage")
        return Staged(rows, graph, graph.pack(rows, self._staging, self._fill_pool))

    def launch(self, staged: Staged) -> tuple[Tensor, Tensor]:
        """A staged batch's copy to the GPU and frontend (eager on a shape's first use)."""
        if staged.graph is not None and staged.padded is not None:
            return staged.graph.launch(staged.padded, staged.rows, self._staging)
        net = self.network
        device = next(net.parameters()).device
        audio = torch.from_numpy(stack_padded(staged.rows)).to(device)
        num_samples = torch.tensor([len(r) for r in staged.rows], device=device)
        features, lengths = net.preprocessor(audio, num_samples)
        return features, lengths

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        net = self.network
        key = (bucket_batch(features.shape[0]), bucket_frames(features.shape[2]))
        graph = self._encoders.get(key)
        if graph is None and self._graph_now("encoder", key):
            if self.compile_encoder and self._layer_runner is None:
                # Layers only: the subsampling compiled with dynamic shapes measured 3-10x
                # slower (fused mask/ReLU kernels) than cuDNN + eager ops on an H100.
                self._layer_runner = compiled_layer_runner()
            elif self._layer_runner is None and self.fused_encoder:
                self._layer_runner = fused_layer_runner(net)
            fuse = self.fused_subsampling and self.fused_encoder and not self.compile_encoder
            subsampling = fused_subsampling(net) if fuse else None
            try:
                graph = _EncoderGraph(net, *key, self._layer_runner, subsampling)
            except Exception as exc:  # e.g. Triton cannot build here: eager layers instead
                if self.compile_encoder or not self.fused_encoder:
                    raise
                warnings.warn(
                    f"fused encoder kernels unavailable here, using eager layers: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.fused_encoder, self._layer_runner = False, None
                graph = _EncoderGraph(net, *key, None)
            self._encoders[key] = graph
        if graph is None:
            encoded, enc_lengths = net.encoder(features, lengths)
            return encoded, enc_lengths
        return graph.run(features, lengths)

    def _splits_large_batches(self) -> bool:
        """Whether batches over TRITON_MAX_BATCH rows are decoded in slices (see the setting)."""
        return SPLIT_LARGE_BATCHES and not self.compile_decoder and self.triton_decoder is not None

    def _decoder_machine(
        self, batch: int, frames: int, device: torch.device, graphed: bool
    ) -> tuple[StepDecoder, GraphedStepDecoder | None]:
        """A step machine for (batch, frames): when graphs are due, a one-launch machine (no
        graph) up to its max_batch (the shared-memory CUDA kernel for 16-bit weights, else the
        Triton loop), then the Triton one in a graph up to TRITON_MAX_BATCH
        (TRITON_MAX_BATCH_COMPILED when the torch step is compiled), else the torch one
        (graphed; compiled when asked). For a shape's first use, the torch step, in a graph
        on CUDA (GRAPH_FIRST_DECODE), unless the kernel machine builds without compiling
        (``ready_now``): long inputs, each a shape of its own, take thousands of steps."""
        net = self.network

        def one_launch(kind: type[StepDecoder]) -> Callable[[], tuple[StepDecoder, None]]:
            def build() -> tuple[StepDecoder, None]:
                machine = kind.for_network(net, batch, frames, device)
                machine.warm_up()
                return machine, None

            return build

        for attribute, what in (
            ("kernel_decoder", "shared-memory CUDA decoder"),
            ("loop_decoder", "one-launch Triton decoder"),
        ):
            if not graphed and attribute != "kernel_decoder":
                continue  # (looking the Triton loop up imports Triton; building it may compile)
            kind = getattr(self, attribute)
            if kind is None or batch > getattr(kind, "max_batch", 0) or not kind.supports(net):
                continue
            if not graphed and not kind.ready_now(net, batch, device):
                continue  # a shape's first use waits for no compiler
            built = self._try_build(attribute, what, one_launch(kind))
            if built is not None:
                return built
        limit = TRITON_MAX_BATCH_COMPILED if self.compile_decoder else TRITON_MAX_BATCH
        step = self.triton_decoder if graphed else None
        if graphed and step is not None and batch <= limit:

            def graphed_steps() -> tuple[StepDecoder, GraphedStepDecoder]:
                machine = step.for_network(net, batch, frames, device)
                return machine, GraphedStepDecoder(machine, False)

            built = self._try_build("triton_decoder", "Triton decoder step", graphed_steps)
            if built is not None:
                return built
        machine = StepDecoder.for_network(net, batch, frames, device)
        if graphed:
            return machine, GraphedStepDecoder(machine, self.compile_decoder)
        if GRAPH_FIRST_DECODE and self.use_graphs and device.type == "cuda":
            return machine, GraphedStepDecoder(machine, False)  # a one-off: not compiled
        return machine, None

    def _try_build(
        self,
        attribute: str,
        what: str,
        build: Callable[[], tuple[StepDecoder, GraphedStepDecoder | None]],
    ) -> tuple[StepDecoder, GraphedStepDecoder | None] | None:
        """``build()``, or None with one warning when it fails (e.g. Triton or NVRTC cannot
        compile for this GPU); the machine kind in ``attribute`` is then not tried again."""
        try:
            return build()
        except Exception as exc:
            warnings.warn(
                f"{what} unavailable here, falling back: {exc}", RuntimeWarning, stacklevel=4
            )
            setattr(self, attribute, None)
            return None

    def _queue_to_host(self, lengths: Tensor) -> Tensor | None:
        """CUDA lengths copied into reusable pinned memory behind the work queued so far (no
        wait here; read them after the stream is synchronized); None off CUDA."""
        if not lengths.is_cuda:
            return None
        n = lengths.numel()
        if self._host_lengths is None or self._host_lengths.numel() < n:
            self._host_lengths = torch.empty(max(n, 64), dtype=torch.long, pin_memory=True)
        out = self._host_lengths[:n]
        out.copy_(lengths, non_blocking=True)
        return out

    def decode(self, encoded: Tensor, lengths: Tensor) -> list[Hypothesis]:
        rows = encoded.shape[0]
        if rows > TRITON_MAX_BATCH and self._splits_large_batches():
            return [
                hyp
                for start in range(0, rows, TRITON_MAX_BATCH)
                for hyp in self.decode(
                    encoded[start : start + TRITON_MAX_BATCH],
                    lengths[start : start + TRITON_MAX_BATCH],
                )
            ]
        batch = bucket_batch(rows)
        frames = -(-encoded.shape[1] // DECODER_FRAMES) * DECODER_FRAMES
        key = (batch, frames)
        machine, graphed = self._decoders.get(key, (None, None))
        repeated = self._graph_now("decoder", key)
        if machine is None or (repeated and key not in self._final_decoders):
            machine, graphed = self._decoder_machine(batch, frames, encoded.device, repeated)
            self._decoders[key] = (machine, graphed)
            if repeated or machine.runs_to_end:  # (a one-launch machine is kept from the first)
                self._final_decoders.add(key)
        enc_proj = self.network.joint.project_encoder(encoded.float())
        if machine.runs_to_end:  # launched before the lengths come to the host: no idle wait
            host_lengths = self._queue_to_host(lengths)
            hyps = decode_with_steps(machine, enc_proj, lengths, graphed)
            # (the hypotheses waited for the stream, the lengths' copy included)
            lengths_list = (host_lengths if host_lengths is not None else lengths).tolist()
        else:
            lengths_list = lengths.tolist()
            longest = max(lengths_list, default=0)
            replays = unchecked_replays(longest, self._steps_per_frame)
            hyps = decode_with_steps(machine, enc_proj, lengths, graphed, replays)
        for hyp, n in zip(hyps, lengths_list, strict=True):
            if n >= MIN_FRAMES_FOR_RATE:  # learn a low estimate of steps per frame
                ratio = hyp.steps / n
                self._steps_per_frame = min(ratio, 0.9 * self._steps_per_frame + 0.1 * ratio)
        return hyps
