"""The CPU prediction step (one emitted label through the LSTM and ``joint.pred``) at
parakeet-tdt-0.6b-v2's sizes: Budgie's ``TorchPredictor`` (a label table for layer 0, one
product per layer against contiguous transposed weights) against ``torch.lstm_cell`` per layer
on the module's own weights, alternating, at 1 and 2 torch threads; plus the largest difference
of their projected predictions over the first 10 and 100 labels.

    python benchmarks/cpu_predictor_micro.py --out RESULT.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpu_decoder_micro import build_network  # noqa: E402

from budgie.cpu_decoding import TorchPredictor  # noqa: E402
from budgie.transducer import Decoder, Joint  # noqa: E402


class CellReference:
    """The previous prediction step: ``torch.lstm_cell`` per layer, then ``joint.pred``."""

    def __init__(self, decoder: Decoder, joint: Joint) -> None:
        lstm = decoder.prediction.dec_rnn.lstm
        self.embed, self.project = decoder.prediction.embed, joint.pred
        self.cells = [
            [getattr(lstm, f"{k}_l{i}") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            for i in range(lstm.num_layers)
        ]
        zero = torch.zeros(1, lstm.hidden_size)
        self.state = [(zero, zero)] * lstm.num_layers

    @torch.inference_mode()
    def advance(self, label: int) -> np.ndarray:
        x = self.embed(torch.tensor([label]))
        for i, weights in enumerate(self.cells):
            self.state[i] = torch.lstm_cell(x, self.state[i], *weights)
            x = self.state[i][0]
        out: np.ndarray = self.project(x)[0].numpy()
        return out


def per_step_ms(advance: Callable[[int], np.ndarray], labels: list[int]) -> float:
    t0 = time.perf_counter()
    for label in labels:
        advance(label)
    return (time.perf_counter() - t0) * 1000 / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    decoder, joint, _ = build_network(torch.device("cpu"), 0)
    vocab = decoder.prediction.embed.weight.shape[0]
    labels = [(7 * i) % vocab for i in range(args.steps)]
    result: dict[str, object] = {
        "command": " ".join(sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "steps": args.steps,
    }
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ours, reference = TorchPredictor(decoder, joint), CellReference(decoder, joint)
        ours.start()
        times: dict[str, list[float]] = {"budgie": [], "lstm_cell": []}
        for _ in range(args.reps):  # alternating
            times["budgie"].append(per_step_ms(ours.advance, labels))
            times["lstm_cell"].append(per_step_ms(reference.advance, labels))
        result[f"threads_{threads}_ms_per_step"] = {
            k: statistics.median(v) for k, v in times.items()
        }
        print(threads, result[f"threads_{threads}_ms_per_step"], flush=True)
    # Rounding differs (the table's float64 sums, another summation order); this random LSTM
    # then carries the difference along its recurrence, so it is given after 10 and 100 steps.
    ours, reference = TorchPredictor(decoder, joint), CellReference(decoder, joint)
    first = ours.start()
    diffs = [np.abs(first - reference.advance(decoder.prediction.blank_id)).max()]
    diffs += [np.abs(ours.advance(x) - reference.advance(x)).max() for x in labels[:100]]
    result["max_abs_difference_10_steps"] = float(max(diffs[:11]))
    result["max_abs_difference_100_steps"] = float(max(diffs))
    print("max difference after 10 / 100 steps", float(max(diffs[:11])), float(max(diffs)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
