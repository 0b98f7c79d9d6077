"""The teachers a bundle can be distilled from, as one table (like the bundle's roles).

A teacher declares what every export-side step and the runtime must agree on: its audio contract (sample
rate, window, hop, and the fbank its student reads at that rate), the kind of answer it gives (``text``: a
caption per question; ``scores``: one score per label of a list) and what a student may learn from. The
bundle's ``audio`` section is written from it, so the runtime, the detector and calibration follow the
teacher, never a constant.

Adding a teacher (a Perch or BEATs classifier, a user's own ONNX or TFLite classifier with a label file) is
one entry here plus one adapter class with the methods of :class:`naturelm_edge.teachers.birdnet.BirdNET`
(``scores`` of one window, ``embedding`` width, the ``labels``, its ``identity``); a ``scores`` teacher then
goes through the same build steps (:mod:`naturelm_edge.build.scores_steps`). See docs/teachers.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from naturelm_edge.audio import DEFAULT_SETTINGS, FbankSettings, WindowSpec
from naturelm_edge.errors import EdgeError

TEXT, SCORES = "text", "scores"


@dataclass(frozen=True)
class Teacher:
    name: str
    answers: str  # TEXT | SCORES
    learns_from: tuple[str, ...]  # what the student is fitted to
    sample_rate: int
    window_s: float
    hop_s: float  # the runtime's hop (the bundle's default; a profile may override it)
    fbank: FbankSettings  # the student's (and the detector's) front end at the teacher's rate
    licence: str
    adapter: str  # "module:Class", imported only when the teacher runs (torch, TFLite)
    recipe: str  # the build module: its State, STEPS and finish (naturelm_edge.build)
    training_hop_s: float | None = None  # a denser hop for teacher answers (more windows to learn from)

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec(self.window_s, self.hop_s, self.sample_rate)

    @property
    def training_spec(self) -> WindowSpec:
        return WindowSpec(self.window_s, self.training_hop_s or self.hop_s, self.sample_rate)

    def contract(self, time_expansion: float = 1.0):  # noqa: ANN201 - bundle.contract.AudioContract
        """The audio contract of the teacher's bundles (what the runtime will read from their manifest)."""
        from naturelm_edge.bundle.contract import AudioContract

        return AudioContract(self.spec, self.fbank, time_expansion)

    def audio_section(self, overrides: dict | None = None) -> dict:
        """The manifest's ``audio`` section (a profile may set its own window, hop or time expansion)."""
        from dataclasses import asdict

        given = overrides or {}
        return {"sample_rate": self.sample_rate, "window_s": given.get("window_s", self.window_s),
                "hop_s": given.get("hop_s", self.hop_s), "clip_seconds": self.window_s,
                "time_expansion": given.get("time_expansion", 1.0), "fbank": asdict(self.fbank)}

    def load(self, **options: object) -> object:
        """The adapter, constructed with ``options``."""
        import importlib

        module, name = self.adapter.split(":")
        return getattr(importlib.import_module(module), name)(**options)


NATURELM = Teacher(
    "naturelm", TEXT, ("audio tokens", "answers to the tasks' questions"), DEFAULT_SETTINGS.sample_rate, 10.0, 5.0,
    DEFAULT_SETTINGS, "the checkpoint's own (NatureLM-audio: CC BY-NC 4.0)", "naturelm_edge.models.full:NatureLMTeacher",
    "naturelm_edge.build.naturelm")

BIRDNET = Teacher(
    "birdnet-v2.4", SCORES, ("1024-wide embedding", "logits of the species heard"), 48_000, 3.0, 3.0,
    # 128 mel bins up to 24 kHz, 10 ms frames: the student's shape is the NatureLM student's, at BirdNET's rate;
    # float32, since no original features need reproducing (5 -> 3 ms a window on one core)
    FbankSettings(sample_rate=48_000, low_freq=150.0, precision="float32"), "CC BY-NC-SA 4.0 (BirdNET v2.4 model and labels)",
    "naturelm_edge.teachers.birdnet:BirdNET", "naturelm_edge.build.scores", training_hop_s=1.5)

TEACHERS: dict[str, Teacher] = {t.name: t for t in (NATURELM, BIRDNET)}


def teacher(name: str) -> Teacher:
    try:
        return TEACHERS[name]
    except KeyError:
        raise EdgeError(f"teacher {name!r}: use one of {', '.join(TEACHERS)}.") from None
