"""FastConformer encoder (NeMo ``ConformerEncoder`` with dw_striding subsampling and rel-pos MHSA).

Module and parameter names follow NeMo's, so a checkpoint's ``encoder.*`` keys load as they are.
Padding never leaks into valid frames: the subsampling masks time before every convolution,
attention masks padded keys, and the convolution module zeroes padded frames before its
depthwise convolution. A batch therefore gives each utterance the result it gets alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from budgie.config import EncoderConfig

# NeMo fills masked attention scores with -INF_VAL and builds positional encodings with it.
INF_VAL = 10000.0
# Projected relative positions are cached for tables of this many frames (doubling from the
# first), up to the last: 2,048 encoder frames = 164 s. Longer inputs project per call.
POSITION_TABLE_FRAMES = (256, 512, 1024, 2048)


def subsampled_length(lengths: Tensor, num_convs: int) -> Tensor:
    """L <- floor((L - 1) / 2) + 1 per stride-2 conv (kernel 3, padding 1)."""
    for _ in range(num_convs):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def time_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B, T] True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class ConvSubsampling(nn.Module):
    """dw_striding: conv3x3/2, then (depthwise 3x3/2 + pointwise 1x1) per further halving."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        channels = cfg.subsampling_conv_channels
        self.num_halvings = int(math.log2(cfg.subsampling_factor))
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.ReLU()]
        for _ in range(self.num_halvings - 1):
            layers += [
                nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels),
                nn.Conv2d(channels, channels, 1),
                nn.ReLU(),
            ]
        self.conv = nn.Sequential(*layers)
        freq = cfg.feat_in
        for _ in range(self.num_halvings):
            freq = (freq - 1) // 2 + 1
        self.out = nn.Linear(channels * freq, cfg.d_model)

    def forward(
        self, features: Tensor, lengths: Tensor, fused: FusedSubsampling | None = None
    ) -> tuple[Tensor, Tensor]:
        """features [B, F, T] -> [B, T', d_model]; padded time zeroed before each convolution.
        ``fused(self, features, lengths)`` replaces every layer up to the last depthwise
        convolution (fused kernels: triton_subsampling.py)."""
        layers = list(self.conv)
        if fused is not None and self.num_halvings >= 2:
            x, lengths = fused(self, features, lengths)
            layers = layers[-2:]  # the last pointwise convolution and its ReLU
        else:
            x = features.transpose(1, 2).unsqueeze(1).to(self.out.weight.dtype)  # [B, 1, T, F]
        mask = time_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                # A 1x1 convolution does not mix time steps: the mask before the next
                # time-mixing convolution (and the final one) keeps padding out.
                x = layer(x if layer.kernel_size == (1, 1) else x * mask)
                if layer.stride != (1, 1):
                    lengths = subsampled_length(lengths, 1)
                    mask = time_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
            else:
                x = layer(x)
        x = x * mask
        b, c, t, f = x.shape
        out = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return out.to(features.dtype), lengths


def _tracing() -> bool:
    """True while torch.jit traces (ONNX export): a cached table would become a constant."""
    return bool(torch.jit.is_tracing())  # type: ignore[attr-defined,no-untyped-call]


def relative_positions(length: int, d_model: int, device: torch.device) -> Tensor:
    """Sinusoidal encodings of relative positions T-1 ... -(T-1): [1, 2T-1, d_model].

    NeMo caches a table for max(5000, T) positions and slices it; the rows it slices depend only
    on T, so computing exactly those rows gives the same values with no length limit.
    """
    positions = torch.arange(length - 1, -length, -1, dtype=torch.float32, device=device)
    div_term = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=device)
        * -(math.log(INF_VAL) / d_model)
    )
    angles = positions[:, None] * div_term
    pe = torch.zeros(positions.shape[0], d_model, device=device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.unsqueeze(0)


def rel_shift(scores: Tensor) -> Tensor:
    """[B, H, T, P] scores against positions T-1, T-2, ... (P >= 2T-1) -> [B, H, T, T] scores
    of j - i.

    Row i needs columns (T-1-i) ... (2T-2-i): a strided view of the contiguous tensor, the
    same numbers NeMo's pad-and-reshape trick selects, without the copies.
    """
    b, h, t, p = scores.shape
    scores = scores.contiguous()
    return scores.as_strided(
        (b, h, t, t), (h * t * p, t * p, p - 1, 1), scores.storage_offset() + t - 1
    )


def position_bias(scores: Tensor, scale: float, key_mask: Tensor | None) -> Tensor:
    """[H, B, T, P] position scores -> the attention bias [B, H, T, T]: shifted, scaled,
    padded keys masked (padded query rows are zeroed after attention)."""
    if _eager_position_bias is not None and torch.compiler.is_compiling():
        return _eager_position_bias(scores, scale, key_mask)
    bias = rel_shift(scores).transpose(0, 1) * scale
    if key_mask is not None:
        bias = bias.masked_fill(~key_mask[:, None, None, :], -INF_VAL)
    return bias


_eager_position_bias: Callable[[Tensor, float, Tensor | None], Tensor] | None = None


def keep_position_bias_eager() -> None:
    """Make compiled layers run ``position_bias`` eagerly (a graph break): Inductor's fused
    kernel for this strided gather with dynamic shapes measured ~10x slower than the two eager
    passes at batch 64 on an H100. Called before compiling (budgie.cuda_runner), not at import:
    ``torch.compiler.disable`` imports torch._dynamo, about 1.5 s."""
    global _eager_position_bias
    if _eager_position_bias is None:
        _eager_position_bias = cast(
            Callable[[Tensor, float, "Tensor | None"], Tensor],
            torch.compiler.disable(position_bias),  # type: ignore[no-untyped-call]
        )


class RelPositionMultiHeadAttention(nn.Module):
    """Transformer-XL attention: content term with pos_bias_u, position term with pos_bias_v."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d, h = cfg.d_model, cfg.n_heads
        self.h, self.d_k = h, d // h
        self.linear_q = nn.Linear(d, d, bias=cfg.use_bias)
        self.linear_k = nn.Linear(d, d, bias=cfg.use_bias)
        self.linear_v = nn.Linear(d, d, bias=cfg.use_bias)
        self.linear_out = nn.Linear(d, d, bias=cfg.use_bias)
        self.linear_pos = nn.Linear(d, d, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(h, self.d_k))

    def project_positions(self, pos_emb: Tensor) -> Tensor:
        """[1, P, D] float32 encodings -> [1, H, P, d_k] keys of the position term.

        Depends on the length only, not on the input: the encoder caches it per length.
        """
        p: Tensor = self.linear_pos(pos_emb.to(self.linear_pos.weight.dtype))
        # [1, H, P, d_k] contiguous: a slice of rows stays aligned for the score GEMM
        return p.view(1, -1, self.h, self.d_k).transpose(1, 2).contiguous()

    def forward(self, x: Tensor, positions: Tensor, key_mask: Tensor | None) -> Tensor:
        """x [B, T, D]; positions from ``project_positions`` for the relative positions T-1,
        T-2, ... down to -(T-1) (or -T: an extra unused row keeps the score rows aligned);
        key_mask [B, T] True on valid frames, None when nothing is padded."""
        b, t, _ = x.shape
        # Precision as NeMo under autocast: projections, both score terms and the softmax in
        # the weights' dtype; the bias adds in float32 (a bf16 + float32 sum promotes).
        dt = self.linear_q.weight.dtype
        xc = x.to(dt)
        q = self.linear_q(xc).view(b, t, self.h, self.d_k)
        k = self.linear_k(xc).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(xc).view(b, t, self.h, self.d_k).transpose(1, 2)
        q_u = (q.float() + self.pos_bias_u).to(dt).transpose(1, 2)
        q_v = (q.float() + self.pos_bias_v).to(dt)
        scale = 1.0 / math.sqrt(self.d_k)
        # Position term as one GEMM per head over all B*T queries: broadcasting the positions
        # over the batch would copy them once per row. [H, B*T, P] -> shifted [B, H, T, T].
        by_head = q_v.permute(2, 0, 1, 3).reshape(self.h, b * t, self.d_k)
        bd = torch.matmul(by_head, positions[0].to(dt).transpose(-2, -1))
        position_scores = position_bias(bd.view(self.h, b, t, -1), scale, key_mask)
        if x.device.type == "cpu":  # measured: the plain form is ~8 % faster on CPU here
            scores = torch.matmul(q_u, k.transpose(-2, -1)) * scale + position_scores
            out = torch.matmul(torch.softmax(scores, dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=position_scores)
        if key_mask is not None:  # padded query rows: NeMo zeroes them
            out = out.masked_fill(~key_mask[:, None, :, None], 0.0)
        merged: Tensor = self.linear_out(out.transpose(1, 2).reshape(b, t, self.h * self.d_k))
        return merged.to(x.dtype)


class ConvolutionModule(nn.Module):
    """pointwise (GLU) -> depthwise conv -> BatchNorm -> SiLU -> pointwise."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d, k = cfg.d_model, cfg.conv_kernel_size
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=cfg.use_bias)
        self.depthwise_conv = nn.Conv1d(d, d, k, padding=(k - 1) // 2, groups=d, bias=cfg.use_bias)
        self.batch_norm: nn.Module = nn.BatchNorm1d(d)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=cfg.use_bias)

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Fold the (inference-time, affine) BatchNorm into the depthwise conv: one op less."""
        bn, conv = self.batch_norm, self.depthwise_conv
        if not isinstance(bn, nn.BatchNorm1d):
            return  # already folded
        assert bn.running_var is not None and bn.running_mean is not None
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight = nn.Parameter(conv.weight * scale[:, None, None])
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
        self.batch_norm = nn.Identity()

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        """x [B, T, D]; pad_mask [B, T] True on padded frames."""
        w1 = self.pointwise_conv1.weight.squeeze(-1)
        act = x.dtype
        y = F.glu(F.linear(x.to(w1.dtype), w1, self.pointwise_conv1.bias), dim=-1)
        if pad_mask is not None:
            y = y.masked_fill(pad_mask[:, :, None], 0.0)
        y = self.depthwise_conv(y.transpose(1, 2))
        y = self.batch_norm(y.to(act)).transpose(1, 2)  # BatchNorm keeps its float32 statistics
        w2 = self.pointwise_conv2.weight.squeeze(-1)
        return F.linear(F.silu(y).to(w2.dtype), w2, self.pointwise_conv2.bias).to(act)


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.linear1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.use_bias)
        self.linear2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.use_bias)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear2(F.silu(self.linear1(x.to(self.linear1.weight.dtype))))
        return out.to(x.dtype)


class ConformerLayer(nn.Module):
    """Macaron block: x + FF/2, + MHSA, + conv, + FF/2, then LayerNorm."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.feed_forward1 = FeedForward(cfg)
        self.norm_self_att = nn.LayerNorm(d)
        self.self_attn = RelPositionMultiHeadAttention(cfg)
        self.norm_conv = nn.LayerNorm(d)
        self.conv = ConvolutionModule(cfg)
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.feed_forward2 = FeedForward(cfg)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: Tensor, positions: Tensor, valid: Tensor | None) -> Tensor:
        """positions: this layer's ``self_attn.project_positions`` of the encodings."""
        pad_mask = None if valid is None else ~valid
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn(self.norm_self_att(x), positions, valid)
        x = x + self.conv(self.norm_conv(x), pad_mask)
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        out: Tensor = self.norm_out(x)
        return out


LayerRunner = Callable[[ConformerLayer, Tensor, Tensor, "Tensor | None"], Tensor]
# (module, features [B, F, T], lengths) -> (the last depthwise convolution's output, lengths)
FusedSubsampling = Callable[[ConvSubsampling, Tensor, Tensor], tuple[Tensor, Tensor]]


class ConformerEncoder(nn.Module):
    """features [B, F, T] + lengths -> encoded [B, T', d_model] + lengths (T' = T / 8)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pre_encode = ConvSubsampling(cfg)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_layers))
        self.xscale = math.sqrt(cfg.d_model) if cfg.xscaling else None
        # (frames, device, dtype) -> per-layer projected positions for 2*frames-1 positions.
        # Tables are never dropped: CUDA graphs captured with a slice of one read it later.
        self._position_tables: dict[tuple[int, torch.device, torch.dtype], list[Tensor]] = {}
        self._position_weights: tuple[int, int, torch.dtype] | None = None

    def set_matmul_dtype(self, dtype: torch.dtype, device: torch.device | None = None) -> None:
        """Mixed precision: linear and conv weights in ``dtype``; the residual stream,
        LayerNorm and BatchNorm stay float32, attention runs in ``dtype`` (NeMo under autocast).

        With ``device``, each module is moved first and cast there, one at a time: the cast
        runs on the GPU and no full float32 copy of the encoder is ever resident there.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                if device is not None:
                    module.to(device)
                module.to(dtype)

    @property
    def matmul_dtype(self) -> torch.dtype:
        """The dtype of the linear weights (``set_matmul_dtype``): the model's precision."""
        return self.pre_encode.out.weight.dtype

    def layer_positions(self, frames: int, device: torch.device) -> list[Tensor]:
        """Each layer's projected relative positions for an input of ``frames`` frames.

        The encodings for T frames are the middle 2T-1 rows of any longer table, and the
        projection is row by row, so one projected table per size serves every shorter input:
        the projection (~8 % of the encoder's arithmetic at 20 s) is paid once, not per call.
        """
        layers = [layer.self_attn for layer in self.layers if isinstance(layer, ConformerLayer)]
        table = next((n for n in POSITION_TABLE_FRAMES if n >= frames), None)
        if table is None or _tracing() or torch.is_grad_enabled():
            pos_emb = relative_positions(frames, self.cfg.d_model, device)
            return [attn.project_positions(pos_emb) for attn in layers]
        weight = layers[0].linear_pos.weight
        identity = (weight.data_ptr(), weight._version, weight.dtype)
        if identity != self._position_weights:  # new or changed weights: old tables are stale
            self._position_tables.clear()
            self._position_weights = identity
        key = (table, device, weight.dtype)
        if key not in self._position_tables:  # positions table .. -table: 2 * table + 1 rows
            pos_emb = relative_positions(table + 1, self.cfg.d_model, device)
            self._position_tables[key] = [attn.project_positions(pos_emb) for attn in layers]
        # 2T rows, T-1 .. -T: the last is never selected, but an even row count keeps the
        # [T, 2T] score rows 16-byte aligned for the GEMM (an odd count forces slow kernels).
        first = table + 1 - frames
        return [p[:, :, first : first + 2 * frames] for p in self._position_tables[key]]

    def fold_batch_norms(self) -> None:
        for layer in self.layers:
            assert isinstance(layer, ConformerLayer)
            layer.conv.fold_batch_norm()

    def forward(
        self,
        features: Tensor,
        lengths: Tensor,
        always_mask: bool = False,
        run_layer: LayerRunner | None = None,
        fused_subsampling: FusedSubsampling | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``always_mask`` skips the host-side "is anything padded?" check (CUDA graphs);
        ``run_layer(layer, x, positions, valid)`` replaces ``layer(...)`` (a compiled layer);
        ``fused_subsampling``: fused subsampling kernels (ConvSubsampling.forward)."""
        x, lengths = self.pre_encode(features.float(), lengths, fused_subsampling)
        if self.xscale is not None:
            x = x * self.xscale
        t = x.shape[1]
        positions = self.layer_positions(t, x.device)
        valid: Tensor | None = time_mask(lengths, t)
        if not always_mask and bool((lengths == t).all()):
            valid = None  # no padding: skip every mask
        for layer, layer_positions in zip(self.layers, positions, strict=True):
            assert isinstance(layer, ConformerLayer)
            if run_layer is None:
                x = layer(x, layer_positions, valid)
            else:
                x = run_layer(layer, x, layer_positions, valid)
        return x, lengths
