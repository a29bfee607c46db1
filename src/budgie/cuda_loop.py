"""A whole batch's TDT greedy decode in one launch of a CUDA C++ kernel that keeps the
prediction network's and the joint's weights in shared memory (kernels/tdt_loop.cu).

Why: the Triton loop kernel (triton_loop.py) already decodes in one launch, but each of an
emitting step's four phases re-reads its programs' weight tiles from L2 (~80 KB per program
per phase): a phase took ~4.5 us, of which a grid barrier is ~1 us
(benchmarks/results/gpu_barrier_micro_*.json), so an emitting step cost ~18 us. A block of this
kernel copies its share of the 16-bit weights (~93 KB for parakeet-tdt-0.6b-v2 over 129 blocks)
into shared memory once per launch, and a phase then only reads its input vector from L2.
Triton has no way to keep data in shared memory across a loop, hence CUDA C++, compiled at run
time with NVRTC (cuda_driver.py) and cached on disk.

The split (``Partition``): block p holds hidden units [p*U, (p+1)*U) of every LSTM layer (their
four gate rows, so the cell update and its c stay in the block), rows [p*RJ, (p+1)*RJ) of the
prediction projection and rows [p*RN, (p+1)*RN) of the joint's output layer. The phases and the
bookkeeping are triton_loop.py's (the kernel's header comment lists them), but for two changes
that take work off a step's critical path: layer 0's input product is looked up in a per-label
table (W_ih0 @ embedding, made once per machine), and the recurrent halves W_hh @ h are computed
while a block waits at a grid barrier. Weights are read as 16-bit numbers and everything else is
float32, as the Triton machines do in bf16/fp16, so the hypotheses equal theirs but for an argmax
near-tie (a different summation order).

Only for 16-bit weights (float32 ones would not fit in shared memory), up to MAX_ROWS rows, and
on GPUs whose blocks can hold a share: otherwise the machine raises ``KernelUnavailable`` when
built, and cuda_runner falls back to the Triton loop.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import threading
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from budgie import cuda_driver
from budgie.cuda_driver import Argument, Arguments, Kernel, KernelUnavailable, pointer
from budgie.gpu_decoding import OneLaunchDecoder, StepDecoder
from budgie.model import ParakeetTDT
from budgie.transducer import Decoder, Joint

KERNELS = Path(__file__).with_name("kernels")
SOURCE = KERNELS / "tdt_loop.cu"
KERNEL = "tdt_decode_loop"
HEADERS = ("tdt_common.cuh",)  # what the kernel sources include
# The most rows a machine takes (the kernel is compiled for 1, 2, 4 or 8: its MAX_ROWS), and
# the kernel's THREADS and WARPS (kernels/tdt_loop.cu).
MAX_ROWS = 8
THREADS = 512
WARPS = THREADS // 32
WEIGHT_DTYPES = (torch.bfloat16, torch.float16)
# The grid barrier's arrival as a fence plus an atomic add instead of one releasing add (for
# A/B runs).
FENCED_BARRIER = False


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Partition:
    """How the weight rows are split over ``blocks`` (see the module doc)."""

    blocks: int
    units: int  # U: LSTM hidden units per block (4 U gate rows per layer)
    pred_rows: int  # RJ: prediction projection rows per block
    joint_rows: int  # RN: joint output rows per block

    @classmethod
    def over(cls, blocks: int, hidden: int, joint_hidden: int, outputs: int) -> Partition:
        """The fewest rows per block with at most ``blocks`` blocks, then only the blocks that
        hold any (e.g. 640 units, 640 projections, 1030 outputs over 132: 129 blocks)."""
        units = _cdiv(hidden, blocks)
        pred_rows = _cdiv(joint_hidden, blocks)
        joint_rows = _cdiv(outputs, blocks)  # 0 outputs: the joint lives elsewhere
        used = max(_cdiv(hidden, units), _cdiv(joint_hidden, pred_rows))
        used = max(used, _cdiv(outputs, joint_rows)) if outputs else used
        return cls(used, units, pred_rows, joint_rows)

    def block_elements(self, layers: int, hidden: int, joint_hidden: int) -> int:
        """16-bit weights per block: 4U gate rows of W_hh_0, of W_ih_l and W_hh_l for each
        layer l >= 1 (layer 0's input product comes from the label table), RJ rows of W_pred,
        RN of W_out."""
        gates = (2 * layers - 1) * 4 * self.units * hidden
        return gates + self.pred_rows * hidden + self.joint_rows * joint_hidden

    def shared_bytes(self, rows: int, layers: int, hidden: int, joint_hidden: int) -> int:
        """The shared memory of the kernel compiled for ``rows`` rows: the weights, then the
        float32 data (the layout at the top of tdt_decode_loop: inputs, products, recurrent
        terms, the units' c, biases, argmax scratch)."""
        weights = 16 * _cdiv(2 * self.block_elements(layers, hidden, joint_hidden), 16)
        gates = 4 * self.units
        floats = rows * max(hidden, joint_hidden) + rows * max(
            gates, self.pred_rows, self.joint_rows
        )
        floats += layers * rows * gates + layers * rows * self.units
        floats += layers * gates + self.pred_rows + self.joint_rows + rows * 4 * WARPS
        return weights + 4 * floats


def pack_weights(
    w_ih: Tensor, w_hh: Tensor, w_pred: Tensor, w_out: Tensor, part: Partition
) -> Tensor:
    """[blocks, block_elements] 16-bit weights, block p's share contiguous: the 4U gate rows
    (gate-major: row g*U + u is gate g of unit p*U + u) of W_hh_0, then of W_ih_l and W_hh_l
    for l = 1.., then its RJ rows of W_pred and its RN rows of W_out; rows past a matrix's end
    are zeros. w_ih, w_hh: [L, 4H, H] (gates i, f, g, o), w_pred: [J, H], w_out: [N, J]."""
    layers, gate_rows, width = w_hh.shape
    hidden = gate_rows // 4
    blocks, units = part.blocks, part.units

    def gates(weight: Tensor) -> Tensor:  # [4H, K] -> [blocks, 4U * K]
        padded = weight.new_zeros(4, blocks * units, weight.shape[1])
        padded[:, :hidden] = weight.view(4, hidden, -1)
        return padded.view(4, blocks, units, -1).transpose(0, 1).reshape(blocks, -1)

    def rows(weight: Tensor, per_block: int) -> Tensor:
        return pack_rows(weight, blocks, per_block)

    parts = [gates(w_hh[0])]
    for layer in range(1, layers):
        parts += [gates(w_ih[layer]), gates(w_hh[layer])]
    parts += [rows(w_pred, part.pred_rows), rows(w_out, part.joint_rows)]
    assert width == hidden, "the kernel needs the LSTM's input size to be its hidden size"
    return torch.cat(parts, dim=1).contiguous()


def pack_rows(weight: Tensor, blocks: int, per_block: int) -> Tensor:
    """[blocks, per_block * K]: block p's rows [p*per_block, (p+1)*per_block) of ``weight``
    [R, K], zeros past its end (none at all for 0 rows per block)."""
    if per_block == 0:
        return weight.new_zeros(blocks, 0)
    padded = weight.new_zeros(blocks * per_block, weight.shape[1])
    padded[: weight.shape[0]] = weight
    return padded.view(blocks, -1)


@dataclass
class KernelWeights:
    """What the kernel reads besides its inputs: the packed 16-bit weights, the float32 biases,
    layer 0's input product per label and the start state's recurrent products."""

    packed: Tensor  # [blocks, block_elements] (pack_weights)
    table: Tensor  # [labels, 4H] W_ih0 @ embedding
    start_rec: Tensor  # [L, 4H] W_hh_l @ h_l of the start state
    b_lstm: Tensor  # [L, 4H] b_ih + b_hh
    b_pred: Tensor  # [J]
    b_out: Tensor  # [N]


# KernelWeights per decoder module, by (joint, partition, dtype, device): machines of one network
# (one per decoded shape) share them instead of holding ~25 MB each for parakeet.
_shared_weights: weakref.WeakKeyDictionary[Decoder, dict[tuple[object, ...], KernelWeights]] = (
    weakref.WeakKeyDictionary()
)
_weights_lock = threading.Lock()  # (not _lock: a compile holds that one for seconds)


def shared_kernel_weights(
    decoder: Decoder, joint: Joint, part: Partition, dtype: torch.dtype, start_h: Tensor
) -> KernelWeights:
    """``kernel_weights``, made once per decoder, joint, partition, dtype and device (the
    weights must not change after the first machine is built: inference only)."""
    key = (id(joint), part, dtype, str(start_h.device))
    with _weights_lock:
        made = _shared_weights.setdefault(decoder, {})
        if key not in made:
            made[key] = kernel_weights(decoder, joint, part, dtype, start_h)
        return made[key]


@torch.no_grad()
def kernel_weights(
    decoder: Decoder, joint: Joint, part: Partition, dtype: torch.dtype, start_h: Tensor
) -> KernelWeights:
    """The kernel's weights from the prediction network and joint, on ``start_h``'s device:
    matrices rounded to ``dtype`` as the kernel reads them; the table and the recurrent products
    from those rounded matrices with float64 sums (no TF32, whatever the process's matmul
    precision). start_h: [L, H], the start state's h."""
    device, wd = start_h.device, dtype
    lstm = decoder.prediction.dec_rnn.lstm
    layers = range(lstm.num_layers)
    w_ih = torch.stack([getattr(lstm, f"weight_ih_l{i}") for i in layers]).to(device, wd)
    w_hh = torch.stack([getattr(lstm, f"weight_hh_l{i}") for i in layers]).to(device, wd)
    if w_ih.shape[2] != w_hh.shape[2]:
        raise KernelUnavailable("the LSTM's input size differs from its hidden size")
    biases = [getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}") for i in layers]
    out = joint.joint_net[2]
    assert isinstance(out, torch.nn.Linear)
    w_pred, w_out = joint.pred.weight.to(device, wd), out.weight.to(device, wd)
    embed = decoder.prediction.embed.weight.to(device, torch.float64)
    start_rec = torch.einsum("lgh,lh->lg", w_hh.double(), start_h.double())
    return KernelWeights(
        packed=pack_weights(w_ih, w_hh, w_pred, w_out, part),
        table=(embed @ w_ih[0].double().T).float().contiguous(),
        start_rec=start_rec.float().contiguous(),
        b_lstm=torch.stack(biases).to(device, torch.float32).contiguous(),
        b_pred=joint.pred.bias.to(device, torch.float32).contiguous(),
        b_out=out.bias.to(device, torch.float32).contiguous(),
    )


_SOURCES = {KERNEL: SOURCE.name, "tdt_decode_cluster": "tdt_cluster.cu"}
_kernels: dict[tuple[int, tuple[str, ...], int, str], Kernel] = {}
_cubins: dict[tuple[str, tuple[str, ...], str], bytes] = {}
_lock = threading.Lock()  # one compile of a kernel at a time, whichever thread asks
_load_lock = threading.Lock()  # one module load at a time (not during a compile)


def kernel_options(
    dtype: torch.dtype, rows: int, profile: bool = False, cluster: int = 0
) -> tuple[str, ...]:
    """The compiler's macros for a machine: the weights' format, the rows, the barrier kind,
    the profiling counters, and the joint's cluster size (cuda_cluster's kernel only)."""
    options = [f"-DMAX_ROWS={rows}"]
    options += [f"-DCLUSTER={cluster}"] if cluster else []
    options += ["-DWEIGHT_FP16"] if dtype == torch.float16 else []
    options += ["-DFENCED_BARRIER"] if FENCED_BARRIER else []
    options += ["-DPROFILE"] if profile else []
    return tuple(options)


def compiled(arch: str, options: tuple[str, ...], kernel: str = KERNEL) -> bytes:
    """The cubin of ``kernel`` (tdt_decode_loop, or cuda_cluster's tdt_decode_cluster) for
    ``arch`` and ``options``: compiled once per process (2-3 s with NVRTC on the device hosts)
    and kept on disk across processes (cuda_driver.cached_cubin). One already made is returned
    without the compile lock: the background compile takes it for each of its variants in
    turn, and a caller waiting on it could wait for all of them (the lock is not fair)."""
    key = (arch, options, kernel)
    made = _cubins.get(key)
    if made is not None:
        return made
    with _lock:
        if key not in _cubins:
            source = KERNELS / _SOURCES[kernel]
            headers = {name: (KERNELS / name).read_text() for name in HEADERS}
            _cubins[key] = cuda_driver.cached_cubin(
                source.read_text(), kernel, arch, options, headers
            )
        return _cubins[key]


_cluster_refusal: list[str] = []  # why the cluster machine could not be built here, once
# From this batch KernelLoopDecoder.for_network builds cuda_cluster's machine: on an H100 it
# took 10.8 vs 11.6 us per speech-like step at batch 4 and 22.1 vs 29.2 at 8, but 5.2 vs 5.3
# at 1 and 7.4 vs 7.3 at 2 (benchmarks/results/gpu_decoder_micro_h100_2026-11-25_cluster_word
# .json), where the plain kernel's simpler emission path is kept.
CLUSTER_MIN_BATCH = 3


def clusters_wanted() -> bool:
    """Whether to try cuda_cluster's kernel first (unless BUDGIE_CUDA_CLUSTER=0)."""
    return os.environ.get("BUDGIE_CUDA_CLUSTER", "1") != "0"


def compile_in_background(
    device: torch.device, dtype: torch.dtype, joint_sizes: tuple[int, int] | None = None
) -> threading.Thread | None:
    """Compile the kernel's variants for ``dtype`` in a daemon thread (NVRTC releases the
    interpreter lock), batch 1 first, so that the first shape that wants one (a shape's second
    use, when its graphs are due) does not wait for the compiler; they stay cached on disk for
    later processes. With ``joint_sizes`` (the joint's hidden size and outputs) on a GPU with
    clusters, the 4- and 8-row variants are cuda_cluster's kernel (what for_network builds for
    those batches). None where it cannot apply."""
    if dtype not in WEIGHT_DTYPES or device.type != "cuda":
        return None
    arch = cuda_driver.arch_of(device)
    variants = [(KERNEL, kernel_options(dtype, r)) for r in (1, 2, 4, 8)]
    if joint_sizes and clusters_wanted() and torch.cuda.get_device_capability(device)[0] >= 9:
        from budgie import cuda_cluster

        with contextlib.suppress(KernelUnavailable):  # (a joint too large: the plain kernel)
            variants[2:] = [  # the batches for which for_network picks the cluster machine
                (cuda_cluster.KERNEL, cuda_cluster.cluster_options(dtype, r, *joint_sizes))
                for r in (4, 8)
            ]

    def run() -> None:
        for kernel, options in variants:
            if _exiting.is_set():
                return
            try:
                compiled(arch, options, kernel)
            except Exception:  # the machine's own build reports it, and falls back
                return

    thread = threading.Thread(target=run, name="budgie-nvrtc", daemon=True)
    _compile_threads.append(thread)
    thread.start()
    return thread


# At exit, the background compiles stop after the variant in progress and are waited for, so
# that NVRTC is not still compiling in a daemon thread while the process tears its libraries
# down (suspected in a fresh process's first transcript that once exited with a failure code
# and nothing on stderr on an H100, gpu_compare_h100_2026-11-25_session12b.json).
_exiting = threading.Event()
_compile_threads: list[threading.Thread] = []


@atexit.register
def _finish_compiles() -> None:
    _exiting.set()
    for thread in _compile_threads:
        thread.join(timeout=30.0)


def load_kernel(
    device: torch.device, options: tuple[str, ...], shared_bytes: int, kernel: str = KERNEL
) -> Kernel:
    """``kernel`` compiled with ``options``, loaded on ``device`` (once per process)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    cubin = compiled(cuda_driver.arch_of(device), options, kernel)
    key = (index, options, shared_bytes, kernel)
    with _load_lock:
        if key not in _kernels:
            _kernels[key] = Kernel(cubin, kernel, device, shared_bytes)
        return _kernels[key]


def joint_sizes(network: ParakeetTDT) -> tuple[int, int]:
    """The joint's hidden size and outputs (labels + blank + durations): the cluster kernel's
    compile options depend on them."""
    joint = network.joint
    return network.cfg.joint.joint_hidden, joint.num_labels + joint.num_durations


def check_request(batch: int, weight_dtype: torch.dtype, device: torch.device) -> None:
    """What the kernels of this module and cuda_cluster.py refuse, whatever the GPU."""
    if batch > MAX_ROWS:
        raise ValueError(f"the kernel loop decoder takes at most {MAX_ROWS} rows, not {batch}")
    if weight_dtype not in WEIGHT_DTYPES:
        raise KernelUnavailable(f"needs bf16 or fp16 weights, not {weight_dtype}")
    if device.type != "cuda":
        raise KernelUnavailable("needs a CUDA device")


class KernelLoopDecoder(OneLaunchDecoder):
    """A step machine whose ``step`` decodes the loaded batch to its end in one launch of the
    shared-memory kernel (OneLaunchDecoder's contract, as triton_loop.LoopDecoder)."""

    max_batch = MAX_ROWS

    def __init__(
        self,
        decoder: Decoder,
        joint: Joint,
        batch: int,
        max_frames: int,
        durations: tuple[int, ...],
        max_symbols: int,
        device: torch.device,
        weight_dtype: torch.dtype = torch.bfloat16,
        profile: bool = False,
    ) -> None:
        check_request(batch, weight_dtype, device)
        super().__init__(decoder, joint, batch, max_frames, durations, max_symbols, device)
        layers, _, hidden = self.h.shape
        joint_hidden = self.enc_proj.shape[2]
        if hidden % 8 or joint_hidden % 8:
            raise KernelUnavailable(f"hidden sizes {hidden}, {joint_hidden} not multiples of 8")
        out = joint.joint_net[2]
        assert isinstance(out, torch.nn.Linear)
        self.num_outputs = out.weight.shape[0]
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        self.partition = Partition.over(sms, hidden, joint_hidden, self.num_outputs)
        self.kernel_rows = rows = 1 << max(0, batch - 1).bit_length()  # 1, 2, 4 or 8
        shared = self.partition.shared_bytes(rows, layers, hidden, joint_hidden)
        limit = cuda_driver.shared_memory_limit(device)
        if shared > limit:
            raise KernelUnavailable(f"needs {shared} bytes of shared memory, {limit} here")
        self._start = self.rounded_start(weight_dtype)
        start_pred, start_h, start_c = self._start
        weights = shared_kernel_weights(decoder, joint, self.partition, weight_dtype, start_h[:, 0])
        self.packed, self.table, self.start_rec = weights.packed, weights.table, weights.start_rec
        self.b_lstm, self.b_pred, self.b_out = weights.b_lstm, weights.b_pred, weights.b_out
        self.start_pred = start_pred[0].contiguous()
        self.start_c = start_c[:, 0].contiguous()
        self.shared_pred = torch.zeros(rows, joint_hidden, device=device)
        self.h_new = torch.zeros(layers, rows, hidden, device=device)
        self.step_logits = torch.zeros(2, rows, self.num_outputs, device=device)
        self.counter = torch.zeros(1, dtype=torch.int32, device=device)  # barrier arrivals
        # With ``profile``: SM cycles per part of the loop and the steps taken (the kernel's
        # PROFILE slots), from the last decode.
        self.profile = torch.zeros(11, dtype=torch.long, device=device) if profile else None
        self.kernel = load_kernel(device, kernel_options(weight_dtype, rows, profile), shared)
        if self.kernel.resident_blocks(THREADS) < 1:
            raise KernelUnavailable("a block of the decode kernel does not fit on an SM")
        self._arguments = self._kernel_arguments()

    @classmethod
    def for_network(
        cls, network: ParakeetTDT, batch: int, max_frames: int, device: torch.device
    ) -> StepDecoder:
        """From CLUSTER_MIN_BATCH rows, cuda_cluster's machine (the joint on a thread-block
        cluster) where the GPU runs it and BUDGIE_CUDA_CLUSTER is not 0; else this one (one
        warning saying why, the first time)."""
        if batch >= CLUSTER_MIN_BATCH and clusters_wanted() and not _cluster_refusal:
            from budgie.cuda_cluster import ClusterLoopDecoder

            try:
                machine = ClusterLoopDecoder.for_network(network, batch, max_frames, device)
                machine.warm_up()
                return machine
            except KernelUnavailable as exc:
                _cluster_refusal.append(str(exc))
                warnings.warn(
                    f"clustered CUDA decoder unavailable here, using the plain kernel: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return super().for_network(network, batch, max_frames, device)

    @classmethod
    def ready_now(cls, network: ParakeetTDT, batch: int, device: torch.device) -> bool:
        """Whether the kernel ``for_network`` would build for ``batch`` rows is compiled in this
        process already (the background compile, from disk or NVRTC): then even a shape's first
        use takes it, since building the machine is then cheap (its weights are shared)."""
        dtype = network.encoder.matmul_dtype
        if dtype not in WEIGHT_DTYPES or device.type != "cuda" or batch > MAX_ROWS:
            return False
        rows = 1 << max(0, batch - 1).bit_length()
        arch = cuda_driver.arch_of(device)
        wants_cluster = batch >= CLUSTER_MIN_BATCH and clusters_wanted() and not _cluster_refusal
        if wants_cluster and torch.cuda.get_device_capability(device)[0] >= 9:
            from budgie import cuda_cluster

            with contextlib.suppress(KernelUnavailable):  # (too large: the plain kernel)
                options = cuda_cluster.cluster_options(dtype, rows, *joint_sizes(network))
                return (arch, options, cuda_cluster.KERNEL) in _cubins
        return (arch, kernel_options(dtype, rows), KERNEL) in _cubins

    @classmethod
    def network_options(cls, network: ParakeetTDT) -> dict[str, torch.dtype]:
        """The weights in the encoder's matmul dtype (bf16 or fp16; float32 is refused)."""
        return {"weight_dtype": network.encoder.matmul_dtype}

    @classmethod
    def supports(cls, network: ParakeetTDT) -> bool:
        """Whether a network's decoding can run here at all (16-bit weights)."""
        return network.encoder.matmul_dtype in WEIGHT_DTYPES

    def step(self) -> None:
        """Decode the loaded batch to its end (one kernel launch; no host sync)."""
        inputs = self.take_inputs()
        if inputs is None:
            return
        enc_proj, lengths = inputs
        b, t, _ = enc_proj.shape
        enc_arg, lengths_arg, batch_arg, frames_arg = self._changing
        enc_arg.value, lengths_arg.value = enc_proj.data_ptr(), lengths.data_ptr()
        batch_arg.value, frames_arg.value = b, t
        self.counter.zero_()
        self.kernel.launch(self.partition.blocks, THREADS, self._arguments)

    def _kernel_arguments(self) -> Arguments:
        """tdt_decode_loop's parameters, in its order; the inputs' addresses, the batch and the
        frames (``_changing``) are set by each ``step``."""
        layers, _, hidden = self.h.shape
        joint_hidden = self.enc_proj.shape[2]
        part = self.partition
        tensors: tuple[Tensor, ...] = (
            self.packed,
            self.b_lstm,
            self.b_pred,
            self.b_out,
            self.table,
            self.durations,
        )
        tensors += (self.start_pred, self.start_rec, self.start_c, self.shared_pred, self.h_new)
        tensors += (self.step_logits, self.out, self.count, self.steps, self.time, self.counter)
        sizes: tuple[int, ...] = (
            hidden,
            joint_hidden,
            self.num_outputs,
            self.num_labels,
            layers,
            part.units,
        )
        sizes += (part.pred_rows, part.joint_rows, self.blank, self.capacity, self.max_symbols)
        self._changing = (ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int())
        enc_arg, lengths_arg, batch_arg, frames_arg = self._changing
        values: list[Argument] = [enc_arg, lengths_arg, *(pointer(x) for x in tensors)]
        values.append(pointer(self.profile) if self.profile is not None else ctypes.c_void_p())
        values += [batch_arg, frames_arg, *(ctypes.c_int(n) for n in sizes)]
        return Arguments(values)
