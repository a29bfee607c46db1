"""The shared-memory decode kernel rearranged around a thread-block cluster
(kernels/tdt_cluster.cu): the joint on one cluster of CLUSTER blocks, its weights in their
registers, the prediction network on the other blocks, for GPUs with clusters (compute
capability 9.0 on).

Why: in cuda_loop.py's kernel every block holds a slice of every matrix, so every step, blank
or not, ends in a grid-wide barrier after which every block re-reads all logits: ~3.9 us per
blank step at batch 1 on an H100, of which the barrier and the argmax after it are ~2 us
(benchmarks/results/gpu_kernel_loop_profile_*.json). Most steps of speech are blank. Here
W_out (1.3 MB in 16 bits for parakeet-tdt-0.6b-v2) is split over the 16 blocks of one cluster
(~83 KB each, held in registers: from shared memory a block's share took ~3.8 us per step, its
bandwidth being 128 bytes per clock), and a blank step stays inside that cluster: each block
finds its best label and duration per row, a hardware cluster barrier, then each reads the
others' candidates from their shared memory. The prediction blocks (the LSTM and the
projection, split as in cuda_loop.Partition over the other blocks) sleep until the joint
publishes an emission, then make the new prediction and count their arrivals on the counter the
joint waits on. Weights and arithmetic are cuda_loop's (16-bit weights, float32 sums), so the
hypotheses equal its machine's but for an argmax near-tie.

Raises ``KernelUnavailable`` where clusters, registers or shared memory are lacking;
``KernelLoopDecoder.for_network`` then builds cuda_loop's machine instead.
"""

from __future__ import annotations

import ctypes

import torch

from budgie import cuda_driver, cuda_loop
from budgie.cuda_driver import Arguments, KernelUnavailable
from budgie.cuda_loop import MAX_ROWS, THREADS, Partition, pack_rows, shared_kernel_weights
from budgie.gpu_decoding import OneLaunchDecoder
from budgie.transducer import Decoder, Joint

KERNEL = "tdt_decode_cluster"
CLUSTER = 16  # the joint's blocks (kernels/tdt_cluster.cu's CLUSTER; a non-portable size)
# tdt_cluster.cu's Params, field for field.
_POINTERS = [
    "enc",
    "lengths",
    "packed",
    "packed_joint",
    "b_lstm",
    "b_pred",
    "b_out",
    "table",
    "dur_table",
    "start_pred",
    "start_rec",
    "start_c",
    "pred",
    "h_new",
    "emitted",
    "out",
    "count_out",
    "steps_out",
    "time_out",
    "sync",
    "profile",
]
_SIZES = ["B", "T", "H", "J", "N", "NL", "L", "U", "RJ", "RN", "PL", "blank", "cap", "max_symbols"]


class Params(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in _POINTERS] + [
        (name, ctypes.c_int) for name in _SIZES
    ]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# The most 32-bit registers a joint thread spends on weights: 128 is all a thread has at 512
# threads per SM, and a step's other work needs ~90 (more spills: ptxas -v); rows past that
# are read from shared memory, which takes at most MAX_SHARED_JOINT bytes of them.
MAX_WEIGHT_REGISTERS = 30
MAX_SHARED_JOINT = 96 * 1024


def joint_tiles(joint_hidden: int, outputs: int) -> tuple[int, int, int]:
    """(W_out rows per joint warp, of them held in registers, float4 column groups per
    lane); KernelUnavailable for a joint too large for the cluster (e.g. an 8k vocabulary)."""
    rows_per_warp = _cdiv(_cdiv(outputs, CLUSTER), THREADS // 32)
    groups = _cdiv(joint_hidden, 128)
    in_registers = min(rows_per_warp, MAX_WEIGHT_REGISTERS // (2 * groups))
    shared = (rows_per_warp - in_registers) * (THREADS // 32) * groups * 32 * 8
    if shared > MAX_SHARED_JOINT:
        raise KernelUnavailable(
            f"a joint of {outputs} x {joint_hidden} is too large for a cluster of {CLUSTER}"
            f" ({shared} bytes of its weights would be in shared memory)"
        )
    return rows_per_warp, in_registers, groups


def joint_options(joint_hidden: int, outputs: int) -> tuple[str, ...]:
    """The macros that size a joint block's weight tiles (``joint_tiles``)."""
    rows_per_warp, in_registers, groups = joint_tiles(joint_hidden, outputs)
    return (
        f"-DJOINT_ROWS_PER_WARP={rows_per_warp}",
        f"-DJOINT_REGISTER_ROWS={in_registers}",
        f"-DJOINT_GROUPS={groups}",
    )


def cluster_options(
    dtype: torch.dtype, rows: int, joint_hidden: int, outputs: int, profile: bool = False
) -> tuple[str, ...]:
    """The compiler's macros for a machine of this kernel (cuda_loop.kernel_options plus the
    cluster and the joint's register tiles)."""
    options = cuda_loop.kernel_options(dtype, rows, profile, CLUSTER)
    return options + joint_options(joint_hidden, outputs)


def shared_bytes(
    rows: int, part: Partition, layers: int, hidden: int, joint_hidden: int, outputs: int
) -> int:
    """The dynamic shared memory of the kernel compiled for ``rows`` rows: the larger of a
    joint block's (pred and xs, the warps' and the block's candidates, the rows' states,
    biases and durations; its weights are in registers) and a prediction block's (cuda_loop's
    layout without the joint; the emission being made). ``part``: the prediction blocks'
    split (no joint rows)."""
    rows_per_warp, in_registers, groups = joint_tiles(joint_hidden, outputs)
    joint = (rows_per_warp - in_registers) * (THREADS // 32) * groups * 32 * 2  # (in words)
    joint += 2 * rows * joint_hidden + rows * 4 * (THREADS // 32) + 2 * rows * 4 + 8 * rows
    joint += _cdiv(outputs, CLUSTER) + outputs  # biases, durations (fewer than the outputs)
    gates = 4 * part.units
    prediction = 16 * _cdiv(2 * part.block_elements(layers, hidden, joint_hidden), 16)
    floats = rows * hidden + rows * max(gates, part.pred_rows) + layers * rows * gates
    floats += layers * rows * part.units + layers * gates + part.pred_rows + rows + 2
    return max(4 * joint, prediction + 4 * floats)


class ClusterLoopDecoder(OneLaunchDecoder):
    """cuda_loop.KernelLoopDecoder's contract (one launch decodes the loaded batch) with the
    joint on a thread-block cluster."""

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
        cuda_loop.check_request(batch, weight_dtype, device)
        if torch.cuda.get_device_capability(device)[0] < 9:
            raise KernelUnavailable("thread-block clusters need compute capability 9.0")
        super().__init__(decoder, joint, batch, max_frames, durations, max_symbols, device)
        layers, _, hidden = self.h.shape
        joint_hidden = self.enc_proj.shape[2]
        if hidden % 8 or joint_hidden % 8:
            raise KernelUnavailable(f"hidden sizes {hidden}, {joint_hidden} not multiples of 8")
        out = joint.joint_net[2]
        assert isinstance(out, torch.nn.Linear)
        self.num_outputs = outputs = out.weight.shape[0]
        self.kernel_rows = rows = 1 << max(0, batch - 1).bit_length()  # 1, 2, 4 or 8
        options = cluster_options(weight_dtype, rows, joint_hidden, outputs, profile)
        limit = cuda_driver.shared_memory_limit(device)
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        clusters = sms // CLUSTER
        fewer = KernelUnavailable(f"fewer than 2 clusters of {CLUSTER} blocks fit here")
        for _ in range(2):  # the split for the clusters that fit (asked again if fewer do)
            if clusters < 2:  # the joint's cluster and at least one for the prediction network
                raise fewer
            self.partition = Partition.over((clusters - 1) * CLUSTER, hidden, joint_hidden, 0)
            shared = shared_bytes(rows, self.partition, layers, hidden, joint_hidden, outputs)
            if shared > limit:
                raise KernelUnavailable(f"needs {shared} bytes of shared memory, {limit} here")
            self.kernel = cuda_loop.load_kernel(device, options, shared, KERNEL)
            self.kernel.allow_large_clusters()
            clusters = min(clusters, self.kernel.max_active_clusters(THREADS, CLUSTER))
            self.blocks = CLUSTER * (1 + _cdiv(self.partition.blocks, CLUSTER))
            if self.blocks <= clusters * CLUSTER:
                break
        else:
            need = self.blocks // CLUSTER
            raise KernelUnavailable(f"needs {need} clusters of {CLUSTER} blocks, {clusters} fit")
        self._start = self.rounded_start(weight_dtype)
        start_pred, start_h, start_c = self._start
        weights = shared_kernel_weights(decoder, joint, self.partition, weight_dtype, start_h[:, 0])
        self.weights = weights
        self.packed_joint = pack_rows(
            out.weight.to(device, weight_dtype), CLUSTER, _cdiv(outputs, CLUSTER)
        )
        self.start_pred = start_pred[0].contiguous()
        self.start_c = start_c[:, 0].contiguous()
        self.shared_pred = torch.zeros(rows, joint_hidden, device=device)
        self.h_new = torch.zeros(layers, rows, hidden, device=device)
        self.emitted = torch.zeros(MAX_ROWS, dtype=torch.int32, device=device)
        # Arrivals, padding, the 64-bit emission word (kernels/tdt_cluster.cu).
        self.sync = torch.zeros(4, dtype=torch.int32, device=device)
        # With ``profile``: joint block 0's SM cycles per part of a step, and the steps taken.
        self.profile = torch.zeros(6, dtype=torch.long, device=device) if profile else None
        self.params = self._params(layers, hidden, joint_hidden, outputs)
        self._arguments = Arguments([self.params])

    network_options = cuda_loop.KernelLoopDecoder.network_options
    supports = cuda_loop.KernelLoopDecoder.supports

    def step(self) -> None:
        """Decode the loaded batch to its end (one kernel launch; no host sync)."""
        inputs = self.take_inputs()
        if inputs is None:
            return
        enc_proj, lengths = inputs
        self.params.enc, self.params.lengths = enc_proj.data_ptr(), lengths.data_ptr()
        self.params.B, self.params.T = enc_proj.shape[0], enc_proj.shape[1]
        self.sync.zero_()
        self.kernel.launch(self.blocks, THREADS, self._arguments, cluster=CLUSTER)

    def _params(self, layers: int, hidden: int, joint_hidden: int, outputs: int) -> Params:
        """The kernel's parameters but for the inputs, set by each ``step``."""
        w, part = self.weights, self.partition
        tensors = {
            "packed": w.packed,
            "packed_joint": self.packed_joint,
            "b_lstm": w.b_lstm,
            "b_pred": w.b_pred,
            "b_out": w.b_out,
            "table": w.table,
            "dur_table": self.durations,
            "start_pred": self.start_pred,
            "start_rec": w.start_rec,
            "start_c": self.start_c,
            "pred": self.shared_pred,
            "h_new": self.h_new,
            "emitted": self.emitted,
            "out": self.out,
            "count_out": self.count,
            "steps_out": self.steps,
            "time_out": self.time,
            "sync": self.sync,
        }
        params = Params(**{name: t.data_ptr() for name, t in tensors.items()})
        params.profile = self.profile.data_ptr() if self.profile is not None else None
        sizes = {"H": hidden, "J": joint_hidden, "N": outputs, "NL": self.num_labels, "L": layers}
        sizes |= {"U": part.units, "RJ": part.pred_rows, "RN": _cdiv(outputs, CLUSTER)}
        sizes |= {"PL": part.blocks, "blank": self.blank, "cap": self.capacity}
        sizes |= {"max_symbols": self.max_symbols}
        for name, value in sizes.items():
            setattr(params, name, value)
        return params
