"""Where example recordings come from: the user's files, the shared corpus, or a synthetic soundscape.

The shared corpus (``../shared/data/audio`` next to a checkout, or ``$NATURELM_EDGE_AUDIO``) is real field
audio; it is never copied into the package. When none is present, a synthetic soundscape (chirps, a
trill and noise) stands in so that every command still has something to verify on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ENV_VAR = "NATURELM_EDGE_AUDIO"


def shared_audio_dir() -> Path | None:
    """The shared recordings folder if one can be found."""
    candidates = [os.environ.get(ENV_VAR)] if os.environ.get(ENV_VAR) else []
    here = Path(__file__).resolve().parents[1]
    candidates += [str(here.parent / "shared" / "data" / "audio"), str(Path.cwd().parent / "shared" / "data" / "audio")]
    for candidate in candidates:
        path = Path(candidate)
        if path.is_dir() and any(path.iterdir()):
            return path
    return None


def pick_spread(files: list[Path], count: int) -> list[Path]:
    """``count`` files taken round-robin over their folders, so every source of recordings is represented."""
    groups: dict[Path, list[Path]] = {}
    for path in sorted(files):
        groups.setdefault(path.parent, []).append(path)
    picked: list[Path] = []
    queues = [list(group) for group in groups.values()]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(len(queue) // 2))
    return picked


def synthetic_soundscape(seconds: float = 30.0, sample_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Pink-ish background noise with bird-like chirps and an insect trill, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    noise = np.cumsum(rng.normal(0, 1, n)).astype(np.float64)
    noise = np.diff(noise, prepend=0) * 0.3 + noise * 0.002
    noise = noise / (np.max(np.abs(noise)) + 1e-9) * 0.02
    signal = noise
    for start in rng.uniform(0, seconds - 1.0, size=max(1, int(seconds / 4))):
        idx = (t >= start) & (t < start + 0.4)
        local = t[idx] - start
        freq = 2500 + 1500 * np.sin(2 * np.pi * 3 * local)
        signal[idx] += 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.hanning(idx.sum())
    trill = (t > seconds * 0.6) & (t < seconds * 0.8)
    signal[trill] += 0.1 * np.sin(2 * np.pi * 4500 * t[trill]) * (np.sin(2 * np.pi * 40 * t[trill]) > 0)
    return np.clip(signal, -1, 1).astype(np.float32)


SYNTHETIC_SPECIES = {
    # name: (start Hz, end Hz, call seconds, calls per clip, tremolo Hz)
    "Rising Chirper": (2000.0, 5000.0, 0.25, 6, 0.0),
    "Falling Whistler": (6000.0, 2500.0, 0.6, 4, 0.0),
    "Steady Trill": (4500.0, 4500.0, 1.5, 2, 40.0),
    "Low Hooter": (600.0, 500.0, 0.8, 3, 0.0),
}


def species_call(name: str, sample_rate: int) -> np.ndarray:
    """One call of a synthetic species: a Hann-windowed sweep from its start to its end frequency."""
    f0, f1, length, _, tremolo = SYNTHETIC_SPECIES[name]
    t = np.arange(int(length * sample_rate)) / sample_rate
    freq = f0 + (f1 - f0) * t / length
    call = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.hanning(t.size)
    if tremolo:
        call *= 0.5 + 0.5 * np.sin(2 * np.pi * tremolo * t)
    return call


def species_clip(name: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``seconds`` of faint noise with the species' calls at random times, as a focal recording of it."""
    wave = rng.normal(0, 0.01, int(seconds * sample_rate))
    call = species_call(name, sample_rate)
    length, calls = SYNTHETIC_SPECIES[name][2], SYNTHETIC_SPECIES[name][3]
    for start in rng.uniform(0.2, seconds - length - 0.2, calls):
        begin = int(start * sample_rate)
        wave[begin : begin + call.size] += 0.4 * call
    return np.clip(wave, -1, 1).astype(np.float32)


def write_synthetic_species(folder: Path, clips_per_species: int = 3, seconds: float = 12.0, sample_rate: int = 32000,
                            seed: int = 0) -> Path:
    """Labelled synthetic calls (four made-up species) plus a LABELS.csv, for demos without real recordings."""
    import csv

    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in SYNTHETIC_SPECIES:
        slug = name.lower().replace(" ", "-")
        for i in range(clips_per_species):
            path = folder / slug / f"{slug}-{i}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(str(path), species_clip(name, seconds, sample_rate, rng), sample_rate, subtype="PCM_16")
            rows.append({"path": f"{slug}/{path.name}", "species_common": name, "kind": "focal"})
    with (folder / "LABELS.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "species_common", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def species_soundscape(folder: Path, stretch_s: float = 10.0) -> tuple[np.ndarray, int, list[str]]:
    """A soundscape of the synthetic species written to ``folder``: the first ``stretch_s`` of each species'
    first clip in turn, then a quiet stretch.

    It replays recordings the demo's tiny teacher was taught on: a random-weight encoder memorises the clips it
    is shown and does not generalise to new ones, so fresh calls would show only that. Returns the audio, its
    rate, and per stretch the species calling in it ("" for the quiet one), so a demo can say what is right.
    """
    import soundfile as sf

    stretches, names, rate = [], [], 0
    for name in SYNTHETIC_SPECIES:
        slug = name.lower().replace(" ", "-")
        with sf.SoundFile(str(folder / slug / f"{slug}-0.wav")) as clip:
            rate = clip.samplerate
            stretches.append(clip.read(int(stretch_s * rate), dtype="float32"))
        names.append(name)
    stretches.append(np.random.default_rng(1).normal(0, 0.01, int(stretch_s * rate)).astype(np.float32))
    return np.concatenate(stretches), rate, [*names, ""]
