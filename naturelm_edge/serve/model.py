"""The model behind the escalation API, answering escalated clips a batch at a time: the full NatureLM-audio
model (PyTorch), or a scores teacher (BirdNET v2.4) answering with its species and their confidences."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    scores: list[dict] = field(default_factory=list)  # a scores teacher's best labels: label, scientific, confidence


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


class TeacherScores:
    """A scores teacher answering escalated clips: over the clip's 3 s chunks (resampled to the teacher's rate),
    each label's best confidence; the answer is the best animal label at ``threshold`` or "None", and the top
    ``top`` labels come with it. TFLite runs one chunk per call, so a batch is answered clip by clip."""

    def __init__(self, name: str = "birdnet-v2.4", threshold: float = 0.5, threads: int = 1, top: int = 5) -> None:
        from naturelm_edge.teachers import teacher

        spec = teacher(name)
        self.adapter = spec.load(threads=threads, embeddings=False)
        self.spec, self.threshold, self.top = spec.spec, threshold, top
        self.model_id = f"{name}:{self.adapter.identity['sha256'][:12]}"
        self.checkpoint, self.device = name, f"cpu (TFLite, {threads} thread(s))"

    def answer(self, clips: list[Clip]) -> list[FullAnswer]:
        from naturelm_edge.edge_runtime.scores import sigmoid
        from naturelm_edge.prompt import NOTHING_HEARD
        from naturelm_edge.teachers.birdnet import pieces

        answers = []
        for clip in clips:
            resampler = StreamResampler(clip.sample_rate, self.spec.sample_rate)
            audio = np.concatenate([resampler.process(clip.audio), resampler.flush()])
            logits = np.max([self.adapter.logits(p) for p in pieces(audio, self.spec.hop_s)], axis=0)
            confidence = sigmoid(np.where(self.adapter.animal, logits, -np.inf))
            best = np.argsort(-confidence)[: self.top]
            scores = [{"label": self.adapter.labels[i], "scientific": self.adapter.scientific[i],
                       "confidence": round(float(confidence[i]), 4)} for i in best]
            named = scores[0]["label"] if scores[0]["confidence"] >= self.threshold else NOTHING_HEARD
            answers.append(FullAnswer(named, clip.question, scores))
        return answers
