"""The language-model half of NatureLM: Llama base + LoRA (peft), the prompt, and generation.

Reproduces the original's non-obvious behaviours: ``[PAD]`` is added to the tokenizer and the embeddings
resized; the begin-of-text embedding is prepended by hand; the 29 audio tokens replace ``<AudioHere>``;
generation stops on the end-of-turn tokens and on token id 2 (a stop criterion inherited from Llama 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from naturelm_edge.models.config import NatureLMConfig
from naturelm_edge.prompt import prompt_parts

LEGACY_STOP_IDS = (2,)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class Generation:
    """Greedy (or beam) answer: new token ids (stop token excluded), text, and per-step logits."""

    token_ids: list[int]
    text: str
    step_logits: torch.Tensor  # (steps, vocab): one row per token, plus the stop step when it stopped
    stop_id: int | None = None  # the token that ended the answer; None when the length limit did


class LanguageModel:
    """Tokenizer + Llama-with-LoRA wrapped the way NatureLM wraps it (keys ``llama_model.base_model.*``)."""

    def __init__(self, llama_dir: Path, config: NatureLMConfig) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

        self.tokenizer = AutoTokenizer.from_pretrained(str(llama_dir))
        self.tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        base = LlamaForCausalLM.from_pretrained(str(llama_dir), dtype=torch.float32, attn_implementation="eager")
        base.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        try:
            generation = GenerationConfig.from_pretrained(str(llama_dir))
        except OSError:
            generation = base.generation_config
        eos = generation.eos_token_id if generation.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
        self.bos_id = int(generation.bos_token_id if generation.bos_token_id is not None else self.tokenizer.bos_token_id)
        self.lora_scale = config.lora_alpha / config.lora_rank
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(LORA_TARGETS),
        )
        self.model = get_peft_model(base, lora) if config.lora else base
        self.model.eval()
        self.config = config

    @property
    def stop_ids(self) -> set[int]:
        return set(self.eos_ids) | set(LEGACY_STOP_IDS)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_merging_factor(self, factor: float) -> None:
        """Scale every LoRA update by ``factor`` (NatureLM's model merging; 0.4-0.6 at inference)."""
        from peft.tuners.lora import LoraLayer

        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                module.scaling["default"] = self.lora_scale * factor

    def prompt_embeds(self, audio_tokens: torch.Tensor, question: str) -> torch.Tensor:
        """[bos] + prompt-before + audio tokens + prompt-after, as (batch, length, hidden) embeddings."""
        before, after = prompt_parts(self.config.prompt_template, question)
        device = audio_tokens.device
        ids = [
            torch.tensor([[self.bos_id]], device=device),
            self.tokenizer(before, add_special_tokens=False, return_tensors="pt").input_ids.to(device),
            self.tokenizer(after, add_special_tokens=False, return_tensors="pt").input_ids.to(device),
        ]
        bos, head, tail = (self.embed_tokens(i).expand(audio_tokens.shape[0], -1, -1) for i in ids)
        return torch.cat([bos, head, audio_tokens.to(bos.dtype), tail], dim=1)

    @torch.no_grad()
    def last_logits(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeds).logits[:, -1]

    @torch.no_grad()
    def generate(self, embeds: torch.Tensor, max_new_tokens: int = 300, num_beams: int = 1) -> list[Generation]:
        from transformers import StoppingCriteria, StoppingCriteriaList

        stop_ids = self.stop_ids

        class StopOnIds(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
                return torch.tensor([int(row[-1]) in stop_ids for row in input_ids], device=input_ids.device)

        out = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            temperature=None,
            top_p=None,
            min_length=1,
            repetition_penalty=1.0,
            length_penalty=1.0,
            stopping_criteria=StoppingCriteriaList([StopOnIds()]),
            eos_token_id=list(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        logits = torch.stack(out.logits, dim=1)
        results = []
        for row, row_logits in zip(out.sequences.tolist(), logits):
            ids: list[int] = []
            stop_id = None
            for token in row:
                if token in stop_ids:
                    stop_id = token
                    break
                ids.append(token)
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            steps = len(ids) + (1 if stop_id is not None else 0)
            results.append(Generation(ids, text, row_logits[:steps], stop_id))
        return results
