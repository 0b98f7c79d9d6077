"""Decoding, resampling and windowing of real field recordings and of the broken files recorders make."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import resampy
import soundfile as sf

from naturelm_edge.audio import WindowSpec, fbank, iter_windows, load, prepare, probe, read_blocks, stream
from naturelm_edge.audio.decode import MAX_BLOCK_FRAMES
from naturelm_edge.audio.resample import KAISER_BETA, ROLLOFF, TABLE_PER_CROSSING, ZERO_CROSSINGS, _table
from naturelm_edge.errors import AudioError


def test_stereo_mp3_is_channel_mean_at_16k(audio_dir):
    path = audio_dir / "phoebe" / "137480.mp3"
    assert probe(path).channels == 2
    raw, rate = sf.read(str(path), dtype="float32")
    want = resampy.resample(raw.mean(axis=1).astype(np.float64), rate, 16000)  # what NatureLM's processor does
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
    raw, rate = sf.read(str(path), dtype="float64")
    want = resampy.resample(raw, rate, 16000)
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


def test_bat_recorder_rates_stream_in_small_blocks(audio_dir):
    """Blocks are capped in frames, not seconds: 5 s of a 500 kHz file in float64 copies was the device's peak RSS."""
    path = next(p for p in sorted(audio_dir.rglob("*.wav")) if sf.info(str(p)).samplerate == 500000)
    assert max(block.shape[0] for block in read_blocks(path)) <= MAX_BLOCK_FRAMES < 5 * 500000
    list(stream(path, 16000))  # the rate pair's filter is built outside the measurement
    tracemalloc.start()
    for _ in stream(path, 16000):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * MAX_BLOCK_FRAMES * 4, f"peak {peak / 1e6:.1f} MB"


def test_filter_table_is_resampys_kaiser_best_to_the_bit():
    """Built a slice at a time (bounded temporaries), it must still equal the whole-array formula exactly."""
    n = TABLE_PER_CROSSING * ZERO_CROSSINGS
    want = ROLLOFF * np.sinc(ROLLOFF * np.linspace(0, ZERO_CROSSINGS, n + 1)) * np.kaiser(2 * n + 1, KAISER_BETA)[n:]
    assert np.array_equal(_table(), want)


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


def _zero_sizes(path):
    """What a recorder leaves when its batteries die before it closes the file: RIFF and data sizes of 0."""
    data = bytearray(path.read_bytes())
    data[4:8] = b"\0\0\0\0"
    at = data.find(b"data")
    data[at + 4:at + 8] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    return path


def test_truncated_wav_is_read_to_its_last_whole_frame(tmp_path, caplog):
    """A transfer cut short (mid-frame): every whole frame is read, with one warning naming the file."""
    samples = (0.1 * np.sin(np.arange(16000 * 4) * 0.01)).astype(np.float32)
    path = _write_wav(tmp_path / "cut.wav", np.stack([samples, -samples], axis=1), subtype="PCM_24")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 1])  # half the frames and one byte of the next
    got = np.concatenate(list(read_blocks(path, block_seconds=0.5)))
    frames = (len(data) // 2 + 1 - 44) // 6
    assert got.shape[0] == frames and np.abs(got).max() < 1e-6  # stereo mean of x and -x
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cut.wav: repaired" in warnings[0], warnings


@pytest.mark.parametrize(("subtype", "channels", "rate"), [
    ("PCM_U8", 1, 8000), ("PCM_16", 1, 48000), ("PCM_16", 2, 384000), ("PCM_24", 8, 96000),
    ("PCM_32", 1, 500000), ("FLOAT", 2, 44100), ("DOUBLE", 1, 22050), ("ULAW", 1, 8000), ("ALAW", 1, 8000)])
def test_every_wav_encoding_survives_a_power_loss(tmp_path, subtype, channels, rate):
    """Each encoding the decoder claims, intact and with the sizes a dead recorder leaves: the same samples."""
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.uniform(-1, 1, (rate // 4, channels))).astype(np.float32)
    intact = _write_wav(tmp_path / "intact.wav", audio, rate, subtype)
    want = np.concatenate(list(read_blocks(intact)))
    dead = tmp_path / "dead.wav"
    dead.write_bytes(intact.read_bytes())
    _zero_sizes(dead)
    info = probe(dead)
    assert (info.sample_rate, info.channels, info.frames) == (rate, channels, rate // 4)
    assert np.array_equal(np.concatenate(list(read_blocks(dead))), want)


def test_extensible_junk_and_trailing_metadata_chunks(tmp_path):
    """WAVE_FORMAT_EXTENSIBLE with zero sizes, junk bytes before `fmt `, a GUANO chunk after the data."""
    audio = (0.2 * np.sin(np.arange(24000) * 0.03)).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(str(path), np.stack([audio] * 3, axis=1), 48000, subtype="PCM_16", format="WAV")
    with sf.SoundFile(str(tmp_path / "ext.wav"), "w", 48000, 3, subtype="PCM_24", format="WAVEX") as handle:
        handle.write(np.stack([audio] * 3, axis=1))
    ext = _zero_sizes(tmp_path / "ext.wav")
    assert probe(ext).layout is not None
    assert np.allclose(np.concatenate(list(read_blocks(ext))), audio, atol=1e-6)
    data = path.read_bytes()
    junk = data[:12] + b"\x00\xff garbage from a bad card \x01" + data[12:]
    (tmp_path / "junk.wav").write_bytes(junk)
    assert np.allclose(np.concatenate(list(read_blocks(tmp_path / "junk.wav"))), audio, atol=1e-4)
    guano = b"GUANO|Version: 1.0\nTimestamp: 2024-06-01T05:00:00Z\n"
    trailing = data + b"guan" + len(guano).to_bytes(4, "little") + guano
    (tmp_path / "guano.wav").write_bytes(trailing)
    assert probe(tmp_path / "guano.wav").layout is None  # nothing to repair: libsndfile reads it as it is
    assert np.allclose(np.concatenate(list(read_blocks(tmp_path / "guano.wav"))), audio, atol=1e-4)


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), [(".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS"),
                                                        (".mp3", "MP3", "MPEG_LAYER_III")])
def test_compressed_formats_decode(tmp_path, suffix, fmt, subtype):
    audio = (0.3 * np.sin(np.arange(48000) * 2 * np.pi * 440 / 48000)).astype(np.float32)
    path = tmp_path / f"tone{suffix}"
    sf.write(str(path), audio, 48000, format=fmt, subtype=subtype)
    got = np.concatenate(list(stream(path, 16000)))
    assert abs(got.shape[0] - 16000) < 1200  # encoders pad a little
    assert 0.15 < float(np.sqrt(np.mean(got[2000:14000] ** 2))) < 0.25  # a 0.3 sine has RMS 0.21


def test_nan_samples_are_zeroed_and_the_rest_goes_on(tmp_path, caplog):
    data = (0.1 * np.ones(16000 * 2)).astype(np.float32)
    data[8000:8100] = np.nan
    data[9000] = np.inf
    path = _write_wav(tmp_path / "nan.wav", data, subtype="FLOAT")
    got = load(path, 16000)
    assert got.shape[0] == 32000 and np.isfinite(got).all()
    assert abs(float(got[20000]) - 0.1) < 1e-3  # the recording after the burst is still there
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{path}: 101 NaN or infinite samples set to 0 (the first at 0.500 s)"]


def test_a_wav_with_no_audio_at_all_is_refused(tmp_path):
    path = _zero_sizes(_write_wav(tmp_path / "header.wav", np.zeros(0, np.float32)))
    with pytest.raises(AudioError, match=r"header\.wav: .*no samples"):
        list(read_blocks(path))


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


def test_a_build_resamples_each_recording_once(audio_dir, tmp_path, monkeypatch):
    """Inside ``keeping_decoded`` a recording streamed again comes from memory, sample for sample; a file that
    changed is decoded again, and outside the block nothing is kept."""
    import naturelm_edge.audio.decode as decode

    bat = next(p for p in sorted(audio_dir.rglob("*.wav")) if sf.info(str(p)).samplerate == 500000)
    fresh = np.concatenate(list(stream(bat, 16_000)))
    decoded = []
    real = decode._decoded
    monkeypatch.setattr(decode, "_decoded", lambda info, seconds: decoded.append(info.path) or real(info, seconds))
    with decode.keeping_decoded():
        first = np.concatenate(list(stream(bat, 16_000)))
        again = np.concatenate(list(stream(bat, 16_000, block_seconds=1.0)))
        copy = tmp_path / "copy.wav"
        sf.write(copy, np.zeros(16_000, np.float32), 16_000)
        stream_all = lambda: np.concatenate(list(stream(copy, 16_000)))  # noqa: E731
        assert not stream_all().any()
        sf.write(copy, np.ones(8_000, np.float32) * 0.5, 16_000)  # the same path, other samples
        changed = stream_all()
        assert changed.shape == (8_000,) and np.allclose(changed[100:-100], 0.5, atol=1e-3)
        assert np.array_equal(stream_all(), changed)  # the new version is the one kept
    np.concatenate(list(stream(bat, 16_000)))
    assert np.array_equal(first, fresh) and np.array_equal(again, fresh)
    assert decoded.count(bat) == 2 and decoded.count(copy) == 2  # bat: once inside, once after; copy: both versions
