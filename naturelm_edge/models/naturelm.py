"""NatureLM-audio: BEATs -> ln_audio -> window-level Q-Former -> projection -> Llama (+LoRA).

Module names match the original ``NatureLM`` class so ``model.safetensors`` loads without renaming.
The audio path (everything up to the audio tokens) is usable on its own: exporting the encoder never
needs the 8B language model in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from naturelm_edge.models.beats import BEATs
from naturelm_edge.models.config import QFORMER_HIDDEN, QFORMER_LAYERS, NatureLMConfig
from naturelm_edge.models.qformer import QFormer


@dataclass
class AudioIntermediates:
    """Every tensor on the audio path, for fidelity checks against the original implementation."""

    beats_out: torch.Tensor
    qformer_in_ln: torch.Tensor
    qformer_out: torch.Tensor
    audio_tokens: torch.Tensor


class NatureLM(nn.Module):
    """The NatureLM-audio model. ``llama_model`` is attached by the loader only when the LLM is needed."""

    def __init__(self, config: NatureLMConfig) -> None:
        super().__init__()
        self.config = config
        beats_cfg = config.beats_cfg
        self.beats = BEATs(beats_cfg)
        self.ln_audio = nn.LayerNorm(beats_cfg.encoder_embed_dim)
        self.audio_Qformer = QFormer(beats_cfg.encoder_embed_dim, QFORMER_LAYERS)
        self.audio_query_tokens = nn.Parameter(torch.zeros(1, config.num_audio_query_token, QFORMER_HIDDEN))
        self.audio_llama_proj = nn.Linear(QFORMER_HIDDEN, config.llm_hidden_size)
        self.llama_model: nn.Module | None = None
        window, stride = config.qformer_window, config.qformer_stride
        count = (config.beats_tokens - window) // stride + 1
        index = torch.arange(count).unsqueeze(1) * stride + torch.arange(window).unsqueeze(0)
        self.register_buffer("window_index", index, persistent=False)

    def encode_audio_all(self, fbank: torch.Tensor) -> AudioIntermediates:
        """Normalised fbank (batch, frames, 128) -> every intermediate up to the audio tokens."""
        return self.tokens_from_beats(self.beats(fbank))

    def tokens_from_beats(self, beats_out: torch.Tensor) -> AudioIntermediates:
        """BEATs output -> ln_audio -> window-level Q-Former -> projection (everything after BEATs)."""
        normed = self.ln_audio(beats_out)
        batch, _, width = normed.shape
        windows = normed[:, self.window_index]  # (batch, n_windows, window, width), as F.unfold in NatureLM
        n_windows, window = self.window_index.shape
        windows = windows.reshape(batch * n_windows, window, width)
        queries = self.audio_query_tokens.expand(windows.shape[0], -1, -1)
        qformer_out = self.audio_Qformer(queries, windows)
        audio_tokens = self.audio_llama_proj(qformer_out).reshape(batch, -1, self.audio_llama_proj.out_features)
        return AudioIntermediates(
            beats_out, normed, qformer_out.reshape(batch, -1, QFORMER_HIDDEN), audio_tokens
        )

    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank (batch, frames, 128) -> audio tokens (batch, 29, llm_hidden)."""
        return self.encode_audio_all(fbank).audio_tokens


class AudioEncoder(nn.Module):
    """The exported graph: fbank -> audio tokens (BEATs, ln_audio, Q-Former, projection)."""

    def __init__(self, model: NatureLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.model.encode_audio(fbank)
