"""Write a complete tiny NatureLM-audio checkpoint in exactly the official layout.

Tests and the demo need a checkpoint, and the real one cannot be downloaded here. This writes what the
original code writes (``config.json``, ``model.safetensors`` with the original key names in bfloat16, and
a Llama-3-style base under ``llama/`` with a byte-level BPE tokenizer that has the Llama-3 special tokens
at the same relative places), with random weights drawn so they are exact in bfloat16.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from naturelm_edge.models.config import preset
from naturelm_edge.models.naturelm import NatureLM

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
TINY_MERGES = 117
TINY_LLAMA = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling={
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    max_position_embeddings=131072,
    tie_word_embeddings=False,
)
CORPUS = (
    "What is the common name for the focal species in the audio?",
    "What is the scientific name for the focal species in the audio?",
    "What are the common names for the species in the audio, if any?",
    "Is there a call or a song in the audio? Describe the sound.",
    "What is the life stage of the focal species? How many individuals are calling?",
    "None. American Crow, Eastern Phoebe, Great Plains Toad, Humpback Whale, Ruffed Grouse, Common Loon.",
    "Corvus brachyrhynchos, Sayornis phoebe, Anaxyrus cognatus, Megaptera novaeangliae, Bonasa umbellus.",
    "Field cricket Gryllus campestris, katydid, bat echolocation call, Myotis, Eptesicus serotinus.",
    "Caption: a bird sings repeatedly over wind and distant traffic; a frog chorus at night.",
    "<Audio><AudioHere></Audio> user assistant",
)


def bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of byte-level BPE, in Llama-3's id order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in printable]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer():  # noqa: ANN201 - tokenizers.Tokenizer
    """Byte-level BPE with Llama-3's pre-tokenizer, byte ids and special tokens, trained on a few prompts."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    scratch = Tokenizer(models.BPE())
    scratch.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=256 + TINY_MERGES, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    scratch.train_from_iterator(list(CORPUS) * 4, trainer)
    learned = json.loads(scratch.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    vocab = {char: i for i, char in enumerate(bytes_to_unicode())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    bos = SPECIAL_TOKENS[0]
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.token_to_id(bos))]
            ),
        ]
    )
    return tokenizer


def _bf16_exact(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.bfloat16).to(torch.float32)


def _init_tensor(name: str, tensor: torch.Tensor, generator: torch.Generator, lora_rank: int) -> None:
    """Random values in the spirit of the reference fixture: unit-scale activations at every layer."""

    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(tensor.shape, generator=generator) * std + mean

    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name.lower() and leaf == "weight":
        value = normal(0.05, 1.0)
    elif leaf == "bias":
        value = normal(0.02)
    elif "lora_B" in name:
        value = normal(0.5 / math.sqrt(lora_rank))
    elif "relative_attention_bias" in name:
        value = normal(0.5)
    elif leaf == "grep_a":
        value = normal(0.1, 1.0)
    elif "embed_tokens" in name or name == "audio_query_tokens":
        value = normal(1.0)
    elif "lm_head" in name:
        value = normal(2.0 / math.sqrt(tensor.shape[1]))
    elif leaf == "weight_g":
        return  # set from weight_v below
    else:
        fan_in = math.prod(tensor.shape[1:]) if tensor.dim() > 1 else tensor.shape[0]
        value = normal(1.0 / math.sqrt(fan_in))
    tensor.copy_(_bf16_exact(value))


def write_tiny_checkpoint(out_dir: Path, seed: int = 0) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``llama/`` under ``out_dir``; return ``out_dir``."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from naturelm_edge.models.checkpoint import EMBED_ALIAS, EMBED_KEY
    from naturelm_edge.models.llm import LanguageModel

    out_dir = Path(out_dir)
    llama_dir = out_dir / "llama"
    llama_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    config = preset("tiny")

    tokenizer = build_tokenizer()
    special = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    eos_ids = [special["<|end_of_text|>"], special["<|eom_id|>"], special["<|eot_id|>"]]
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=SPECIAL_TOKENS[0], eos_token="<|eot_id|>")
    fast.save_pretrained(str(llama_dir))
    llama_config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        bos_token_id=special["<|begin_of_text|>"],
        eos_token_id=eos_ids,
        **TINY_LLAMA,
    )
    base = LlamaForCausalLM(llama_config)
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            _init_tensor(name, tensor, generator, config.lora_rank)
    base.to(torch.bfloat16).save_pretrained(str(llama_dir), safe_serialization=True)
    GenerationConfig(
        bos_token_id=llama_config.bos_token_id, eos_token_id=eos_ids, do_sample=True, temperature=0.6, top_p=0.9
    ).save_pretrained(str(llama_dir))

    llm = LanguageModel(llama_dir, config)
    model = NatureLM(config)
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                _init_tensor(name, tensor, generator, config.lora_rank)
            state[name] = tensor
        conv = model.beats.encoder.pos_conv[0]
        conv.weight_g.copy_(_bf16_exact(conv.weight_v.norm(dim=(0, 1), keepdim=True) * (1 + 0.1 * torch.randn(
            conv.weight_g.shape, generator=generator))))
        for name, tensor in llm.model.state_dict().items():
            if "lora_" in name or "embed_tokens" in name or "lm_head" in name:
                _init_tensor(name, tensor, generator, config.lora_rank)
            state[f"llama_model.{name}"] = tensor
    state[EMBED_KEY] = state.pop(EMBED_ALIAS)
    stored = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(stored, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config.to_json_dict(), indent=2) + "\n")
    return out_dir
