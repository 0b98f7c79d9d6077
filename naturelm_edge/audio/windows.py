"""Cut a stream of audio blocks into fixed windows (length and hop from the bundle, never constants)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    """Window length and hop in seconds at the model's sample rate."""

    window_s: float = 10.0
    hop_s: float = 5.0
    sample_rate: int = 16_000

    @property
    def window(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    def windows_in(self, samples: int) -> int:
        """How many windows :func:`iter_windows` gives for ``samples`` (one at least: a short clip is padded)."""
        return 1 + max(0, -(-(samples - self.window) // self.hop))

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.hop_s <= 0 or self.sample_rate <= 0:
            raise ValueError(f"window, hop and sample rate must be positive, got {self}")


@dataclass(frozen=True)
class Window:
    """One model input: ``samples`` (zero-padded to full length), where it starts, how much is real audio."""

    start: int
    samples: np.ndarray
    valid: int


def prepare(wave: np.ndarray, length: int) -> np.ndarray:
    """NatureLM's clip preparation: cut or zero-pad to ``length`` samples and clamp to [-1, 1]."""
    wave = np.asarray(wave, dtype=np.float32)[:length]
    if wave.shape[0] < length:
        wave = np.pad(wave, (0, length - wave.shape[0]))
    return np.clip(wave, -1.0, 1.0)


def iter_windows(blocks: Iterable[np.ndarray], spec: WindowSpec) -> Iterator[Window]:
    """Yield every window of the concatenated ``blocks`` with only one window of audio held at a time.

    The last window is zero-padded (as NatureLM pads short clips); a stream shorter than one window still
    gives one window. Windows past the end that would hold only audio already covered are not emitted.
    """
    size, hop = spec.window, spec.hop
    buffer = np.zeros(0, np.float32)
    start = 0  # absolute sample index of buffer[0]
    emitted_any = False
    for block in blocks:
        buffer = np.concatenate([buffer, np.asarray(block, np.float32)])
        while buffer.shape[0] >= size:
            yield Window(start, prepare(buffer[:size], size), size)
            emitted_any = True
            drop = min(hop, buffer.shape[0])
            buffer = buffer[drop:]
            start += drop
    # the tail: audio after the last full window that no window has covered yet
    covered_until = (start - hop + size) if emitted_any else 0
    if buffer.shape[0] > 0 and (not emitted_any or start + buffer.shape[0] > covered_until):
        yield Window(start, prepare(buffer, size), int(buffer.shape[0]))
