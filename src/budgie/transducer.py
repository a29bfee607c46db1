"""Prediction network and joint of a TDT transducer, under NeMo's module names.

The joint is split the way fast decoding wants it: ``project_encoder`` once for all frames,
``project_prediction`` once per emitted label, and ``logits`` (ReLU + output layer) per step.
Joint outputs are laid out as [vocabulary..., blank, duration logits...].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from budgie.config import ModelConfig

LSTMState = tuple[Tensor, Tensor]


class LSTMStack(nn.Module):
    """Holds NeMo's ``dec_rnn.lstm`` so the keys match."""

    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)


class PredictionNetwork(nn.Module):
    """Embedding (blank row = zero padding row) followed by a stacked LSTM."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        pred = cfg.prediction
        self.blank_id = cfg.blank_id
        self.layers = pred.pred_rnn_layers
        self.hidden = pred.pred_hidden
        # An explicit (zero) weight skips Embedding's random init: on the meta device
        # that init imports torch._dynamo, 1.5-3.5 s of the model load; checkpoints fill it.
        rows = pred.vocab_size + 1
        self.embed = nn.Embedding(
            rows,
            pred.pred_hidden,
            padding_idx=cfg.blank_id,
            _weight=torch.zeros(rows, pred.pred_hidden),
        )
        self.dec_rnn = LSTMStack(pred.pred_hidden, pred.pred_rnn_layers)

    def initial_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> LSTMState:
        shape = (self.layers, batch, self.hidden)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(
            shape, device=device, dtype=dtype
        )

    def forward(self, labels: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """labels [B] -> output [B, H] and the new state."""
        out, (h, c) = self.dec_rnn.lstm(self.embed(labels)[:, None, :], state)
        return out[:, 0, :], (h, c)


class Decoder(nn.Module):
    """NeMo's ``RNNTDecoder`` shell: only ``prediction`` carries weights."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.prediction = PredictionNetwork(cfg)


class Joint(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        j = cfg.joint
        if j.activation != "relu":
            raise ValueError(f"joint activation {j.activation!r} (only relu)")
        self.num_labels = cfg.vocab_size + 1  # tokens + blank
        self.num_durations = len(cfg.decoding.durations)
        self.enc = nn.Linear(j.encoder_hidden, j.joint_hidden)
        self.pred = nn.Linear(j.pred_hidden, j.joint_hidden)
        self.joint_net = nn.Sequential(
            nn.ReLU(),
            nn.Identity(),  # NeMo's dropout slot: keeps the output layer at index 2
            nn.Linear(j.joint_hidden, self.num_labels + self.num_durations),
        )

    def project_encoder(self, encoded: Tensor) -> Tensor:
        out: Tensor = self.enc(encoded)
        return out

    def project_prediction(self, prediction: Tensor) -> Tensor:
        out: Tensor = self.pred(prediction)
        return out

    def logits(self, enc_projected: Tensor, pred_projected: Tensor) -> Tensor:
        """[..., joint_hidden] x2 -> [..., labels + durations]."""
        out: Tensor = self.joint_net(enc_projected + pred_projected)
        return out
