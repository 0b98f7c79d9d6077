"""The window-level Q-Former: BLIP-2's BERT with cross-attention, reduced to what NatureLM uses.

NatureLM deletes the word and position embeddings, the text FFN and the LM head, and feeds only query
embeddings; module names match ``audio_Qformer.bert.*`` in the official checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from naturelm_edge.models.config import QFORMER_FFN, QFORMER_HEADS, QFORMER_HIDDEN, QFORMER_LN_EPS


class SelfOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(QFORMER_HIDDEN, QFORMER_HIDDEN)
        self.LayerNorm = nn.LayerNorm(QFORMER_HIDDEN, eps=QFORMER_LN_EPS)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class SelfAttention(nn.Module):
    def __init__(self, key_width: int) -> None:
        super().__init__()
        self.query = nn.Linear(QFORMER_HIDDEN, QFORMER_HIDDEN)
        self.key = nn.Linear(key_width, QFORMER_HIDDEN)
        self.value = nn.Linear(key_width, QFORMER_HIDDEN)
        self.head_dim = QFORMER_HIDDEN // QFORMER_HEADS

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], QFORMER_HEADS, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(context)), self._heads(self.value(context))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(hidden.shape)


class Attention(nn.Module):
    def __init__(self, key_width: int) -> None:
        super().__init__()
        self.self = SelfAttention(key_width)
        self.output = SelfOutput()

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, context), hidden)


class Intermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(QFORMER_HIDDEN, QFORMER_FFN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Output(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(QFORMER_FFN, QFORMER_HIDDEN)
        self.LayerNorm = nn.LayerNorm(QFORMER_HIDDEN, eps=QFORMER_LN_EPS)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class Layer(nn.Module):
    def __init__(self, encoder_width: int) -> None:
        super().__init__()
        self.attention = Attention(QFORMER_HIDDEN)
        self.crossattention = Attention(encoder_width)
        self.intermediate_query = Intermediate()
        self.output_query = Output()

    def forward(self, queries: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        queries = self.attention(queries, queries)
        queries = self.crossattention(queries, audio)
        return self.output_query(self.intermediate_query(queries), queries)


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.LayerNorm = nn.LayerNorm(QFORMER_HIDDEN, eps=QFORMER_LN_EPS)
        # kept only because the checkpoint stores it; query-only inputs have no positions
        self.register_buffer("position_ids", torch.arange(512).unsqueeze(0))


class Encoder(nn.Module):
    def __init__(self, encoder_width: int, layers: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(encoder_width) for _ in range(layers))


class Bert(nn.Module):
    def __init__(self, encoder_width: int, layers: int) -> None:
        super().__init__()
        self.embeddings = Embeddings()
        self.encoder = Encoder(encoder_width, layers)

    def forward(self, queries: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings.LayerNorm(queries)
        for layer in self.encoder.layer:
            hidden = layer(hidden, audio)
        return hidden


class QFormer(nn.Module):
    """``audio_Qformer``: query tokens (n, q, 768) attend to audio windows (n, window, width)."""

    def __init__(self, encoder_width: int, layers: int) -> None:
        super().__init__()
        self.bert = Bert(encoder_width, layers)

    def forward(self, queries: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.bert(queries, audio)
