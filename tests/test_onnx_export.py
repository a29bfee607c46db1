"""``budgie export --format onnx``: NeMo's export interface, Budgie's numbers, onnx-asr's tokens.

The expected graph interface (names, element types, ranks, opset) is what NeMo 3.0.0's own
``model.export()`` wrote for a tiny TDT model (scripts are not needed to re-check: the values are
listed below). onnx-asr, which runs NeMo exports exactly, must give the NeMo goldens' token ids
and frames on Budgie's export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from budgie.backends import onnx_export
from budgie.backends.onnx_export import DecoderJointGraph, export_network
from budgie.cli import main
from budgie.errors import ModelError
from conftest import SynthModels
from onnx_exports import exported
from parity_goldens import clip_samples, load_manifest

MANIFEST = load_manifest()
FLOAT, INT32, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64
# NeMo 3.0.0 export of a TDT model: (name, element type, rank) of every input and output.
NEMO_ENCODER = {
    "inputs": [("audio_signal", FLOAT, 3), ("length", INT64, 1)],
    "outputs": [("outputs", FLOAT, 3), ("encoded_lengths", INT64, 1)],
}
NEMO_DECODER_JOINT = {
    "inputs": [
        ("encoder_outputs", FLOAT, 3),
        ("targets", INT32, 2),
        ("target_length", INT32, 1),
        ("input_states_1", FLOAT, 3),
        ("input_states_2", FLOAT, 3),
    ],
    "outputs": [
        ("outputs", FLOAT, 4),
        ("prednet_lengths", INT32, 1),
        ("output_states_1", FLOAT, 3),
        ("output_states_2", FLOAT, 3),
    ],
}


@pytest.fixture(scope="module")
def tiny_dir(synth_models: SynthModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported(synth_models, tmp_path_factory, "tiny", "int8")


def interface(path: Path) -> dict[str, Any]:
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Any) -> list[tuple[str, int, int]]:
        return [
            (v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim))
            for v in values
        ]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def dims(path: Path, kind: str, name: str) -> list[int | str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    value = next(v for v in getattr(graph, kind) if v.name == name)
    return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_layout_files_vocab_and_config(tiny_dir: Path, synth_models: SynthModels) -> None:
    names = sorted(p.name for p in tiny_dir.iterdir())
    assert names == [
        "budgie-encoder-fast.onnx",  # Budgie's own (budgie.backends.onnx_fast); others ignore it
        "budgie-encoder-positions.onnx",
        "config.json",
        "decoder_joint-model.int8.onnx",
        "decoder_joint-model.onnx",
        "encoder-model.int8.onnx",
        "encoder-model.onnx",
        "vocab.txt",
    ]
    vocab = synth_models.model("tiny").tokenizer.vocab
    lines = (tiny_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"{vocab[0]} 0" and lines[5] == f"{vocab[5]} 5"
    assert lines[-1] == f"<blk> {len(vocab)}" and len(lines) == len(vocab) + 1
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "nemo-conformer-tdt"
    assert (config["features_size"], config["subsampling_factor"]) == (128, 8)
    assert config["durations"] == [0, 1, 2, 3, 4] and config["max_tokens_per_step"] == 10


@pytest.mark.parametrize("stem", ["encoder-model", "decoder_joint-model"])
@pytest.mark.parametrize("suffix", [".onnx", ".int8.onnx"])
def test_interface_is_nemos(tiny_dir: Path, stem: str, suffix: str) -> None:
    expected = NEMO_ENCODER if stem == "encoder-model" else NEMO_DECODER_JOINT
    assert interface(tiny_dir / f"{stem}{suffix}") == expected


def test_fixed_and_dynamic_axes(tiny_dir: Path, synth_models: SynthModels) -> None:
    cfg = synth_models.model("tiny").config
    enc, dj = tiny_dir / "encoder-model.onnx", tiny_dir / "decoder_joint-model.onnx"
    assert dims(enc, "input", "audio_signal")[1] == 128
    assert all(isinstance(d, str) for d in dims(enc, "input", "audio_signal")[::2])
    assert dims(enc, "output", "outputs")[1] == cfg.encoder.d_model
    assert dims(dj, "input", "input_states_1")[::2] == [2, cfg.prediction.pred_hidden]
    assert dims(dj, "output", "outputs")[3] == cfg.vocab_size + 1 + 5
    assert onnx.load(str(enc)).opset_import[0].version == 17


def torch_encode(synth_models: SynthModels, features: np.ndarray, lengths: list[int]) -> Any:
    net = synth_models.model("tiny").network
    with torch.inference_mode():
        out, out_lengths = net.encoder(torch.from_numpy(features), torch.tensor(lengths))
    return out.numpy(), out_lengths.numpy()


def test_encoder_matches_torch_with_padding(tiny_dir: Path, synth_models: SynthModels) -> None:
    features = np.random.default_rng(0).standard_normal((2, 128, 901)).astype(np.float32)
    features[1, :, 600:] = 0.0
    lengths = [901, 600]
    out, out_lengths = session(tiny_dir / "encoder-model.onnx").run(
        None, {"audio_signal": features, "length": np.array(lengths)}
    )
    want, want_lengths = torch_encode(synth_models, features, lengths)
    assert out_lengths.tolist() == want_lengths.tolist() == [113, 75]
    np.testing.assert_allclose(out.transpose(0, 2, 1)[0], want[0], atol=1e-4)
    np.testing.assert_allclose(out.transpose(0, 2, 1)[1, :75], want[1, :75], atol=1e-4)


def test_positions_have_no_length_cap(tiny_dir: Path, synth_models: SynthModels) -> None:
    """No 5000-row table in the graph, and an input past 5000 encoder frames still matches."""
    graph = onnx.load(str(tiny_dir / "encoder-model.onnx")).graph
    tensors = list(graph.initializer) + [
        a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.t.dims
    ]
    assert max(max(t.dims) for t in tensors) < 5000
    frames = 8 * 5003
    features = np.random.default_rng(1).standard_normal((1, 128, frames)).astype(np.float32)
    out, _ = session(tiny_dir / "encoder-model.onnx").run(
        None, {"audio_signal": features, "length": np.array([frames])}
    )
    want, _ = torch_encode(synth_models, features, [frames])
    assert out.shape[2] == 5003
    np.testing.assert_allclose(out.transpose(0, 2, 1)[0], want[0], atol=2e-4)


def test_decoder_joint_matches_torch(tiny_dir: Path, synth_models: SynthModels) -> None:
    net = synth_models.model("tiny").network
    cfg = net.cfg
    rng = np.random.default_rng(2)
    feed = {
        "encoder_outputs": rng.standard_normal((2, cfg.encoder.d_model, 3)).astype(np.float32),
        "targets": np.array([[5, 7], [cfg.blank_id, 1]], dtype=np.int32),
        "target_length": np.array([2, 2], dtype=np.int32),
        "input_states_1": rng.standard_normal((2, 2, 64)).astype(np.float32),
        "input_states_2": rng.standard_normal((2, 2, 64)).astype(np.float32),
    }
    got = session(tiny_dir / "decoder_joint-model.onnx").run(None, feed)
    with torch.inference_mode():
        want = DecoderJointGraph(net)(*(torch.from_numpy(v) for v in feed.values()))
        g, _ = net.decoder.prediction.dec_rnn.lstm(
            net.decoder.prediction.embed(torch.tensor([[5, 7]])),
            (
                torch.from_numpy(feed["input_states_1"][:, :1]),
                torch.from_numpy(feed["input_states_2"][:, :1]),
            ),
        )
        direct = net.joint.logits(
            net.joint.project_encoder(torch.from_numpy(feed["encoder_outputs"][0, :, 2])),
            net.joint.project_prediction(g[0, 1]),
        )
    assert got[0].shape == (2, 3, 2, cfg.vocab_size + 6)
    np.testing.assert_allclose(got[0][0, 2, 1], direct.numpy(), atol=1e-5)
    for ours, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "bias-xscale"])
def test_onnx_asr_gives_nemo_goldens(
    preset: str, synth_models: SynthModels, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import onnx_asr

    gold = MANIFEST["models"][preset]
    assert gold["seed"] == 0 and gold["tokenizer"] is None
    directory = exported(synth_models, tmp_path_factory, preset)
    asr = onnx_asr.load_model("nemo-conformer-tdt", directory).with_timestamps()
    vocab = synth_models.model(preset).tokenizer.vocab
    for name, clip in MANIFEST["clips"].items():
        want = gold["single"][name]
        result = asr.recognize(clip_samples(clip))
        assert result.tokens == [vocab[i].replace("▁", " ") for i in want["token_ids"]], name
        assert [round(t / 0.08) for t in result.timestamps] == want["frames"], name


def test_onnx_asr_loads_int8(tiny_dir: Path) -> None:
    import onnx_asr

    asr = onnx_asr.load_model("nemo-conformer-tdt", tiny_dir, quantization="int8")
    assert isinstance(asr.recognize(np.zeros(16000, np.float32)), str)


def test_export_leaves_the_network_as_it_was(synth_models: SynthModels, tmp_path: Path) -> None:
    model = synth_models.model("tiny")
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    export_network(model.network, list(model.tokenizer.vocab), tmp_path)
    assert not any(m.training for m in model.network.modules())
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_external_data_when_large(
    synth_models: SynthModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Path
) -> None:
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 0)
    model = synth_models.model("tiny")
    result = export_network(model.network, list(model.tokenizer.vocab), tmp_path)
    data = tmp_path / "encoder-model.onnx.data"
    assert data in result.files and data.stat().st_size > 100_000
    assert (tmp_path / "encoder-model.onnx").stat().st_size < 100_000
    features = np.random.default_rng(3).standard_normal((1, 128, 300)).astype(np.float32)
    feed = {"audio_signal": features, "length": np.array([300])}
    split = session(tmp_path / "encoder-model.onnx").run(None, feed)[0]
    single = session(tiny_dir / "encoder-model.onnx").run(None, feed)[0]
    np.testing.assert_array_equal(split, single)


def test_vocabulary_must_fit_the_model(synth_models: SynthModels, tmp_path: Path) -> None:
    model = synth_models.model("tiny")
    with pytest.raises(ModelError, match="pieces for a model of 256 labels"):
        export_network(model.network, list(model.tokenizer.vocab)[:-1], tmp_path)


def test_cli_exports(synth_models: SynthModels, tmp_path: Path, capsys: Any) -> None:
    path = synth_models.checkpoint("tiny").path
    assert main(["export", "--model", str(path), "--format", "onnx", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "encoder-model.onnx" in out and "vocab.txt" in out
    assert (tmp_path / "decoder_joint-model.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/no/such.nemo"], "model file not found"),
        (["--model", "{tmp}"], "is a directory"),
    ],
)
def test_cli_bad_model(args: list[str], needle: str, tmp_path: Path, capsys: Any) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["export", *args, "-o", str(tmp_path / "out")]) == 2
    assert needle in capsys.readouterr().err


def test_cli_rejects_unknown_quantization(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--model", "x.nemo", "--quantize", "int4", "-o", str(tmp_path)])
    assert info.value.code == 2


def test_int8_keeps_the_sensitive_matmuls_float(tiny_dir: Path) -> None:
    for stem, kept in (("encoder-model", "/pre_encode/"), ("decoder_joint-model", "/joint_net/")):
        nodes = onnx.load(str(tiny_dir / f"{stem}.int8.onnx")).graph.node
        assert any(n.op_type == "MatMulInteger" for n in nodes)
        assert any(n.op_type == "MatMul" and n.name.startswith(kept) for n in nodes)
        assert not any(n.op_type == "MatMulInteger" and n.name.startswith(kept) for n in nodes)
