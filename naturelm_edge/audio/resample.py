"""Sample-rate conversion with soxr (one implementation for files, microphones and calibration)."""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Resample a stream block by block; the output is the same as resampling the whole signal at once."""

    def __init__(self, in_rate: float, out_rate: float, quality: str = "HQ") -> None:
        self.in_rate, self.out_rate = float(in_rate), float(out_rate)
        self._passthrough = self.in_rate == self.out_rate
        self._stream = None if self._passthrough else soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality=quality
        )

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block, last=False)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


def resample(wave: np.ndarray, in_rate: float, out_rate: float) -> np.ndarray:
    """Resample a whole in-memory signal."""
    if in_rate == out_rate:
        return np.asarray(wave, dtype=np.float32)
    return soxr.resample(np.asarray(wave, dtype=np.float32), in_rate, out_rate, quality="HQ")
