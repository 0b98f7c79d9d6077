"""The one audio front end: recording -> model-rate windows -> fbank features.

Calibration, teacher collection and the runtime all read recordings through :func:`window_features`, so
the features a quantizer calibrates on are exactly those the device computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from naturelm_edge.audio.decode import stream
from naturelm_edge.audio.fbank import DEFAULT_SETTINGS, FbankSettings, fbank
from naturelm_edge.audio.windows import Window, WindowSpec, iter_windows


def window_features(path: str | Path, spec: WindowSpec, time_expansion: float = 1.0,
                    settings: FbankSettings = DEFAULT_SETTINGS) -> Iterator[tuple[Window, np.ndarray]]:
    """Every window of ``path`` with its normalised fbank (frames, 128), in bounded memory."""
    yield from stream_features(stream(path, spec.sample_rate, time_expansion=time_expansion), spec, settings)


class WindowFeatures:
    """The fbank of consecutive windows of one stream, sharing frames between overlapping windows.

    Kaldi frames depend only on their own 25 ms of audio, so when the hop is a whole number of frame shifts
    a window reuses the frames it shares with the previous one and computes only the rest: half the fbank
    work at NatureLM's 10 s window and 5 s hop, and equal to computing each window whole up to the last bit of
    float32 rounding (the BLAS mel projection may round a frame differently by its row in a block).
    """

    def __init__(self, spec: WindowSpec, settings: FbankSettings = DEFAULT_SETTINGS) -> None:
        self.spec, self.settings = spec, settings
        self.shift = settings.frame_shift
        self.previous: tuple[Window, np.ndarray] | None = None

    def __call__(self, window: Window) -> np.ndarray:
        features = None
        if self.previous is not None and self.previous[0].valid == window.valid == self.spec.window:
            step = window.start - self.previous[0].start
            if 0 < step < self.spec.window and step % self.shift == 0:
                shared = self.previous[1][step // self.shift:]
                features = np.concatenate([shared, fbank(window.samples[shared.shape[0] * self.shift:], self.settings)])
        if features is None:
            features = fbank(window.samples, self.settings)
        self.previous = (window, features)
        return features


def stream_features(blocks: Iterable[np.ndarray], spec: WindowSpec,
                    settings: FbankSettings = DEFAULT_SETTINGS) -> Iterator[tuple[Window, np.ndarray]]:
    """Windows and fbank of any stream of model-rate blocks (files, stdin, microphone)."""
    features = WindowFeatures(spec, settings)
    for window in iter_windows(blocks, spec):
        yield window, features(window)
