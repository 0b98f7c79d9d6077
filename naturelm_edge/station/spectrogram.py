"""Spectrogram images (PNG) of clips and of the live audio: numpy for the STFT, Pillow for the file."""

from __future__ import annotations

import io

import numpy as np

HEIGHT = 128  # frequency rows of every image (the STFT's bins, pooled)


def spectrogram_png(samples: np.ndarray, sample_rate: int, width: int = 600) -> bytes:
    """A log-power spectrogram of ``samples``, low frequencies at the bottom, 60 dB of range."""
    from PIL import Image

    n_fft = 512
    hop = max(n_fft // 4, samples.shape[0] // width)
    if samples.shape[0] < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2  # (time, freq)
    power = power[:, : (power.shape[1] // HEIGHT) * HEIGHT].reshape(power.shape[0], HEIGHT, -1).mean(axis=2)
    db = 10 * np.log10(power + 1e-12)
    top = db.max()
    scaled = np.clip((db - (top - 60.0)) / 60.0, 0.0, 1.0)
    image = (255 * (1 - scaled.T[::-1])).astype(np.uint8)  # dark = loud, as field guides print them
    buffer = io.BytesIO()
    Image.fromarray(image).resize((width, HEIGHT * 2)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
