"""The answer of a scores bundle: its encoder gives one logit per label; the answer is the label with the
highest confidence (sigmoid, as BirdNET reports it) when that reaches the bundle's threshold, else "None".

It answers through the decoder's interface (``generate`` -> :class:`Answer`), so the pipeline, the site rules,
the escalation policy and the store treat both kinds of bundle alike. The confidence is that of the decision:
the label's when one is named; when none is, one minus the chance that the teacher hears an animal here. A
bundle whose encoder has a presence column (its last: the manifest's ``answers.presence``) gives that chance
directly, learnt from the teacher's most confident animal class over all its labels, so a call of a species
the bundle does not carry still makes its "None" unsure and escalates; without one, the best label's
confidence stands in for it (a window whose best label sits just under the threshold is then as unsure as
one just over it).

A bundle whose encoder also ends with a support column (after the presence column: the manifest's
``answers.support``) says how near the window lies to a precedent: the highest cosine similarity between its
embedding and those of the training windows the teacher named with the label the student names. A name below
the bundle's support floor has no precedent (a toad chorus the student calls a thrush), so it is as unsure as
can be (confidence 0) and escalates; the name itself stays the student's best guess.
"""

from __future__ import annotations

import numpy as np

from naturelm_edge.edge_runtime.decoder import Answer
from naturelm_edge.prompt import NOTHING_HEARD


def sigmoid(logits: np.ndarray | float) -> np.ndarray:
    """A logit's confidence, as BirdNET reports it at sensitivity 1 (the one definition: build, report, server)."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))


def decisions(logits: np.ndarray, threshold: float, presence: bool = False,
              support: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per window (a row of encoder outputs): the named label's index (-1: none) and the decision's confidence
    (the one definition: the runtime's answers, and the build choosing the bundle's escalation threshold).
    ``support``: the manifest's ``answers.support`` when the encoder ends with a support column (its ``floor``
    None: the column is there, no floor applies)."""
    logits = np.atleast_2d(np.asarray(logits, np.float64))
    width = logits.shape[1] - int(presence) - int(support is not None)
    labels = logits[:, :width]
    best = np.argmax(labels, axis=1)
    confidence = sigmoid(labels[np.arange(len(best)), best])
    heard = sigmoid(logits[:, width]) if presence else confidence
    named = confidence >= threshold
    sure = np.where(named, confidence, 1.0 - heard)
    if support is not None and support.get("floor") is not None:
        sure = np.where(named & (logits[:, -1] < support["floor"]), 0.0, sure)
    return np.where(named, best, -1), sure


class ScoreAnswers:
    def __init__(self, labels: list[str], threshold: float, presence: bool = False,
                 support: dict | None = None) -> None:
        self.labels, self.threshold, self.presence, self.support = labels, threshold, presence, support

    def fits(self, logits: np.ndarray) -> bool:
        """Whether an encoder gives one logit per label of this bundle (and its presence and support columns)
        (``edge bench --encoder``)."""
        return logits.shape[-1] == len(self.labels) + self.presence + (self.support is not None)

    def generate(self, logits: np.ndarray, question: str | None = None) -> Answer:
        named, sure = decisions(np.asarray(logits).reshape(1, -1), self.threshold, self.presence, self.support)
        label, sure = int(named[0]), float(sure[0])
        return Answer(self.labels[label] if label >= 0 else NOTHING_HEARD, [], [], [sure], True,
                      float(np.log(max(sure, 1e-12))))
