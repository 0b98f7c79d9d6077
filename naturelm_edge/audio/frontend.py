"""The one audio front end: recording -> model-rate windows -> fbank features.

Calibration, teacher collection and the runtime all read recordings through :func:`window_features`, so
the features a quantizer calibrates on are exactly those the device computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from naturelm_edge.audio.decode import stream
from naturelm_edge.audio.fbank import fbank
from naturelm_edge.audio.windows import Window, WindowSpec, iter_windows


def window_features(path: str | Path, spec: WindowSpec, time_expansion: float = 1.0) -> Iterator[tuple[Window, np.ndarray]]:
    """Every window of ``path`` with its normalised fbank (frames, 128), in bounded memory."""
    yield from stream_features(stream(path, spec.sample_rate, time_expansion=time_expansion), spec)


def stream_features(blocks: Iterable[np.ndarray], spec: WindowSpec) -> Iterator[tuple[Window, np.ndarray]]:
    """Windows and fbank of any stream of model-rate blocks (stdin, microphone)."""
    for window in iter_windows(blocks, spec):
        yield window, fbank(window.samples)
