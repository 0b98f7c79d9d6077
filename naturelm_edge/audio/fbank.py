"""Kaldi-compatible log-mel filterbank in numpy, normalised the way NatureLM (BEATs) was trained.

This is the one implementation of the audio features: calibration, distillation, export verification and
the on-device runtime all call :func:`fbank`. It reproduces ``torchaudio.compliance.kaldi.fbank`` with
NatureLM's settings (128 mel bins, 25 ms frames, 10 ms shift, povey window, pre-emphasis 0.97, DC removal,
no dither, snip edges, power spectrum, log floored at float32 epsilon) so the device never needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16_000
_BLOCK_FRAMES = 64


@dataclass(frozen=True)
class FbankSettings:
    """Front-end parameters; they travel in the bundle manifest so the runtime never guesses them."""

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    input_scale: float = 32768.0  # NatureLM multiplies [-1, 1] audio by 2**15 before Kaldi fbank
    norm_mean: float = 15.41663
    norm_std: float = 6.55582  # features are (fbank - mean) / (2 * std)
    # float64 reproduces NatureLM's own features (see fbank); a student that learns its front end from scratch
    # (a scores teacher's) reads float32 features, computed in half the time (the FFT in float32)
    precision: str = "float64"

    @property
    def dtype(self) -> type:
        return np.float32 if self.precision == "float32" else np.float64

    @property
    def frame_length(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def frame_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << (self.frame_length - 1).bit_length()

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi's snip-edges framing gives for ``num_samples`` (0 when shorter than one frame)."""
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.frame_shift


DEFAULT_SETTINGS = FbankSettings()


def _mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(freq / 700.0)


def mel_centres(settings: FbankSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """Centre frequency in Hz of every mel bin (for band selection on the features, as the gate does)."""
    mel_low, mel_high = _mel(np.float64(settings.low_freq)), _mel(np.float64(0.5 * settings.sample_rate))
    centres = mel_low + (np.arange(settings.num_mel_bins) + 1) * (mel_high - mel_low) / (settings.num_mel_bins + 1)
    return 700.0 * np.expm1(centres / 1127.0)


@lru_cache(maxsize=8)
def _mel_matrix(settings: FbankSettings) -> np.ndarray:
    """Triangular mel filters (fft_size//2 + 1, mel_bins), as torchaudio builds them (float32).

    torchaudio keeps the low bins that Kaldi would reject as empty; so do we (they read as the log floor).
    """
    n_fft_bins = settings.fft_size // 2
    nyquist = 0.5 * settings.sample_rate
    mel_low, mel_high = _mel(np.float64(settings.low_freq)), _mel(np.float64(nyquist))
    delta = (mel_high - mel_low) / (settings.num_mel_bins + 1)
    left = (mel_low + np.arange(settings.num_mel_bins) * delta)[:, None]
    center, right = left + delta, left + 2 * delta
    fft_mel = _mel(settings.sample_rate / settings.fft_size * np.arange(n_fft_bins))[None, :]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    banks = np.pad(banks, ((0, 0), (0, 1)))  # the Nyquist bin gets no weight, as in torchaudio
    return np.ascontiguousarray(banks.T.astype(np.float32))


@lru_cache(maxsize=8)
def _povey_window(length: int) -> np.ndarray:
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85


def fbank(waveform: np.ndarray, settings: FbankSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """NatureLM-normalised log-mel features of 16 kHz mono audio in [-1, 1].

    Returns a (frames, num_mel_bins) float32 array; 10 s of audio gives 998 frames. A batch of equal-length
    waveforms (shape (batch, samples)) gives (batch, frames, num_mel_bins).
    """
    wave = np.asarray(waveform)
    if wave.ndim == 2:
        return np.stack([fbank(row, settings) for row in wave])
    if wave.ndim != 1:
        raise ValueError(f"fbank expects mono audio (samples,) or a batch (batch, samples), got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("fbank input contains NaN or infinite samples")
    n_frames = settings.num_frames(wave.shape[0])
    if n_frames == 0:
        raise ValueError(
            f"fbank needs at least {settings.frame_length} samples ({settings.frame_length_ms} ms), got {wave.shape[0]}"
        )
    # float64 up to the power spectrum (``precision``, NatureLM's): NatureLM's own processor hands BEATs float64
    # audio, so torchaudio computes the model's fbank in float64; a float32 FFT would add a rounding floor ~110 dB
    # below each frame that shows in the empty low bins. Frames go through in cache-sized blocks with reused
    # buffers: fresh 4 MB temporaries per call cost more in page faults than the FFT itself. scipy's FFT, not
    # numpy's: numpy computes a float32 FFT in float64 and converts, scipy's is float32 throughout.
    import scipy.fft

    dtype = settings.dtype
    scaled = wave.astype(dtype) * dtype(settings.input_scale)
    frames = np.lib.stride_tricks.sliding_window_view(scaled, settings.frame_length)[:: settings.frame_shift]
    window = _povey_window(settings.frame_length).astype(dtype)
    mel = _mel_matrix(settings)
    out = np.empty((n_frames, settings.num_mel_bins), dtype=np.float32)
    block = min(_BLOCK_FRAMES, n_frames)
    padded = np.zeros((block, settings.fft_size), dtype)
    power = np.empty((block, settings.fft_size // 2 + 1), dtype=np.float32)
    for start in range(0, n_frames, block):
        rows = min(block, n_frames - start)
        chunk = frames[start : start + rows]
        centred = chunk - chunk.mean(axis=1, keepdims=True)
        emphasised = padded[:rows, : settings.frame_length]
        np.multiply(centred[:, :-1], -settings.preemphasis, out=emphasised[:, 1:])
        emphasised[:, 1:] += centred[:, 1:]
        emphasised[:, 0] = centred[:, 0] * (1.0 - settings.preemphasis)
        emphasised *= window
        spectrum = scipy.fft.rfft(padded[:rows], axis=1)
        np.square(np.abs(spectrum), out=power[:rows], casting="same_kind")  # squared in the FFT's precision
        np.matmul(power[:rows], mel, out=out[start : start + rows])
    np.maximum(out, np.finfo(np.float32).eps, out=out)
    np.log(out, out=out)
    out -= settings.norm_mean
    out /= 2.0 * settings.norm_std
    return out
