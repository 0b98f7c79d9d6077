"""One build's state: its options, where each step writes, the stamps and the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naturelm_edge.audio.files import list_audio
from naturelm_edge.build.stamps import Stamps, audio_digest
from naturelm_edge.device_profiles import Profile
from naturelm_edge.errors import EdgeError
from naturelm_edge.progress import Progress


@dataclass
class BuildOptions:
    checkpoint: str
    audio: Path
    profile: Profile
    out: Path
    work: Path
    tasks_file: Path | None = None
    labels_file: Path | None = None
    epochs: int = 6  # the decoder's learning rate falls to 0 over them; fewer when --patience stops it
    student_layers: int = 4
    student_hidden: int = 384
    student_heads: int = 6
    held_out_fraction: float = 0.25
    seed: int = 0
    calibration_windows: int = 32
    min_agreement: float | None = None
    sign_key: Path | None = None
    tar: bool = False
    full_model: Any = None  # models.full.FullModelOptions (torch is imported only when the teacher runs)
    encoder: str | None = None  # "full" or "student"; None: what the profile asks for
    encoder_arch: str = "mobilenet-s"
    encoder_epochs: int | None = None  # at most; None: the student's own default (its config's)
    encoder_views: int = 3
    patience: int = 3  # epochs without improvement before the decoder's training stops
    teacher: str = "naturelm"  # a name of naturelm_edge.teachers.TEACHERS (``checkpoint`` is NatureLM's)
    species_file: Path | None = None  # a scores teacher: labels to keep besides those it hears in the audio
    lat: float | None = None  # ... and those its range model expects here
    lon: float | None = None
    week: int | None = None
    threshold: float = 0.5  # a scores bundle names a label from this confidence
    ray: str | None = None  # teacher answers on Ray: 'local', 'auto' or ray://...; None: in this process
    workers: int | None = None  # ... with this many teacher actors

    @property
    def encoder_kind(self) -> str:
        return self.encoder or self.profile.encoder


class Build:
    """What every step reads: the options, the checkpoint's hash, tasks, recordings and labels, and each
    step's folder (one name each, so a step's outputs and the next step's inputs cannot drift apart)."""

    def __init__(self, options: BuildOptions, progress: Progress) -> None:
        from naturelm_edge.distill.species import labels_for
        from naturelm_edge.distill.tasks import load_tasks
        from naturelm_edge.models import resolve
        from naturelm_edge.models.full import FullModelOptions

        self.options, self.progress = options, progress
        self.full_model = options.full_model or FullModelOptions()
        work = self.work = options.work
        work.mkdir(parents=True, exist_ok=True)
        self.stamps = Stamps(work)
        self.checkpoint_sha = resolve(options.checkpoint).sha256()
        self.tasks = [task.resolved(self.full_model.generation) for task in load_tasks(options.tasks_file)]
        self.files = list_audio(options.audio)
        if not self.files:
            raise EdgeError(f"{options.audio}: no recordings to build from.")
        self.audio_key = audio_digest(self.files)
        self.labels = labels_for(options.audio, options.labels_file)
        self.summary: dict = {"stages": {}, "costs": {}}
        self.full_encoder, self.cache, self.split = work / "encoder", work / "teacher-cache", work / "split.json"
        self.student, self.decoder = work / "student", work / "decoder"
        self.student_encoder = work / f"student-encoder-{self.checkpoint_sha[:12]}"  # teacher tokens per teacher
        self.tuned, self.student_tokens = work / "student-tuned", work / "student-token-cache"
        self.quantized = work / f"quantized-{options.profile.name}"

    @property
    def with_student(self) -> bool:
        """The bundle carries the distilled encoder (the decoder then also learns its tokens)."""
        return self.options.encoder_kind == "student"

    @property
    def encoder_dir(self) -> Path:
        return self.student_encoder if self.with_student else self.full_encoder

    @property
    def trained_decoder(self) -> Path:
        return self.tuned if self.with_student else self.student

    @property
    def decoder_cache(self) -> Path:
        """The windows the decoder export verifies on: with the tokens of the encoder the bundle carries."""
        return self.student_tokens if self.with_student else self.cache
