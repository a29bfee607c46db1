"""Budgie's unpadded encoder graph (``budgie.backends.onnx_fast``): the standard graph's numbers.

The reference is the standard ``encoder-model.onnx`` (NeMo's interface, itself checked against
Budgie's torch encoder and, through transcripts, against NeMo's goldens). The fast graph must give
the same valid frames up to float rounding, for padded batches too (it runs row by row), and
share every weight with the standard graph's data file instead of copying it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from budgie.api import load_model
from budgie.backends import onnx_export, onnx_fast
from budgie.backends.onnx_export import export_network
from budgie.backends.onnx_fast import FAST_ENCODER_FILE, POSITIONS_FILE, FastEncoder
from budgie.backends.onnx_runtime import OnnxModel, load_onnx_model, session_options
from budgie.errors import ModelError
from conftest import SynthModels
from onnx_exports import copy_of, exported
from parity_goldens import clip_input, load_manifest

MANIFEST = load_manifest()


def open_session(file: Path, threads: int = 1) -> Any:
    return ort.InferenceSession(str(file), session_options(threads))


def fast_encoder(directory: Path, features: int = 128) -> FastEncoder:
    encoder = onnx_fast.load_fast_encoder(directory, open_session, 1, features, 8)
    assert encoder is not None
    return encoder


def standard(directory: Path, features: np.ndarray, lengths: list[int]) -> tuple[Any, Any]:
    feed = {"audio_signal": features, "length": np.array(lengths, dtype=np.int64)}
    outputs, encoded_lengths = open_session(directory / "encoder-model.onnx").run(None, feed)
    return outputs, encoded_lengths


@pytest.mark.parametrize("preset", ["tiny", "bias-xscale"])
@pytest.mark.parametrize(
    "lengths",
    [[400], [401], [399], [9], [1], [333, 200, 17], [250, 250]],
    ids=["400", "401", "399", "9", "1", "padded-batch", "equal-batch"],
)
def test_fast_encoder_equals_standard_graph(
    preset: str,
    lengths: list[int],
    synth_models: SynthModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = exported(synth_models, tmp_path_factory, preset)
    feat_in = synth_models.model(preset).network.cfg.encoder.feat_in
    rng = np.random.default_rng(len(lengths) * 1000 + lengths[0])
    features = rng.standard_normal((len(lengths), feat_in, max(lengths))).astype(np.float32)
    for row, n in enumerate(lengths):
        features[row, :, n:] = 0.0  # as the frontend pads
    want, want_lengths = standard(directory, features, lengths)
    got, got_lengths = fast_encoder(directory, feat_in).encode(
        torch.from_numpy(features), torch.tensor(lengths)
    )
    assert got_lengths.tolist() == want_lengths.tolist()
    assert got.shape == (len(lengths), max(want_lengths), want.shape[1])
    for row, n in enumerate(want_lengths.tolist()):
        np.testing.assert_allclose(got[row, :n].numpy(), want[row, :, :n].T, atol=2e-5, rtol=0)
        assert not got[row, n:].any()  # past a row's length: zeros, never another row's frames


def test_transcripts_through_the_fast_graph_equal_nemo_goldens(tiny_dir: Path) -> None:
    fast, plain = load_model(tiny_dir, backend="onnx"), load_onnx_model(tiny_dir, fast=False)
    assert isinstance(fast, OnnxModel) and isinstance(plain, OnnxModel)
    assert fast.fast_encoder is not None and plain.fast_encoder is None
    assert fast.files["encoder"] == FAST_ENCODER_FILE
    gold = MANIFEST["models"]["tiny"]["single"]
    for name, clip in MANIFEST["clips"].items():
        for model in (fast, plain):
            got = model.transcribe(clip_input(clip))
            assert [t.id for t in got.tokens] == gold[name]["token_ids"], name
            assert [t.frame for t in got.tokens] == gold[name]["frames"], name


def test_int8_uses_the_standard_int8_graph(
    synth_models: SynthModels, tmp_path_factory: Any
) -> None:
    model = load_model(exported(synth_models, tmp_path_factory, "tiny", "int8"), dtype="int8")
    assert isinstance(model, OnnxModel)
    assert model.fast_encoder is None and model.files["encoder"] == "encoder-model.int8.onnx"


@pytest.fixture(scope="module")
def tiny_dir(synth_models: SynthModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported(synth_models, tmp_path_factory, "tiny")


def test_weights_live_in_the_standard_data_file(
    synth_models: SynthModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Path
) -> None:
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 0)
    model = synth_models.model("tiny")
    result = export_network(model.network, list(model.tokenizer.vocab), tmp_path)
    assert {tmp_path / FAST_ENCODER_FILE, tmp_path / POSITIONS_FILE} <= set(result.files)
    assert sorted(p.name for p in tmp_path.glob("*encoder*.data")) == ["encoder-model.onnx.data"]
    for name in (FAST_ENCODER_FILE, POSITIONS_FILE):
        graph = onnx.load(str(tmp_path / name), load_external_data=False).graph
        external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        inline = [t.name for t in graph.initializer if len(t.raw_data) > 1024]
        assert external and not inline, name
        locations = {e.value for t in external for e in t.external_data if e.key == "location"}
        assert locations == {"encoder-model.onnx.data"}, name
        assert (tmp_path / name).stat().st_size < 100_000
    features = torch.randn(2, 128, 300, generator=torch.Generator().manual_seed(5))
    lengths = torch.tensor([300, 211])
    shared, _ = fast_encoder(tmp_path).encode(features, lengths)
    embedded, _ = fast_encoder(tiny_dir).encode(features, lengths)
    torch.testing.assert_close(shared, embedded, atol=0, rtol=0)


def test_position_table_is_sliced_grown_and_capped(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = fast_encoder(tiny_dir)
    small = encoder.projections(40)
    assert encoder.table_frames == onnx_fast.MIN_TABLE_FRAMES
    direct = encoder._project(40)
    assert [p.shape for p in small] == [(79, encoder.d_model)] * encoder.layers
    for sliced, computed in zip(small, direct, strict=True):
        np.testing.assert_allclose(sliced, computed, atol=1e-6, rtol=0)
    longer = onnx_fast.MIN_TABLE_FRAMES + 10
    encoder.projections(longer)
    assert encoder.table_frames == onnx_fast.MIN_TABLE_FRAMES * 3 // 2  # geometric growth
    monkeypatch.setattr(onnx_fast, "MAX_TABLE_BYTES", 0)
    table = encoder.table
    huge = encoder.projections(encoder.table_frames + 1)
    assert encoder.table is table and huge[0].shape[0] == 2 * encoder.table_frames + 1


def rename(path: Path, old: str, new: str) -> None:
    """Rename a graph input or output, and every node's use of it."""
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    onnx.save(model, str(path))


BAD_FAST = {
    "fast input renamed": (
        lambda d: rename(d / FAST_ENCODER_FILE, "pos_proj.1", "positions"),
        "budgie-encoder-fast.onnx: inputs ['audio_signal', 'pos_proj.0', 'positions'] and "
        "outputs ['outputs'] do not match 'audio_signal' + 2 pos_proj inputs",
    ),
    "positions output renamed": (
        lambda d: rename(d / POSITIONS_FILE, "pos_proj.0", "p0"),
        "budgie-encoder-positions.onnx: expected input 'pos_emb' and outputs pos_proj.0",
    ),
    "fast not onnx": (
        lambda d: (d / FAST_ENCODER_FILE).write_bytes(b"not a graph"),
        "budgie-encoder-fast.onnx: ONNX Runtime cannot load it",
    ),
    "feature count": (
        lambda d: (d / "config.json").write_text(
            (d / "config.json").read_text().replace('"features_size": 128', '"features_size": 80')
        ),
        "budgie-encoder-fast.onnx: 'audio_signal' is not [batch, 80, time]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FAST))
def test_bad_fast_graphs_are_one_clear_line(case: str, tiny_dir: Path, tmp_path: Path) -> None:
    damage, needle = BAD_FAST[case]
    directory = copy_of(tiny_dir, tmp_path / "model")
    damage(directory)
    with pytest.raises(ModelError) as info:
        load_model(directory, backend="onnx")
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("missing", [FAST_ENCODER_FILE, POSITIONS_FILE])
def test_without_both_files_the_standard_graph_runs(
    missing: str, tiny_dir: Path, tmp_path: Path
) -> None:
    directory = copy_of(tiny_dir, tmp_path / "model")
    (directory / missing).unlink()
    model = load_model(directory, backend="onnx")
    assert isinstance(model, OnnxModel)
    assert model.fast_encoder is None and model.files["encoder"] == "encoder-model.onnx"
