"""CUDA C++ kernels compiled at run time: NVRTC to a cubin, the driver API to load and launch.

Why: a kernel that keeps data in shared memory across a persistent loop (cuda_loop.py) cannot
be written in Triton, and a compiler must not be a user's install step. The CUDA builds of torch
ship NVRTC (libnvrtc) and every CUDA machine has the driver (libcuda), so both are reached
through ctypes; nothing here needs nvcc or a build. Launches go to torch's current stream, in
torch's context, so they order with torch's kernels like any other.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from budgie.checkpoint import cache_root

# CUfunction_attribute / CUdevice_attribute values (cuda.h).
_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97
_NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14
CLOCK_RATE_KHZ = 13

# CUlaunchAttributeID values (cuda.h).
_LAUNCH_COOPERATIVE = 2
_LAUNCH_CLUSTER_DIMENSION = 4

Argument = ctypes.c_void_p | ctypes.c_int | ctypes.c_uint | ctypes.Structure


class _LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute: an id and a 64-byte union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_uint * 16)]


class _LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared_bytes", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attributes", ctypes.POINTER(_LaunchAttribute)),
        ("attribute_count", ctypes.c_uint),
    ]


def _launch_config(
    blocks: int, threads: int, shared_bytes: int, stream: int, cluster: int, cooperative: bool
) -> _LaunchConfig:
    """A launch of ``blocks`` blocks in clusters of ``cluster`` (cooperative if asked)."""
    attributes = (_LaunchAttribute * 2)()
    attributes[0].id = _LAUNCH_CLUSTER_DIMENSION
    attributes[0].value[0:3] = [cluster, 1, 1]
    attributes[1].id = _LAUNCH_COOPERATIVE
    attributes[1].value[0] = 1
    config = _LaunchConfig((blocks, 1, 1), (threads, 1, 1), shared_bytes, stream)
    config.attributes = ctypes.cast(attributes, ctypes.POINTER(_LaunchAttribute))
    config.attribute_count = 2 if cooperative else 1
    config._keep = attributes  # type: ignore[attr-defined]  # alive as long as the config
    return config


class KernelUnavailable(RuntimeError):
    """NVRTC or the driver is missing, or the kernel does not compile or fit on this GPU."""


_lock = threading.Lock()
_libraries: dict[str, ctypes.CDLL] = {}


def _library(kind: str) -> ctypes.CDLL:
    """libnvrtc (from torch's CUDA wheels or the system) or libcuda, loaded once."""
    with _lock:
        if kind in _libraries:
            return _libraries[kind]
        if kind == "cuda":
            names = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"]
        else:
            major = (torch.version.cuda or "12").split(".")[0]
            names = [f"libnvrtc.so.{major}", "libnvrtc.so"]
            for site in {str(Path(torch.__file__).parents[1])}:  # the nvidia-* wheels
                names += sorted(glob.glob(f"{site}/nvidia/*/lib/libnvrtc.so*"))
                names += sorted(glob.glob(f"{site}/nvidia/cu*/lib/libnvrtc.so*"))
        for name in names:
            if "builtins" in name or ".alt." in name:
                continue
            try:
                lib = _libraries[kind] = ctypes.CDLL(name)
                return lib
            except OSError:
                continue
        raise KernelUnavailable(f"lib{kind} not found (tried {', '.join(names[:3])}, ...)")


def _check_driver(result: int, what: str) -> None:
    if result != 0:
        message = ctypes.c_char_p()
        _library("cuda").cuGetErrorString(result, ctypes.byref(message))
        text = message.value.decode() if message.value else f"error {result}"
        raise KernelUnavailable(f"{what}: {text}")


def compile_cubin(
    source: str,
    name: str,
    arch: str,
    options: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """CUDA C++ source -> cubin for ``arch`` (e.g. "sm_90"); the compiler's log in the error.
    ``headers``: the files the source may ``#include "name"``, by name."""
    nvrtc = _library("nvrtc")
    program = ctypes.c_void_p()
    included = dict(headers or {})
    texts = (ctypes.c_char_p * len(included))(*(t.encode() for t in included.values()))
    names = (ctypes.c_char_p * len(included))(*(n.encode() for n in included))

    def check(result: int, what: str) -> None:
        if result != 0:
            nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
            text = nvrtc.nvrtcGetErrorString(result).decode()
            size = ctypes.c_size_t()
            log = ""
            if program and nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size)) == 0:
                buffer = ctypes.create_string_buffer(size.value)
                nvrtc.nvrtcGetProgramLog(program, buffer)
                log = buffer.value.decode(errors="replace").strip()
            raise KernelUnavailable(f"{what} ({name}): {text}\n{log}".strip())

    check(
        nvrtc.nvrtcCreateProgram(
            ctypes.byref(program), source.encode(), name.encode(), len(included), texts, names
        ),
        "nvrtcCreateProgram",
    )
    try:
        flags = [f"--gpu-architecture={arch}", "--std=c++17", *options]
        array = (ctypes.c_char_p * len(flags))(*(f.encode() for f in flags))
        check(nvrtc.nvrtcCompileProgram(program, len(flags), array), "compiling")
        size = ctypes.c_size_t()
        check(nvrtc.nvrtcGetCUBINSize(program, ctypes.byref(size)), "nvrtcGetCUBINSize")
        cubin = ctypes.create_string_buffer(size.value)
        check(nvrtc.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
        return cubin.raw
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@contextlib.contextmanager
def _context_of(device: torch.device) -> Iterator[None]:
    """``device``'s primary context (torch's) current on this thread while driver calls are
    made: torch's device switch makes it so, and restores the previous device after."""
    cuda = _library("cuda")
    with torch.cuda.device(_index(device)):
        current = ctypes.c_void_p()
        _check_driver(cuda.cuCtxGetCurrent(ctypes.byref(current)), "cuCtxGetCurrent")
        if not current.value:  # (the runtime had not set it up on this thread yet)
            torch.cuda.init()  # type: ignore[no-untyped-call]
            handle, context = ctypes.c_int(), ctypes.c_void_p()
            _check_driver(cuda.cuDeviceGet(ctypes.byref(handle), _index(device)), "cuDeviceGet")
            _check_driver(
                cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), handle), "primary context"
            )
            _check_driver(cuda.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        yield


def device_attribute(device: torch.device, attribute: int) -> int:
    """A CUdevice_attribute of ``device`` (cuda.h's numbering)."""
    value = ctypes.c_int()
    with _context_of(device):
        result = _library("cuda").cuDeviceGetAttribute(
            ctypes.byref(value), attribute, _index(device)
        )
    _check_driver(result, "attribute")
    return value.value


def shared_memory_limit(device: torch.device) -> int:
    """The most dynamic shared memory a block may ask for on ``device`` (bytes)."""
    return device_attribute(device, _MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)


class Kernel:
    """One ``extern "C"`` kernel of a cubin, loaded in ``device``'s context. Every driver call
    is made in that context (the caller's current device may be another one)."""

    def __init__(self, cubin: bytes, name: str, device: torch.device, shared_bytes: int) -> None:
        cuda = _library("cuda")
        self.device = device
        self.shared_bytes = shared_bytes
        self._image = ctypes.create_string_buffer(cubin, len(cubin))  # alive with the module
        self._module, self._function = ctypes.c_void_p(), ctypes.c_void_p()
        with _context_of(device):
            _check_driver(cuda.cuModuleLoadData(ctypes.byref(self._module), self._image), "load")
            found = cuda.cuModuleGetFunction(
                ctypes.byref(self._function), self._module, name.encode()
            )
            _check_driver(found, f"kernel {name}")
            if shared_bytes > 48 * 1024:  # the default limit; more must be asked for
                attribute = _MAX_DYNAMIC_SHARED_SIZE_BYTES
                allowed = cuda.cuFuncSetAttribute(self._function, attribute, shared_bytes)
                _check_driver(allowed, f"{shared_bytes} bytes of shared memory")

    def resident_blocks(self, threads: int) -> int:
        """Blocks of ``threads`` threads that fit on one SM at once with this shared memory."""
        blocks = ctypes.c_int()
        shared = ctypes.c_size_t(self.shared_bytes)
        with _context_of(self.device):
            result = _library("cuda").cuOccupancyMaxActiveBlocksPerMultiprocessor(
                ctypes.byref(blocks), self._function, threads, shared
            )
        _check_driver(result, "occupancy")
        return blocks.value

    def allow_large_clusters(self) -> None:
        """Let launches use clusters of more than 8 blocks (up to 16 on Hopper)."""
        with _context_of(self.device):
            result = _library("cuda").cuFuncSetAttribute(
                self._function, _NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1
            )
        _check_driver(result, "non-portable cluster size")

    def max_active_clusters(self, threads: int, cluster: int) -> int:
        """Clusters of ``cluster`` blocks of ``threads`` threads that fit on the GPU at once."""
        count = ctypes.c_int()
        config = _launch_config(cluster, threads, self.shared_bytes, 0, cluster, False)
        with _context_of(self.device):
            result = _library("cuda").cuOccupancyMaxActiveClusters(
                ctypes.byref(count), self._function, ctypes.byref(config)
            )
        _check_driver(result, "cluster occupancy")
        return count.value

    def launch(self, blocks: int, threads: int, arguments: Arguments, cluster: int = 1) -> None:
        """A cooperative launch on torch's current stream: the driver refuses one whose blocks
        cannot all be resident at once, which grid-wide barriers need. With ``cluster`` > 1,
        in thread-block clusters of that many blocks (cooperative too, where the driver takes
        both; otherwise the caller must size the grid to fit, max_active_clusters)."""
        stream = torch.cuda.current_stream(self.device).cuda_stream
        cuda = _library("cuda")
        with _context_of(self.device):
            if cluster == 1:
                grid, block = (blocks, 1, 1), (threads, 1, 1)
                result = cuda.cuLaunchCooperativeKernel(
                    self._function,
                    *grid,
                    *block,
                    self.shared_bytes,
                    ctypes.c_void_p(stream),
                    arguments.pointers,
                )
            else:
                result = self._launch_clusters(blocks, threads, arguments, cluster, stream)
        _check_driver(result, "launch")

    _cooperative_clusters = True  # until the driver refuses a cooperative cluster launch

    def _launch_clusters(
        self, blocks: int, threads: int, arguments: Arguments, cluster: int, stream: int
    ) -> int:
        cuda = _library("cuda")
        for cooperative in (True, False) if self._cooperative_clusters else (False,):
            config = _launch_config(
                blocks, threads, self.shared_bytes, stream, cluster, cooperative
            )
            result = int(
                cuda.cuLaunchKernelEx(
                    ctypes.byref(config), self._function, arguments.pointers, None
                )
            )
            if result == 0 or not cooperative:
                return result
            self._cooperative_clusters = False
        return result


class Arguments:
    """A kernel's parameters as ctypes values plus the array of their addresses the driver
    reads: built once per machine, then only the values that change are set before a launch
    (building ~30 ctypes objects costs tens of microseconds of Python, on the decode's
    critical path at batch 1)."""

    def __init__(self, values: Sequence[Argument]) -> None:
        self.values = list(values)
        self.pointers = (ctypes.c_void_p * len(self.values))(
            *(ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in self.values)
        )


def pointer(tensor: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr())


def arch_of(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def cache_dir() -> Path:
    """Where compiled kernels are kept between processes: ``kernels/`` in Budgie's cache
    (``$BUDGIE_CACHE``, else ``~/.cache/budgie``, as for converted checkpoints)."""
    return cache_root() / "kernels"


def nvrtc_version() -> str:
    """NVRTC's version, "major.minor" (part of a cached cubin's key)."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _library("nvrtc").nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def cached_cubin(
    source: str,
    name: str,
    arch: str,
    options: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """``compile_cubin``'s result, kept on disk under a hash of everything it depends on
    (the headers and NVRTC's version included), so a process compiles a kernel only the first
    time."""
    included = sorted((headers or {}).items())
    key = "\0".join([source, name, arch, *options, *(x for h in included for x in h)])
    key += "\0" + nvrtc_version()
    path = cache_dir() / f"{name}-{arch}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.cubin"
    try:
        return path.read_bytes()
    except OSError:
        pass
    cubin = compile_cubin(source, name, arch, options, headers)
    try:  # best effort: an unwritable cache only costs the next process a compile
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(cubin)
        partial.replace(path)
    except OSError:
        pass
    return cubin
