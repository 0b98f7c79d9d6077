"""Does the student say what the teacher says? Per window, both answers read the way a user reads them: the
most confident animal label at or above the threshold, or nothing. Every share comes with its count and a
95 % Wilson interval (scipy's), because an agreement of 9 in 10 windows is not one of 900 in 1,000.
"""

from __future__ import annotations

import numpy as np

from naturelm_edge.edge_runtime.scores import sigmoid


def share(agree: int, count: int) -> dict:
    """``agree`` of ``count`` with its 95 % Wilson interval (None when there is nothing to count)."""
    if count == 0:
        return {"share": None, "agree": 0, "count": 0, "ci95": None}
    from scipy.stats import binomtest

    low, high = binomtest(agree, count).proportion_ci(0.95, method="wilson")
    return {"share": round(agree / count, 4), "agree": int(agree), "count": int(count),
            "ci95": [round(float(low), 4), round(float(high), 4)]}


def named(logits: np.ndarray, threshold: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """Per window, the index of the most confident allowed class at >= ``threshold``, or -1 (nothing)."""
    scores = np.where(allowed, logits, -np.inf) if allowed is not None else logits
    best = np.argmax(scores, axis=1)
    return np.where(sigmoid(scores[np.arange(len(best)), best]) >= threshold, best, -1)


def agreement(student: np.ndarray, teacher: np.ndarray, classes: list[int], animal: np.ndarray,
              threshold: float = 0.5) -> dict:
    """``student``: logits over ``classes`` (windows, kept labels); ``teacher``: logits over all its classes.

    species: of the windows where the teacher names an animal, those the student names the same;
    detection: the student names something where the teacher does (recall) and nothing where it does not;
    answer: the same answer, nothing included; outside_labels: teacher answers the student cannot give.
    """
    kept = np.asarray(classes)
    said = named(student.astype(np.float32), threshold)
    said = np.where(said >= 0, kept[np.maximum(said, 0)], -1)
    truth = named(teacher.astype(np.float32), threshold, animal)
    calls, quiet = truth >= 0, truth < 0
    return {"windows": int(len(truth)), "threshold": threshold,
            "species": share(int(np.sum(said[calls] == truth[calls])), int(calls.sum())),
            "detection_recall": share(int(np.sum(said[calls] >= 0)), int(calls.sum())),
            "quiet_kept_quiet": share(int(np.sum(said[quiet] < 0)), int(quiet.sum())),
            "answer": share(int(np.sum(said == truth)), int(len(truth))),
            "outside_labels": int(np.sum(calls & ~np.isin(truth, kept)))}
