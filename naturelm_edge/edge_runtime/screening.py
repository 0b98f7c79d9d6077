"""What decides, before any model runs, whether a window reaches the encoder: gate, detector, what was heard.

``edge-run`` and ``edge bench`` both screen windows through this one class, so the benchmark measures the
decisions the device makes; the bench passes its stage clock as ``timed`` to time the gate and detector.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from naturelm_edge.audio import Window
from naturelm_edge.edge_runtime.detector import Detector
from naturelm_edge.edge_runtime.gate import EnergyGate

# Outcomes, named as the counters of edge-run's summary and the bench report
GATED, NOT_CALL, HEARD, ANSWER = "gated", "not_calls", "heard", "answered"
OUTCOMES = (GATED, NOT_CALL, HEARD, ANSWER)


def untimed(stage: str) -> AbstractContextManager:
    return nullcontext()


class Screening:
    """The gate, then the bundle's detector when it has one, for one stream at a time.

    It remembers how far the last window sent to the models reached, so that a window whose calls all lie
    in that stretch (windows overlap by half) is not encoded a second time.
    """

    def __init__(self, gate: EnergyGate, detector: Detector | None, window_samples: int) -> None:
        self.gate, self.detector, self.window = gate, detector, window_samples
        self.heard_until = 0  # sample (at the model's rate) where the last answered window ended

    def reset(self) -> None:
        """A new recording: a noise floor of its own, nothing heard yet."""
        self.gate.reset()
        self.heard_until = 0

    def __call__(self, window: Window, features: np.ndarray,
                 timed: Callable[[str], AbstractContextManager] = untimed) -> str:
        """GATED, NOT_CALL or HEARD (the window stops here), or ANSWER (it goes to the models)."""
        with timed("gate"):
            passed = self.gate(features).passed
        if not passed:
            return GATED
        if self.detector is not None:
            heard = min(1.0, max(0.0, (self.heard_until - window.start) / self.window))
            with timed("detector"):
                decision = self.detector(features, window.valid, heard)
            if not decision.passed:
                return HEARD if decision.heard else NOT_CALL
        self.heard_until = max(self.heard_until, window.start + window.valid)
        return ANSWER
