"""What decides, before any model runs, whether a window reaches the encoder: gate, detector, what was heard, speech.

``edge-run`` and ``edge bench`` both screen windows through this one class, so the benchmark measures the
decisions the device makes; the bench passes its stage clock as ``timed`` to time the gate and detector.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import numpy as np

from naturelm_edge.audio import Window
from naturelm_edge.edge_runtime.detector import Detector
from naturelm_edge.edge_runtime.gate import EnergyGate
from naturelm_edge.edge_runtime.speech import SpeechFilter, masked

# Outcomes, named as the counters of edge-run's summary and the bench report
GATED, SPEECH, NOT_CALL, HEARD, ANSWER = "gated", "speech", "not_calls", "heard", "answered"
OUTCOMES = (GATED, SPEECH, NOT_CALL, HEARD, ANSWER)
PRIVACY_MODES = ("drop", "mask", "off")


@dataclass(frozen=True)
class Why:
    """What the screening measured: the gate's level and floor (dB), the detector's score when it ran."""

    level_db: float
    floor_db: float
    detector_score: float | None = None
    detector_threshold: float | None = None  # the bundle's, or the recorder's site floor when higher


@dataclass(frozen=True)
class Screened:
    """A window's screening: its outcome, and the window and features the models get (speech masked)."""

    outcome: str
    window: Window
    features: np.ndarray
    speech: tuple[tuple[int, int], ...] = ()  # speech stretches found (sample ranges of the window)
    why: Why | None = None


def untimed(stage: str) -> AbstractContextManager:
    return nullcontext()


class Screening:
    """The gate, the bundle's detector when it has one, then the privacy filter, for one stream at a time.

    Human speech is looked for before anything can keep a window's audio: in every window the screening passes
    to the models, and in the window after each of those (that one's clip or escalation is held until the next
    window is checked, :mod:`naturelm_edge.edge_runtime.privacy_hold`). A window the gate or
    the detector refuses keeps no audio, so the speech model (the costliest step of a refused window) does not run
    on it otherwise. Privacy ``drop`` stops a window with speech (SPEECH), ``mask`` zeroes the speech (with
    margins) and gives the models the rest, ``off`` skips the check. It remembers how far the last window sent to
    the models reached, so that a window whose calls all lie in that stretch (windows overlap by half) is not
    encoded a second time.
    """

    def __init__(self, gate: EnergyGate, detector: Detector | None, window_samples: int,
                 speech: SpeechFilter | None = None, privacy: str = "off",
                 features_of: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.gate, self.detector, self.window = gate, detector, window_samples
        self.speech, self.privacy, self.features_of = speech, privacy, features_of
        self.heard_until = 0  # sample (at the model's rate) where the last answered window ended
        self.after_answered = False  # the last window was passed to the models: its kept audio waits for this one

    def begin(self, recorder: str | None = None) -> None:
        """A new recording: the noise floor and site floor of its recorder (or its own), nothing heard yet."""
        self.gate.begin(recorder)
        if self.detector is not None:
            self.detector.begin(recorder)
        self.heard_until, self.after_answered = 0, False

    def __call__(self, window: Window, features: np.ndarray,
                 timed: Callable[[str], AbstractContextManager] = untimed, at_s: float | None = None) -> Screened:
        """GATED, SPEECH, NOT_CALL or HEARD (the window stops here), or ANSWER (it goes to the models);
        ``at_s``: the window's start on its recorder's audio clock (the site floor's time)."""
        follows_answered, self.after_answered = self.after_answered, False
        with timed("gate"):
            gate = self.gate(features)
        why = Why(round(gate.level_db, 2), round(gate.floor_db, 2))
        if not gate.passed:
            if self.detector is not None:
                self.detector.quiet(window.valid, at_s)
            return Screened(GATED, window, features, why=why)
        outcome, why = self._detect(window, features, why, timed, at_s)
        speech: tuple[tuple[int, int], ...] = ()
        if self.privacy != "off" and self.speech is not None and (outcome == ANSWER or follows_answered):
            with timed("speech"):
                speech = tuple(self.speech.stretches(window.samples))
        if speech and self.privacy == "drop":
            return Screened(SPEECH, window, features, speech, why)
        if speech and outcome == ANSWER:  # mask: the models, the clip and the escalation get the window without it
            window = replace(window, samples=masked(window.samples, list(speech), self.speech.rate))
            features = self.features_of(window.samples)
            if self.detector is not None:
                self.detector.withdraw()  # scored with the speech in it: not evidence of the site's background
        if outcome == ANSWER:
            self.heard_until = max(self.heard_until, window.start + window.valid)
            self.after_answered = True
        return Screened(outcome, window, features, speech, why)

    def answered(self, call: bool) -> None:
        """What the models said of the last window sent to them: a call, or nothing (the site floor learns
        the background from the latter only)."""
        if self.detector is not None:
            self.detector.judged(call)

    def _detect(self, window: Window, features: np.ndarray, why: Why,
                timed: Callable[[str], AbstractContextManager], at_s: float | None) -> tuple[str, Why]:
        if self.detector is not None:
            heard = min(1.0, max(0.0, (self.heard_until - window.start) / self.window))
            with timed("detector"):
                decision = self.detector(features, window.valid, heard, at_s)
            why = replace(why, detector_score=round(decision.score, 4), detector_threshold=round(decision.threshold, 4))
            if not decision.passed:
                return (HEARD if decision.heard else NOT_CALL), why
        return ANSWER, why
