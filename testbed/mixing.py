"""Calls mixed into backgrounds at a known SNR: the screening benchmark's soundscapes and the gate's tests."""

from __future__ import annotations

import numpy as np

RATE = 16_000


def loudest(clip: np.ndarray, seconds: float, rate: int = RATE) -> np.ndarray:
    """The ``seconds`` of ``clip`` with the most energy (the call of a focal recording, not its lead-in)."""
    size = int(seconds * rate)
    if clip.shape[0] <= size:
        return clip
    energy = np.convolve(clip ** 2, np.ones(size // 10), "valid")[:: size // 10]
    starts = np.arange(energy.shape[0]) * (size // 10)
    best = max(range(len(starts)), key=lambda i: energy[i:i + 10].sum())
    return clip[starts[best]: starts[best] + size]


def insert(background: np.ndarray, call: np.ndarray, at: int, snr_db: float) -> np.ndarray:
    """``background`` with ``call`` added at sample ``at``, scaled to ``snr_db`` over the call's span."""
    span = background[at: at + call.shape[0]]
    call = call[: span.shape[0]]
    gain = np.sqrt(np.mean(span ** 2) / max(np.mean(call ** 2), 1e-20) * 10 ** (snr_db / 10))
    mixed = background.copy()
    mixed[at: at + call.shape[0]] += gain * call
    return np.clip(mixed, -1, 1)
