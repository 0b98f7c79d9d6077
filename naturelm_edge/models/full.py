"""Teachers: models whose answers a student learns. NatureLM is one; any model with this interface fits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from naturelm_edge.models.placement import Placement
from naturelm_edge.prompt import GenerationSettings


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

    def answer(
        self, audio_tokens: np.ndarray, question: str, generation: GenerationSettings, top_k: int
    ) -> list[TeacherAnswer]:
        """Answers to one question for a batch of windows."""
        ...


@dataclass(frozen=True)
class FullModelOptions:
    """How the full model is loaded and asked, on every command that runs it (collect, build, serve)."""

    placement: Placement = Placement()
    llama_path: str | None = None  # folder or hub id; default: the checkpoint's llama_path
    generation: GenerationSettings = GenerationSettings()
    merging_factor: float = 1.0

    @classmethod
    def from_flags(cls, device: str, dtype: str, llama_path: str | None, beams: int | None,
                   max_new_tokens: int | None, merging_factor: float = 1.0) -> FullModelOptions:
        """The options as commands and ``edge serve``'s settings carry them (None: the original's value)."""
        generation = GenerationSettings().but(num_beams=beams, max_new_tokens=max_new_tokens)
        return cls(Placement(device, dtype), llama_path, generation, merging_factor)


class NatureLMTeacher:
    """NatureLM-audio (tiny in tests, official on a GPU box) as a teacher, run as the original runs it:
    bf16 autocast around BEATs, the Q-Former and the LLM unless float32 is asked for."""

    def __init__(self, checkpoint: str | Path, options: FullModelOptions | None = None) -> None:
        import torch

        from naturelm_edge.models import load

        self._torch = torch
        self.options = options or FullModelOptions()
        self.placement = self.options.placement
        self.loaded = load(checkpoint, with_llm=True, llama_path=self.options.llama_path, placement=self.placement)
        self.device = self.placement.torch_device
        self.llm = self.loaded.llm
        self.llm.set_merging_factor(self.options.merging_factor)
        precision = str(self.placement.torch_dtype).removeprefix("torch.")
        digest = hashlib.sha256(f"{self.loaded.source.sha256()}|merge={self.options.merging_factor}|{precision}".encode())
        self.identity = f"naturelm:{digest.hexdigest()[:32]}"
        self.audio_dim = self.loaded.model.audio_llama_proj.out_features
        self.tokenizer_dir = Path(self.llm.tokenizer.name_or_path)
        self.bos_id = self.llm.bos_id
        self.stop_ids = tuple(sorted(self.llm.stop_ids))
        self.prompt_template = self.loaded.model.config.prompt_template

    def audio_tokens(self, fbank: np.ndarray) -> np.ndarray:
        with self._torch.no_grad(), self.placement.autocast():
            features = self._torch.from_numpy(np.ascontiguousarray(fbank, dtype=np.float32)).to(self.device)
            return self.loaded.model.encode_audio(features).float().cpu().numpy()

    def answer(
        self, audio_tokens: np.ndarray, question: str, generation: GenerationSettings, top_k: int
    ) -> list[TeacherAnswer]:
        torch = self._torch
        with torch.no_grad(), self.placement.autocast():
            tokens = torch.from_numpy(audio_tokens).to(self.device)
            embeds = self.llm.prompt_embeds(tokens, question)
            generations = self.llm.generate(embeds, generation)
        answers = []
        for gen in generations:
            logp = torch.log_softmax(gen.step_logits.float(), dim=-1)
            ids = list(gen.token_ids) + ([gen.stop_id] if gen.stop_id is not None else [])
            top = torch.topk(logp, k=min(top_k, logp.shape[-1]), dim=-1)
            chosen = logp.gather(1, torch.tensor(ids, device=logp.device, dtype=torch.long).unsqueeze(1)).squeeze(1)
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
