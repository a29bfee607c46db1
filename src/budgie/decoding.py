"""TDT greedy decoding with NeMo's label-looping semantics.

Rules (NeMo ``GreedyBatchedTDTLabelLoopingComputer``): start from the prediction network's output
for blank; at frame t take the argmax label and the argmax duration (ties to the lowest index);
a blank advances by its duration (at least 1); a label is emitted at frame t with its duration,
even when t + duration passes the end; the prediction network then consumes it; a label with
duration 0 stays on the frame, and after ``max_symbols`` labels on one frame decoding moves on.

Two implementations of the same function:
- ``greedy_decode_single``: one utterance, a plain loop; the CPU fast path and the reference.
- ``greedy_decode_batched``: all utterances advance together with per-row frame indices
  (device-agnostic tensor code; the GPU path builds on it).
Both project the encoder output through the joint once for all frames, and run the prediction
network only when a label is emitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from budgie.transducer import Decoder, Joint


@dataclass
class Hypothesis:
    """Decoded labels of one utterance with their frames, durations and the joint-step count."""

    token_ids: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)
    confidences: list[float] | None = None
    steps: int = 0


def _best(logits: Tensor, num_labels: int) -> tuple[Tensor, Tensor]:
    """Argmax label and argmax duration index of [..., labels + durations] logits."""
    return logits[..., :num_labels].argmax(dim=-1), logits[..., num_labels:].argmax(dim=-1)


def _label_confidence(logits: Tensor, num_labels: int) -> float:
    """Probability of the chosen label under softmax over labels (NeMo's 'max_prob')."""
    return float(torch.softmax(logits[:num_labels].float(), dim=-1).max())


@torch.inference_mode()
def greedy_decode_single(
    decoder: Decoder,
    joint: Joint,
    encoded: Tensor,
    durations: tuple[int, ...],
    max_symbols: int,
    with_confidence: bool = False,
) -> Hypothesis:
    """Decode one utterance; ``encoded`` is [T, D] (valid frames only)."""
    prediction = decoder.prediction
    blank = prediction.blank_id
    num_labels = joint.num_labels
    num_frames = encoded.shape[0]
    enc_proj = joint.project_encoder(encoded)
    state = prediction.initial_state(1, encoded.device, enc_proj.dtype)
    label_in = torch.full((1,), blank, dtype=torch.long, device=encoded.device)
    out, state = prediction(label_in, state)
    pred_proj = joint.project_prediction(out)[0]

    hyp = Hypothesis(confidences=[] if with_confidence else None)
    t = 0
    last_frame, on_frame = -1, 0
    while t < num_frames:
        label = blank
        while label == blank and t < num_frames:  # skip blanks with the same prediction output
            label_frame = t
            logits = joint.logits(enc_proj[t], pred_proj)
            hyp.steps += 1
            label_t, dur_t = _best(logits, num_labels)
            label, duration = int(label_t), durations[int(dur_t)]
            if label == blank and duration == 0:
                duration = 1
            t += duration
        if label == blank:
            break  # ran off the end while looking for a label
        hyp.token_ids.append(label)
        hyp.frames.append(label_frame)
        hyp.durations.append(duration)
        if hyp.confidences is not None:
            hyp.confidences.append(_label_confidence(logits, num_labels))
        on_frame = on_frame + 1 if label_frame == last_frame else 1
        last_frame = label_frame
        label_in[0] = label
        out, state = prediction(label_in, state)
        pred_proj = joint.project_prediction(out)[0]
        if t < num_frames and on_frame >= max_symbols and last_frame == t:
            t += 1  # symbol cap reached on this frame: force a blank
    return hyp


@torch.inference_mode()
def greedy_decode_batched(
    decoder: Decoder,
    joint: Joint,
    encoded: Tensor,
    lengths: Tensor,
    durations: tuple[int, ...],
    max_symbols: int,
    with_confidence: bool = False,
) -> list[Hypothesis]:
    """Decode a batch; ``encoded`` is [B, T, D], ``lengths`` [B] valid frames."""
    prediction = decoder.prediction
    blank = prediction.blank_id
    num_labels = joint.num_labels
    batch, max_time, _ = encoded.shape
    device = encoded.device
    enc_proj = joint.project_encoder(encoded)
    duration_values = torch.tensor(durations, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    lengths = lengths.to(device=device, dtype=torch.long)
    last_index = (lengths - 1).clamp(min=0)

    state = prediction.initial_state(batch, device, enc_proj.dtype)
    labels = torch.full((batch,), blank, dtype=torch.long, device=device)
    out, state = prediction(labels, state)
    pred_proj = joint.project_prediction(out)

    time = torch.zeros(batch, dtype=torch.long, device=device)
    active = time < lengths
    steps = torch.zeros(batch, dtype=torch.long, device=device)
    last_frame = torch.full((batch,), -1, dtype=torch.long, device=device)
    on_frame = torch.zeros(batch, dtype=torch.long, device=device)
    found_labels: list[Tensor] = []
    found_frames: list[Tensor] = []
    found_durations: list[Tensor] = []
    found_conf: list[Tensor] = []
    found_masks: list[Tensor] = []

    def step(frame: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = joint.logits(enc_proj[rows, frame.clamp(max=max_time - 1)], pred_proj)
        label, dur_index = _best(logits, num_labels)
        dur = duration_values[dur_index]
        dur = dur.masked_fill((dur == 0) & (label == blank), 1)
        return logits, label, dur

    while bool(active.any()):
        was_active = active.clone()
        logits, labels, dur = step(torch.minimum(time, last_index))
        steps += was_active
        label_frame = time.clone()
        time = time + dur * was_active
        active = time < lengths
        searching = active & (labels == blank)
        while bool(searching.any()):
            label_frame = torch.where(searching, time, label_frame)
            more_logits, more_labels, more_dur = step(torch.minimum(time, last_index))
            steps += searching
            logits = torch.where(searching[:, None], more_logits, logits)
            labels = torch.where(searching, more_labels, labels)
            dur = torch.where(searching, more_dur, dur)
            time = torch.where(searching, time + dur, time)
            active = time < lengths
            searching = active & (labels == blank)

        found = was_active & (labels != blank)
        found_labels.append(labels)
        found_frames.append(label_frame)
        found_durations.append(dur)
        found_masks.append(found)
        if with_confidence:
            probs = torch.softmax(logits[:, :num_labels].float(), dim=-1)
            found_conf.append(probs.max(dim=-1).values)

        on_frame = torch.where(
            found, torch.where(last_frame == label_frame, on_frame + 1, 1), on_frame
        )
        last_frame = torch.where(found, label_frame, last_frame)
        new_out, new_state = prediction(labels.masked_fill(~found, blank), state)
        keep = found[:, None]
        pred_proj = torch.where(keep, joint.project_prediction(new_out), pred_proj)
        state = (
            torch.where(keep[None], new_state[0], state[0]),
            torch.where(keep[None], new_state[1], state[1]),
        )
        forced = active & found & (on_frame >= max_symbols) & (last_frame == time)
        time = time + forced.long()
        active = time < lengths

    return _collect(found_labels, found_frames, found_durations, found_conf, found_masks, steps)


def _collect(
    labels: list[Tensor],
    frames: list[Tensor],
    durations: list[Tensor],
    confidences: list[Tensor],
    masks: list[Tensor],
    steps: Tensor,
) -> list[Hypothesis]:
    """Move the per-iteration results to the host once, and split them per utterance."""
    batch = steps.shape[0]
    if not labels:
        return [Hypothesis(steps=int(s)) for s in steps.tolist()]
    mask = torch.stack(masks, dim=1).cpu()
    columns = [torch.stack(x, dim=1).cpu() for x in (labels, frames, durations)]
    conf = torch.stack(confidences, dim=1).cpu() if confidences else None
    hyps = []
    for b in range(batch):
        keep = mask[b]
        hyp = Hypothesis(
            token_ids=columns[0][b][keep].tolist(),
            frames=columns[1][b][keep].tolist(),
            durations=columns[2][b][keep].tolist(),
            confidences=None if conf is None else conf[b][keep].tolist(),
            steps=int(steps[b]),
        )
        hyps.append(hyp)
    return hyps
