"""Block-wise 8-bit weights for the ONNX encoder (ORT's MatMulNBits), an experiment next to the
dynamic int8 that ``budgie export --quantize int8`` writes.

MatMulNBits keeps one scale per block of ``--block`` weights along K and, at accuracy level 4,
quantizes the activations per block too (dynamic int8 uses one activation scale per matrix),
which is what the near-tie synthetic model's token agreement is sensitive to. Not used by the
export: its quantizer needs the ``onnx_ir`` package (not a Budgie dependency) and the contrib op
is not known to run in parakeet.js. Run in a venv with onnxruntime, onnx and onnx_ir:

    python benchmarks/int8_blockwise.py full-onnx/encoder-model.onnx OUT/encoder-model.int8.onnx \\
        --block 64
then, with OUT holding links to the other files of full-onnx,
    python benchmarks/cpu_compare.py --nemo full.nemo --onnx-dir OUT --clips 20 --rounds 1 \\
        --systems budgie-onnx-fp32 budgie-onnx-int8 -o RESULT.json
"""

from __future__ import annotations

import argparse
import time

import onnx
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

KEEP_FLOAT = ("/pre_encode/", "/joint_net/")  # as budgie.backends.onnx_export


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--accuracy-level", type=int, default=4)
    args = parser.parse_args()
    start = time.perf_counter()
    model = onnx.load(args.source)
    keep = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and n.name.startswith(KEEP_FLOAT)
    ]
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=args.block,
        is_symmetric=True,
        accuracy_level=args.accuracy_level,
        bits=8,
        op_types_to_quantize=("MatMul",),
    )
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=args.block,
        is_symmetric=True,
        accuracy_level=args.accuracy_level,
        nodes_to_exclude=keep,
        algo_config=config,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(args.target, use_external_data_format=False)
    print(f"wrote {args.target} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
