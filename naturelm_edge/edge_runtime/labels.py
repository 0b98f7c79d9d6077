"""Snap a free-text answer to the bundle's label list by edit distance, as BEANS-Zero scores answers."""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein


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
