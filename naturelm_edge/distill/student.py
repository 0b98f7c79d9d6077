"""The student decoder: a small Llama with its own audio projection and a trimmed vocabulary.

The student sees exactly the teacher's prompt layout ([bos] + text before + audio tokens + text after)
but in its own, much smaller vocabulary: only the token ids the teacher's answers and prompts use, plus
the special tokens. ``teacher_ids[i]`` is the teacher id of student id ``i``, so the map is lossless both
ways and the teacher's tokenizer still encodes prompts and decodes answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from naturelm_edge.errors import EdgeError

STUDENT_CONFIG = "student.json"
STUDENT_WEIGHTS = "model.safetensors"


@dataclass
class StudentConfig:
    """Sizes, vocabulary map and prompt of a student (``student.json``)."""

    teacher_ids: list[int]
    bos_id: int  # teacher id space
    stop_ids: list[int]  # teacher id space
    audio_dim: int
    prompt_template: str
    tasks: list[dict]
    layers: int = 4
    hidden: int = 384
    heads: int = 6
    kv_heads: int = 2
    intermediate: int = 1024
    max_positions: int = 512
    teacher: str = ""
    tasks_sha256: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.teacher_ids)

    def to_student(self) -> np.ndarray:
        """Teacher id -> student id lookup (-1 where the student has no such token)."""
        table = np.full(max(self.teacher_ids) + 1, -1, dtype=np.int64)
        table[np.asarray(self.teacher_ids)] = np.arange(len(self.teacher_ids))
        return table

    def write(self, directory: Path) -> None:
        (directory / STUDENT_CONFIG).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, directory: Path) -> StudentConfig:
        path = Path(directory) / STUDENT_CONFIG
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError as err:
            raise EdgeError(f"{directory}: not a student directory (no {STUDENT_CONFIG}).") from err
        except (json.JSONDecodeError, TypeError) as err:
            raise EdgeError(f"{path}: damaged student config ({err}).") from err


def build_vocabulary(answer_ids: set[int], prompt_ids: set[int], specials: set[int]) -> list[int]:
    """Sorted teacher ids the student needs."""
    return sorted(answer_ids | prompt_ids | specials)


def llama_config(config: StudentConfig):  # noqa: ANN201 - transformers.LlamaConfig
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.hidden // config.heads,
        intermediate_size=config.intermediate,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        attn_implementation="eager",
    )


def build_student(config: StudentConfig):  # noqa: ANN201 - StudentDecoder
    import torch
    from torch import nn
    from transformers import LlamaForCausalLM

    class StudentDecoder(nn.Module):
        """``llama`` (LlamaForCausalLM over the trimmed vocabulary) + ``audio_proj``."""

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.llama = LlamaForCausalLM(llama_config(config))
            self.audio_proj = nn.Linear(config.audio_dim, config.hidden)

        def embed(self, ids: torch.Tensor) -> torch.Tensor:
            return self.llama.get_input_embeddings()(ids)

    return StudentDecoder()


def save_student(model, directory: Path) -> None:  # noqa: ANN001 - StudentDecoder
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / STUDENT_WEIGHTS), metadata={"format": "pt"})
    model.config.write(directory)


def load_student(directory: Path):  # noqa: ANN201 - StudentDecoder
    from safetensors.torch import load_file

    config = StudentConfig.read(directory)
    model = build_student(config)
    weights = Path(directory) / STUDENT_WEIGHTS
    if not weights.is_file():
        raise EdgeError(f"{weights}: the student has no weights yet; run `edge distill train` first.")
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as err:  # noqa: BLE001 - safetensors and shape errors
        raise EdgeError(f"{weights}: cannot load the student weights ({err}).") from err
    return model.eval()
