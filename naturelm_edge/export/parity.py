"""Compare an exported model's outputs with PyTorch's (numpy only; shared by every export and quantizer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_COSINE = 0.9999
MAX_RELATIVE_ERROR = 1e-3


@dataclass(frozen=True)
class Parity:
    """How far ``candidate`` is from ``reference`` for one named output."""

    name: str
    max_abs_error: float
    scale: float  # max |reference|: errors are judged relative to it
    min_cosine: float  # over the last-axis vectors (one per audio token)
    mean_cosine: float
    passed: bool

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / self.scale if self.scale else self.max_abs_error

    def to_dict(self) -> dict[str, float | bool | str]:
        return {**asdict(self), "relative_error": self.relative_error}


def compare(
    name: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    min_cosine: float = MIN_COSINE,
    max_relative_error: float = MAX_RELATIVE_ERROR,
) -> Parity:
    """Max abs error, scale and per-vector cosine of ``candidate`` against ``reference``."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"{name}: shapes differ, {ref.shape} vs {got.shape}")
    error = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    a = ref.reshape(-1, ref.shape[-1])
    b = got.reshape(-1, got.shape[-1])
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = np.where(norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, 1e-300), 1.0)
    lowest, mean = float(cosines.min()), float(cosines.mean())
    relative = error / scale if scale else error
    return Parity(name, error, scale, lowest, mean, lowest >= min_cosine and relative <= max_relative_error)
