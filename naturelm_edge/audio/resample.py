"""Sample-rate conversion as NatureLM-audio does it: resampy's ``kaiser_best`` filter, streamed.

The original resamples every recording with ``resampy.resample(x, sr, 16000)`` (kaiser_best: a
Kaiser-windowed sinc with 50 zero crossings, roll-off 0.917, 2^13 table entries per crossing). Other
resamplers keep more energy between 7.5 and 8 kHz, which moves the top mel bins by up to 0.45: high bird
song lives there. resampy itself needs numba (LLVM) on the device, so this module computes the same
weights (including resampy's integer table step and linear table interpolation) as one polyphase filter
per rate pair and runs it with scipy's C ``upfirdn``, block by block, in bounded memory. The output equals
resampling the whole recording at once, which is what the original does (tests compare with resampy and
with the original's 16 kHz waveforms).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
from scipy.signal import upfirdn

ZERO_CROSSINGS = 50
TABLE_PER_CROSSING = 2**13
KAISER_BETA = 12.984585309858856  # resampy's kaiser_best table, reconstructed to 4e-11
ROLLOFF = 0.9173473712608761
_TABLE_SLICE = 2**15  # table entries computed at once (bounded temporaries)


@functools.cache
def _table() -> np.ndarray:
    """The right wing of resampy's kaiser_best filter (409,601 entries).

    Equals ``ROLLOFF * sinc(ROLLOFF * linspace(0, 50, n + 1)) * kaiser(2n + 1, beta)[n:]`` to the last bit, but
    computed a slice at a time and only for the right half: ``np.kaiser``'s Bessel function over all 819,201
    points made ~65 MB of temporaries, which the allocator kept as the device's peak RSS.
    """
    n = TABLE_PER_CROSSING * ZERO_CROSSINGS
    table = np.empty(n + 1)
    spacing = np.float64(ZERO_CROSSINGS) / n  # linspace's step
    for first in range(0, n + 1, _TABLE_SLICE):
        k = np.arange(first, min(first + _TABLE_SLICE, n + 1), dtype=np.float64)
        position = k * spacing
        if k[-1] == n:
            position[-1] = ZERO_CROSSINGS  # linspace ends exactly on its stop
        window = np.i0(KAISER_BETA * np.sqrt(1 - (k / n) ** 2.0)) / np.i0(np.float64(KAISER_BETA))
        table[first : first + k.shape[0]] = ROLLOFF * np.sinc(ROLLOFF * position) * window
    return table


def _wing(start: float, step: int, table: np.ndarray) -> np.ndarray:
    """Filter weights at table positions ``start + i * step`` (linear interpolation), while inside the table."""
    offset = int(start)
    count = (table.shape[0] - offset) // step
    index = offset + np.arange(count) * step
    following = np.minimum(index + 1, table.shape[0] - 1)
    return table[index] + (start - offset) * (table[following] - table[index])


@functools.cache
def _polyphase(up: int, down: int) -> tuple[np.ndarray, int]:
    """The filter on the upsampled grid for ``up/down`` and the index of its centre (a multiple of ``down``).

    Output ``t`` lies at input position ``t * down / up``; with ``n`` its integer part and ``p`` the phase,
    input ``n - i`` gets the left-wing weight at grid offset ``p + i * up`` and input ``n + k + 1`` the
    right-wing weight at ``p - (k + 1) * up``, exactly as resampy's loop weighs them.
    """
    table = _table()
    scale = min(1.0, up / down)
    step = int(scale * TABLE_PER_CROSSING)
    left: dict[int, float] = {}
    right: dict[int, float] = {}
    for phase in range(up):
        frac = scale * phase / up
        for i, w in enumerate(_wing(frac * TABLE_PER_CROSSING, step, table)):
            left[phase + i * up] = w
        for k, w in enumerate(_wing((scale - frac) * TABLE_PER_CROSSING, step, table)):
            right[(k + 1) * up - phase] = w
    reach = max(right)
    centre = -(-reach // down) * down
    taps = np.zeros(centre + max(left) + 1)
    for offset, w in right.items():
        taps[centre - offset] = w
    for offset, w in left.items():
        taps[centre + offset] = w
    return taps * scale, centre


def _ratio(in_rate: float, out_rate: float) -> Fraction:
    return Fraction(out_rate).limit_denominator(1000) / Fraction(in_rate).limit_denominator(1000)


class StreamResampler:
    """Resample a stream block by block; the output equals resampling the whole signal at once."""

    def __init__(self, in_rate: float, out_rate: float) -> None:
        self.in_rate, self.out_rate = float(in_rate), float(out_rate)
        ratio = _ratio(self.in_rate, self.out_rate)
        self.up, self.down = ratio.numerator, ratio.denominator
        self._passthrough = self.up == self.down
        if not self._passthrough:
            self._taps, self._centre = _polyphase(self.up, self.down)
        self._buffer = np.zeros(0, np.float64)
        self._base = 0  # input index of _buffer[0], a multiple of `down`
        self._received = 0
        self._emitted = 0  # output samples produced so far

    def _input_position(self, t: int) -> int:
        return t * self.down // self.up

    def _produce(self, last: int) -> np.ndarray:
        """Outputs ``_emitted .. last-1`` from the buffer (inputs past the buffer count as zeros)."""
        if last <= self._emitted:
            return np.zeros(0, np.float32)
        filtered = upfirdn(self._taps, self._buffer, self.up, self.down)
        first = self._emitted + (self._centre - self._base * self.up) // self.down
        out = np.zeros(last - self._emitted, np.float32)
        have = filtered[first : first + out.shape[0]]
        out[: have.shape[0]] = have  # computed in float64 as the original; float32 out
        self._emitted = last
        # keep what the next output's left wing reaches, from a multiple of `down` so the grid stays aligned
        keep_from = max(0, self._input_position(last) - (self._taps.shape[0] - self._centre) // self.up - 1)
        keep_from = keep_from // self.down * self.down
        self._buffer = self._buffer[keep_from - self._base :]
        self._base = keep_from
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        if self._passthrough:
            return np.ascontiguousarray(block, dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, np.asarray(block, dtype=np.float64)])
        self._received += block.shape[0]
        right_reach = self._centre // self.up + 1  # inputs to the right of an output's position it needs
        ready = max(0, (self._received - right_reach) * self.up // self.down)
        return self._produce(ready)

    def flush(self) -> np.ndarray:
        if self._passthrough:
            return np.zeros(0, np.float32)
        return self._produce(self._received * self.up // self.down)


def resample(wave: np.ndarray, in_rate: float, out_rate: float) -> np.ndarray:
    """Resample a whole in-memory signal (the same filter as the stream)."""
    resampler = StreamResampler(in_rate, out_rate)
    return np.concatenate([resampler.process(wave), resampler.flush()])
