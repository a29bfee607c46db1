"""The CUDA execution path: graph-captured encoder per shape bucket, graph-replayed decoding.

Why: at batch 1 a 24-layer encoder issues about a thousand small kernels; launched one by one
from Python they cost more than the arithmetic. A CUDA graph per (batch, length bucket)
replays them with one launch. Lengths are rounded up to a bucket (padding is masked, so results
do not depend on the bucket) to keep the number of graphs small. Decoding replays a graph of
``STEPS_PER_GRAPH`` decoder steps (gpu_decoding.py) until every row is done.

Graphs are captured lazily, the second time a shape bucket is seen (the first call runs eagerly,
so a one-off transcript never pays for a capture), and kept for the life of the model. With
``BUDGIE_COMPILE`` unset or 1 the decoder step is fused by torch.compile before capture: about
10-20 s once per shape and machine (Inductor caches its kernels on disk); BUDGIE_COMPILE=0 skips
it. A warm-up pass over representative lengths moves these costs out of measured runs.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from budgie.decoding import Hypothesis
from budgie.gpu_decoding import GraphedStepDecoder, StepDecoder, decode_with_steps
from budgie.model import ParakeetTDT

# Feature frames per length bucket: 16 encoder frames (1.28 s) at 8x subsampling.
FEATURE_BUCKET = 128
# Decoder machines hold this many encoder frames at a time (40 s); longer inputs get a larger one.
DECODER_FRAMES = 512
# Batch sizes are rounded up to these (extra rows have length 0 and are ignored).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket_batch(batch: int) -> int:
    return next((b for b in BATCH_BUCKETS if b >= batch), batch)


def bucket_frames(frames: int) -> int:
    return max(FEATURE_BUCKET, -(-frames // FEATURE_BUCKET) * FEATURE_BUCKET)


class _EncoderGraph:
    def __init__(self, network: ParakeetTDT, batch: int, frames: int) -> None:
        cfg = network.cfg
        device = next(network.parameters()).device
        self.features = torch.zeros(batch, cfg.preprocessor.features, frames, device=device)
        self.lengths = torch.full((batch,), frames, device=device, dtype=torch.long)
        encoder = network.encoder
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            encoder(self.features, self.lengths, always_mask=True)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.out, self.out_lengths = encoder(self.features, self.lengths, always_mask=True)

    def run(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        b, _, t = features.shape
        self.features.zero_()
        self.features[:b, :, :t].copy_(features)
        self.lengths.zero_()
        self.lengths[:b].copy_(lengths)
        self.graph.replay()
        return self.out[:b], self.out_lengths[:b]


class CudaRunner:
    """Owns the graphs of one model on one GPU."""

    def __init__(
        self, network: ParakeetTDT, use_graphs: bool = True, compile_decoder: bool | None = None
    ) -> None:
        self.network = network
        self.use_graphs = use_graphs
        if compile_decoder is None:
            compile_decoder = os.environ.get("BUDGIE_COMPILE", "1") != "0"
        self.compile_decoder = compile_decoder
        self._encoders: dict[tuple[int, int], _EncoderGraph] = {}
        self._decoders: dict[tuple[int, int], tuple[StepDecoder, GraphedStepDecoder | None]] = {}
        self._uses: dict[tuple[str, int, int], int] = {}

    def _graph_now(self, kind: str, key: tuple[int, int]) -> bool:
        """True from the second use of a shape on: one-off shapes stay eager."""
        counter = (kind, key[0], key[1])
        uses = self._uses[counter] = self._uses.get(counter, 0) + 1
        return self.use_graphs and uses >= 2

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        net = self.network
        key = (bucket_batch(features.shape[0]), bucket_frames(features.shape[2]))
        graph = self._encoders.get(key)
        if graph is None and self._graph_now("encoder", key):
            graph = self._encoders[key] = _EncoderGraph(net, *key)
        if graph is None:
            encoded, enc_lengths = net.encoder(features, lengths)
            return encoded, enc_lengths
        return graph.run(features, lengths)

    def decode(self, encoded: Tensor, lengths: Tensor) -> list[Hypothesis]:
        net = self.network
        enc_proj = net.joint.project_encoder(encoded.float())
        batch = bucket_batch(enc_proj.shape[0])
        frames = -(-enc_proj.shape[1] // DECODER_FRAMES) * DECODER_FRAMES
        key = (batch, frames)
        machine, graphed = self._decoders.get(key, (None, None))
        wants_graph = self._graph_now("decoder", key)
        if machine is None or (graphed is None and wants_graph):
            machine = StepDecoder.for_network(net, batch, frames, enc_proj.device)
            graphed = GraphedStepDecoder(machine, self.compile_decoder) if wants_graph else None
            self._decoders[key] = (machine, graphed)
        return decode_with_steps(machine, enc_proj, lengths, graphed)
