"""BEATs audio encoder as NatureLM-audio fine-tunes it, with the original module names.

Attribute names follow Microsoft's BEATs code so that ``beats.*`` keys of the official checkpoint load
without renaming. Written batch-first and without training-only parts (layer drop, gradient decay,
padding masks) so that it exports to a clean ONNX graph; the relative position buckets are a precomputed
constant (the original computes a log(0) that only a later ``where`` discards).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from naturelm_edge.models.config import BEATsConfig


@lru_cache(maxsize=4)
def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5-style bidirectional buckets (length, length) exactly as BEATs computes them (float32 log)."""
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]  # key position - query position
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(distance.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(half - max_exact)
        )
    large = max_exact + np.where(distance < max_exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    # int32: the index table is stored in the exported graph, and int64 would double it for nothing
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class WeightNormConv1d(nn.Module):
    """The positional convolution with weight norm over dim 2 (keys ``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> torch.Tensor:
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
        return self.weight_g * self.weight_v / norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class FoldedConv1d(nn.Module):
    """The positional convolution after weight-norm folding: one plain weight, for export."""

    def __init__(self, conv: WeightNormConv1d) -> None:
        super().__init__()
        self.padding, self.groups = conv.padding, conv.groups
        self.weight = nn.Parameter(conv.weight().detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)


class PositionalConv(nn.Sequential):
    """pos_conv = [weight-normed conv, SamePad (drops the last frame for an even kernel), GELU]."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__(WeightNormConv1d(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups))
        self.trim = 1 if cfg.conv_pos % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        if self.trim:
            x = x[:, :, : -self.trim]
        return F.gelu(x)


class MultiheadAttention(nn.Module):
    """BEATs self-attention with the shared relative position bias and its GRU-style gate."""

    def __init__(self, cfg: BEATsConfig, has_relative_attention_bias: bool) -> None:
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim**-0.5
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, heads)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        batch, length, dim = x.shape
        q = self._heads(self.q_proj(x))
        k = self._heads(self.k_proj(x))
        v = self._heads(self.v_proj(x))
        # The original scales q by 1/32 and the scores back by 32 after subtracting the row maximum;
        # softmax is invariant to that shift, so plain scaled scores give the same probabilities.
        scores = torch.matmul(q * self.scaling, k.transpose(-1, -2))
        if position_bias is not None:
            bias = position_bias.unsqueeze(0)
            if self.gru_rel_pos:
                gates = self.grep_linear(q).view(batch, self.num_heads, length, 2, 4).sum(-1)
                gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
            scores = scores + bias
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, length, dim)
        return self.out_proj(out)


class TransformerSentenceEncoderLayer(nn.Module):
    """Post-LN transformer layer with deep-norm residual scaling."""

    def __init__(self, cfg: BEATsConfig, has_relative_attention_bias: bool) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = MultiheadAttention(cfg, has_relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = cfg.layer_norm_first
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), position_bias)
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, position_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(F.gelu(self.fc1(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos_conv = PositionalConv(cfg)
        self.layers = nn.ModuleList(
            TransformerSentenceEncoderLayer(cfg, cfg.relative_position_embedding and i == 0)
            for i in range(cfg.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)

    def position_bias(self, length: int) -> torch.Tensor | None:
        """(heads, length, length) bias of the first layer, shared by every layer as in BEATs."""
        if not self.cfg.relative_position_embedding:
            return None
        buckets = relative_position_buckets(length, self.cfg.num_buckets, self.cfg.max_distance)
        table = self.layers[0].self_attn.relative_attention_bias.weight
        return table[torch.from_numpy(buckets).to(table.device)].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.cfg.layer_norm_first:
            x = self.layer_norm(x)
        bias = self.position_bias(int(x.shape[1]))
        for layer in self.layers:
            x = layer(x, bias)
        if self.cfg.layer_norm_first:
            x = self.layer_norm(x)
        return x


class BEATs(nn.Module):
    """Normalised fbank (batch, frames, 128) -> BEATs tokens (batch, time_patches * mel_patches, width)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        patch = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=patch, stride=patch, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim) if cfg.embed_dim != cfg.encoder_embed_dim else None
        )
        self.encoder = TransformerEncoder(cfg)
        if cfg.finetuned_model:  # the AudioSet head NatureLM keeps in its checkpoint; unused for features
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(fbank.unsqueeze(1))
        x = x.flatten(2).transpose(1, 2)  # time-major: token t * mel_patches + f
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x)

    def fold_weight_norm(self) -> None:
        """Replace the weight-normed positional conv by its plain weight (export and inference)."""
        conv = self.encoder.pos_conv[0]
        if isinstance(conv, WeightNormConv1d):
            self.encoder.pos_conv[0] = FoldedConv1d(conv)
