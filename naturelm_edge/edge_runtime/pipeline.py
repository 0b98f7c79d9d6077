"""The one window pipeline: source -> windows -> fbank -> screening -> encoder -> decoder -> labels.

``edge-run`` (store, sinks, clips, escalation, live view), ``edge bench`` (timing) and the Python API
(``EdgeModel.detect``) all consume :meth:`WindowPipeline.run`; none of them walks windows itself. Every
audio setting comes from the bundle's contract; time expansion is undone here, once, so offsets and
durations are always real seconds of the recording.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np

from naturelm_edge.audio import Window, fbank, iter_windows
from naturelm_edge.audio.frontend import WindowFeatures
from naturelm_edge.bundle.contract import BundleError
from naturelm_edge.edge_runtime.engine import Engine
from naturelm_edge.edge_runtime.escalation import AudioClock
from naturelm_edge.edge_runtime.gate import EnergyGate, GateSettings
from naturelm_edge.edge_runtime.labels import label_of
from naturelm_edge.edge_runtime.screening import ANSWER, PRIVACY_MODES, SPEECH, Screening, Why, untimed
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.edge_runtime.timestamps import offset as absolute
from naturelm_edge.errors import EdgeError
from naturelm_edge.prompt import names_something

RESUMED = "resumed"  # recorded as done by an earlier run: not read again
SPEECH_ANSWER = "human speech"  # the event a window with people talking leaves (privacy drop): no audio

Timed = Callable[[str], AbstractContextManager]


@dataclass(frozen=True)
class WindowResult:
    """What happened to one window; offsets and durations are real seconds (time expansion undone)."""

    source: str
    offset_s: float
    duration_s: float
    start_utc: str | None  # absolute time of the window's start, when the recording is dated
    outcome: str  # resumed | gated | not_calls | heard | answered
    question: str | None = None
    answer: str | None = None
    label: str | None = None  # the bundle label the answer names (within the label distance), else None
    confidence: float | None = None  # mean probability of the answer's tokens
    confidence_min: float | None = None
    escalation: str | None = None  # why the full model hears it (set by the escalation policy, after the site rules)
    recorder: str = ""  # the device the window comes from (a series of files, a stream); budgets are kept per recorder
    recorder_s: float = 0.0  # the window's start on its recorder's audio clock (seconds of that recorder's audio)
    busy_s: float = 0.0  # processing time of the window, decoding of the audio excluded
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)  # the model-rate window
    speech: tuple[tuple[int, int], ...] = ()  # human speech found (sample ranges of the window, model rate)
    window_start: int = 0  # the window's first sample in its stream (model rate)
    why: Why | None = None  # the screening's measures (gate level and floor, detector score)

    @property
    def answered(self) -> bool:
        return self.outcome == ANSWER

    @property
    def detection(self) -> bool:
        """An answer that names something (the model says 'None' for windows without a call)."""
        return self.answered and names_something(self.answer)


def _encode_with(engine: Engine) -> Callable[[np.ndarray, Timed], np.ndarray]:
    def encode(features: np.ndarray, timed: Timed) -> np.ndarray:
        with timed("encoder"):
            return engine.audio_tokens(features)

    return encode


class WindowPipeline:
    """Runs sources through one bundle's models; one screening state, reset for every recording.

    Escalation is not decided here: :class:`EscalationPolicy` decides once, after the site rules (``edge-run``,
    the Python API). ``timed``: a stage clock (``edge bench``).
    ``encode``: features -> audio tokens, timing the encoder itself (``edge bench --encoder`` swaps it).
    """

    def __init__(self, engine: Engine, gate: GateSettings | None = None, timed: Timed = untimed, encode: Callable[[np.ndarray, Timed], np.ndarray] | None = None,
                 privacy: str = "drop") -> None:
        self.engine, self.timed = engine, timed
        self.clock = AudioClock()
        self._settings = (gate, privacy, encode)
        self.audio = engine.bundle.audio
        if privacy not in PRIVACY_MODES:
            raise EdgeError(f"privacy {privacy!r}: use one of {', '.join(PRIVACY_MODES)}.")
        if privacy != "off" and engine.speech is None:
            raise BundleError(
                f"{engine.bundle.root}: this bundle has no speech model, so the privacy filter ({privacy!r}) cannot "
                f"run; add it with `edge bundle add-speech {engine.bundle.root}` (or rebuild with `edge build`), or "
                f"set privacy = \"off\" in the site file to keep windows with people talking."
            )
        settings = self.audio.fbank
        self.screening = Screening(EnergyGate(gate, self.audio.fbank), engine.detector, self.audio.spec.window,
                                   engine.speech, privacy, lambda samples: fbank(samples, settings))
        self.encode = encode or _encode_with(engine)

    def fresh(self) -> WindowPipeline:
        """The same pipeline with a screening state of its own (one per stream read at the same time)."""
        gate, privacy, encode = self._settings
        return WindowPipeline(self.engine, gate, self.timed, encode, privacy)

    def _blocks(self, source: Source) -> Iterator[np.ndarray]:
        """The source's model-rate blocks, each pull timed as decoding."""
        iterator = iter(source.blocks())
        while True:
            with self.timed("decode"):
                block = next(iterator, None)
            if block is None:
                return
            yield block

    def run(self, source: Source, skip: Callable[[float], bool] | None = None) -> Iterator[WindowResult]:
        """Every window of ``source``, lazily; ``skip(offset_s)``: a window an earlier run already did."""
        spec, timed = self.audio.spec, self.timed
        per_second = spec.sample_rate * source.time_expansion  # model-rate samples per real second
        features_of = WindowFeatures(spec, self.audio.fbank)
        self.screening.begin(source.recorder)  # a recorder's files share a noise floor; anything else has its own
        for window in iter_windows(self._blocks(source), spec):
            offset_s, duration_s = window.start / per_second, window.valid / per_second
            recorder = source.recorder or source.id
            place = {"source": source.id, "offset_s": round(offset_s, 3), "duration_s": round(duration_s, 3),
                     "start_utc": absolute(source.start, offset_s), "recorder": recorder,
                     "recorder_s": round(self.clock.at(recorder, source.id, offset_s, duration_s), 3)}
            if skip is not None and skip(offset_s):
                yield WindowResult(**place, outcome=RESUMED)
                continue
            started = time.perf_counter()
            with timed("fbank"):
                features = features_of(window)
            screened = self.screening(window, features, timed, place["recorder_s"])
            place.update(speech=screened.speech, window_start=window.start, why=screened.why)
            if screened.outcome == SPEECH:
                yield WindowResult(**place, outcome=SPEECH, answer=SPEECH_ANSWER, busy_s=time.perf_counter() - started)
            elif screened.outcome != ANSWER:
                yield WindowResult(**place, outcome=screened.outcome, busy_s=time.perf_counter() - started)
            else:
                yield self._answer(place, screened.window, screened.features, started)

    def _answer(self, place: dict, window: Window, features: np.ndarray, started: float) -> WindowResult:
        tokens = self.encode(features, self.timed)
        with self.timed("decoder"):
            result = self.engine.answer(tokens)
        answer = result.answer
        self.screening.answered(names_something(answer.text))
        return WindowResult(**place, outcome=ANSWER, question=result.question, answer=answer.text,
                            label=label_of(answer.text, self.engine.labels), confidence=round(answer.confidence_mean, 4),
                            confidence_min=round(answer.confidence_min, 4),
                            busy_s=time.perf_counter() - started, samples=window.samples)
