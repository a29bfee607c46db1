"""Build the full-size parakeet-tdt-0.6b-v2-shaped checkpoint exactly as the shared recipe does.

Runs under NeMo (the device image plus NeMo's wheels): NeMo's EncDecRNNTBPEModel from the recipe's
config, ``reinit()`` (seeded) and ``add_blank_bias()``, saved with NeMo's own ``save_to``. The
tokenizer is Budgie's shipped 1024-piece synthetic SentencePiece model.

    python3 benchmarks/build_recipe_checkpoint.py OUT.nemo [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import sentencepiece as spm
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from nemo_recipe_config import add_blank_bias, make_cfg, reinit

    from budgie.synth import DATA_DIR

    tok = Path(tempfile.mkdtemp())
    model_file = DATA_DIR / "synth-bpe-1024.model"
    (tok / "tokenizer.model").write_bytes(model_file.read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    (tok / "tokenizer.vocab").write_text("".join(f"{p}\t0\n" for p in pieces))
    (tok / "vocab.txt").write_text("".join(f"{p}\n" for p in pieces))
    model = EncDecRNNTBPEModel(make_cfg(str(tok)))
    reinit(model, seed=args.seed)
    add_blank_bias(model)
    model.eval()
    model.save_to(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
