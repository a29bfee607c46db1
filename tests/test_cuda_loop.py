"""KernelLoopDecoder (cuda_loop.py: one launch of the shared-memory CUDA kernel per batch).

On the CPU: the weight split and the packed layout the kernel reads (rebuilt here from the
layout's description, independently of pack_weights), and the machine's refusals. On CUDA: the
hypotheses of the torch machine on the same 16-bit-rounded weights (a float32 near-tie aside,
which these inputs do not have), several batches in a row on one machine, other LSTM depths,
empty rows, the max-symbols cap.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from budgie.cuda_cluster import ClusterLoopDecoder
from budgie.cuda_driver import KernelUnavailable
from budgie.cuda_loop import (
    MAX_ROWS,
    KernelLoopDecoder,
    Partition,
    kernel_weights,
    pack_weights,
    shared_kernel_weights,
)
from budgie.gpu_decoding import StepDecoder, decode_with_steps
from conftest import SynthModels
from decoder_machines import (
    BATCHES,
    MAX_SYMBOLS,
    hits_the_cap,
    network,
    other_depth,
    outcome,
    random_enc_proj,
    rounded_weights,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# Both kernels' machines: every block holding a slice of every matrix (tdt_loop.cu), and the
# joint on a thread-block cluster (tdt_cluster.cu; compute capability 9.0 on).
MACHINES = pytest.mark.parametrize(
    "machine", [KernelLoopDecoder, ClusterLoopDecoder], ids=["plain", "cluster"]
)


def test_partition_of_parakeet_sizes() -> None:
    """640 units, 640 projections, 1030 outputs over an H100's 132 SMs: 5, 5 and 8 rows per
    block, 129 blocks (the joint's rows need the most), ~140 KB of shared memory a block."""
    part = Partition.over(132, 640, 640, 1030)
    assert part == Partition(blocks=129, units=5, pred_rows=5, joint_rows=8)
    assert part.block_elements(2, 640, 640) == 3 * 20 * 640 + 5 * 640 + 8 * 640
    assert 100_000 < part.shared_bytes(4, 2, 640, 640) < 227 * 1024
    few = Partition.over(4, 10, 6, 9)  # more rows per block than blocks' worth of rows
    assert few == Partition(blocks=4, units=3, pred_rows=2, joint_rows=3)
    assert Partition.over(200, 64, 64, 40).blocks == 64  # blocks without rows are not launched


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("blocks", "hidden", "joint", "outputs", "layers"), [(4, 10, 6, 9, 2), (3, 8, 16, 5, 1)]
)
def test_packed_layout(
    dtype: torch.dtype, blocks: int, hidden: int, joint: int, outputs: int, layers: int
) -> None:
    """Every weight lands where the kernel looks for it: in block p, the 4U gate rows of W_hh_0,
    then of W_ih_l and W_hh_l for l >= 1 (row g*U + u: gate g of unit p*U + u), then W_pred's
    and W_out's rows p*R + r; anything past a matrix's end is zero."""
    gen = torch.Generator().manual_seed(0)
    w_ih = torch.randn(layers, 4 * hidden, hidden, generator=gen).to(dtype)
    w_hh = torch.randn(layers, 4 * hidden, hidden, generator=gen).to(dtype)
    w_pred = torch.randn(joint, hidden, generator=gen).to(dtype)
    w_out = torch.randn(outputs, joint, generator=gen).to(dtype)
    part = Partition.over(blocks, hidden, joint, outputs)
    packed = pack_weights(w_ih, w_hh, w_pred, w_out, part)
    assert packed.dtype == dtype
    assert packed.shape == (part.blocks, part.block_elements(layers, hidden, joint))
    units, rj, rn = part.units, part.pred_rows, part.joint_rows
    gate_matrices = [w_hh[0]] + [w[layer] for layer in range(1, layers) for w in (w_ih, w_hh)]
    for p in range(part.blocks):
        share = packed[p]
        offset = 0
        for matrix in gate_matrices:
            for gate in range(4):
                for u in range(units):
                    got = share[offset : offset + hidden]
                    unit = p * units + u
                    inside = unit < hidden
                    want = matrix[gate * hidden + unit] if inside else torch.zeros_like(got)
                    assert torch.equal(got, want), (p, gate, u)
                    offset += hidden
        for weight, per, width in ((w_pred, rj, hidden), (w_out, rn, joint)):
            for r in range(per):
                got = share[offset : offset + width]
                row = p * per + r
                want = weight[row] if row < weight.shape[0] else torch.zeros(width, dtype=dtype)
                assert torch.equal(got, want), (p, r)
                offset += width
        assert offset == share.numel()


def test_machines_of_one_network_share_their_kernel_weights(synth_models: SynthModels) -> None:
    """shared_kernel_weights: made once per decoder, joint, partition and dtype (a machine per
    decoded shape would otherwise hold its own ~25 MB), equal to kernel_weights'."""
    net = synth_models.model("tiny").network
    cfg = net.cfg.decoding
    ref = StepDecoder(net.decoder, net.joint, 1, 8, cfg.durations, 2, torch.device("cpu"))
    start_h = ref.rounded_start(torch.bfloat16)[1][:, 0]
    hidden, joint_hidden = start_h.shape[1], net.cfg.joint.joint_hidden
    part = Partition.over(7, hidden, joint_hidden, 261)
    first = shared_kernel_weights(net.decoder, net.joint, part, torch.bfloat16, start_h)
    assert shared_kernel_weights(net.decoder, net.joint, part, torch.bfloat16, start_h) is first
    other = Partition.over(5, hidden, joint_hidden, 261)
    assert (
        shared_kernel_weights(net.decoder, net.joint, other, torch.bfloat16, start_h) is not first
    )
    fresh = kernel_weights(net.decoder, net.joint, part, torch.bfloat16, start_h)
    assert torch.equal(first.packed, fresh.packed) and torch.equal(first.table, fresh.table)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_weights(synth_models: SynthModels, dtype: torch.dtype) -> None:
    """What the kernel reads, built on the CPU: layer 0's per-label table is the embedding times
    the rounded W_ih0, the start's recurrent products are the rounded W_hh times the start h,
    the packed weights are the rounded matrices' layout, the biases are b_ih + b_hh."""
    net = synth_models.model("tiny").network
    cfg = net.cfg.decoding
    ref = StepDecoder(net.decoder, net.joint, 1, 8, cfg.durations, 2, torch.device("cpu"))
    start_h = ref.rounded_start(dtype)[1][:, 0]
    out = net.joint.joint_net[2]
    assert isinstance(out, torch.nn.Linear)
    part = Partition.over(7, start_h.shape[1], net.cfg.joint.joint_hidden, out.weight.shape[0])
    got = kernel_weights(net.decoder, net.joint, part, dtype, start_h)
    lstm = net.decoder.prediction.dec_rnn.lstm
    rounded = {n: p.detach().to(dtype) for n, p in lstm.named_parameters() if "weight" in n}
    embed = net.decoder.prediction.embed.weight.detach().double()
    table = embed @ rounded["weight_ih_l0"].double().T
    torch.testing.assert_close(got.table, table.float())
    for layer in range(lstm.num_layers):
        rec = rounded[f"weight_hh_l{layer}"].double() @ start_h[layer].double()
        torch.testing.assert_close(got.start_rec[layer], rec.float())
        bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        torch.testing.assert_close(got.b_lstm[layer], bias.detach())
    layers = range(lstm.num_layers)
    w_ih = torch.stack([rounded[f"weight_ih_l{i}"] for i in layers])
    w_hh = torch.stack([rounded[f"weight_hh_l{i}"] for i in layers])
    w_pred, w_out = net.joint.pred.weight.detach().to(dtype), out.weight.detach().to(dtype)
    assert torch.equal(got.packed, pack_weights(w_ih, w_hh, w_pred, w_out, part))
    assert got.packed.dtype == dtype and got.table.dtype == torch.float32
    assert torch.equal(got.b_out, out.bias.detach()) and got.b_pred.shape == (w_pred.shape[0],)


@MACHINES
def test_refusals(synth_models: SynthModels, machine: type) -> None:
    """Too many rows: ValueError; float32 weights or a CPU device: KernelUnavailable (which
    cuda_runner takes as "fall back"), before any CUDA call."""
    net = synth_models.model("tiny").network
    cfg = net.cfg.decoding
    args = (net.decoder, net.joint)
    with pytest.raises(ValueError, match=f"at most {MAX_ROWS} rows"):
        machine(*args, MAX_ROWS + 1, 8, cfg.durations, 2, torch.device("cuda"))
    with pytest.raises(KernelUnavailable, match="bf16 or fp16"):
        machine(*args, 1, 8, cfg.durations, 2, torch.device("cuda"), torch.float32)
    with pytest.raises(KernelUnavailable, match="CUDA"):
        machine(*args, 1, 8, cfg.durations, 2, torch.device("cpu"))
    assert not machine.supports(net)  # the tiny model's encoder runs in float32


@CUDA
@MACHINES
@pytest.mark.parametrize("layers", [None, 1, 3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_kernel_decodes_as_the_torch_machine(
    synth_models: SynthModels, dtype: torch.dtype, layers: int | None, machine: type
) -> None:
    """Several batches in a row on one 4-row machine (nothing of a decode may leak into the
    next): rows of different lengths, an empty row, a batch where nothing is emitted, the
    max-symbols cap; the prediction after the last emission (every layer's state feeds it)
    agrees to float32 rounding."""
    net = network(synth_models, "cuda")
    if layers:  # the network with a prediction network of that depth
        net = copy.deepcopy(net)
        net.decoder = other_depth(net, layers)[0]
    dev = torch.device("cuda")
    durations = net.cfg.decoding.durations
    rounded = rounded_weights(net, dtype)
    ref = StepDecoder(rounded.decoder, rounded.joint, 4, 20, durations, MAX_SYMBOLS, dev)
    parts = (net.decoder, net.joint, 4, 20, durations, MAX_SYMBOLS, dev)
    kernel = machine(*parts, dtype)
    assert kernel.partition.blocks > 1  # the grid barriers are really exercised
    emitted, capped = 0, False
    for lengths, scale, seed in BATCHES:
        enc, lens = random_enc_proj(net, lengths, max(lengths), scale, seed, "cuda")
        want = outcome(decode_with_steps(ref, enc, lens, None))
        assert outcome(decode_with_steps(kernel, enc, lens, None)) == want, (lengths, seed)
        rows = len(lengths)
        torch.testing.assert_close(
            kernel.shared_pred[:rows], ref.pred_proj[:rows], rtol=1e-4, atol=1e-5
        )
        assert [h[3] > 0 for h in want] == [n > 0 for n in lengths]
        emitted += sum(len(h[0]) for h in want)
        capped = capped or hits_the_cap(want)
    assert emitted >= 20 and capped


@CUDA
@MACHINES
def test_eight_rows(synth_models: SynthModels, machine: type) -> None:
    """A machine of MAX_ROWS rows (the kernel built for 8), rows of many lengths and an empty
    one: the torch machine's hypotheses on the same rounded weights."""
    net = network(synth_models, "cuda")
    dev = torch.device("cuda")
    durations = net.cfg.decoding.durations
    rounded = rounded_weights(net, torch.bfloat16)
    ref = StepDecoder(rounded.decoder, rounded.joint, MAX_ROWS, 24, durations, MAX_SYMBOLS, dev)
    kernel = machine(net.decoder, net.joint, MAX_ROWS, 24, durations, MAX_SYMBOLS, dev)
    assert kernel.kernel_rows == MAX_ROWS == 8
    for lengths, seed in (([24, 3, 17, 0, 9, 24, 1, 12], 4), ([5, 20, 11], 5)):
        enc, lens = random_enc_proj(net, lengths, max(lengths), 1.5, seed, "cuda")
        want = outcome(decode_with_steps(ref, enc, lens, None))
        assert sum(len(h[0]) for h in want) >= 10
        assert outcome(decode_with_steps(kernel, enc, lens, None)) == want, lengths


@CUDA
@MACHINES
def test_nothing_to_decode(synth_models: SynthModels, machine: type) -> None:
    net = network(synth_models, "cuda")
    durations = net.cfg.decoding.durations
    dev = torch.device("cuda")
    kernel = machine(net.decoder, net.joint, 2, 8, durations, MAX_SYMBOLS, dev)
    enc, lens = random_enc_proj(net, [0, 0], 8, 1.5, 0, "cuda")
    assert outcome(decode_with_steps(kernel, enc, lens, None)) == [([], [], [], 0)] * 2


@CUDA
def test_compile_errors_name_the_problem() -> None:
    """A kernel NVRTC rejects: KernelUnavailable with the compiler's log (cuda_runner then
    falls back to the Triton loop)."""
    from budgie import cuda_driver

    arch = cuda_driver.arch_of(torch.device("cuda"))
    with pytest.raises(KernelUnavailable, match=r"(?s)compiling \(broken\).*undefined_name"):
        cuda_driver.compile_cubin(
            'extern "C" __global__ void k() { undefined_name(); }', "broken", arch
        )


def test_background_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variants for a 16-bit network's weights are compiled in a thread, batch 1 first:
    on a GPU with clusters the cluster kernel's (sized for the joint) for the batches that use
    it (4 and 8 rows), the plain kernel's for the others; only the plain kernel's elsewhere,
    without the joint's sizes, for a joint too large, or with BUDGIE_CUDA_CLUSTER=0. The
    first failure ends it (what it raises stays there: the machine's own build reports it);
    nothing for float32 or the CPU."""
    from budgie import cuda_cluster, cuda_driver, cuda_loop

    asked: list[tuple[str, tuple[str, ...], str]] = []
    fail = {"now": False}
    capability = {"now": (9, 0)}

    def fake_compiled(arch: str, options: tuple[str, ...], kernel: str = cuda_loop.KERNEL) -> bytes:
        asked.append((arch, options, kernel))
        if fail["now"]:
            raise cuda_driver.KernelUnavailable("no NVRTC here")
        return b"cubin"

    monkeypatch.setattr(cuda_loop, "compiled", fake_compiled)
    monkeypatch.setattr(cuda_driver, "arch_of", lambda device: "sm_90")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability["now"])
    cuda = torch.device("cuda", 0)
    assert cuda_loop.compile_in_background(cuda, torch.float32) is None
    assert cuda_loop.compile_in_background(torch.device("cpu"), torch.bfloat16) is None

    def compiled_in_background(
        dtype: torch.dtype, joint: tuple[int, int] | None = None
    ) -> list[tuple[str, tuple[str, ...], str]]:
        asked.clear()
        thread = cuda_loop.compile_in_background(cuda, dtype, joint)
        assert thread is not None
        thread.join(timeout=10)
        return list(asked)

    rows = [1, 2, 4, 8]
    plain = [
        ("sm_90", cuda_loop.kernel_options(torch.bfloat16, r), "tdt_decode_loop") for r in rows
    ]
    cluster = [
        ("sm_90", cuda_cluster.cluster_options(torch.bfloat16, r, 640, 1030), "tdt_decode_cluster")
        for r in (4, 8)
    ]
    assert compiled_in_background(torch.bfloat16, (640, 1030)) == plain[:2] + cluster
    assert compiled_in_background(torch.bfloat16) == plain  # (no joint sizes given)
    assert compiled_in_background(torch.bfloat16, (640, 8198)) == plain  # too large a joint
    capability["now"] = (8, 0)
    plain = [
        ("sm_90", cuda_loop.kernel_options(torch.bfloat16, r), "tdt_decode_loop") for r in rows
    ]
    assert compiled_in_background(torch.bfloat16) == plain
    capability["now"] = (9, 0)
    monkeypatch.setenv("BUDGIE_CUDA_CLUSTER", "0")
    assert compiled_in_background(torch.bfloat16) == plain
    fail["now"] = True
    first = compiled_in_background(torch.float16)
    assert first == [("sm_90", cuda_loop.kernel_options(torch.float16, 1), "tdt_decode_loop")]
    assert "-DWEIGHT_FP16" in first[0][1] and "-DMAX_ROWS=1" in first[0][1]


def test_exit_waits_for_the_compile_in_progress_and_stops_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At exit (cuda_loop's atexit handler) the background compile finishes the variant it is
    compiling and starts no other; the handler returns once it has."""
    from budgie import cuda_driver, cuda_loop

    started, release, asked = threading.Event(), threading.Event(), []

    def slow_compiled(arch: str, options: tuple[str, ...], kernel: str = cuda_loop.KERNEL) -> bytes:
        asked.append(options)
        started.set()
        release.wait(timeout=10)
        return b"cubin"

    monkeypatch.setattr(cuda_loop, "compiled", slow_compiled)
    monkeypatch.setattr(cuda_driver, "arch_of", lambda device: "sm_90")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))
    monkeypatch.setattr(cuda_loop, "_exiting", threading.Event())
    monkeypatch.setattr(cuda_loop, "_compile_threads", [])
    thread = cuda_loop.compile_in_background(torch.device("cuda", 0), torch.bfloat16)
    assert thread is not None and started.wait(timeout=10)
    exiting = threading.Thread(target=cuda_loop._finish_compiles)
    exiting.start()
    exiting.join(timeout=0.2)
    assert exiting.is_alive()  # waiting for the variant in progress
    release.set()
    exiting.join(timeout=10)
    assert not exiting.is_alive() and not thread.is_alive()
    assert len(asked) == 1  # of four variants


def test_a_compiled_kernel_is_handed_out_while_another_compiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """compiled() returns a cubin made earlier without waiting for the compile lock, which the
    background compile holds variant after variant (a first transcript waited ~15 s for all of
    them on an H100: gpu_compare_h100_2026-11-25_session12c.json's cold start)."""
    from budgie import cuda_loop

    options = cuda_loop.kernel_options(torch.bfloat16, 1)
    monkeypatch.setattr(cuda_loop, "_cubins", {("sm_90", options, cuda_loop.KERNEL): b"cubin"})
    got: list[bytes] = []
    with cuda_loop._lock:  # a compile in progress
        asker = threading.Thread(target=lambda: got.append(cuda_loop.compiled("sm_90", options)))
        asker.start()
        asker.join(timeout=5)
        assert got == [b"cubin"]
