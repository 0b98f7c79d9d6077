"""Teachers: models whose answers a student learns. NatureLM is one; any model with this interface fits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class TeacherAnswer:
    """One answer: text, token ids, and what the teacher thought at every answer position.

    ``token_ids`` ends with the stop token when the teacher stopped by itself (``stopped``); the per-step
    arrays have one row per entry of ``token_ids``.
    """

    text: str
    token_ids: list[int]
    stopped: bool
    logprobs: np.ndarray  # (steps,) log-probability of each chosen token
    topk_ids: np.ndarray  # (steps, k)
    topk_logprobs: np.ndarray  # (steps, k)


class Teacher(Protocol):
    """What distillation needs from a teacher."""

    identity: str  # changes whenever the teacher's answers could change (weights, merging factor)
    audio_dim: int
    tokenizer_dir: Path  # holds tokenizer.json in the teacher's id space
    bos_id: int
    stop_ids: tuple[int, ...]
    prompt_template: str

    def audio_tokens(self, fbank: np.ndarray) -> np.ndarray:
        """(batch, frames, 128) normalised fbank -> (batch, tokens, audio_dim)."""
        ...

    def answer(self, audio_tokens: np.ndarray, question: str, max_new_tokens: int, top_k: int) -> list[TeacherAnswer]:
        """Greedy answers for a batch of windows."""
        ...


class NatureLMTeacher:
    """NatureLM-audio (tiny in tests, official on a GPU box) as a teacher."""

    def __init__(self, checkpoint: str | Path, merging_factor: float = 1.0, device: str = "cpu") -> None:
        import torch

        from naturelm_edge.models import load

        self._torch = torch
        self.loaded = load(checkpoint, with_llm=True)
        self.device = torch.device(device)
        self.loaded.model.to(self.device)
        self.llm = self.loaded.llm
        self.llm.model.to(self.device)
        self.llm.set_merging_factor(merging_factor)
        digest = hashlib.sha256(f"{self.loaded.source.sha256()}|merge={merging_factor}".encode())
        self.identity = f"naturelm:{digest.hexdigest()[:32]}"
        self.audio_dim = self.loaded.model.audio_llama_proj.out_features
        self.tokenizer_dir = Path(self.llm.tokenizer.name_or_path)
        self.bos_id = self.llm.bos_id
        self.stop_ids = tuple(sorted(self.llm.stop_ids))
        self.prompt_template = self.loaded.model.config.prompt_template

    def audio_tokens(self, fbank: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            features = self._torch.from_numpy(np.ascontiguousarray(fbank, dtype=np.float32)).to(self.device)
            return self.loaded.model.encode_audio(features).float().cpu().numpy()

    def answer(self, audio_tokens: np.ndarray, question: str, max_new_tokens: int, top_k: int) -> list[TeacherAnswer]:
        torch = self._torch
        with torch.no_grad():
            tokens = torch.from_numpy(audio_tokens).to(self.device)
            embeds = self.llm.prompt_embeds(tokens, question)
            generations = self.llm.generate(embeds, max_new_tokens=max_new_tokens)
        answers = []
        for gen in generations:
            logp = torch.log_softmax(gen.step_logits.float(), dim=-1)
            ids = list(gen.token_ids) + ([gen.stop_id] if gen.stop_id is not None else [])
            steps = logp[: len(ids)]
            top = torch.topk(steps, k=min(top_k, steps.shape[-1]), dim=-1)
            chosen = steps.gather(1, torch.tensor(ids, device=steps.device).unsqueeze(1)).squeeze(1)
            answers.append(
                TeacherAnswer(
                    text=gen.text,
                    token_ids=ids,
                    stopped=gen.stop_id is not None,
                    logprobs=chosen.cpu().numpy(),
                    topk_ids=top.indices.cpu().numpy().astype(np.int32),
                    topk_logprobs=top.values.cpu().numpy().astype(np.float32),
                )
            )
        return answers
