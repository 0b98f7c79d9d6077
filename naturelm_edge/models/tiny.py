"""Write NatureLM-audio checkpoints in exactly the official layout, at any of a few shapes.

Tests, the demo and the benchmarks need checkpoints, and the real one cannot be downloaded here. This writes
what the original code writes (``config.json``, ``model.safetensors`` with the original key names in
bfloat16, and a Llama-3-style base under ``llama/`` with a byte-level BPE tokenizer), with random weights
drawn so they are exact in bfloat16. One :class:`CheckpointShape` per size (as optimum keeps one config
object per model type): ``tiny`` (the reference fixture's sizes), ``narrow`` (the official vocabulary,
special-token ids, head layout and LoRA, at a width CI can build) and ``official`` (Llama-3.1-8B's widths).
Weights are generated tensor by tensor from a model on the meta device and written in shards, so writing
the 16 GB official base never holds more than one tensor beyond the shard being written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from naturelm_edge.models.config import NatureLMConfig, preset
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
LLAMA31_SPECIALS = 256  # <|begin_of_text|> at 128000 ... <|reserved_special_token_247|> at 128255
LLAMA31_REGULAR = 128_000
TINY_MERGES = 117
LLAMA31_ROPE = dict(
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
SHARD_BYTES = 2 * 2**30


@dataclass(frozen=True)
class CheckpointShape:
    """Sizes of one checkpoint shape: the NatureLM preset of the audio path and the Llama base's widths."""

    name: str
    preset: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    full_vocabulary: bool  # Llama-3.1's 128,256 ids with the special tokens at their real ids
    # model.safetensors holds the whole Llama state as the fixture (the original's save_pretrained) does;
    # otherwise LoRA and the resized embeddings only, as the released 1.5 GB file (the base stays apart)
    stores_base: bool = False
    beats: dict = field(default_factory=dict)  # BEATs sizes over the preset's

    def llama_config(self, vocab_size: int, layers: int | None) -> dict:
        return dict(
            hidden_size=self.hidden_size, num_hidden_layers=layers or self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
            head_dim=self.hidden_size // self.num_attention_heads, intermediate_size=self.intermediate_size,
            vocab_size=vocab_size, **LLAMA31_ROPE,
        )


SHAPES = {
    shape.name: shape
    for shape in (
        CheckpointShape("tiny", "tiny", 64, 2, 4, 2, 128, full_vocabulary=False, stores_base=True),
        CheckpointShape("narrow", "tiny", 256, 2, 32, 8, 896, full_vocabulary=True),
        CheckpointShape("official", "official", 4096, 32, 32, 8, 14336, full_vocabulary=True),
    )
}
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


def special_tokens(full: bool) -> list[str]:
    """Llama-3.1's special tokens in id order: all 256 for the full vocabulary, the 11 named ones else."""
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(3, LLAMA31_SPECIALS - len(SPECIAL_TOKENS) + 3)]
    return list(SPECIAL_TOKENS) + (reserved if full else [])


def build_tokenizer(full_vocabulary: bool = False):  # noqa: ANN201 - tokenizers.Tokenizer
    """Byte-level BPE with Llama-3's pre-tokenizer, byte ids and special tokens, trained on a few prompts.

    With ``full_vocabulary`` unused filler entries bring the regular vocabulary to Llama-3.1's 128,000, so
    the special tokens sit at their real ids (``<|begin_of_text|>`` 128000, ``<|eot_id|>`` 128009).
    """
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
    while full_vocabulary and len(vocab) < LLAMA31_REGULAR:
        vocab[f"\u0100unused{len(vocab)}"] = len(vocab)  # never produced: no merge leads to it
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()
    specials = special_tokens(full_vocabulary)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
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
    """The tiny shape (the reference fixture's sizes): what tests and the demo build on."""
    return write_checkpoint(out_dir, SHAPES["tiny"], seed)


def write_checkpoint(
    out_dir: Path,
    shape: CheckpointShape,
    seed: int = 0,
    llm_layers: int | None = None,
    on_tensor: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``llama/`` under ``out_dir``; return ``out_dir``.

    ``llm_layers`` keeps only that many decoder layers of the Llama base (every width unchanged);
    ``on_tensor(bytes, total_bytes)`` is called after each tensor is made, for progress with an ETA.
    """
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from naturelm_edge.models.checkpoint import EMBED_ALIAS, EMBED_KEY
    from naturelm_edge.models.llm import LORA_TARGETS

    out_dir = Path(out_dir)
    llama_dir = out_dir / "llama"
    llama_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    config = preset(shape.preset)
    if shape.beats:
        config.beats_cfg = replace(config.beats_cfg, **shape.beats)
    config.llm_hidden_size = shape.hidden_size
    config.llama_path = "llama/"  # the base is written beside the checkpoint, not fetched by its hub id

    tokenizer = build_tokenizer(shape.full_vocabulary)
    special = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    eos_ids = [special["<|end_of_text|>"], special["<|eom_id|>"], special["<|eot_id|>"]]
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=SPECIAL_TOKENS[0], eos_token="<|eot_id|>")
    fast.save_pretrained(str(llama_dir))
    llama_config = LlamaConfig(
        bos_token_id=special["<|begin_of_text|>"], eos_token_id=eos_ids,
        **shape.llama_config(tokenizer.get_vocab_size(), llm_layers),
    )
    with torch.device("meta"):
        base = LlamaForCausalLM(llama_config)
    llama_config.dtype = torch.bfloat16  # what save_pretrained records for a bf16 model
    llama_config.architectures = ["LlamaForCausalLM"]
    llama_config.save_pretrained(str(llama_dir))
    base_shapes = {k: v.shape for k, v in base.state_dict().items()}
    with torch.device("meta"):  # NatureLM's own tensor names: [PAD] added, embeddings resized, LoRA on q/k/v/o
        base.resize_token_embeddings(len(fast) + 1, mean_resizing=False)
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(LORA_TARGETS))
        llm_shapes = {k: v.shape for k, v in get_peft_model(base, lora).state_dict().items()}
    total = sum(math.prod(s) * 2 for s in base_shapes.values()) + sum(
        math.prod(s) * 2 for k, s in llm_shapes.items() if "lora_" in k or "embed_tokens" in k)

    def report(nbytes: int) -> None:
        if on_tensor:
            on_tensor(nbytes, total)

    _write_shards(llama_dir, base_shapes, generator, config.lora_rank, report)
    GenerationConfig(
        bos_token_id=llama_config.bos_token_id, eos_token_id=eos_ids, do_sample=True, temperature=0.6, top_p=0.9
    ).save_pretrained(str(llama_dir))
    state = _naturelm_state(config, shape, llama_dir, llm_shapes, generator, report)
    state[EMBED_KEY] = state.pop(EMBED_ALIAS)
    stored = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(stored, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config.to_json_dict(), indent=2) + "\n")
    return out_dir


def _naturelm_state(config: NatureLMConfig, shape: CheckpointShape, llama_dir: Path,
                    llm_shapes: dict[str, torch.Size], generator: torch.Generator,
                    report: Callable[[int], None]) -> dict[str, torch.Tensor]:
    """NatureLM's own tensors: the audio path, then the LLM's LoRA and resized embeddings (and the whole Llama
    state for shapes that store the base), drawn in the order the fixture's writer drew them."""
    from naturelm_edge.models.llm import LanguageModel

    whole = LanguageModel(llama_dir, config).model.state_dict() if shape.stores_base else {}
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
        for name, size in llm_shapes.items():
            if "lora_" in name or "embed_tokens" in name or ("lm_head" in name and shape.stores_base):
                tensor = torch.empty(size)
                _init_tensor(name, tensor, generator, config.lora_rank)
                state[f"llama_model.{name}"] = tensor.to(torch.bfloat16)
                report(tensor.numel() * 2)
            elif name in whole:
                state[f"llama_model.{name}"] = whole[name]
    return state


def _write_shards(folder: Path, shapes: dict[str, torch.Size], generator: torch.Generator, lora_rank: int,
                  report: Callable[[int], None]) -> None:
    """Random bf16 tensors for ``shapes`` in safetensors shards of at most 2 GiB (with the index
    ``from_pretrained`` reads when there is more than one), one shard in memory at a time."""
    from safetensors.torch import save_file

    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * 2
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    files = ["model.safetensors"] if len(groups) == 1 else [
        f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))
    ]
    weight_map = {}
    for file, names in zip(files, groups):
        shard = {}
        for name in names:
            tensor = torch.empty(shapes[name])
            _init_tensor(name, tensor, generator, lora_rank)
            shard[name] = tensor.to(torch.bfloat16)
            report(tensor.numel() * 2)
            weight_map[name] = file
        save_file(shard, str(folder / file), metadata={"format": "pt"})
    if len(files) > 1:
        total = sum(math.prod(s) * 2 for s in shapes.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
