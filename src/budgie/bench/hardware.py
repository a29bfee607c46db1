"""Machine facts for benchmark records: what ran the benchmark, so two runs can be compared fairly.

``hardware_profile()`` gathers the facts (CPU model and cores, RAM, OS, Python, torch, ONNX
Runtime and Budgie versions, the GPU with its memory, driver and CUDA version);
``hardware_summary()`` turns them into the short labels parakeet.js files carry
(``cpuLabel``, ``gpuLabel``, ``gpuModelLabel``, ``vramLabel``, ``systemMemoryLabel``, ...).
Every probe is best effort: a fact that cannot be read is ``None``, never an exception, because
a benchmark must not fail over a missing ``/proc`` file or an absent ``nvidia-smi``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import budgie

NOT_AVAILABLE = "n/a"


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds, like parakeet.js's ``2026-02-27T19:44:16.272Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_cpuinfo(text: str) -> tuple[str | None, int | None]:
    """CPU model name and physical core count from the text of ``/proc/cpuinfo``.

    Physical cores are the distinct (physical id, core id) pairs; ``None`` when the file has no
    core ids (some ARM and virtual machines), so the caller can fall back to another source.
    """
    model = None
    cores: set[tuple[str, str]] = set()
    physical = "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None and value:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return model, (len(cores) or None)


def _physical_cores() -> int | None:
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
        return int(count) if count else None
    except ImportError:
        return None


def cpu_facts() -> dict[str, Any]:
    cpuinfo = _read_text("/proc/cpuinfo") or ""
    model, physical = parse_cpuinfo(cpuinfo)
    return {
        "model": model or platform.processor() or platform.machine() or None,
        "physicalCores": physical or _physical_cores(),
        "logicalCores": os.cpu_count(),
    }


def total_memory_bytes() -> int | None:
    """Installed RAM: sysconf on POSIX, psutil elsewhere when it is installed."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return None


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (torch does not report it); None if absent."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()
    return first[0].strip() if first and first[0].strip() else None


def device_label(device: torch.device) -> str:
    """``cuda`` -> ``cuda:0`` (the device actually used), ``cpu`` unchanged."""
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def gpu_facts(device: torch.device | None = None) -> dict[str, Any] | None:
    """The benchmarked CUDA device's facts, or None when CUDA is not available."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    if device is not None and device.type == "cuda" and device.index is not None:
        index = device.index
    props = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": props.name,
        "memoryBytes": int(props.total_memory),
        "multiProcessorCount": int(props.multi_processor_count),
        "capability": f"{props.major}.{props.minor}",
        "count": torch.cuda.device_count(),
        "driver": nvidia_driver_version(),
        "cuda": torch.version.cuda,
    }


def _version(module: str) -> str | None:
    try:
        imported = __import__(module)
    except ImportError:
        return None
    return str(getattr(imported, "__version__", None) or "") or None


def hardware_profile(device: torch.device | None = None) -> dict[str, Any]:
    """Everything known about the machine and the software stack that ran the benchmark."""
    return {
        "capturedAt": utc_now(),
        "cpu": cpu_facts(),
        "memory": {"totalBytes": total_memory_bytes()},
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "budgie": budgie.__version__,
        "gpu": gpu_facts(device),
    }


def gib_label(n_bytes: int | None) -> str:
    """Bytes as a GiB label with one decimal below 10 GiB (``7.8 GB``), whole above (``80 GB``)."""
    if not n_bytes:
        return NOT_AVAILABLE
    gib = n_bytes / 2**30
    return f"{gib:.1f} GB" if gib < 10 else f"{gib:.0f} GB"


def gpu_model_label(name: str) -> str:
    """Short model name as parakeet.js has it: ``NVIDIA GeForce RTX 5060 Ti`` -> ``RTX 5060 Ti``."""
    return re.sub(r"^(NVIDIA\s+)?(GeForce\s+|Tesla\s+|Quadro\s+)?", "", name).strip() or name


def hardware_summary(profile: dict[str, Any], device: torch.device) -> dict[str, str]:
    """Short human labels derived from ``hardware_profile()``; absent facts read ``n/a``."""
    cpu = profile.get("cpu") or {}
    cores = [
        f"{cpu['physicalCores']} physical" if cpu.get("physicalCores") else "",
        f"{cpu['logicalCores']} logical cores" if cpu.get("logicalCores") else "",
    ]
    core_text = " / ".join(c for c in cores if c)
    cpu_label = cpu.get("model") or "CPU"
    if core_text:
        cpu_label = f"{cpu_label} ({core_text})"
    gpu = profile.get("gpu")
    summary = {
        "cpuLabel": cpu_label,
        "gpuLabel": NOT_AVAILABLE,
        "gpuModelLabel": NOT_AVAILABLE,
        "gpuCoresLabel": NOT_AVAILABLE,
        "vramLabel": NOT_AVAILABLE,
        "systemMemoryLabel": gib_label((profile.get("memory") or {}).get("totalBytes")),
        "webgpuLabel": NOT_AVAILABLE,
        "deviceLabel": device_label(device),
    }
    if gpu:
        extras = [f"driver {gpu['driver']}" if gpu.get("driver") else "", f"CUDA {gpu['cuda']}"]
        summary.update(
            gpuLabel=f"{gpu['name']} ({', '.join(e for e in extras if e)})",
            gpuModelLabel=gpu_model_label(gpu["name"]),
            gpuCoresLabel=f"{gpu['multiProcessorCount']} SMs",
            vramLabel=gib_label(gpu.get("memoryBytes")),
        )
    return summary
