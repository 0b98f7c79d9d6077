"""Continuous hours of real sites, BirdNET's verdict on each window, and the screening judged against it.

``benchmarks/site_hours.py`` measures on full hours; the detector's tests run the same code on half a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testbed.mixing import insert, loudest

HIGH = 48_000  # BirdNET's rate: the hours are made and judged at it
DUTY_FILES_PER_HOUR = 48  # ten-second files of the duty-cycled recorder, for an hour of the other kinds
LOW = 16_000  # the bundle's (NatureLM's) rate: the screening runs at it
BACKGROUNDS = ("birdvoxdetect/BirdVox-scaper_example_background.wav",
               "birdvoxdetect/ff3d3feb-3371-44ad-a3b3-85969c2cd5ab.wav",
               "birdvoxdetect/fd79e55d-d3a3-4083-aba1-4f00b545c3d6.wav",
               "birdvoxdetect/BirdVox-full-night_unit03_00-19-45_01min.wav",
               "opensoundscape/1min.wav", "opensoundscape/metadata.wav", "opensoundscape/birds_10s.wav",
               "batdetect2/Echometer.wav", "batdetect2/Audiomoth.WAV", "batdetect2/0166_20240531_223911.wav",
               "batdetect2/0166_20240602_225340.wav")
MIXED_SNRS = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
REFERENCE_HOP_S = 1.0  # BirdNET's 3 s chunks start every second: each second of a 10 s window lies in one inside it
# (one every 3 s, as BirdNET-Analyzer reads a file, judged the window at 10-20 s on 12-18 s alone)


@dataclass
class Hour:
    """One stream (or a recorder's files) with BirdNET's verdict per 10 s window and what was put where."""

    kind: str
    fold: int
    files: list[np.ndarray]  # 16 kHz, in recorder order
    truth: list[list[bool | None]] = field(default_factory=list)  # per file, per window
    placed: list[list[tuple[int, int, str, float]]] = field(default_factory=list)  # per file: start, end (16 kHz
    # samples), group, SNR of each inserted call
    windows: list[list[tuple]] = field(default_factory=list)  # per file: edge-run's (window, fbank), see windowed()


def bed(backgrounds: list[np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``seconds`` of the backgrounds in turn, each stretch from a random offset, gain drifting +-4 dB."""
    size, parts, made = int(seconds * HIGH), [], 0
    while made < size:
        bg = backgrounds[len(parts) % len(backgrounds)]
        piece = np.roll(bg, int(rng.integers(bg.shape[0])))[: min(bg.shape[0], size - made, 60 * HIGH)]
        parts.append(piece)
        made += piece.shape[0]
    out = np.concatenate(parts).astype(np.float32)
    drift = np.sin(np.linspace(0, 2 * np.pi * seconds / 1800, out.shape[0], dtype=np.float32) + rng.uniform(0, 6))
    return np.clip(out * (10 ** (4 * drift / 20)).astype(np.float32), -1, 1)  # a recorder clips at full scale


def cycled(values: tuple[float, ...]) -> Callable[[int, np.random.Generator], float]:
    return lambda k, rng: values[k % len(values)]


def drawn(low: float, high: float) -> Callable[[int, np.random.Generator], float]:
    return lambda k, rng: float(rng.uniform(low, high))


def placed_calls(out: np.ndarray, calls: list[tuple[str, np.ndarray]], gap_s: tuple[float, float],
                 snr_of: Callable[[int, np.random.Generator], float], rng: np.random.Generator,
                 at_most: int | None = None) -> list[tuple]:
    """Calls inserted into ``out`` (in place) every ``gap_s`` (the k-th at ``snr_of(k)`` dB), at most ``at_most``."""
    placed, at = [], int(rng.uniform(*gap_s) * HIGH)
    while at < out.shape[0] - HIGH and (at_most is None or len(placed) < at_most):
        group, call = calls[int(rng.integers(len(calls)))]
        snr = snr_of(len(placed), rng)
        out[at:at + call.shape[0]] = insert(out[at:at + call.shape[0]], call, 0, snr)  # the span only: an hour is 0.7 GB
        placed.append((at * LOW // HIGH, (at + call.shape[0]) * LOW // HIGH, group, snr))
        at += int(rng.uniform(*gap_s) * HIGH)
    return placed


def hours_of(fold: int, backgrounds: list[np.ndarray], calls: dict[str, list], minutes: float,
             rng: np.random.Generator) -> list[tuple[str, list[tuple[np.ndarray, list]]]]:
    """(kind, [(48 kHz audio, placed calls)] in recorder order) of one fold."""
    seconds = minutes * 60
    every = [c for group in calls.values() for c in group]
    made = []
    mixed = []
    for bg in backgrounds:  # a stretch per background, calls of every group
        audio = bed([bg], seconds / len(backgrounds), rng)
        mixed.append((audio, placed_calls(audio, every, (15, 45), cycled(MIXED_SNRS), rng)))
    made.append(("mixed", [(np.concatenate([a for a, _ in mixed]), _shifted(mixed))]))
    caller = calls["bird"][fold % len(calls["bird"])]
    audio = bed(backgrounds, seconds, rng)
    made.append(("persistent caller", [(audio, placed_calls(audio, [caller], (2.5, 5.0), drawn(3, 9), rng))]))
    audio = bed(backgrounds[:1], seconds, rng)
    audio *= 1e-3 / max(float(np.sqrt(np.mean(audio ** 2))), 1e-12)  # -60 dBFS
    made.append(("quiet site", [(audio, placed_calls(audio, every, (30, 90), drawn(0, 10), rng))]))
    audio = bed(backgrounds[1:2] or backgrounds, seconds, rng)
    made.append(("dawn chorus", [(audio, placed_calls(audio, calls["bird"], (0.7, 2.0), drawn(0, 15), rng))]))
    files = []
    count = max(4, round(DUTY_FILES_PER_HOUR * minutes / 60))  # the CI smoke run's half minute: 4 files, not 48
    for i in range(count):
        audio = bed([backgrounds[i % len(backgrounds)]], 10.0, rng) * 10 ** (6 * np.sin(2 * np.pi * i / count) / 20)
        files.append((audio, placed_calls(audio, every, (1, 6), drawn(0, 10), rng, at_most=1) if i % 2 else []))
    made.append(("duty-cycled", files))
    return made


def _shifted(parts: list[tuple[np.ndarray, list]]) -> list[tuple]:
    """The placed calls of consecutive stretches on the joined stream's clock."""
    out, offset = [], 0
    for audio, placed in parts:
        out += [(s + offset, e + offset, g, snr) for s, e, g, snr in placed]
        offset += audio.shape[0] * LOW // HIGH
    return out


def verdicts(chunks: list[float], samples: int, hop_s: float) -> list[bool | None]:
    """BirdNET's verdict on each 10 s / 5 s window edge-run makes of ``samples`` (16 kHz) from the confidence of
    its best animal class in each 3 s chunk (one every ``hop_s``): a call when a chunk inside reaches CALL,
    call-free when none reaches CALL_FREE, undecided (None) between
    (:func:`naturelm_edge.detection.labels.verdict`)."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.detection.labels import verdict
    from naturelm_edge.teachers.birdnet import CHUNK_S

    spec = WindowSpec()
    truth = []
    for i in range(spec.windows_in(samples)):
        start, end = i * spec.hop_s, i * spec.hop_s + spec.window_s
        inside = [c for k, c in enumerate(chunks) if start <= k * hop_s and k * hop_s + CHUNK_S <= max(end, CHUNK_S)]
        best = max(inside, default=0.0)
        truth.append(verdict(best))
    return truth


def reference(audio: np.ndarray, listener) -> list[bool | None]:  # noqa: ANN001 - teachers.birdnet.BirdNET
    """BirdNET's verdict on each window edge-run makes of 48 kHz ``audio``."""
    return verdicts([c for _, c in listener.chunks(audio, REFERENCE_HOP_S)], audio.shape[0] * LOW // HIGH,
                    REFERENCE_HOP_S)


def field_labels(audio: Path, rows: list[dict], listener) -> dict[str, list[bool | None]]:  # noqa: ANN001 - BirdNET
    """BirdNET's verdict on each window of every shared non-bat recording (a focal clip's windows are never
    call-free: it holds a call BirdNET may not know), by path."""
    from naturelm_edge.audio.decode import load

    found = {}
    for row in rows:
        if row["group"] != "bat":
            truth = reference(load(audio / row["path"], HIGH), listener)
            found[row["path"]] = [None if t is False and row["kind"] == "focal" else t for t in truth]
    return found


def birdnet_labelled(audio: Path, rows: list[dict], field_set: dict[str, list], exclude: tuple[str, ...]) -> list:
    """The detector's training recordings labelled as a reference hears them: BirdNET's verdict per window of
    every field recording (undecided windows left out), and for the bats it cannot hear, LABELS.csv's."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.detection.labels import LabelledRecording, recordings_from_labels

    hop = WindowSpec().hop
    labelled = [LabelledRecording(audio / path, None, 1.0, {i * hop: t for i, t in enumerate(truth) if t is not None})
                for path, truth in field_set.items() if not path.startswith(exclude)]
    bats = [r for r in rows if r["group"] == "bat" and not r["path"].startswith(exclude)]
    return [r for r in labelled if r.windows] + recordings_from_labels(audio, bats)


def call_clips(audio: Path, rows: list[dict], rng: np.random.Generator) -> tuple[dict[str, list], tuple[str, ...]]:
    """The loudest 3 s of focal clips by group (24 birds, every non-bat, non-bird clip) at 48 kHz, and their paths."""
    from naturelm_edge.audio.decode import load

    birds = [r for r in rows if r["kind"] == "focal" and r["path"].startswith("phoebe/")]
    others = [r for r in rows if r["kind"] == "focal" and r["group"] not in ("bat", "bird") and ".hq." not in r["path"]]
    chosen = [birds[i] for i in rng.choice(len(birds), 24, replace=False)] + others
    found: dict[str, list] = {}
    for r in chosen:
        found.setdefault(r["group"], []).append((r["group"], loudest(load(audio / r["path"], HIGH), 3.0, HIGH)))
    return found, tuple(r["path"] for r in chosen)


def windowed(hour: Hour) -> float:
    """Fills ``hour.windows`` with the windows and fbank edge-run computes of each file, once for every
    configuration screened (the front end does not depend on the detector). Its CPU seconds."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.audio.frontend import stream_features

    started = time.process_time()
    hour.windows = [list(stream_features([audio], WindowSpec())) for audio in hour.files]
    return time.process_time() - started


def screen(hour: Hour, detector, recorder: str) -> tuple[list[list[bool]], float]:  # noqa: ANN001 - Detector or None
    """edge-run's screening over the hour's files in order (one recorder: its floors carried on), on the
    recorder's audio clock; the models' verdict on a passed window is the reference's. Kept per window, and the
    CPU seconds of the gate and detector (the front end's are ``windowed``'s)."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.edge_runtime.gate import EnergyGate, GateSettings
    from naturelm_edge.edge_runtime.screening import ANSWER, HEARD, Screening

    if not hour.windows:
        windowed(hour)
    screening = Screening(EnergyGate(GateSettings()), detector, WindowSpec().window)
    kept, clock, started = [], 0.0, time.process_time()
    for audio, windows, truth in zip(hour.files, hour.windows, hour.truth):
        screening.begin(recorder)
        passed = []
        for (window, features), verdict in zip(windows, truth):
            outcome = screening(window, features, at_s=clock + window.start / LOW).outcome
            if outcome == ANSWER:
                screening.answered(verdict is not False)
            passed.append(outcome in (ANSWER, HEARD))
        kept.append(passed)
        clock += audio.shape[0] / LOW
    return kept, time.process_time() - started


def judged(hours: list[Hour], kept: list[list[list[bool]]]) -> dict:
    """Recall of reference-positive windows (by hour kind, group and SNR of the call inside) and the refused
    share of reference-negative windows (by hour kind, and of those that hold no inserted call: a call-free
    window by BirdNET may hold an inserted insect or a call too faint for it, which the screening should keep),
    with counts and 95 % intervals."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.distill.agreement import share

    hits: dict[str, list[bool]] = {}
    refused: dict[str, list[bool]] = {}
    spec = WindowSpec()
    for hour, per_file in zip(hours, kept):
        for truth, passed, placed in zip(hour.truth, per_file, hour.placed):
            for i, (t, p) in enumerate(zip(truth, passed)):
                start, end = i * spec.hop, i * spec.hop + spec.window
                inside = [(g, snr) for s, e, g, snr in placed if s < end and e > start]
                if t is False:
                    refused.setdefault(hour.kind, []).append(not p)
                    refused.setdefault("all", []).append(not p)
                    if not inside:  # BirdNET hears nothing and nothing was put there: background alone
                        refused.setdefault("no call inserted", []).append(not p)
                if t is not True:
                    continue
                keys = ["all", hour.kind] + [f"group:{g}" for g in {g for g, _ in inside}]
                if hour.kind == "mixed" and inside:
                    keys.append(f"snr:{max(snr for _, snr in inside):+.0f}")
                for key in keys:
                    hits.setdefault(key, []).append(p)
    return {"recall": {k: share(sum(v), len(v)) for k, v in sorted(hits.items())},
            "refused": {k: share(sum(v), len(v)) for k, v in sorted(refused.items())}}


def fold_hours(fold: int, backgrounds: list[np.ndarray], calls: dict[str, list], minutes: float,
               rng: np.random.Generator, listener) -> list[Hour]:  # noqa: ANN001 - teachers.birdnet.BirdNET
    """A fold's hours with BirdNET's verdicts, at the screening's rate."""
    from naturelm_edge.audio.resample import resample

    hours = []
    for kind, files in hours_of(fold, backgrounds, calls, minutes, rng):
        hour = Hour(kind, fold, [resample(a, HIGH, LOW).astype(np.float32) for a, _ in files])
        hour.truth = [reference(a, listener) for a, _ in files]
        hour.placed = [p for _, p in files]
        hours.append(hour)
        print(f"fold {fold}: {kind}, {sum(a.shape[0] for a in hour.files) / LOW / 60:.0f} min", flush=True)
    return hours
