# Copied unchanged in substance from the project brief's shared recipes (shared/recipes/nemo_config.py):
# the reference recipe issue 4 names for the full-size synthetic checkpoint.
"""parakeet-tdt-0.6b-v2-shaped config for NeMo's EncDecRNNTBPEModel, plus a calibrated random re-init.

pred_rnn_layers=2 and xscaling=False match the real v2 checkpoint. NeMo's own default init emits one token
forever; reinit() (fan-in normal, encoder layers x0.3, zero biases) gives varied tokens and every duration case,
and add_blank_bias() brings the token rate to speech-like levels. The tokenizer dir needs tokenizer.model,
tokenizer.vocab and vocab.txt (see ../DESIGN.md).
"""
import math
import torch
from omegaconf import OmegaConf

D = [0, 1, 2, 3, 4]


def make_cfg(tok, layers=24, d_model=1024, heads=8, sub_ch=256, pred=640, pred_layers=2, joint=640, feats=128,
             xscaling=False):
    cfg = {
        'sample_rate': 16000, 'labels': None,
        'tokenizer': {'dir': tok, 'type': 'bpe'},
        'preprocessor': {'_target_': 'nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor',
                         'sample_rate': 16000, 'normalize': 'per_feature', 'window_size': 0.025,
                         'window_stride': 0.01, 'window': 'hann', 'features': feats, 'n_fft': 512, 'log': True,
                         'frame_splicing': 1, 'dither': 1e-5, 'pad_to': 0, 'pad_value': 0.0},
        'encoder': {'_target_': 'nemo.collections.asr.modules.ConformerEncoder',
                    'feat_in': feats, 'feat_out': -1, 'n_layers': layers, 'd_model': d_model, 'use_bias': False,
                    'subsampling': 'dw_striding', 'subsampling_factor': 8, 'subsampling_conv_channels': sub_ch,
                    'causal_downsampling': False, 'ff_expansion_factor': 4, 'self_attention_model': 'rel_pos',
                    'n_heads': heads, 'att_context_size': [-1, -1], 'att_context_style': 'regular',
                    'xscaling': xscaling, 'untie_biases': True, 'pos_emb_max_len': 5000, 'conv_kernel_size': 9,
                    'conv_norm_type': 'batch_norm', 'conv_context_size': None, 'dropout': 0.1,
                    'dropout_pre_encoder': 0.1, 'dropout_emb': 0.0, 'dropout_att': 0.1},
        'decoder': {'_target_': 'nemo.collections.asr.modules.RNNTDecoder', 'normalization_mode': None,
                    'random_state_sampling': False, 'blank_as_pad': True,
                    'prednet': {'pred_hidden': pred, 'pred_rnn_layers': pred_layers, 't_max': None,
                                'dropout': 0.2}},
        'joint': {'_target_': 'nemo.collections.asr.modules.RNNTJoint', 'log_softmax': None,
                  'preserve_memory': False, 'fuse_loss_wer': True, 'fused_batch_size': 4,
                  'jointnet': {'joint_hidden': joint, 'activation': 'relu', 'dropout': 0.2,
                               'encoder_hidden': d_model, 'pred_hidden': pred},
                  'num_extra_outputs': len(D)},
        'decoding': {'strategy': 'greedy_batch', 'model_type': 'tdt', 'durations': D,
                     'greedy': {'max_symbols': 10}},
        'loss': {'loss_name': 'tdt', 'tdt_kwargs': {'fastemit_lambda': 0.0, 'clamp': -1.0, 'durations': D,
                                                    'sigma': 0.02, 'omega': 0.1}},
        'model_defaults': {'enc_hidden': d_model, 'pred_hidden': pred, 'joint_hidden': joint,
                           'tdt_durations': D, 'num_tdt_durations': len(D)},
        'optim': None,
        'validation_ds': {'manifest_filepath': None, 'sample_rate': 16000, 'batch_size': 4, 'shuffle': False,
                          'use_start_end_token': False},
    }
    return OmegaConf.create(cfg)


@torch.no_grad()
def reinit(model, seed=0, fanin=1.0, enc_layer_scale=0.3):
    """Fan-in normal re-init (CPU generator seed+1, parameter order), zero biases: gives diverse tokens."""
    g = torch.Generator().manual_seed(seed + 1)
    for n, p in model.named_parameters():
        if p.dim() >= 2:
            sc = fanin * (enc_layer_scale if n.startswith('encoder.layers') else 1.0)
            p.copy_((torch.randn(p.shape, generator=g) * sc / math.sqrt(p[0].numel())).to(p.device, p.dtype))
        elif n.endswith('bias'):
            p.zero_()
    emb = model.decoder.prediction.embed  # the blank id is the embedding's padding row: zero, as in trained checkpoints
    emb.weight[emb.padding_idx].zero_()


@torch.no_grad()
def add_blank_bias(model, bias=2.5625):
    """A positive bias on the blank logit brings the random model's token rate to speech-like levels
    (about 3.6 tokens per audio second for the full-size model with reinit(); 0 gives about 14, the cap-bound rate)."""
    model.joint.joint_net[-1].bias[model.decoder.blank_idx] += bias  # logits: tokens, blank, then the 5 durations
