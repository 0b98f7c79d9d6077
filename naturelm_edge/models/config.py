"""NatureLM-audio configuration: the fields of the official ``config.json`` and the two presets.

The official checkpoint's ``config.json`` is the keyword arguments of ``NatureLM.__init__`` written by
``PyTorchModelHubMixin``; :class:`NatureLMConfig` reads exactly those fields, so the real file loads
unchanged, and writes them back the same way for checkpoints this project builds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from naturelm_edge.errors import CheckpointError

# Q-Former: BLIP-2 style BERT (bert-base-uncased sizes), 2 layers, one query token per window.
QFORMER_HIDDEN = 768
QFORMER_HEADS = 12
QFORMER_FFN = 3072
QFORMER_LAYERS = 2
QFORMER_LN_EPS = 1e-12
BEATS_TOKENS_PER_SECOND = 1500 / 30.0
OFFICIAL_PROMPT = (
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
)  # the constant NatureLM uses to turn seconds into BEATs tokens


@dataclass
class BEATsConfig:
    """``beats_cfg`` in NatureLM's config.json. Defaults are the original ``BEATsConfig`` class's, which is
    what the original takes for a key the file leaves out (not the values of the released model: those are
    :data:`OFFICIAL_BEATS`)."""

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527
    extra: dict[str, Any] = field(default_factory=dict)  # keys the original would keep but no code reads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BEATsConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known})


# BEATs_iter3_plus_AS2M fine-tuned, as the released NatureLM-audio config.json records it
OFFICIAL_BEATS = dict(
    input_patch_size=16, layer_wise_gradient_decay_ratio=0.6, deep_norm=True, dropout=0.0, attention_dropout=0.0,
    encoder_layerdrop=0.05, relative_position_embedding=True, max_distance=800, gru_rel_pos=True,
    finetuned_model=True, predictor_dropout=0.0,
)


@dataclass
class NatureLMConfig:
    """``NatureLM.__init__`` keyword arguments (the official config.json) plus the audio front end."""

    beats_cfg: BEATsConfig = field(default_factory=BEATsConfig)
    llama_path: str = "meta-llama/Meta-Llama-3.1-8B-Instruct"
    beats_path: str | None = None
    freeze_beats: bool = True
    use_audio_Qformer: bool = True
    max_pooling: bool = False
    num_audio_query_token: int = 1
    freeze_audio_QFormer: bool = False
    window_level_Qformer: bool = True
    second_per_window: float = 0.333333
    second_stride: float = 0.333333
    downsample_factor: int = 4
    audio_llama_proj_model: str | None = None
    freeze_audio_llama_proj: bool = False
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    flash_attn: str = "eager"
    prompt_template: str = ""
    max_txt_len: int = 128
    end_sym: str = "</s>"
    device: str = "cuda"
    audio_encoding_cache_size: int = 100
    extra: dict[str, Any] = field(default_factory=dict)  # unknown config.json keys: kept, written back, reported
    defaulted: list[str] = field(default_factory=list)  # keys the file left out (reported by notes())
    # not in NatureLM's config.json: the LLM width when the Llama base is not at hand (encoder-only export)
    llm_hidden_size: int = 4096
    clip_seconds: float = 10.0
    sample_rate: int = 16_000

    _EXTRA = ("llm_hidden_size", "clip_seconds", "sample_rate", "extra", "defaulted")

    @property
    def qformer_window(self) -> int:
        return round(BEATS_TOKENS_PER_SECOND * self.second_per_window)

    @property
    def qformer_stride(self) -> int:
        return round(BEATS_TOKENS_PER_SECOND * self.second_stride)

    @property
    def fbank_frames(self) -> int:
        from naturelm_edge.audio.fbank import DEFAULT_SETTINGS

        return DEFAULT_SETTINGS.num_frames(int(self.clip_seconds * self.sample_rate))

    @property
    def beats_grid(self) -> tuple[int, int]:
        patch = self.beats_cfg.input_patch_size
        return self.fbank_frames // patch, 128 // patch

    @property
    def beats_tokens(self) -> int:
        time_patches, mel_patches = self.beats_grid
        return time_patches * mel_patches

    @property
    def audio_tokens(self) -> int:
        """Audio tokens per clip (29 for 10 s)."""
        return (self.beats_tokens - self.qformer_window) // self.qformer_stride + 1

    def to_json_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in self._EXTRA:
            data.pop(key)
        beats = data["beats_cfg"]
        beats.update(beats.pop("extra"))
        data.update(self.extra)
        return dict(sorted(data.items()))

    def notes(self) -> list[str]:
        """What reading the file kept or filled in: unknown keys, and keys taken from the class defaults."""
        found = [f"unknown keys kept: {', '.join(sorted(self.extra))}"] if self.extra else []
        if self.beats_cfg.extra:
            found.append(f"unknown beats_cfg keys kept: {', '.join(sorted(self.beats_cfg.extra))}")
        return found + self.defaulted

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], source: str = "config.json") -> NatureLMConfig:
        """Read as the original reads it: unknown keys are kept (and reported), missing ones take the original
        class defaults. A value no code can run with (no patch size) is refused here, in one sentence."""
        known = {f.name for f in dataclasses.fields(cls)} - set(cls._EXTRA)
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        beats = data.get("beats_cfg") or {}
        values["beats_cfg"] = BEATsConfig.from_dict(beats)
        if values["beats_cfg"].input_patch_size <= 0:
            raise CheckpointError(f"{source}: beats_cfg has no input_patch_size; is this a NatureLM-audio config.json?")
        beats_known = {f.name for f in dataclasses.fields(BEATsConfig)} - {"extra"}
        missing = sorted((known - set(data)) | {f"beats_cfg.{k}" for k in beats_known - set(beats)})
        defaulted = [f"missing keys set to the original's class defaults: {', '.join(missing)}"] if missing else []
        return cls(**values, extra=extra, defaulted=defaulted)

    @classmethod
    def from_file(cls, path: Path) -> NatureLMConfig:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise CheckpointError(f"{path}: config.json is missing from the checkpoint directory.") from err
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}).") from err
        if not isinstance(data, dict) or "beats_cfg" not in data:
            raise CheckpointError(f"{path}: not a NatureLM-audio config (no beats_cfg field).")
        return cls.from_json_dict(data, str(path))


def preset(name: str) -> NatureLMConfig:
    """``official`` (the released sizes) or ``tiny`` (the sizes of the reference fixture)."""
    if name == "official":  # configs/inference.yml + the released BEATs settings
        return NatureLMConfig(
            beats_cfg=BEATsConfig(**OFFICIAL_BEATS), downsample_factor=8, lora_rank=32, max_txt_len=160,
            end_sym="<|end_of_text|>", prompt_template=OFFICIAL_PROMPT,
        )
    if name == "tiny":
        return NatureLMConfig(
            beats_cfg=BEATsConfig(
                **OFFICIAL_BEATS, encoder_layers=2, encoder_embed_dim=192, encoder_ffn_embed_dim=384,
                encoder_attention_heads=4,
            ),
            downsample_factor=8, lora_rank=32, max_txt_len=160, end_sym="<|end_of_text|>",
            prompt_template=OFFICIAL_PROMPT,
            llama_path="llama/",
            device="cpu",
            llm_hidden_size=64,
        )
    raise CheckpointError(f"unknown preset {name!r}; choose 'official' or 'tiny'.")


PRESETS = ("official", "tiny")
