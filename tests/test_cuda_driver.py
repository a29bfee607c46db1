"""cuda_driver's host side on the CPU: a missing NVRTC is a KernelUnavailable (the callers'
signal to fall back), and compiled kernels are cached on disk under a key of everything they
depend on. Compiling and launching for real is tested on CUDA (tests/test_cuda_loop.py)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import torch

from budgie import cuda_driver
from budgie.cuda_driver import KernelUnavailable


def test_missing_nvrtc_is_kernel_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: str) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(cuda_driver, "_libraries", {})
    monkeypatch.setattr(cuda_driver.ctypes, "CDLL", no_library)
    with pytest.raises(KernelUnavailable, match="libnvrtc not found"):
        cuda_driver.compile_cubin('extern "C" __global__ void k() {}', "k", "sm_90")
    with pytest.raises(KernelUnavailable, match="libcuda not found"):
        cuda_driver.shared_memory_limit(torch.device("cuda", 0))


def test_cubins_are_cached_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The first request compiles and stores; the same request again (a later process) reads
    the file; other options, another architecture, another NVRTC or another header text
    compile anew; an unwritable cache only costs the compile."""
    compiles: list[tuple[str, tuple[str, ...]]] = []

    def fake_compile(
        source: str,
        name: str,
        arch: str,
        options: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> bytes:
        compiles.append((arch, tuple(options)))
        return f"{name}:{arch}:{','.join(options)}".encode()

    version = {"now": "13.0"}
    monkeypatch.setattr(cuda_driver, "compile_cubin", fake_compile)
    monkeypatch.setattr(cuda_driver, "nvrtc_version", lambda: version["now"])
    monkeypatch.setenv("BUDGIE_CACHE", str(tmp_path))
    source = 'extern "C" __global__ void k() {}'
    first = cuda_driver.cached_cubin(source, "k", "sm_90", ("-DA=1",))
    assert first == b"k:sm_90:-DA=1" and len(compiles) == 1
    assert len(list((tmp_path / "kernels").glob("k-sm_90-*.cubin"))) == 1
    assert cuda_driver.cached_cubin(source, "k", "sm_90", ("-DA=1",)) == first
    assert len(compiles) == 1  # read back, not compiled
    cuda_driver.cached_cubin(source, "k", "sm_90", ("-DA=2",))
    cuda_driver.cached_cubin(source, "k", "sm_80", ("-DA=1",))
    version["now"] = "13.1"
    cuda_driver.cached_cubin(source, "k", "sm_90", ("-DA=1",))
    cuda_driver.cached_cubin(source + " ", "k", "sm_90", ("-DA=1",))
    header = {"common.cuh": "#define X 1"}
    cuda_driver.cached_cubin(source, "k", "sm_90", ("-DA=1",), header)
    assert len(compiles) == 6
    cuda_driver.cached_cubin(source, "k", "sm_90", ("-DA=1",), header)  # the same: on disk
    cuda_driver.cached_cubin(source, "k", "sm_90", ("-DA=1",), {"common.cuh": "#define X 2"})
    assert len(compiles) == 7
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("BUDGIE_CACHE", str(blocked))
    assert cuda_driver.cached_cubin(source, "k", "sm_90", ()) == b"k:sm_90:"
