"""The CUDA runner's host-side logic, testable without a GPU: buckets and the Triton switch."""

from __future__ import annotations

import copy
import types
from typing import cast

import numpy as np
import pytest
import torch

from budgie import cuda_frontend, cuda_runner, cuda_warmup
from budgie.audio import to_float32
from budgie.cuda_runner import FEATURE_BUCKET, bucket_batch, bucket_frames, samples_bucket
from budgie.decoding import Hypothesis
from budgie.frontend import MelFeaturizer
from budgie.gpu_decoding import STEPS_PER_GRAPH, StepDecoder, unchecked_replays
from budgie.model import ParakeetTDT
from conftest import SynthModels

HOP = 160


@pytest.mark.parametrize("num_samples", [1, 159, 160, 20479, 20480, 20481, 16000 * 19 + 7])
def test_samples_bucket_gives_exactly_an_encoder_bucket_of_frames(num_samples: int) -> None:
    samples = samples_bucket(num_samples, HOP)
    assert samples >= num_samples
    stft_frames = samples // HOP + 1  # torch.stft with center=True
    assert stft_frames % FEATURE_BUCKET == 0
    assert bucket_frames(stft_frames) == stft_frames
    assert num_samples // HOP < stft_frames  # every valid feature frame is inside


def test_batch_buckets() -> None:
    assert [bucket_batch(b) for b in (1, 2, 3, 5, 8, 9, 64, 65)] == [1, 2, 4, 8, 8, 16, 64, 128]


def test_bucketed_frontend_equals_unbucketed_on_valid_frames(synth_models: SynthModels) -> None:
    """What the frontend graph relies on: zero samples past an input's length change none of
    its valid feature frames."""
    featurizer = synth_models.model("tiny").network.preprocessor.featurizer
    assert isinstance(featurizer, MelFeaturizer)
    rng = np.random.default_rng(0)
    audio = torch.from_numpy(rng.standard_normal(16000 * 2 + 37).astype(np.float32))
    n = torch.tensor([audio.shape[0]])
    with torch.inference_mode():
        exact, exact_len = featurizer(audio[None], n)
        padded = torch.zeros(1, samples_bucket(audio.shape[0], HOP))
        padded[0, : audio.shape[0]] = audio
        bucketed, bucketed_len = featurizer(padded, n)
    valid = int(exact_len[0])
    assert int(bucketed_len[0]) == valid
    assert bucketed.shape[2] % FEATURE_BUCKET == 0
    assert torch.allclose(bucketed[..., :valid], exact[..., :valid], atol=1e-5)
    assert not bucketed[..., valid:].any()


def test_triton_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGIE_TRITON", "0")
    assert cuda_runner.triton_step_decoder() is None
    monkeypatch.setenv("BUDGIE_TRITON", "1")
    try:
        import triton  # noqa: F401
    except ImportError:
        assert cuda_runner.triton_step_decoder() is None  # CPU-only installs: the torch step
    else:
        from budgie.triton_decoding import TritonStepDecoder

        assert cuda_runner.triton_step_decoder() is TritonStepDecoder


@pytest.mark.parametrize(
    ("longest", "rate", "replays"), [(0, 0.25, 0), (63, 0.25, 0), (64, 0.25, 1), (400, 0.6, 15)]
)
def test_unchecked_replays_stay_below_the_estimated_steps(
    longest: int, rate: float, replays: int
) -> None:
    got = unchecked_replays(longest, rate)
    assert got == replays
    assert got * STEPS_PER_GRAPH <= longest * rate


class _BrokenTriton(StepDecoder):
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler for this GPU")


class _FakeGraph:
    def __init__(self, machine: StepDecoder, compile: bool) -> None:
        self.machine, self.compile = machine, compile


def test_decoder_falls_back_to_the_torch_step_when_triton_fails(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", _FakeGraph)
    runner = cuda_runner.CudaRunner(synth_models.model("tiny").network, compile_decoder=True)
    runner.triton_decoder, runner.loop_decoder = _BrokenTriton, None
    with pytest.warns(RuntimeWarning, match="no compiler for this GPU"):
        machine, graph = runner._decoder_machine(1, 512, torch.device("cpu"), graphed=True)
    assert type(machine) is StepDecoder and isinstance(graph, _FakeGraph) and graph.compile
    assert runner.triton_decoder is None  # not tried again
    machine, graph = runner._decoder_machine(16, 512, torch.device("cpu"), graphed=False)
    assert type(machine) is StepDecoder and graph is None


@pytest.mark.parametrize(
    ("setting", "parts"),
    [
        ("", set()),
        ("0", set()),
        ("1", {"encoder", "decoder"}),
        ("all", {"encoder", "decoder"}),
        ("encoder", {"encoder"}),
        ("Decoder, encoder", {"encoder", "decoder"}),
        ("nonsense", set()),
    ],
)
def test_compile_is_opt_in(setting: str, parts: set[str]) -> None:
    assert cuda_runner.compile_targets(setting) == parts


def test_fused_encoder_layers_only_in_16_bit(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float32 keeps the eager layers (NeMo-exact); 16-bit weights get the Triton-fused layer
    where triton imports, unless BUDGIE_TRITON=0."""
    import copy

    network = copy.deepcopy(synth_models.model("tiny").network)
    assert cuda_runner.fused_layer_runner(network) is None
    assert cuda_runner.fused_subsampling(network) is None
    network.encoder.fold_batch_norms()
    network.encoder.set_matmul_dtype(torch.bfloat16)
    try:
        import triton  # noqa: F401

        has_triton = True
    except ImportError:
        has_triton = False
    runner = cuda_runner.fused_layer_runner(network)
    first_stage = cuda_runner.fused_subsampling(network)
    assert (runner is not None) == (first_stage is not None) == has_triton
    if has_triton:
        from budgie.triton_encoder import fused_layer
        from budgie.triton_subsampling import fused_stages

        assert runner is fused_layer and first_stage is fused_stages
    monkeypatch.setenv("BUDGIE_TRITON", "0")
    assert cuda_runner.fused_layer_runner(network) is None
    assert cuda_runner.fused_subsampling(network) is None


class _FakeTriton(StepDecoder):
    """Stands in for the Triton machine (a plain StepDecoder: only its type is looked at)."""


@pytest.mark.parametrize(
    ("compiled", "batch", "triton"),
    [(False, 1, True), (False, 64, True), (False, 128, False), (True, 8, True), (True, 16, False)],
)
def test_triton_decoder_batch_limit(
    synth_models: SynthModels,
    monkeypatch: pytest.MonkeyPatch,
    compiled: bool,
    batch: int,
    triton: bool,
) -> None:
    """Triton up to batch 64 against the graphed torch step, up to 8 against the compiled one."""
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", _FakeGraph)
    runner = cuda_runner.CudaRunner(synth_models.model("tiny").network, compile_decoder=compiled)
    runner.triton_decoder, runner.loop_decoder = _FakeTriton, None
    machine, graph = runner._decoder_machine(batch, 512, torch.device("cpu"), graphed=True)
    assert (type(machine) is _FakeTriton) == triton
    assert isinstance(graph, _FakeGraph) and graph.compile == (compiled and not triton)


class _FakeLoop(StepDecoder):
    """Stands in for the one-launch machine: a torch StepDecoder that says it runs to the end
    (its steps still run one by one here) and counts its warm-ups."""

    runs_to_end = True
    max_batch = 4
    warm_ups = 0

    def warm_up(self) -> None:
        type(self).warm_ups += 1


class _BrokenLoop(_FakeLoop):
    def warm_up(self) -> None:
        raise RuntimeError("barrier kernel does not build")


def test_large_batches_decode_in_slices(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TRITON_MAX_BATCH rows (4 here), with a Triton machine at hand, a batch decodes in
    slices of that many rows, each on its own machine, with the whole batch's hypotheses; with
    the torch step compiled, or the setting off, in one piece."""
    monkeypatch.setattr(cuda_runner, "TRITON_MAX_BATCH", 4)
    net = synth_models.model("tiny").network
    gen = torch.Generator().manual_seed(1)
    encoded = torch.randn(10, 30, net.cfg.encoder.d_model, generator=gen) * 3
    lengths = torch.tensor([30, 29, 28, 25, 22, 20, 16, 12, 9, 5])

    def decoded(split: bool, compiled: bool = False) -> tuple[list[Hypothesis], set[int]]:
        monkeypatch.setattr(cuda_runner, "SPLIT_LARGE_BATCHES", split)
        runner = cuda_runner.CudaRunner(net, compile_decoder=compiled)
        runner.triton_decoder, runner.loop_decoder = _FakeTriton, None
        runner.use_graphs = False  # (on the CPU: the slices' machines step eagerly)
        hyps = runner.decode(encoded, lengths)
        return hyps, {rows for rows, _ in runner._decoders}

    whole, whole_rows = decoded(split=False)
    sliced, sliced_rows = decoded(split=True)
    assert sliced == whole and sum(len(h.token_ids) for h in whole) > 0
    assert whole_rows == {cuda_runner.bucket_batch(10)}
    assert sliced_rows == {4, cuda_runner.bucket_batch(2)}
    assert decoded(split=True, compiled=True)[1] == whole_rows


@pytest.mark.parametrize(("batch", "graphed", "loop"), [(1, True, True), (4, True, True),
                         (8, True, False), (1, False, False)])  # fmt: skip
def test_loop_decoder_for_small_graphed_batches(
    synth_models: SynthModels,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    graphed: bool,
    loop: bool,
) -> None:
    """The one-launch machine up to its max_batch, warmed up once, with no graph; above it (or
    for a shape's first, ungraphed use) the step machines as before."""
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", _FakeGraph)
    monkeypatch.setattr(_FakeLoop, "warm_ups", 0)
    runner = cuda_runner.CudaRunner(synth_models.model("tiny").network)
    runner.triton_decoder, runner.loop_decoder = _FakeTriton, _FakeLoop
    machine, graph = runner._decoder_machine(batch, 512, torch.device("cpu"), graphed=graphed)
    assert (type(machine) is _FakeLoop) == loop and _FakeLoop.warm_ups == int(loop)
    assert (graph is None) == (loop or not graphed)


def test_loop_decoder_failure_falls_back_to_steps(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", _FakeGraph)
    runner = cuda_runner.CudaRunner(synth_models.model("tiny").network)
    runner.triton_decoder, runner.loop_decoder = _FakeTriton, _BrokenLoop
    with pytest.warns(RuntimeWarning, match="barrier kernel does not build"):
        machine, graph = runner._decoder_machine(1, 512, torch.device("cpu"), graphed=True)
    assert type(machine) is _FakeTriton and isinstance(graph, _FakeGraph)
    assert runner.loop_decoder is None  # not tried again


class _FakeKernel(_FakeLoop):
    """Stands in for the shared-memory CUDA machine: only for networks it says it supports."""

    supported = True
    max_batch = 8  # (the Triton loop's: 4)

    @classmethod
    def supports(cls, network: ParakeetTDT) -> bool:
        return cls.supported


class _BrokenKernel(_FakeKernel):
    def warm_up(self) -> None:
        raise RuntimeError("no NVRTC here")


@pytest.mark.parametrize(
    ("supported", "batch"), [(True, 1), (True, 8), (False, 1), (False, 8), (True, 16)]
)
def test_kernel_machine_first_where_it_supports_the_network(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch, supported: bool, batch: int
) -> None:
    """The shared-memory kernel machine before the Triton loop, for networks it supports (16-bit
    weights) up to its max_batch (8); otherwise the Triton loop up to its own (4), then the
    graphed Triton step, without a warning."""
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", _FakeGraph)
    monkeypatch.setattr(_FakeKernel, "supported", supported)
    runner = cuda_runner.CudaRunner(synth_models.model("tiny").network)
    runner.triton_decoder, runner.loop_decoder = _FakeTriton, _FakeLoop
    runner.kernel_decoder = _FakeKernel
    machine, graph = runner._decoder_machine(batch, 512, torch.device("cpu"), graphed=True)
    if supported and batch <= 8:
        want: type[StepDecoder] = _FakeKernel
    else:
        want = _FakeLoop if batch <= 4 else _FakeTriton
    assert type(machine) is want and (graph is None) == (want is not _FakeTriton)
    assert runner.kernel_decoder is _FakeKernel  # still there for the next shape


def test_kernel_machine_failure_falls_back_to_the_triton_loop(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", _FakeGraph)
    runner = cuda_runner.CudaRunner(synth_models.model("tiny").network)
    runner.triton_decoder, runner.loop_decoder = _FakeTriton, _FakeLoop
    runner.kernel_decoder = _BrokenKernel
    with pytest.warns(RuntimeWarning, match="shared-memory CUDA decoder unavailable.*NVRTC"):
        machine, graph = runner._decoder_machine(1, 512, torch.device("cpu"), graphed=True)
    assert type(machine) is _FakeLoop and graph is None
    assert runner.kernel_decoder is None  # not tried again


class _ReadyKernel(_FakeKernel):
    """A kernel machine whose compiled kernel is already there (``ready_now``)."""

    ready = True

    @classmethod
    def ready_now(cls, network: ParakeetTDT, batch: int, device: torch.device) -> bool:
        return cls.ready


@pytest.mark.parametrize("ready", [True, False])
def test_first_use_takes_a_kernel_machine_only_when_it_is_compiled(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch, ready: bool
) -> None:
    """A shape's first use: the kernel machine when building it waits for no compiler (long
    inputs are shapes of their own, thousands of steps each), else the torch step in a graph;
    the Triton loop never (building it may compile)."""
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", _FakeGraph)
    monkeypatch.setattr(_ReadyKernel, "ready", ready)
    runner = cuda_runner.CudaRunner(synth_models.model("tiny").network)
    runner.triton_decoder, runner.loop_decoder = _FakeTriton, _FakeLoop
    runner.kernel_decoder = _ReadyKernel
    machine, graph = runner._decoder_machine(1, 512, torch.device("cpu"), graphed=False)
    if ready:
        assert type(machine) is _ReadyKernel and graph is None
    else:
        assert type(machine) is StepDecoder


def test_a_first_use_one_launch_machine_is_kept(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-launch machine built on a shape's first use is the shape's final machine: the
    second use does not build another."""
    net = synth_models.model("tiny").network
    runner = cuda_runner.CudaRunner(net)
    runner.triton_decoder, runner.loop_decoder = None, None
    runner.kernel_decoder = _ReadyKernel
    monkeypatch.setattr(_ReadyKernel, "ready", True)
    encoded = torch.randn(
        1, 40, net.cfg.encoder.d_model, generator=torch.Generator().manual_seed(0)
    )
    lengths = torch.tensor([40])
    machines = []
    for _ in range(3):
        runner.decode(encoded, lengths)
        machines.append(next(iter(runner._decoders.values()))[0])
    assert type(machines[0]) is _ReadyKernel
    assert machines[1] is machines[0] and machines[2] is machines[0]


def test_kernel_machine_is_ready_once_its_kernel_is_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KernelLoopDecoder.ready_now: the cubin for_network would load is in this process's
    compiled set (the plain kernel below CLUSTER_MIN_BATCH rows, the cluster one from it on an
    sm_90 GPU); never for float32 weights, off CUDA or past 8 rows. No GPU needed."""
    from budgie import cuda_cluster, cuda_loop

    monkeypatch.setattr(cuda_loop.cuda_driver, "arch_of", lambda device: "sm_90")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.setattr(cuda_loop, "_cubins", {})
    monkeypatch.setattr(cuda_loop, "_cluster_refusal", [])
    joint = types.SimpleNamespace(num_labels=1025, num_durations=5)
    cfg = types.SimpleNamespace(joint=types.SimpleNamespace(joint_hidden=640))

    def network(dtype: torch.dtype) -> ParakeetTDT:
        encoder = types.SimpleNamespace(matmul_dtype=dtype)
        return cast(ParakeetTDT, types.SimpleNamespace(encoder=encoder, joint=joint, cfg=cfg))

    cuda, bf16 = torch.device("cuda", 0), network(torch.bfloat16)
    ready = cuda_loop.KernelLoopDecoder.ready_now
    assert not ready(bf16, 1, cuda) and not ready(bf16, 4, cuda)
    cuda_loop._cubins[("sm_90", cuda_loop.kernel_options(torch.bfloat16, 1), cuda_loop.KERNEL)] = (
        b""
    )
    assert ready(bf16, 1, cuda) and not ready(bf16, 2, cuda)
    assert not ready(network(torch.float16), 1, cuda) and not ready(network(torch.float32), 1, cuda)
    assert not ready(bf16, 1, torch.device("cpu")) and not ready(bf16, 9, cuda)
    options = cuda_cluster.cluster_options(torch.bfloat16, 4, 640, 1030)
    cuda_loop._cubins[("sm_90", options, cuda_cluster.KERNEL)] = b""
    assert ready(bf16, 3, cuda) and ready(bf16, 4, cuda)


def test_kernel_machine_lookup_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """BUDGIE_CUDA_KERNEL=0: no kernel machine; otherwise cuda_loop's class, found without
    Triton and refusing float32 networks (the tiny one)."""
    monkeypatch.setenv("BUDGIE_CUDA_KERNEL", "0")
    assert cuda_runner.kernel_loop_decoder() is None
    monkeypatch.setenv("BUDGIE_CUDA_KERNEL", "1")
    from budgie.cuda_loop import KernelLoopDecoder

    assert cuda_runner.kernel_loop_decoder() is KernelLoopDecoder


def _decode_four_times(
    net: ParakeetTDT, device: str
) -> tuple[list[list[Hypothesis]], list[StepDecoder], cuda_runner.CudaRunner]:
    """Four decodes of one input; the hypotheses and the machine after each."""
    runner = cuda_runner.CudaRunner(net)
    runner.triton_decoder, runner.loop_decoder = None, _FakeLoop
    gen = torch.Generator().manual_seed(0)
    encoded = (torch.randn(1, 40, net.cfg.encoder.d_model, generator=gen) * 3).to(device)
    lengths = torch.tensor([40], device=device)
    hyps, machines = [], []
    for _ in range(4):
        hyps.append(runner.decode(encoded, lengths))
        machines.append(next(iter(runner._decoders.values()))[0])
    return hyps, machines, runner


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_decode_keeps_its_loop_machine(synth_models: SynthModels, device: str) -> None:
    """First use of a shape: the torch machine; from the second on, the loop machine, built
    once (it has no graph, which must not make every call rebuild it); the same hypotheses
    throughout. On CUDA the loop machine's lengths come through pinned memory: the steps per
    frame it learns from them equal the CPU runner's."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    net = synth_models.model("tiny").network
    hyps, machines, runner = _decode_four_times(copy.deepcopy(net).to(device), device)
    assert all(h == hyps[0] for h in hyps[1:])
    assert type(machines[1]) is _FakeLoop and machines[1] is machines[2] is machines[3]
    assert sum(len(h.token_ids) for h in hyps[0]) > 0
    if device == "cuda":
        on_cpu, _, cpu_runner = _decode_four_times(net, "cpu")
        assert on_cpu == hyps
        assert runner._steps_per_frame == cpu_runner._steps_per_frame != 0.25


@pytest.mark.parametrize("threads", [0, 3])
def test_pack_padded_zeroes_tails_and_unused_rows(threads: int) -> None:
    """Serial and threaded packing give the graph's padded input: each row at the start of its
    line, zeros after it and in the lines past the last row (the buffer held garbage)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(n).astype(np.float32) for n in (700_000, 1, 0, 400_003)]
    out = np.full((6, 700_005), -7.0, dtype=np.float32)
    pool = ThreadPoolExecutor(threads) if threads else None
    cuda_frontend.pack_padded(rows, out, pool)
    want = np.zeros_like(out)
    for i, row in enumerate(rows):
        want[i, : len(row)] = row
    assert np.array_equal(out, want)
    cuda_frontend.pack_padded([], out, pool)
    assert not out.any()


def test_int16_waveforms_are_scaled_on_the_device_as_on_the_host() -> None:
    rng = np.random.default_rng(5)
    pcm = rng.integers(-32768, 32768, (2, 999), dtype=np.int64).astype(np.int16)
    pcm[0, :2] = (-32768, 32767)
    got = cuda_frontend.waveform_floats(torch.from_numpy(pcm))
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.from_numpy(to_float32(pcm)))
    floats = torch.from_numpy(to_float32(pcm))
    assert cuda_frontend.waveform_floats(floats) is floats


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int16_batches_give_the_features_of_float32_batches(synth_models: SynthModels) -> None:
    """CudaRunner.preprocess: int16 rows (copied as int16, scaled on the GPU) give the float32
    rows' features bit for bit, eagerly (first use of a shape) and from the captured graphs
    (second use); a mixed batch goes the float32 way."""
    net = copy.deepcopy(synth_models.model("tiny").network).to("cuda")
    runner = cuda_runner.CudaRunner(net)
    rng = np.random.default_rng(6)
    pcm = [rng.integers(-3000, 3000, n, dtype=np.int64).astype(np.int16) for n in (16000, 9001)]
    floats = [to_float32(r) for r in pcm]
    with torch.inference_mode():
        eager, eager_len = runner.preprocess(floats)
        got, got_len = runner.preprocess(pcm)
        assert torch.equal(got, eager) and torch.equal(got_len, eager_len)
        graphed, graphed_len = runner.preprocess(floats)
        assert {key[2] for key in runner._frontends} == {torch.float32}
        for rows in (pcm, [pcm[0], floats[1]]):
            got, got_len = runner.preprocess(rows)
            assert torch.equal(got, graphed) and torch.equal(got_len, graphed_len)
    assert {key[2] for key in runner._frontends} == {torch.int16, torch.float32}
    assert torch.equal(graphed_len, eager_len)
    for row, n in enumerate(eager_len.tolist()):  # the bucket's extra frames are zero
        assert torch.allclose(graphed[row, :, :n], eager[row, :, :n], atol=1e-5)
        assert not graphed[row, :, n:].any()


def test_warm_up_only_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cuda_warmup.start(torch.device("cpu")) is None
    monkeypatch.setattr(cuda_warmup, "ENABLED", False)
    assert cuda_warmup.start(torch.device("cuda")) is None


def test_first_transcribe_waits_for_the_warm_up(synth_models: SynthModels) -> None:
    """load_model leaves the warm-up running; the first transcribe joins it and forgets it."""
    import threading
    import time

    model = copy.copy(synth_models.model("tiny"))
    finished = threading.Event()

    def slow_warm_up() -> None:
        time.sleep(0.2)
        finished.set()

    model.warming = threading.Thread(target=slow_warm_up)
    model.warming.start()
    samples = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    model.transcribe(samples)
    assert finished.is_set() and model.warming is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_warm_up_runs_every_library_call() -> None:
    assert cuda_warmup.warm_up(torch.device("cuda"))
    thread = cuda_warmup.start(torch.device("cuda"))
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_first_decode_replays_a_graph_of_the_eager_step(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shape's first decode captures the torch step on the spot: the hypotheses of the eager
    step; the second use builds the machine kept for repeated use."""
    net = copy.deepcopy(synth_models.model("tiny").network).to("cuda")
    gen = torch.Generator().manual_seed(3)
    encoded = (torch.randn(2, 40, net.cfg.encoder.d_model, generator=gen) * 3).cuda()
    lengths = torch.tensor([40, 23], device="cuda")

    def runner() -> cuda_runner.CudaRunner:
        made = cuda_runner.CudaRunner(net)
        made.triton_decoder, made.loop_decoder = None, None
        return made

    graphed = runner()
    first = graphed.decode(encoded, lengths)
    assert next(iter(graphed._decoders.values()))[1] is not None
    assert not graphed._final_decoders
    monkeypatch.setattr(cuda_runner, "GRAPH_FIRST_DECODE", False)
    eager = runner()
    assert eager.decode(encoded, lengths) == first
    assert next(iter(eager._decoders.values()))[1] is None
    assert sum(len(h.token_ids) for h in first) > 0
    assert graphed.decode(encoded, lengths) == first
    assert len(graphed._final_decoders) == 1


def test_triton_classes_are_looked_up_when_graphs_are_due(
    synth_models: SynthModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing Triton costs 0.3-0.6 s: a runner and a shape's first (eager) decode must not
    do it; the lookup happens once, at the first graphed decode, and a setting wins over it."""
    looked_up: list[str] = []
    monkeypatch.setattr(
        cuda_runner, "triton_step_decoder", lambda: looked_up.append("step") or None
    )
    monkeypatch.setattr(cuda_runner, "loop_decoder", lambda: looked_up.append("loop") or None)
    monkeypatch.setattr(cuda_runner, "GraphedStepDecoder", lambda machine, compile: None)
    net = synth_models.model("tiny").network
    runner = cuda_runner.CudaRunner(net)
    runner._decoder_machine(1, 64, torch.device("cpu"), graphed=False)
    assert looked_up == []
    runner._decoder_machine(1, 64, torch.device("cpu"), graphed=True)
    runner._decoder_machine(2, 64, torch.device("cpu"), graphed=True)
    assert sorted(looked_up) == ["loop", "step"]  # once each
    other = cuda_runner.CudaRunner(net)
    other.triton_decoder = other.loop_decoder = None
    other._decoder_machine(1, 64, torch.device("cpu"), graphed=True)
    assert sorted(looked_up) == ["loop", "step"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_first_transcript_does_not_import_triton(synth_models: SynthModels) -> None:
    """In a fresh interpreter: load_model and a first transcript leave Triton unimported; the
    second use of the shape (graphs) brings it in."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, budgie\n"
        f"m = budgie.load_model({str(synth_models.checkpoint('tiny').path)!r}, device='cuda',"
        " dtype='bf16')\n"
        "x = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)\n"
        "m.transcribe(x); print('triton' in sys.modules)\n"
        "m.transcribe(x); print('triton' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "True"]
