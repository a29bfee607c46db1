"""Synthetic checkpoints: NeMo's key names and shapes (lists written by NeMo itself), NeMo's
filterbank (from a file NeMo wrote), reproducibility, the shipped tokenizers, the CLI."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import yaml

from budgie.cli import main
from budgie.config import ModelConfig
from budgie.errors import BudgieError, ModelError
from budgie.nemo_files import mel_filterbank, tokenizer_side_files
from budgie.synth import DATA_DIR, PRESETS, nemo_layout, synth_nemo, synthesize

FIXTURES = Path(__file__).parent / "fixtures"
NEMO_WRITTEN = FIXTURES / "nemo_written_tiny.nemo"  # built and saved by NeMo 3.0.0
SMALL = ("tiny", "bias-xscale")
SENTENCES = (
    "It is not life as we know or understand it.",
    "The trachea and main bronchi are patent.",
    "No lymph nodes of pathological size are observed, nor are there any pleural effusions.",
    "If we're actually close to a human-like learner, then this whole approach is wrong?",
)


def nemo_keys(preset: str) -> list[str]:
    """``key (shape)`` lines of NeMo's own state dict for the preset's config."""
    return (FIXTURES / f"nemo_keys_{preset}.txt").read_text().splitlines()


def nemo_written_tensors() -> dict[str, torch.Tensor]:
    with tarfile.open(NEMO_WRITTEN) as archive:
        member = archive.extractfile("./model_weights.ckpt")
        assert member is not None
        state: dict[str, torch.Tensor] = torch.load(io.BytesIO(member.read()), weights_only=True)
    return state


@pytest.mark.parametrize("preset", list(PRESETS))
def test_layout_matches_nemo_keys_and_shapes(preset: str) -> None:
    vocab = 256 if PRESETS[preset].tokenizer == "synth-bpe-256.model" else 1024
    layout = [f"{key} {shape}" for key, shape, _ in nemo_layout(PRESETS[preset], vocab)]
    assert layout == nemo_keys(preset)


def test_v2_preset_has_the_real_parameter_count() -> None:
    layout = nemo_layout(PRESETS["parakeet-tdt-0.6b-v2"], 1024)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(
        int(np.prod(shape))
        for key, shape, _ in layout
        if not key.startswith("preprocessor.") and not key.endswith(buffers)
    )
    assert params == 617_825_926  # NeMo's count for the restored synthetic v2 (617.8M)


@pytest.mark.parametrize("preset", SMALL)
def test_state_dict_matches_layout_and_config(preset: str) -> None:
    config, state, tokenizer = synthesize(preset, seed=0)
    assert [f"{k} {tuple(v.shape)}" for k, v in state.items()] == nemo_keys(preset)
    assert all(v.dtype == torch.float32 for k, v in state.items() if "num_batches" not in k)
    parsed = ModelConfig.from_nemo(config)
    spec = PRESETS[preset]
    assert parsed.encoder.n_layers == spec.n_layers and parsed.encoder.d_model == spec.d_model
    assert parsed.encoder.use_bias == spec.use_bias and parsed.encoder.xscaling == spec.xscaling
    assert parsed.prediction.vocab_size == 256 == config["joint"]["num_classes"]
    assert config["labels"] == config["joint"]["vocabulary"]
    assert len(config["labels"]) == 256 and config["labels"][0] == "<unk>"
    assert tokenizer == DATA_DIR / spec.tokenizer


def test_weights_follow_the_recipe() -> None:
    spec = PRESETS["tiny"]
    _, state, _ = synthesize(spec, seed=0)
    embed = state["decoder.prediction.embed.weight"]
    assert torch.count_nonzero(embed[256]) == 0  # blank = padding row
    var = state["encoder.layers.0.conv.batch_norm.running_var"]
    assert float(var.min()) >= 0.5 and float(var.max()) < 1.5 and float(var.std()) > 0.1
    assert float(state["encoder.layers.0.conv.batch_norm.running_mean"].abs().max()) > 0.05
    joint_bias = state["joint.joint_net.2.bias"]
    assert float(joint_bias[256]) == pytest.approx(spec.blank_bias, abs=0.1)
    out = state["joint.joint_net.2.weight"].double()
    assert float(out.sum(dim=1).abs().max()) < 1e-4  # centred rows
    w = state["encoder.layers.1.feed_forward1.linear1.weight"]
    expected_std = spec.enc_layer_scale / 64**0.5
    assert float(w.std()) == pytest.approx(expected_std, rel=0.05)


def test_same_seed_gives_identical_weights_and_bytes(tmp_path: Path) -> None:
    first = synth_nemo(tmp_path / "a.nemo", "tiny", seed=3)
    second = synth_nemo(tmp_path / "b.nemo", "tiny", seed=3)
    other = synth_nemo(tmp_path / "c.nemo", "tiny", seed=4)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    _, a, _ = synthesize("bias-xscale", 7)
    _, b, _ = synthesize("bias-xscale", 7)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_archive_is_nemo_shaped_and_reproducible(tmp_path: Path) -> None:
    path = synth_nemo(tmp_path / "tiny.nemo", "tiny")
    assert path.stat().st_size < 3_000_000
    with tarfile.open(path) as archive:
        members = archive.getmembers()
        config = yaml.safe_load(archive.extractfile("./model_config.yaml").read())  # type: ignore[union-attr]
        names = [m.name for m in members]
        assert names == [".", *sorted(names[1:])]
        assert {m.mtime for m in members} == {1_700_000_000} and {m.uid for m in members} == {0}
        section = config["tokenizer"]
        for key, suffix in (
            ("model_path", "_tokenizer.model"),
            ("spe_tokenizer_vocab", "_tokenizer.vocab"),
            ("vocab_path", "_vocab.txt"),
        ):
            assert section[key].startswith("nemo:") and section[key].endswith(suffix)
            assert "./" + section[key][5:] in names
        model = archive.extractfile("./" + section["model_path"][5:]).read()  # type: ignore[union-attr]
    assert model == (DATA_DIR / "synth-bpe-256.model").read_bytes()
    assert config["target"] == "nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel"
    assert config["decoding"]["durations"] == [0, 1, 2, 3, 4]
    assert config["decoder"]["vocab_size"] == 256 and config["joint"]["num_extra_outputs"] == 5


def test_filterbank_and_window_equal_what_nemo_saved() -> None:
    state = nemo_written_tensors()
    fb = mel_filterbank(16000, 512, 128)
    assert fb.shape == (128, 257) and fb.dtype == np.float32
    assert np.abs(fb - state["preprocessor.featurizer.fb"][0].numpy()).max() <= 1e-6
    _, ours, _ = synthesize("tiny", 0)
    assert torch.equal(
        ours["preprocessor.featurizer.window"], state["preprocessor.featurizer.window"]
    )


@pytest.mark.parametrize(
    ("size", "name"), [(256, "synth-bpe-256.model"), (1024, "synth-bpe-1024.model")]
)
def test_shipped_tokenizers_behave_like_nemo_ones(size: int, name: str) -> None:
    path = DATA_DIR / name
    assert path.stat().st_size < 300_000
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.get_piece_size() == size
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, -1, -1, -1)
    assert sp.id_to_piece(0) == "<unk>"
    pieces = [sp.id_to_piece(i) for i in range(size)]
    assert len(set(pieces)) == size
    assert sum(p.startswith("▁") for p in pieces) > size // 10
    for sentence in SENTENCES:
        ids = sp.encode(sentence)
        assert 0 not in ids  # no <unk>: every character is covered
        assert sp.decode(ids) == sentence
        assert sp.id_to_piece(ids[0]).startswith("▁")
        text = "".join(sp.id_to_piece(i) for i in ids).replace("▁", " ").strip()
        assert text == sentence  # the detokenization rule NeMo applies


def test_tokenizer_side_files_follow_nemo() -> None:
    vocab, vocab_txt = tokenizer_side_files(DATA_DIR / "synth-bpe-256.model")
    rows = vocab.decode().splitlines()
    assert len(rows) == 256 and rows[0] == "<unk>\t0"
    sp = spm.SentencePieceProcessor(model_file=str(DATA_DIR / "synth-bpe-256.model"))
    bert = vocab_txt.decode().splitlines()
    assert len(bert) == 255  # <unk> is skipped, as in NeMo's create_spt_model
    for i in range(1, 256):
        piece = sp.id_to_piece(i)
        assert bert[i - 1] == (piece[1:] or piece if piece.startswith("▁") else "##" + piece)


def test_given_tokenizer_sets_the_vocabulary(tmp_path: Path) -> None:
    v3 = FIXTURES / "tokenizer-v3.model"
    config, state, tokenizer = synthesize("tiny", 0, v3)
    assert tokenizer == v3
    assert state["decoder.prediction.embed.weight"].shape == (8193, 64)
    assert state["joint.joint_net.2.weight"].shape == (8198, 64)
    assert config["decoder"]["vocab_size"] == 8192 and len(config["joint"]["vocabulary"]) == 8192


def test_artifact_names_depend_on_seed_and_tokenizer() -> None:
    def names(seed: int, tok: Path | None = None) -> str:
        return str(synthesize("tiny", seed, tok)[0]["tokenizer"]["model_path"])

    assert names(0) == names(0) != names(1)
    assert names(0) != names(0, DATA_DIR / "synth-bpe-1024.model")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"preset": "huge"}, BudgieError, "unknown synth preset 'huge'"),
        ({"preset": "tiny", "seed": -1}, BudgieError, "seed must be"),
        ({"preset": "tiny", "seed": 2**63}, BudgieError, "seed must be"),
        ({"preset": "tiny", "tokenizer": "missing.model"}, ModelError, "tokenizer not found"),
        ({"preset": "tiny", "tokenizer": "NOT_SPM"}, ModelError, "not a SentencePiece model"),
    ],
)
def test_bad_synth_arguments(
    kwargs: dict[str, object], error: type, message: str, tmp_path: Path
) -> None:
    if kwargs.get("tokenizer") == "NOT_SPM":
        bogus = tmp_path / "bogus.model"
        bogus.write_bytes(b"this is not a protobuf" * 10)
        kwargs["tokenizer"] = bogus
    with pytest.raises(error, match=message):
        synthesize(**kwargs)  # type: ignore[arg-type]


def test_cli_writes_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.nemo"
    assert main(["synth", "--preset", "tiny", "--seed", "1", "-o", str(out)]) == 0
    assert "synthetic" in capsys.readouterr().out
    assert (
        hashlib.sha256(out.read_bytes()).digest()
        == hashlib.sha256(synth_nemo(tmp_path / "same.nemo", "tiny", 1).read_bytes()).digest()
    )
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    "argv",
    [
        ["synth", "--preset", "huge", "-o", "x.nemo"],
        ["synth", "--preset", "tiny", "-o", "/nonexistent-dir/x.nemo"],
        ["synth", "--preset", "tiny", "-o", "DIR"],
        ["synth", "--preset", "tiny", "--tokenizer", "/nonexistent.model", "-o", "x.nemo"],
        ["synth", "--preset", "tiny"],
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], tmp_path: Path) -> None:
    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    assert code == 2
    assert list(tmp_path.iterdir()) == []
