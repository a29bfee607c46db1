"""cuda_cluster's host side on the CPU: the parameter block matches the kernel's struct field
for field, the split and shared memory of parakeet-tdt-0.6b-v2's sizes on an H100, and the
choice between the cluster machine and the plain one. Its decoding is tested on CUDA with the
plain kernel's tests (tests/test_cuda_loop.py, parametrized over both machines)."""

from __future__ import annotations

import ctypes
import re

import pytest
import torch

from budgie import cuda_cluster, cuda_loop
from budgie.cuda_cluster import CLUSTER, Params, joint_options, joint_tiles, shared_bytes
from budgie.cuda_driver import KernelUnavailable
from budgie.cuda_loop import KernelLoopDecoder, Partition
from conftest import SynthModels

PLAIN_REFUSAL = "needs bf16 or fp16 weights"  # the plain machine's, for the tiny model


def test_params_match_the_kernel_struct() -> None:
    """tdt_cluster.cu's ``struct Params`` read from the source: the same fields in the same
    order, pointers as pointers, ints as ints (a mismatch would hand the kernel garbage)."""
    source = (cuda_loop.KERNELS / "tdt_cluster.cu").read_text()
    body = re.search(r"struct Params \{(.*?)\n\};", source, re.S)
    assert body is not None
    fields: list[tuple[str, str]] = []
    for line in body.group(1).splitlines():
        code = line.split("//")[0].replace("const ", "").strip().rstrip(";")
        if not code:
            continue
        first, *others = code.split(",")
        found = re.fullmatch(r"(.*?)\s*(\**)\s*(\w+)", first.strip())
        assert found is not None, code
        kind, star, name = found.groups()
        declared = [(star, name)] + [
            (o.strip().count("*") * "*", o.strip().lstrip("*").strip()) for o in others
        ]
        for star, name in declared:
            pointer = "*" in kind or bool(star)
            fields.append((name, "pointer" if pointer else kind))
    ours = [
        (name, "pointer" if ctype is ctypes.c_void_p else "int")
        for name, ctype in Params._fields_  # type: ignore[misc]
    ]
    assert ours == fields
    assert ctypes.sizeof(Params) == 8 * 21 + 4 * 14


def test_parakeet_split_on_an_h100() -> None:
    """132 SMs: 8 clusters of 16 at most, 7 for the prediction network: 112 blocks give 6
    units each (107 blocks used, 8 clusters with the joint's); a prediction block's shared
    memory is the larger (a joint warp computes 5 rows, 5 column groups per lane, 3 rows'
    weights in 30 registers, 2 in shared memory), and it fits the H100's 227 KB at 8 rows;
    an 8k-vocabulary joint would not fit the cluster."""
    part = Partition.over(7 * CLUSTER, 640, 640, 0)
    assert part == Partition(blocks=107, units=6, pred_rows=6, joint_rows=0)
    assert joint_tiles(640, 1030) == (5, 3, 5)  # 30 registers, 2 rows from shared memory
    for rows in (1, 8):
        need = shared_bytes(rows, part, 2, 640, 640, 1030)
        weights = 2 * part.block_elements(2, 640, 640)
        assert weights == 2 * (3 * 24 * 640 + 6 * 640)
        assert weights < need <= 227 * 1024
    with pytest.raises(KernelUnavailable, match="too large"):
        joint_options(640, 8198)


def test_for_network_prefers_the_cluster_machine(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From CLUSTER_MIN_BATCH rows KernelLoopDecoder.for_network builds and warms up the
    cluster machine; below it, or where that machine is unavailable (one warning, then not
    tried again), or with BUDGIE_CUDA_CLUSTER=0, the plain one (whose own refusal shows
    here: the tiny model's weights are float32)."""
    net = synth_models.model("tiny").network
    tried: list[str] = []

    class Refused:
        @classmethod
        def for_network(cls, *args: object) -> None:
            tried.append("cluster")
            raise KernelUnavailable("no clusters on this GPU")

    class Built:
        @classmethod
        def for_network(cls, *args: object) -> Built:
            tried.append("cluster")
            return cls()

        def warm_up(self) -> None:
            tried.append("warm")

    cpu, rows = torch.device("cpu"), cuda_loop.CLUSTER_MIN_BATCH
    monkeypatch.setattr(cuda_loop, "_cluster_refusal", [])
    monkeypatch.setattr(cuda_cluster, "ClusterLoopDecoder", Built)
    assert isinstance(KernelLoopDecoder.for_network(net, rows, 8, cpu), Built)
    assert tried == ["cluster", "warm"]
    with pytest.raises(KernelUnavailable, match=PLAIN_REFUSAL):  # a smaller batch: plain
        KernelLoopDecoder.for_network(net, rows - 1, 8, cpu)
    assert tried == ["cluster", "warm"]
    monkeypatch.setattr(cuda_cluster, "ClusterLoopDecoder", Refused)
    tried.clear()
    warned = pytest.warns(RuntimeWarning, match="no clusters on this GPU")
    with warned, pytest.raises(KernelUnavailable, match=PLAIN_REFUSAL):
        KernelLoopDecoder.for_network(net, rows, 8, cpu)
    with pytest.raises(KernelUnavailable, match=PLAIN_REFUSAL):  # not tried again
        KernelLoopDecoder.for_network(net, rows, 8, cpu)
    assert tried == ["cluster"]
    monkeypatch.setattr(cuda_loop, "_cluster_refusal", [])
    monkeypatch.setattr(cuda_cluster, "ClusterLoopDecoder", Built)
    monkeypatch.setenv("BUDGIE_CUDA_CLUSTER", "0")
    with pytest.raises(KernelUnavailable, match=PLAIN_REFUSAL):
        KernelLoopDecoder.for_network(net, rows, 8, cpu)
    assert tried == ["cluster"]


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
    reason="needs a GPU with thread-block clusters",
)
def test_runner_decodes_batches_with_the_cluster_machine(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through load_model and transcribe: a batch of 4 in bf16 decodes with the cluster
    machine once the shape is reused (graphs due), with the plain kernel's machine under
    BUDGIE_CUDA_CLUSTER=0, and both give the same tokens."""
    import numpy as np

    import budgie

    rng = np.random.default_rng(3)
    audio = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000, 24000, 9000, 20000)]

    def transcribe(flag: str) -> tuple[list[list[int]], set[str]]:
        monkeypatch.setenv("BUDGIE_CUDA_CLUSTER", flag)
        model = budgie.load_model(str(synth_models.checkpoint("tiny").path), "cuda", "bf16")
        for _ in range(2):  # the second use of the shape builds the one-launch machine
            results = model.transcribe(audio, batch_size=4)
        assert model.cuda_runner is not None
        kinds = {type(m).__name__ for m, _ in model.cuda_runner._decoders.values()}
        return [r.token_ids for r in results], kinds  # type: ignore[union-attr]

    clustered, kinds = transcribe("1")
    assert "ClusterLoopDecoder" in kinds
    plain, plain_kinds = transcribe("0")
    assert "KernelLoopDecoder" in plain_kinds and "ClusterLoopDecoder" not in plain_kinds
    assert clustered == plain and sum(map(len, plain)) > 0
