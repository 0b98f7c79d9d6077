"""The privacy filter: people talking next to a recorder leave no audio on the device, by any path.

Real speech (``../shared/data/speech``) is mixed into real field recordings at seeded offsets and levels
(SNR -5 to +20 dB); every file a run writes is then searched for it."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import soundfile as sf

from naturelm_edge.audio import load
from naturelm_edge.bundle import roles
from naturelm_edge.edge_runtime.speech import SpeechFilter, stretches_of
from naturelm_edge.privacy.silero import STREAMING_MODEL, silero_file
from testbed.bundles import without
from tests.helpers import events, run_edge

RATE = 16_000
TOAD = "opensoundscape/great_plains_toad.wav"


@pytest.fixture(scope="module")
def speech(request):
    root = request.config.rootpath.parent / "shared" / "data" / "speech"
    return [load(root / name, RATE) for name in ("jfk.flac", "multilingual.mp3", "stereo_diarization.wav")]


def _speech(background: np.ndarray, talks: list[tuple[np.ndarray, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Speech (talk, at_s, snr_db over ``background``) to add to ``background``, scaled with it so that the sum
    never clips; returns (background, speech), both scaled."""
    added = np.zeros_like(background)
    for talk, at_s, snr_db in talks:
        start = int(at_s * RATE)
        talk = talk[: background.shape[0] - start]
        gain = np.sqrt(np.mean(background**2) / np.mean(talk**2) * 10 ** (snr_db / 10))
        added[start : start + talk.shape[0]] += gain * talk
    scale = min(1.0, 0.99 / np.abs(background + added).max())
    return background * scale, added * scale


def _speech_on_disk(out, added: np.ndarray, background: np.ndarray) -> list[str]:
    """Files under ``out`` holding the added speech: stored audio whose difference from the background
    correlates with the speech at any window position, or the mixture's raw float32 samples anywhere."""
    mixture = background + added
    speaking = np.flatnonzero(np.abs(added) > 0.05 * np.abs(added).max())
    probes = [mixture[i : i + 64].astype(np.float32).tobytes() for i in speaking[:: max(1, len(speaking) // 20)]]
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(probe in data for probe in probes):
            found.append(f"{path.name}: raw samples")
            continue
        audio = np.load(path) if path.suffix == ".npy" else (sf.read(str(path), dtype="float32")[0]
                                                             if path.suffix in (".flac", ".wav") else None)
        if audio is None:
            continue
        # a stored window: compare with every window position of the added speech (hop 5 s)
        for start in range(0, added.shape[0], 5 * RATE):
            part = added[start : start + audio.shape[0]]
            if part.shape[0] < audio.shape[0] or not part.any():
                continue
            residual = audio - background[start : start + audio.shape[0]]
            if np.corrcoef(residual, part)[0, 1] > 0.3:
                found.append(f"{path.name}: speech of {start / RATE:.0f} s")
    return found


def test_the_speech_model_is_silero_frame_for_frame(speech):
    """One onnxruntime call per window scores every frame exactly as Silero's streaming model does."""
    import onnxruntime as ort

    wave = speech[0][: 10 * RATE]
    ours = SpeechFilter(silero_file()).probabilities(wave)
    stock = ort.InferenceSession(str(silero_file(STREAMING_MODEL)), providers=["CPUExecutionProvider"])
    state, context, theirs = np.zeros((2, 1, 128), np.float32), np.zeros((1, 64), np.float32), []
    padded = np.pad(wave, (0, -wave.shape[0] % 512))
    for i in range(0, padded.shape[0], 512):
        frame = padded[None, i : i + 512]
        out, state = stock.run(None, {"input": np.concatenate([context, frame], 1), "state": state,
                                      "sr": np.array(RATE, np.int64)})
        context, theirs = frame[:, -64:], theirs + [out[0, 0]]
    assert np.abs(ours - np.array(theirs)).max() < 1e-5
    assert ours.max() > 0.9  # a man talking


def test_a_voice_far_below_full_scale_is_still_heard(speech):
    """A recorder's gain is set for faint animals: speech at -70 dBFS RMS is scored at one level and caught."""
    speech_filter = SpeechFilter(silero_file())
    wave = speech[0][: 10 * RATE]
    quiet = wave * (3e-4 / np.sqrt(np.mean(wave**2)))
    as_recorded = stretches_of(speech_filter.probabilities(quiet), speech_filter.settings, quiet.shape[0])
    assert not as_recorded  # Silero alone misses it at this level
    assert len(speech_filter.stretches(quiet)) >= 2
    assert speech_filter.stretches(np.zeros(10 * RATE, np.float32)) == []  # silence is not raised into speech


@pytest.mark.parametrize("mode", ["drop", "mask"])
def test_no_speech_sample_reaches_the_disk(bundle, subset_audio, speech, tmp_path, mode):
    rng = np.random.default_rng(7)
    toad = load(subset_audio / TOAD, RATE)[: 40 * RATE]
    talks = [(talk[: int(rng.uniform(4, 8) * RATE)], at_s + rng.uniform(0, 2), float(rng.uniform(-5, 20)))
             for talk, at_s in zip(speech, (3.0, 17.0, 31.0))]
    background, added = _speech(toad, talks)
    path = tmp_path / "field-with-people.wav"
    sf.write(str(path), background + added, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    result = run_edge("--bundle", str(bundle), str(path), "--no-gate", "--no-detector", "--threshold", "1.01",
                      "--privacy", mode, "-q", "--out", str(out))
    assert result.returncode == 0, result.stderr
    found = events(out)
    if mode == "drop":
        talking = [e for e in found if e["answer"] == "human speech"]
        assert len(talking) >= 5 and all(e["clip_path"] is None and e["escalation_status"] == "none" for e in talking)
    else:
        assert not [e for e in found if e["answer"] == "human speech"] and len(found) == 7
    assert _speech_on_disk(out, added, background) == []
    kept = run_edge("--bundle", str(bundle), str(path), "--no-gate", "--no-detector", "--threshold", "1.01",
                    "--privacy", "off", "-q", "--out", str(tmp_path / "off"))
    assert kept.returncode == 0 and _speech_on_disk(tmp_path / "off", added, background)  # the search finds it


def test_audio_kept_for_a_window_is_masked_when_the_next_hears_speech(bundle, subset_audio, speech, tmp_path):
    """Speech that starts in the last 0.15 s of a window is too short for that window's check; the next
    window hears it, and the audio kept for the first (clip and escalation) is zeroed there before it is sent.
    (The recording of the man starts with 0.35 s of silence: his first word is at 9.85 s.)"""
    background, added = _speech(load(subset_audio / TOAD, RATE)[: 20 * RATE], [(speech[0][: 6 * RATE], 9.5, 10.0)])
    path = tmp_path / "late.wav"
    sf.write(str(path), background + added, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    result = run_edge("--bundle", str(bundle), str(path), "--no-gate", "--no-detector", "--threshold", "1.01",
                      "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    first = next(e for e in events(out) if e["offset_s"] == 0.0)
    assert first["answer"] != "human speech" and first["clip_path"]
    clip, _ = sf.read(first["clip_path"], dtype="float32")
    assert np.all(clip[int(9.85 * RATE) :] == 0) and np.any(clip[: 9 * RATE] != 0)
    (queued,) = sqlite3.connect(out / "events.db").execute(
        "SELECT audio_path FROM escalations WHERE event_id = ?", (first["id"],)).fetchone()
    assert np.all(np.load(queued)[int(9.85 * RATE) :] == 0)
    assert '"masked_after": 1' in result.stdout


def test_recordings_without_people_lose_nothing_to_the_filter(bundle, subset_audio, tmp_path):
    files = [str(subset_audio / TOAD), *map(str, sorted((subset_audio / "phoebe").glob("*.mp3"))[:6])]
    runs = {}
    for mode in ("drop", "off"):
        out = tmp_path / mode
        assert run_edge("--bundle", str(bundle), *files, "--no-gate", "-q", "--out", str(out)
                        , "--privacy", mode).returncode == 0
        runs[mode] = [(e["source"], e["offset_s"], e["answer"]) for e in events(out)]
    assert runs["drop"] == runs["off"] and runs["off"]


def test_a_bundle_without_the_speech_model_refuses_to_start(bundle, subset_audio, tmp_path):
    bare = without(bundle, tmp_path / "bare", roles.SPEECH)
    args = ["--bundle", str(bare), str(subset_audio / TOAD), "-q", "--out", str(tmp_path / "out")]
    refused = run_edge(*args)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "has no speech model" in refused.stderr and "edge bundle add-speech" in refused.stderr
    assert not (tmp_path / "out" / "events.db").exists()
    allowed = run_edge(*args, "--privacy", "off")
    assert allowed.returncode == 0 and "privacy filter off" in allowed.stderr
