"""The full NatureLM-audio model (PyTorch) answering escalated clips, a batch at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from naturelm_edge.audio import WindowSpec, fbank
from naturelm_edge.audio.resample import StreamResampler
from naturelm_edge.audio.windows import prepare
from naturelm_edge.prompt import AUDIO_SLOT

if TYPE_CHECKING:
    from naturelm_edge.models.full import FullModelOptions


@dataclass
class Clip:
    audio: np.ndarray  # mono float32
    sample_rate: int
    question: str


@dataclass
class FullAnswer:
    answer: str
    prompt: str


class FullModel:
    """Loads a checkpoint once; answers clips the way NatureLM does (one 10 s window at 16 kHz per clip)."""

    def __init__(self, checkpoint: str, options: FullModelOptions | None = None) -> None:
        from naturelm_edge.models.full import FullModelOptions, NatureLMTeacher

        self.options = options or FullModelOptions()
        self.teacher = NatureLMTeacher(checkpoint, self.options)
        self.model_id = self.teacher.identity
        self.checkpoint = str(checkpoint)
        self.device = self.options.placement.describe()
        self.spec = WindowSpec()

    def features(self, clip: Clip) -> np.ndarray:
        resampler = StreamResampler(clip.sample_rate, self.spec.sample_rate)
        audio = np.concatenate([resampler.process(clip.audio), resampler.flush()])
        return fbank(prepare(audio, self.spec.window))

    def prompt(self, question: str) -> str:
        return self.teacher.prompt_template.format(f"<Audio>{AUDIO_SLOT}</Audio> {question}")

    def answer(self, clips: list[Clip]) -> list[FullAnswer]:
        """One forward pass through the encoder for all clips, one generation per distinct question."""
        tokens = self.teacher.audio_tokens(np.stack([self.features(c) for c in clips]))
        answers: list[FullAnswer | None] = [None] * len(clips)
        for question in dict.fromkeys(c.question for c in clips):
            index = [i for i, c in enumerate(clips) if c.question == question]
            replies = self.teacher.answer(tokens[index], question, self.options.generation, top_k=1)
            for i, reply in zip(index, replies):
                answers[i] = FullAnswer(reply.text, self.prompt(question))
        return answers  # type: ignore[return-value]
