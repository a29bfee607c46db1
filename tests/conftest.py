"""Shared fixtures: synthetic checkpoints built once per test session.

Synthesizing, writing and loading a checkpoint costs from milliseconds (tiny) to a few seconds
(wide-2l: d_model 1024, 64M parameters), so each distinct (preset, seed, tokenizer) is made once
per session into a temporary directory, and each loaded CPU model is kept for the session.
Budgie's converted-checkpoint cache goes to a temporary directory too (``BUDGIE_CACHE``), so
the tests never touch the user's ``~/.cache/budgie``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from budgie.api import load_model
from budgie.pipeline import Model
from budgie.synth import synthesize, write_nemo
from parity_goldens import state_dict_sha256  # next to this file (tests/ is on sys.path)


@dataclass(frozen=True)
class SynthCheckpoint:
    """A synthetic .nemo written for this session and the content hash of its weights."""

    path: Path
    state_sha256: str


class SynthModels:
    """Writes and loads synthetic checkpoints on demand, each at most once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[tuple[str, int, str | None], SynthCheckpoint] = {}
        self._models: dict[tuple[str, int, str | None], Model] = {}

    def checkpoint(
        self, preset: str, seed: int = 0, tokenizer: str | os.PathLike[str] | None = None
    ) -> SynthCheckpoint:
        key = (preset, seed, None if tokenizer is None else os.fspath(tokenizer))
        if key not in self._files:
            config, state, tokenizer_path = synthesize(preset, seed, tokenizer)
            digest = state_dict_sha256(state)
            suffix = "" if tokenizer is None else "-" + Path(tokenizer).stem
            path = write_nemo(
                self.root / f"{preset}-{seed}{suffix}.nemo", config, state, tokenizer_path
            )
            self._files[key] = SynthCheckpoint(path, digest)
        return self._files[key]

    def model(
        self, preset: str, seed: int = 0, tokenizer: str | os.PathLike[str] | None = None
    ) -> Model:
        """A CPU ``Model`` shared by the session: do not change its weights in a test."""
        key = (preset, seed, None if tokenizer is None else os.fspath(tokenizer))
        if key not in self._models:
            self._models[key] = load_model(self.checkpoint(*key).path, device="cpu")
        return self._models[key]


@pytest.fixture(scope="session")
def budgie_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session-wide BUDGIE_CACHE in a temporary directory."""
    path = tmp_path_factory.mktemp("budgie-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUDGIE_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def synth_models(tmp_path_factory: pytest.TempPathFactory, budgie_cache: Path) -> SynthModels:
    return SynthModels(tmp_path_factory.mktemp("synth-checkpoints"))
