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
To try Budgie's unpadded graph, quantize ``budgie-encoder-fast.onnx`` into OUT under the same
name, run only ``--systems budgie-onnx-fp32`` on OUT (it runs that graph), and compare its ids
with a true float32 record of the same clips (in the project venv):
    python benchmarks/int8_blockwise.py --agreement FP32_RECORD.json OUT_RECORD.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# As budgie.backends.onnx_export; "/out/" is the subsampling's projection in Budgie's unpadded
# graph (budgie-encoder-fast.onnx), traced without the pre_encode module name.
KEEP_FLOAT = ("/pre_encode/", "/joint_net/", "/out/")


def agreement(reference: str, candidate: str) -> None:
    """Token agreement of two cpu_compare records' budgie-onnx-fp32 runs (same clips)."""
    import json

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent / "src")]
    from cpu_compare import token_agreement

    runs = [
        json.loads(Path(f).read_text())["rounds"][0]["budgie-onnx-fp32"]["runs"]
        for f in (reference, candidate)
    ]
    names = [[Path(r["clip"]).name for r in rs] for rs in runs]
    if names[0] != names[1]:
        raise SystemExit("the records hold different clips")
    ids = [[r["ids"] for r in rs] for rs in runs]
    same = sum(a == b for a, b in zip(*ids, strict=True))
    print(f"token agreement {token_agreement(ids[1], ids[0]):.4f}, identical {same}/{len(ids[0])}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--agreement":
        agreement(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--accuracy-level", type=int, default=4)
    parser.add_argument(
        "--dynamic",
        default="",
        help="MatMuls whose names contain this get budgie export's dynamic int8 instead "
        "(e.g. /feed_forward: the FFNs, 2/3 of the arithmetic)",
    )
    args = parser.parse_args()
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    start = time.perf_counter()
    model = onnx.load(args.source)
    names = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    keep = [n for n in names if n.startswith(KEEP_FLOAT)]
    dynamic = [n for n in names if args.dynamic and args.dynamic in n]
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
        nodes_to_exclude=keep + dynamic,
        algo_config=config,
    )
    quantizer.process()
    if not dynamic:
        quantizer.model.save_model_to_file(args.target, use_external_data_format=False)
    else:  # then the dynamic int8 of budgie export (per-channel scales) for the chosen MatMuls
        from onnxruntime.quantization import QuantType, quantize_dynamic

        staged = args.target + ".blockwise.onnx"
        quantizer.model.save_model_to_file(staged, use_external_data_format=True)
        rest = [n.name for n in onnx.load(staged, load_external_data=False).graph.node]
        quantize_dynamic(
            staged,
            args.target,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=[n for n in rest if n not in dynamic],
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )
        for leftover in (staged, staged + ".data"):
            Path(leftover).unlink(missing_ok=True)
    print(f"wrote {args.target} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
