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
from naturelm_edge.models.placement import Placement
from naturelm_edge.prompt import GenerationSettings, prompt_parts

LEGACY_STOP_IDS = (2,)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class Generation:
    """One answer: new token ids (stop token excluded), text, and the model's logits at every answer step."""

    token_ids: list[int]
    text: str
    step_logits: torch.Tensor  # (steps, vocab): one row per token, plus the stop step when it stopped
    stop_id: int | None = None  # the token that ended the answer; None when the length limit did


def llama_parameters(llama_dir: Path) -> int:
    """How many weights the Llama base in ``llama_dir`` has, from its config alone (nothing is read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(llama_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


class LanguageModel:
    """Tokenizer + Llama-with-LoRA wrapped the way NatureLM wraps it (keys ``llama_model.base_model.*``).

    The base is read in the dtype it runs in and loaded straight onto its device: an 8B model never passes
    through a float32 copy in memory.
    """

    def __init__(self, llama_dir: Path, config: NatureLMConfig, placement: Placement | None = None,
                 embeddings: torch.Tensor | None = None) -> None:
        """``embeddings``: NatureLM's stored input embeddings (already resized), taken as they are."""
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

        placement = placement or Placement("cpu", "float32")
        self.tokenizer = AutoTokenizer.from_pretrained(str(llama_dir))
        self.tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        base = LlamaForCausalLM.from_pretrained(
            str(llama_dir), dtype=placement.torch_dtype, attn_implementation="eager",
            device_map={"": placement.torch_device},
        )
        _grow_vocabulary(base, llama_dir, len(self.tokenizer), embeddings)
        base.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
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
        self.model.to(placement.torch_device, dtype=placement.torch_dtype)  # the LoRA adapters peft added
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
    def generate(self, embeds: torch.Tensor, settings: GenerationSettings | None = None) -> list[Generation]:
        """Answers for a batch of prompts of equal length, through ``transformers``' ``generate`` with the
        original's settings; the logits of every answer step come from one scoring pass over the answers
        (for beams, the chosen beam's own distributions)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        settings = settings or GenerationSettings()
        stop_ids = self.stop_ids
        stop_tensor = torch.tensor(sorted(stop_ids), device=embeds.device)

        class StopOnIds(StoppingCriteria):  # the original's criterion (token id 2) and the end-of-turn tokens
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
                return torch.isin(input_ids[:, -1], stop_tensor)

        embeds = embeds.to(self.embed_tokens.weight.dtype)
        attention = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        sequences = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=attention,
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            min_length=settings.min_length,
            repetition_penalty=settings.repetition_penalty,
            length_penalty=settings.length_penalty,
            stopping_criteria=StoppingCriteriaList([StopOnIds()]),
            eos_token_id=list(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        answers = []
        for row in sequences.tolist():
            ids: list[int] = []
            stop_id = None
            for token in row:
                if token in stop_ids:
                    stop_id = token
                    break
                ids.append(token)
            answers.append((ids, stop_id))
        logits = self.answer_logits(embeds, [ids + ([stop] if stop is not None else []) for ids, stop in answers])
        return [
            Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True).strip(), step_logits, stop)
            for (ids, stop), step_logits in zip(answers, logits)
        ]

    @torch.no_grad()
    def answer_logits(self, embeds: torch.Tensor, answers: list[list[int]]) -> list[torch.Tensor]:
        """The logits that predicted each token of each answer: (len(answer), vocab) per prompt."""
        longest = max((len(a) for a in answers), default=0)
        if longest == 0:
            return [embeds.new_zeros((0, self.embed_tokens.weight.shape[0])) for _ in answers]
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([a + [pad] * (longest - len(a)) for a in answers], device=embeds.device)
        mask = torch.tensor([[1] * embeds.shape[1] + [1] * len(a) + [0] * (longest - len(a)) for a in answers],
                            device=embeds.device)
        inputs = torch.cat([embeds, self.embed_tokens(ids).to(embeds.dtype)], dim=1)
        logits = self.model(inputs_embeds=inputs, attention_mask=mask).logits
        start = embeds.shape[1] - 1
        return [logits[i, start : start + len(a)].float() for i, a in enumerate(answers)]


def _contiguous_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The head's input, contiguous. ``generate`` hands it the last position of each prompt, a strided view;
    ``torch.matmul`` cannot fold a strided batch into one matrix product, so it expands the (vocab x width)
    weight once per row of the batch and copies it (2.1 GB for two beams at 8B). A copy of the input costs
    a few kB."""
    return (args[0].contiguous(), *args[1:])


def _grow_vocabulary(base: nn.Module, llama_dir: Path, size: int, embeddings: torch.Tensor | None) -> None:
    """``resize_token_embeddings(size, mean_resizing=False)`` without its memory cost.

    On a CPU ``from_pretrained`` leaves the weights mapped from the files, read when first used; transformers'
    resize reads the old embedding and head through that mapping, and their pages then stay resident beside
    the new copies for the life of the model (2 GB at 8B). Here the old rows come from the files through a
    mapping of their own, closed at once; stored NatureLM embeddings replace the input side without reading
    the base's at all. New rows are drawn as transformers draws them: normal(0, initializer_range).
    """
    inputs, outputs = base.get_input_embeddings(), base.get_output_embeddings()
    grown = {}
    for module, key in ((inputs, "model.embed_tokens.weight"), (outputs, "lm_head.weight")):
        if module is None or (module is outputs and base.config.tie_word_embeddings):
            continue
        if module is inputs and embeddings is not None and embeddings.shape == (size, module.embedding_dim):
            weight = embeddings
        else:
            old = _base_tensor(llama_dir, key)
            weight = torch.empty((size, old.shape[1]), dtype=old.dtype)
            weight[: old.shape[0]] = old
            weight[old.shape[0] :].normal_(0.0, base.config.initializer_range)
            del old
        grown[key] = weight
        module.weight = nn.Parameter(weight.to(module.weight.device, module.weight.dtype), requires_grad=False)
    inputs.num_embeddings = size
    if outputs is not None:
        outputs.out_features = size
    if base.config.tie_word_embeddings:
        base.tie_weights()
    base.config.vocab_size = size


def _base_tensor(llama_dir: Path, key: str) -> torch.Tensor:
    """One tensor of the Llama base's safetensors files (sharded or not), read through a short-lived mapping."""
    import json

    from safetensors import safe_open

    index = llama_dir / "model.safetensors.index.json"
    name = json.loads(index.read_text())["weight_map"][key] if index.is_file() else "model.safetensors"
    with safe_open(str(llama_dir / name), framework="pt") as handle:
        return handle.get_tensor(key)
