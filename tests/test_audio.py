"""Decoding, resampling and windowing of real field recordings and of the broken files recorders make."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from naturelm_edge.audio import WindowSpec, fbank, iter_windows, load, prepare, probe, read_blocks, stream
from naturelm_edge.errors import AudioError


def test_stereo_mp3_is_channel_mean_at_16k(audio_dir):
    path = audio_dir / "phoebe" / "137480.mp3"
    assert probe(path).channels == 2
    raw, rate = sf.read(str(path), dtype="float32")
    want = soxr.resample(raw.mean(axis=1), rate, 16000, quality="HQ")
    got = load(path, 16000)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


def test_500khz_bat_recording(audio_dir):
    path = next(p for p in audio_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".wav" and sf.info(str(p)).samplerate == 500000)
    info = probe(path)
    wave = load(path, 16000)
    assert abs(wave.shape[0] - info.frames * 16000 / 500000) <= 2
    slowed = load_expanded = np.concatenate(list(stream(path, 16000, time_expansion=10)))
    assert abs(slowed.shape[0] - info.frames * 16000 / 50000) <= 2
    assert np.isfinite(load_expanded).all()


def test_streaming_equals_whole_file_resampling(audio_dir):
    path = audio_dir / "opensoundscape" / "great_plains_toad.wav"
    raw, rate = sf.read(str(path), dtype="float32")
    want = soxr.resample(raw, rate, 16000, quality="HQ")
    got = np.concatenate(list(stream(path, 16000, block_seconds=0.7)))
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


def test_long_recording_is_never_held_whole(tmp_path):
    """A 20-minute 48 kHz file streams with memory bounded by a few blocks, not by its length."""
    path = tmp_path / "long.flac"
    rate, minutes = 48000, 20
    with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as handle:
        chunk = (0.1 * np.sin(np.arange(rate * 60) * 0.05)).astype(np.float32)
        for _ in range(minutes):
            handle.write(chunk)
    whole_bytes = rate * 60 * minutes * 4
    tracemalloc.start()
    seen = 0
    for window in iter_windows(stream(path, 16000), WindowSpec(10.0, 5.0, 16000)):
        seen = window.start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen >= (minutes * 60 - 10) * 16000
    assert peak < whole_bytes / 20, f"peak {peak / 1e6:.1f} MB for a {whole_bytes / 1e6:.0f} MB recording"


def _write_wav(path, data, rate=16000, subtype="PCM_16"):
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: the file is empty"):
        probe(path)


def test_header_only_wav_has_no_samples(tmp_path):
    path = _write_wav(tmp_path / "header.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match=r"header\.wav: .*no samples"):
        list(read_blocks(path))


def test_truncated_wav_keeps_what_was_read(tmp_path):
    path = _write_wav(tmp_path / "cut.wav", 0.1 * np.ones(16000 * 4, np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    blocks = []
    with pytest.raises(AudioError, match=r"cut\.wav: truncated"):
        for block in read_blocks(path, block_seconds=0.5):
            blocks.append(block)
    assert sum(b.shape[0] for b in blocks) >= 16000 * 1.9  # the readable half was delivered first


def test_nan_samples(tmp_path):
    data = np.zeros(16000, np.float32)
    data[8000] = np.nan
    path = _write_wav(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: NaN or infinite samples at 0\.500 s"):
        load(path, 16000)


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not a recording\n" * 10)
    with pytest.raises(AudioError, match=r"notes\.wav: not a readable audio file"):
        probe(path)


def test_clipped_audio_is_clamped():
    wave = prepare(np.array([2.0, -3.0, 0.5], np.float32), 5)
    assert wave.tolist() == [1.0, -1.0, 0.5, 0.0, 0.0]


def test_windows_cover_everything_once():
    spec = WindowSpec(window_s=1.0, hop_s=0.5, sample_rate=10)
    signal = np.arange(27, dtype=np.float32) / 100
    blocks = [signal[i : i + 4] for i in range(0, 27, 4)]
    windows = list(iter_windows(blocks, spec))
    assert [w.start for w in windows] == [0, 5, 10, 15, 20]
    assert [w.valid for w in windows] == [10, 10, 10, 10, 7]
    assert np.allclose(windows[-1].samples[:7], signal[20:]) and not windows[-1].samples[7:].any()
    short = list(iter_windows([signal[:3]], spec))
    assert len(short) == 1 and short[0].valid == 3


def test_overlapping_windows_share_fbank_frames_exactly(audio_dir):
    """Reusing the previous window's frames gives the fbank of each window computed whole (to the last bit of
    float32 rounding: the BLAS mel projection may round a row differently by its place in a block)."""
    from naturelm_edge.audio.frontend import window_features

    recording = audio_dir / "opensoundscape" / "1min.wav"
    for spec in (WindowSpec(10.0, 5.0), WindowSpec(10.0, 3.3), WindowSpec(10.0, 5.005)):  # the last: no reuse
        windows = list(window_features(recording, spec))
        assert len(windows) >= 10
        for window, features in windows:
            np.testing.assert_allclose(features, fbank(window.samples), rtol=0, atol=1e-6, err_msg=str(spec))
