"""The Parakeet TDT network: preprocessor, encoder, prediction network and joint in one module.

Attribute names mirror NeMo's ``EncDecRNNTBPEModel`` so a checkpoint's state dict loads with no
renaming. Construction happens on the meta device and the checkpoint's tensors are assigned in
place, so a 0.6B model is ready as fast as its weights can be mapped from disk.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from budgie.config import ModelConfig
from budgie.encoder import ConformerEncoder
from budgie.errors import ModelError
from budgie.frontend import Preprocessor
from budgie.transducer import Decoder, Joint

# Checkpoint entries that carry no weights Budgie needs (training-time bookkeeping).
IGNORED_SUFFIXES = ("num_batches_tracked",)


class ParakeetTDT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.preprocessor = Preprocessor(cfg.preprocessor)
        self.encoder = ConformerEncoder(cfg.encoder)
        self.decoder = Decoder(cfg)
        self.joint = Joint(cfg)

    def encode(self, audio: Tensor, num_samples: Tensor) -> tuple[Tensor, Tensor]:
        """Waveforms [B, N] -> encoder output [B, T, D] and valid frame counts [B]."""
        features, lengths = self.preprocessor(audio, num_samples)
        encoded, enc_lengths = self.encoder(features, lengths)
        return encoded, enc_lengths

    @property
    def encoder_dtype(self) -> torch.dtype:
        """Precision of the encoder's matrix products (its activations stay float32)."""
        return self.encoder.pre_encode.out.weight.dtype

    @classmethod
    def from_state_dict(cls, cfg: ModelConfig, state_dict: Mapping[str, Tensor]) -> ParakeetTDT:
        """Build the module around the checkpoint's tensors (no random init, no copies)."""
        with torch.device("meta"):
            model = cls(cfg)
        expected = set(model.state_dict().keys())
        wanted = dict(state_dict)
        for key in expected:  # bookkeeping buffers: present in the module, absent in some files
            if key.endswith(IGNORED_SUFFIXES) and key not in wanted:
                wanted[key] = torch.zeros((), dtype=torch.long)
        missing = sorted(expected - wanted.keys())
        unexpected = sorted(k for k in wanted.keys() - expected if not _is_known_extra(k))
        if missing:
            raise ModelError(
                f"checkpoint lacks {len(missing)} weights the config needs, e.g. {missing[0]}"
            )
        if unexpected:
            raise ModelError(
                f"checkpoint has {len(unexpected)} weights the config does not explain, "
                f"e.g. {unexpected[0]}"
            )
        for name, tensor in model.state_dict().items():
            got = wanted[name]
            if tuple(got.shape) != tuple(tensor.shape):
                shapes = f"{tuple(got.shape)}, config implies {tuple(tensor.shape)}"
                raise ModelError(f"weight {name} has shape {shapes}")
        model.load_state_dict({k: wanted[k] for k in expected}, strict=True, assign=True)
        return model.eval()


def _is_known_extra(key: str) -> bool:
    """Entries a NeMo checkpoint may carry beyond the network (losses, WER metrics, ...)."""
    return not key.startswith(("preprocessor.", "encoder.", "decoder.", "joint."))
