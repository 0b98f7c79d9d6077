"""The answer of a scores bundle: its encoder gives one logit per label; the answer is the label with the
highest confidence (sigmoid, as BirdNET reports it) when that reaches the bundle's threshold, else "None".

It answers through the decoder's interface (``generate`` -> :class:`Answer`), so the pipeline, the site rules,
the escalation policy and the store treat both kinds of bundle alike. The confidence is that of the decision:
the label's when one is named, one minus the best label's when none is, so a window whose best label sits
just under the threshold is as unsure as one just over it, and escalates the same.
"""

from __future__ import annotations

import numpy as np

from naturelm_edge.edge_runtime.decoder import Answer
from naturelm_edge.prompt import NOTHING_HEARD


def sigmoid(logits: np.ndarray | float) -> np.ndarray:
    """A logit's confidence, as BirdNET reports it at sensitivity 1 (the one definition: build, report, server)."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))


def decided(confidence: np.ndarray | float, threshold: float) -> np.ndarray:
    """The confidence of the decision from the best label's: its own when it is named, one minus it when not
    (the one definition: the runtime's answers, and the build choosing the bundle's escalation threshold)."""
    confidence = np.asarray(confidence, np.float64)
    return np.where(confidence >= threshold, confidence, 1.0 - confidence)


class ScoreAnswers:
    def __init__(self, labels: list[str], threshold: float) -> None:
        self.labels, self.threshold = labels, threshold

    def fits(self, logits: np.ndarray) -> bool:
        """Whether an encoder gives one logit per label of this bundle (``edge bench --encoder``)."""
        return logits.shape[-1] == len(self.labels)

    def generate(self, logits: np.ndarray, question: str | None = None) -> Answer:
        logits = np.asarray(logits, np.float64).reshape(-1)
        best = int(np.argmax(logits))
        confidence = float(sigmoid(logits[best]))
        sure = float(decided(confidence, self.threshold))
        return Answer(self.labels[best] if confidence >= self.threshold else NOTHING_HEARD, [], [], [sure], True,
                      float(np.log(max(sure, 1e-12))))
