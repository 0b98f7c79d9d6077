"""fbank reproduces torchaudio's Kaldi fbank as NatureLM uses it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from naturelm_edge.audio import DEFAULT_SETTINGS, fbank

# torchaudio computed fbank_reference.npz in float32; its FFT rounding leaves a noise floor about
# 110 dB below each frame's energy, visible only in mel bins the recording leaves empty (high-passed
# low bins). Above that floor both implementations must agree within 1e-3.
FLOAT32_FLOOR = 1e-11


def _frame_energy(wave: np.ndarray) -> np.ndarray:
    s = DEFAULT_SETTINGS
    frames = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float64) * s.input_scale, s.frame_length)
    frames = frames[:: s.frame_shift][: s.num_frames(wave.shape[0])]
    frames = frames - frames.mean(axis=1, keepdims=True)
    return (frames**2).sum(axis=1, keepdims=True) * s.fft_size


def test_matches_torchaudio_fixture_above_float32_floor(fixtures_dir):
    with np.load(fixtures_dir / "fbank_reference.npz") as data:
        waves, want, names = data["wave16k"], data["fbank"], data["names"]
    for wave, ref, name in zip(waves, want, names):
        got = fbank(wave)
        assert got.shape == ref.shape == (998, 128), name
        assert got.dtype == np.float32
        energy = np.exp(got * 2 * DEFAULT_SETTINGS.norm_std + DEFAULT_SETTINGS.norm_mean)
        resolvable = energy > FLOAT32_FLOOR * _frame_energy(wave)
        assert resolvable.mean() > 0.9, name
        error = np.abs(got - ref)
        assert error[resolvable].max() < 1e-3, f"{name}: {error[resolvable].max()}"
        # every frame as a whole agrees too
        assert np.median(error, axis=1).max() < 1e-3, name


def test_float32_precision_matches_torchaudio_in_float32(fixtures_dir):
    """A scores teacher's students read float32 features (half the time); torchaudio computed the fixture in
    float32 too, so above the float32 floor they agree as the float64 path does."""
    settings = replace(DEFAULT_SETTINGS, precision="float32")
    with np.load(fixtures_dir / "fbank_reference.npz") as data:
        waves, want = data["wave16k"], data["fbank"]
    for wave, ref in zip(waves, want):
        got = fbank(wave, settings)
        energy = np.exp(got * 2 * DEFAULT_SETTINGS.norm_std + DEFAULT_SETTINGS.norm_mean)
        # two float32 FFTs (pocketfft's, torch's) round differently: their floors differ by a few dB
        resolvable = energy > FLOAT32_FLOOR * 10 * _frame_energy(wave)
        assert np.abs(got - ref)[resolvable].max() < 1e-3
        assert np.abs(got - fbank(wave))[resolvable].max() < 1e-3


def test_silence_and_clipped_square_exact(fixtures_dir):
    with np.load(fixtures_dir / "fbank_reference.npz") as data:
        names = list(data["names"])
        for name in ("digital-silence", "full-scale-square-1kHz"):
            i = names.index(name)
            assert np.abs(fbank(data["wave16k"][i]) - data["fbank"][i]).max() < 1e-3, name


def test_matches_naturelm_float64_path(reference_io):
    """NatureLM's processor feeds float64 audio: there every bin must match within 1e-4."""
    got = fbank(reference_io["wave16k"])
    assert got.shape == reference_io["fbank"].shape
    assert np.abs(got - reference_io["fbank"]).max() < 1e-4


def test_frame_count_and_bad_input():
    assert fbank(np.zeros(16000, np.float32)).shape == (98, 128)
    assert fbank(np.zeros(400, np.float32)).shape == (1, 128)
    with pytest.raises(ValueError, match="at least 400 samples"):
        fbank(np.zeros(399, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        fbank(np.array([0.0, np.nan] * 400, np.float32))
    with pytest.raises(ValueError, match="mono"):
        fbank(np.zeros((1, 2, 400), np.float32))
