"""Snap a free-text answer to the bundle's label list by edit distance, as BEANS-Zero scores answers."""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

# an answer within this normalised edit distance of a label is that label (a typo, a plural, a case)
KNOWN_LABEL_DISTANCE = 0.2


@dataclass(frozen=True)
class Snapped:
    label: str
    distance: float  # normalised Levenshtein distance in [0, 1]; 0 is an exact (case-insensitive) match


def snap(answer: str, labels: list[str]) -> Snapped | None:
    """The label nearest to ``answer`` (None when there are no labels)."""
    if not labels:
        return None
    text = answer.strip().lower()
    best = min(labels, key=lambda label: (Levenshtein.normalized_distance(text, label.lower()), label))
    return Snapped(best, float(Levenshtein.normalized_distance(text, best.lower())))


def label_of(answer: str, labels: list[str]) -> str | None:
    """The bundle label ``answer`` names, or None when it names none of them (or there are no labels)."""
    snapped = snap(answer, labels)
    return snapped.label if snapped is not None and snapped.distance <= KNOWN_LABEL_DISTANCE else None
