"""An int8 variant of an ONNX export that quantizes only some of the encoder's MatMuls.

Budgie's own settings (dynamic int8, per-channel weight scales, constant-weight MatMuls only,
the subsampling output and the joint kept float: ``budgie.backends.onnx_export``) applied to
the MatMuls whose node names contain one of ``PARTS``; every other file of the export is linked
into ``OUT_DIR``, so that cpu_compare.py's ``budgie-onnx-int8`` system runs the variant:

    python benchmarks/int8_partial.py full-onnx ffn-int8 feed_forward
    python benchmarks/cpu_compare.py --nemo full.nemo --onnx-dir ffn-int8 --clips 20 \\
        --rounds 1 --systems budgie-onnx-fp32 budgie-onnx-int8 -o RESULT.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from budgie.backends.onnx_export import KEEP_FLOAT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("parts", nargs="+", help="substrings of the MatMul names to quantize")
    args = parser.parse_args()
    args.out_dir.mkdir(exist_ok=True)
    for f in args.export.iterdir():
        link = args.out_dir / f.name
        if not f.name.startswith("encoder-model.int8") and not link.exists():
            link.symlink_to(f.resolve())
    source = args.export / "encoder-model.onnx"
    graph = onnx.load(str(source), load_external_data=False).graph
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul"]
    chosen = [
        n for n in matmuls if any(p in n for p in args.parts) and not n.startswith(KEEP_FLOAT)
    ]
    print(f"{len(chosen)} of {len(matmuls)} MatMuls quantized")
    logging.getLogger().setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(source),
            str(args.out_dir / "encoder-model.int8.onnx"),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=[n for n in matmuls if n not in chosen],
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )


if __name__ == "__main__":
    main()
