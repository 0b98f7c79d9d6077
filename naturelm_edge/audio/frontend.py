"""The one audio front end: recording -> model-rate windows -> fbank features.

Calibration, teacher collection and the runtime all read recordings through :func:`window_features`, so
the features a quantizer calibrates on are exactly those the device computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from naturelm_edge.audio.decode import stream
from naturelm_edge.audio.fbank import fbank
from naturelm_edge.audio.windows import Window, WindowSpec, iter_windows


def window_features(path: str | Path, spec: WindowSpec, time_expansion: float = 1.0) -> Iterator[tuple[Window, np.ndarray]]:
    """Every window of ``path`` with its normalised fbank (frames, 128), in bounded memory."""
    for window in iter_windows(stream(path, spec.sample_rate, time_expansion=time_expansion), spec):
        yield window, fbank(window.samples)
