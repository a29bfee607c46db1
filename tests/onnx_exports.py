"""ONNX exports of the synthetic checkpoints, made once per test session (shared by the ONNX tests).

Exporting the tiny preset takes about a second (two more with int8), so each (preset,
quantization) is exported at most once into a session temporary directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from budgie.backends.onnx_export import export_network
from conftest import SynthModels

_DIRS: dict[tuple[str, str | None], Path] = {}


def exported(
    synth_models: SynthModels,
    tmp_path_factory: pytest.TempPathFactory,
    preset: str = "tiny",
    quantize: str | None = None,
) -> Path:
    """The export directory of ``preset`` (seed 0); do not modify it, copy it (``copy_of``)."""
    key = (preset, quantize)
    if key not in _DIRS:
        model = synth_models.model(preset)
        directory = tmp_path_factory.mktemp(f"onnx-{preset}-{quantize or 'fp32'}")
        export_network(model.network, list(model.tokenizer.vocab), directory, quantize)
        _DIRS[key] = directory
    return _DIRS[key]


def copy_of(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
