"""Screening judged by a reference nobody here made: BirdNET v2.4 on the shared field recordings, and calls of
every group mixed into the shared backgrounds at known SNRs.

Run: ``python -m benchmarks.screening [--seed 0] [--out benchmarks/results/screening]`` (needs the ``birdnet``
extra). Three sets, every window as edge-run makes it (10 s, 5 s hop, 16 kHz):

- **field**: every shared recording but the bats (whombat's hand-drawn boxes judge those, in
  ``benchmarks/gate.py``); a window is reference-positive when BirdNET's best animal class reaches 0.5 in a
  3 s chunk inside it; a window of a soundscape or background is reference-negative when no chunk reaches 0.1
  (between the two, and focal clips' windows BirdNET hears nothing in: undecided, not counted).
- **duty-cycled**: 10 s files as a Song Meter writes them (one recorder, one folder, time-stamped names, a
  file every 15 minutes), each one of the shared backgrounds at a gain that drifts over the day, half of them with one
  call (focal clips of every group: birds, the toad chorus, grouse drumming, whale, dog, insects) at a random
  offset and an SNR from -20 to +20 dB over the call's span; the inserted call is the reference.
- **continuous**: one hour of the backgrounds looped, calls inserted the same way, as one stream.

For each screening configuration: recall of reference windows per group, per call band (where the call's
energy peaks) and per SNR; the share of reference-negative windows refused; CPU seconds per audio hour of
the screening (fbank included: a refused window costs its fbank). Writes screening.json/.md/.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread, as the targets say (and BLAS does not spin)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import machine, pyplot, recordings_dir  # noqa: E402
from testbed.mixing import RATE, insert, loudest  # noqa: E402

SNRS_DB = (-20.0, -15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
BANDS = ((0.0, 1000.0, "low (<1 kHz)"), (1000.0, 4000.0, "mid (1-4 kHz)"), (4000.0, 8000.1, "high (4-8 kHz)"))
POSITIVE, NEGATIVE = 0.5, 0.1  # BirdNET confidence: a call is heard / nothing is
CALL_S = 3.0  # the loudest stretch of a focal clip that is inserted
BACKGROUNDS = ("birdvoxdetect/BirdVox-scaper_example_background.wav",
               "birdvoxdetect/ff3d3feb-3371-44ad-a3b3-85969c2cd5ab.wav")


@dataclass
class Recording:
    """One file (or stream) as the device reads it, with the reference for each of its windows."""

    name: str
    recorder: str | None  # files of one recorder carry the noise floor on; None: a file alone
    audio: np.ndarray  # 16 kHz
    truth: list[bool | None] = field(default_factory=list)  # per window; None: undecided
    group: str = ""
    band: str = ""
    snr_db: float | None = None
    placed: list[tuple[int, int, str, str, float]] = field(default_factory=list)  # a stream's calls: start, end,
    # group, band, SNR (sample indices); a stream is judged call by call, a file by its windows


def band_of(call: np.ndarray) -> str:
    """The band holding most of the call's power above the clip's own steady noise (loud frames' power less
    quiet frames', per frequency: a focal clip's rumble is loud but steady, so it does not count)."""
    from scipy.signal import stft

    freqs, _, z = stft(call, RATE, nperseg=1024)
    power = np.abs(z) ** 2
    excess = np.maximum(np.quantile(power, 0.9, axis=1) - np.quantile(power, 0.2, axis=1), 0) * (freqs >= 100)
    peak = float(freqs[int(np.argmax(np.convolve(excess, np.ones(5), "same")))])
    return next(name for low, high, name in BANDS if low <= peak < high)


def windows_of(samples: int, spec) -> Iterator[tuple[int, int]]:  # noqa: ANN001 - WindowSpec
    """(start, end) sample of each window edge-run makes of ``samples``: a hop apart, as many as it gives."""
    for i in range(spec.windows_in(samples)):
        yield i * spec.hop, i * spec.hop + spec.window


def field_set(audio: Path, rows: list[dict], listener) -> list[Recording]:  # noqa: ANN001 - Listener
    """Every shared non-bat recording with BirdNET's verdict on each of its windows."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.audio.decode import load
    from naturelm_edge.teachers.birdnet import CHUNK_S, SAMPLE_RATE

    spec, found = WindowSpec(), []
    for row in rows:
        if row["group"] == "bat":
            continue
        wave = load(audio / row["path"], RATE)
        loud = load(audio / row["path"], SAMPLE_RATE)
        chunks = listener.chunks(loud)
        truth = []
        for start, end in windows_of(wave.shape[0], spec):
            inside = [c for i, (_, c) in enumerate(chunks)
                      if start / RATE <= i * CHUNK_S and (i + 1) * CHUNK_S <= max(end / RATE, CHUNK_S)]
            best = max(inside, default=0.0)
            negative = best < NEGATIVE and row["kind"] != "focal"  # a focal clip holds a call BirdNET may not know
            truth.append(True if best >= POSITIVE else False if negative else None)
        found.append(Recording(row["path"], None, wave, truth, row["group"] if row["kind"] == "focal" else row["kind"]))
    return found


def calls(audio: Path, rows: list[dict], rng: np.random.Generator) -> list[tuple[str, str, np.ndarray]]:
    """(group, name, loudest 3 s) of focal clips of every non-bat group: up to 12 birds, every other clip."""
    from naturelm_edge.audio.decode import load

    birds = [r for r in rows if r["kind"] == "focal" and r["path"].startswith("phoebe/")]
    others = [r for r in rows if r["kind"] == "focal" and r["group"] != "bat" and not r["path"].startswith("phoebe/")
              and ".hq." not in r["path"]]
    chosen = [birds[i] for i in rng.choice(len(birds), 12, replace=False)] + others
    return [(r["group"], r["path"], loudest(load(audio / r["path"], RATE), CALL_S)) for r in chosen]


def duty_cycled(backgrounds: list[np.ndarray], clips: list, rng: np.random.Generator, files: int = 96) -> list[Recording]:
    """A day of a duty-cycled recorder: 10 s every 15 minutes, gain drifting, half the files with a call."""
    from naturelm_edge.audio import WindowSpec

    spec, made = WindowSpec(), []
    for i in range(files):
        drift = 10 ** (6 * np.sin(2 * np.pi * i / files) / 20)  # +-6 dB over the day: dawn, noon, dusk
        bg = backgrounds[i // 2 % len(backgrounds)][: 10 * RATE] * drift  # calls and call-free files in both
        name = f"SMA01234_20260501_{i * 15 // 60:02d}{i * 15 % 60:02d}00.wav"
        if i % 2:
            made.append(Recording(name, "duty", bg.astype(np.float32), [False] * spec.windows_in(bg.shape[0])))
            continue
        group, _, call = clips[(i // 2) % len(clips)]
        snr = float(SNRS_DB[(i // 2) % len(SNRS_DB)])
        at = int(rng.integers(0, bg.shape[0] - call.shape[0]))
        made.append(Recording(name, "duty", insert(bg, call, at, snr).astype(np.float32),
                              [True] * spec.windows_in(bg.shape[0]), group, band_of(call), snr))
    return made


def continuous(backgrounds: list[np.ndarray], clips: list, rng: np.random.Generator, minutes: int = 60) -> list[Recording]:
    """One stream of ``minutes``: each background looped for half of it at a slowly drifting gain, a call every
    30-90 s; its windows' truth is whether they hold any of the calls it lists in ``placed``."""
    from naturelm_edge.audio import WindowSpec

    spec = WindowSpec()
    half = minutes * 3  # each background looped for half the stream: the place's sound changes once, not every 10 s
    bg = np.concatenate([backgrounds[i // half % len(backgrounds)][: 10 * RATE] for i in range(minutes * 6)])
    bg = bg * 10 ** (4 * np.sin(np.linspace(0, 2 * np.pi, bg.shape[0])) / 20)
    truth = np.zeros(bg.shape[0], bool)
    placed = []
    at = int(rng.integers(30, 90) * RATE)
    while at + CALL_S * RATE < bg.shape[0]:
        k = len(placed)
        group, _, call = clips[k % len(clips)]
        snr = float(SNRS_DB[k % len(SNRS_DB)])
        bg = insert(bg, call, at, snr)
        truth[at: at + call.shape[0]] = True
        placed.append((at, at + call.shape[0], group, band_of(call), snr))
        at += int(rng.integers(30, 90) * RATE)
    return [Recording("continuous", "stream", bg.astype(np.float32),
                      [bool(truth[s:e].any()) for s, e in windows_of(bg.shape[0], spec)], placed=placed)]


Screen = Callable[[Recording], list[bool]]


def gate_screen(settings, carry: bool = True, detector=None) -> tuple[Screen, list[float]]:  # noqa: ANN001
    """edge-run's screening (fbank, gate, then the detector when given) over each recording in order; a window
    is kept when the models answer it or an answered window already covered its calls (HEARD). CPU seconds
    collected in the returned list."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.audio.frontend import stream_features
    from naturelm_edge.edge_runtime.gate import EnergyGate
    from naturelm_edge.edge_runtime.screening import ANSWER, HEARD, Screening

    spec = WindowSpec()
    screening, cpu = Screening(EnergyGate(settings), detector, spec.window), [0.0]

    def screen(recording: Recording) -> list[bool]:
        started = time.process_time()
        screening.begin(recording.recorder if carry else None)
        passed = [screening(window, features).outcome in (ANSWER, HEARD)
                  for window, features in stream_features([recording.audio], spec)]
        cpu[0] += time.process_time() - started
        return passed

    return screen, cpu


def judge(recordings: list[Recording], screen: Screen) -> dict:
    """Recall per group, band and SNR, refused share of reference negatives, for one configuration."""
    from naturelm_edge.audio import WindowSpec

    hits: dict[str, list[bool]] = {}
    refused: list[bool] = []

    def count(key: str, kept: bool) -> None:
        hits.setdefault(key, []).append(kept)

    for recording in recordings:
        passed = screen(recording)
        if recording.placed:  # the continuous stream: a call is kept when a window holding it passes
            spans = list(windows_of(recording.audio.shape[0], WindowSpec()))
            for start, end, group, band, snr in recording.placed:
                kept = any(p for p, (s, e) in zip(passed, spans) if s <= start and end <= e)
                for key in ("continuous", f"group:{group}", f"band:{band}", f"snr:{snr:+.0f}"):
                    count(key, kept)
            refused += [not p for p, t in zip(passed, recording.truth) if not t]
            continue
        positives = [p for p, t in zip(passed, recording.truth) if t]
        refused += [not p for p, t in zip(passed, recording.truth) if t is False]
        if not positives:
            continue
        if recording.snr_db is None:  # a field recording: every window where BirdNET hears a call
            for p in positives:
                count("field", p)
                count(f"field:{recording.group}", p)
        else:  # a duty-cycled file with one call: kept when any of its windows passes
            kept = any(positives)
            for key in ("duty-cycled", f"group:{recording.group}", f"band:{recording.band}",
                        f"snr:{recording.snr_db:+.0f}"):
                count(key, kept)
    recall = {k: {"n": len(v), "recall": sum(v) / len(v)} for k, v in sorted(hits.items())}
    return {"recall": recall, "refused": {"n": len(refused), "share": sum(refused) / max(1, len(refused))}}


def configurations() -> dict[str, tuple]:
    """Name -> (GateSettings, carry the floor across a recorder's files)."""
    from naturelm_edge.edge_runtime.gate import GateSettings

    legacy = dict(low_hz=500.0, per_bin_floor=False, margin_db=10.0, rise=0.05)  # the gate before #14
    found = {"v1: 500 Hz-8 kHz, one floor per file": (GateSettings(**legacy), False),
             "v2: default": (GateSettings(), True),
             "v2, a floor per file": (GateSettings(), False)}
    for margin in (4.0, 6.0, 8.0, 10.0, 15.0, 20.0):
        found[f"v2 margin {margin:g} dB"] = (GateSettings(margin_db=margin), True)
    return found


def held_back(clips: list) -> tuple[str, ...]:
    """What no detector here trains on: the backgrounds and calls the mixed sets are made of, the held-out
    species folders and the call-free files the gate benchmark judges (paths or folders of the audio root)."""
    from testbed.corpus import CALL_FREE, HELD_OUT

    return tuple(sorted({*BACKGROUNDS, *(name for _, name, _ in clips), *HELD_OUT, *(name for name, _ in CALL_FREE)}))


def birdnet_labelled(audio: Path, rows: list[dict], field: list[Recording], exclude: tuple[str, ...]) -> list:
    """The detector's training recordings labelled as a reference hears them: BirdNET's verdict per window of
    every field recording (undecided windows left out), and for the bats it cannot hear, LABELS.csv's."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.detection.labels import LabelledRecording, recordings_from_labels

    spec = WindowSpec()
    labelled = [LabelledRecording(audio / r.name, None, 1.0,
                                  {i * spec.hop: t for i, t in enumerate(r.truth) if t is not None})
                for r in field if not r.name.startswith(exclude)]
    bats = [r for r in rows if r["group"] == "bat" and not r["path"].startswith(exclude)]
    return [r for r in labelled if r.windows] + recordings_from_labels(audio, bats)


def trained_detector(recordings: list, seed: int, work: Path):  # noqa: ANN201 - edge_runtime Detector
    """`edge detector train`'s training (data, fit, threshold on held-back windows, ONNX) on these recordings."""
    import onnxruntime as ort

    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.detection.training import DetectorConfig, build_data, export_detector, train_detector
    from naturelm_edge.edge_runtime.detector import Detector

    config = DetectorConfig(seed=seed)
    trained = train_detector(build_data(recordings, WindowSpec(), config), config,
                             lambda line: print(f"  seed {seed}: {line}", flush=True))
    path = work / f"detector-{seed}.onnx"
    section = export_detector(trained, path, WindowSpec())
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    detector = Detector(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), trained.threshold)
    return detector, section["validation"]


def detector_configurations(audio: Path, rows: list[dict], field: list[Recording], exclude: tuple[str, ...],
                            seeds: tuple[int, ...], work: Path) -> dict[str, tuple]:
    """Name -> (GateSettings, carry, detector, its validation): the default gate with a detector trained on
    BirdNET's labels (one per seed) and one on LABELS.csv (as `edge detector train` does by default); each as
    edge-run runs it (the bundle's threshold, raised by the recorder's site floor) and with the bundle's
    threshold alone."""
    from naturelm_edge.detection.labels import read_label_rows, recordings_from_labels
    from naturelm_edge.edge_runtime.detector import Detector
    from naturelm_edge.edge_runtime.gate import GateSettings

    sources = {f"v2 + detector, BirdNET labels, seed {seed}": (birdnet_labelled(audio, rows, field, exclude), seed)
               for seed in seeds}
    sources["v2 + detector, LABELS.csv, seed 0"] = (
        recordings_from_labels(audio, read_label_rows(audio / "LABELS.csv", exclude)), 0)
    found = {}
    for name, (recordings, seed) in sources.items():
        print(f"training {name} on {len(recordings)} recordings", flush=True)
        detector, validation = trained_detector(recordings, seed, work)
        found[name] = (GateSettings(), True, detector, validation)
        found[f"{name}, no site floor"] = (GateSettings(), True, Detector(detector.session, detector.threshold,
                                                                            site=None), validation)
    return found


def bat_recall(audio: Path, detector) -> float:  # noqa: ANN001 - Detector
    """Share of whombat's hand-drawn bat boxes that some window reaching the models holds."""
    from naturelm_edge.edge_runtime.gate import GateSettings
    from testbed.screening import annotated_outcomes, measures

    outcomes = annotated_outcomes(audio, GateSettings(), detector)
    keep = (lambda g, s: g) if detector is None else (lambda g, s: g and s >= detector.threshold)
    return measures(outcomes, keep)["whombat"]["recall"]


def measure(audio: Path, seed: int, detector_seeds: tuple[int, ...], work: Path) -> dict:
    from naturelm_edge.audio.decode import load
    from naturelm_edge.teachers.birdnet import BirdNET as Listener

    rows = list(csv.DictReader((audio / "LABELS.csv").open()))
    rng = np.random.default_rng(seed)
    backgrounds = [load(audio / name, RATE) for name in BACKGROUNDS]
    clips = calls(audio, rows, rng)
    sets = {"field": field_set(audio, rows, Listener()), "duty-cycled": duty_cycled(backgrounds, clips, rng),
            "continuous": continuous(backgrounds, clips, rng)}
    hours = sum(r.audio.shape[0] for s in sets.values() for r in s) / RATE / 3600
    exclude = held_back(clips)
    configs = {name: (*config, None, None) for name, config in configurations().items()}
    if detector_seeds:
        configs |= detector_configurations(audio, rows, sets["field"], exclude, detector_seeds, work)
    # a detector is judged on recordings none of them trained on: the field set's held-back recordings
    held = {**sets, "field": [r for r in sets["field"] if r.name.startswith(exclude)]}
    gate_screen(configurations()["v2: default"][0])[0](sets["field"][0])  # warm-up: first-call costs not counted
    results = {}
    for name, (settings, carry, detector, validation) in configs.items():
        screen, cpu = gate_screen(settings, carry, detector)
        judged = {set_name: judge(recordings, screen) for set_name, recordings in (held if detector else sets).items()}
        results[name] = {"settings": settings.__dict__, "carry_floor": carry, "sets": judged,
                         "cpu_s_per_audio_hour": cpu[0] / hours, "detector": validation,
                         "bat_recall": bat_recall(audio, detector) if detector or name == "v2: default" else None}
        print(f"{name}: {summary(results[name])}", flush=True)
    return {"machine": machine(), "seed": seed, "audio_hours": hours, "configurations": results,
            "held_back": list(exclude),
            "targets": {"field_recall": 0.97, "mixed_recall_snr_ge_0": 0.95, "refused": 0.60, "cpu_s_per_hour": 10.0,
                        "bat_recall": 0.95}}


def mixed_recall(result: dict, min_snr: float = 0.0) -> float:
    kept = [(v["recall"], v["n"]) for s in ("duty-cycled", "continuous") for k, v in result["sets"][s]["recall"].items()
            if k.startswith("snr:") and float(k[4:]) >= min_snr]
    return sum(r * n for r, n in kept) / max(1, sum(n for _, n in kept))


def refused(result: dict) -> float:
    sets = result["sets"].values()
    return sum(s["refused"]["share"] * s["refused"]["n"] for s in sets) / max(1, sum(s["refused"]["n"] for s in sets))


def summary(result: dict) -> str:
    field_recall = result["sets"]["field"]["recall"].get("field", {"recall": float("nan")})["recall"]
    return (f"field recall {field_recall:.1%}, mixed recall at SNR >= 0 dB {mixed_recall(result):.1%}, "
            f"refused {refused(result):.1%}, {result['cpu_s_per_audio_hour']:.1f} CPU-s/h")


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "screening.json").write_text(json.dumps(result, indent=2) + "\n")
    configs = result["configurations"]
    lines = ["# Screening judged by BirdNET v2.4 and by calls mixed at known SNRs", "",
             f"{result['machine'].get('processor', '')}; {result['audio_hours']:.2f} h of audio; seed {result['seed']}. "
             "Targets: field recall >= 97 %, mixed recall >= 95 % at SNR >= 0 dB, refused >= 60 % of "
             "reference-negative windows, <= 10 CPU-s per audio hour.", "",
             "| configuration | field recall | mixed recall, SNR >= 0 dB | mixed recall, all SNRs | refused | "
             "whombat bat boxes | CPU-s per audio hour |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in configs.items():
        f = r["sets"]["field"]["recall"].get("field", {"recall": float("nan"), "n": 0})
        bats = "" if r.get("bat_recall") is None else f"{r['bat_recall']:.1%}"
        lines.append(f"| {name} | {f['recall']:.1%} (n={f['n']}) | {mixed_recall(r):.1%} | {mixed_recall(r, -99.0):.1%} | "
                     f"{refused(r):.1%} | {bats} | {r['cpu_s_per_audio_hour']:.1f} |")
    lines += ["", "Detectors are trained with `edge detector train`'s code on every shared recording but those held back "
              f"({', '.join(result.get('held_back', []))}), and judged on the held-back field recordings (n above) and "
              "the mixed sets, which are made of held-back backgrounds and calls only."]
    for name, r in configs.items():
        lines += ["", f"## {name}", "", "| set | reference | n | kept |", "|---|---|---:|---:|"]
        lines += [f"| {s} | {k} | {v['n']} | {v['recall']:.1%} |" for s, judged in r["sets"].items()
                  for k, v in judged["recall"].items()]
        lines += [f"| {s} | refused of reference-negative | {j['refused']['n']} | {j['refused']['share']:.1%} |"
                  for s, j in r["sets"].items()]
    (out / "screening.md").write_text("\n".join(lines) + "\n")
    plot(result, out / "screening.png")


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, r in result["configurations"].items():
        if "margin" in name:
            continue
        snrs = sorted({float(k[4:]) for s in ("duty-cycled", "continuous") for k in r["sets"][s]["recall"]
                       if k.startswith("snr:")})
        axes[0].plot(snrs, [mixed_recall_at(r, snr) for snr in snrs], marker="o", label=name)
    axes[0].set_xlabel("SNR (dB)")
    axes[0].set_ylabel("recall of inserted calls")
    axes[0].legend(fontsize=7)
    v2 = sorted(((name, r) for name, r in result["configurations"].items() if name.startswith("v2 margin")),
                key=lambda item: refused(item[1]))
    for label, min_snr, marker in (("mixed, SNR >= 0 dB", 0.0, "s-"), ("mixed, all SNRs (-20..+20 dB)", -99.0, "o-")):
        axes[1].plot([refused(r) for _, r in v2], [mixed_recall(r, min_snr) for _, r in v2], marker, label=label)
    for name, r in v2:
        axes[1].annotate(name.split("margin ")[1], (refused(r), mixed_recall(r, -99.0)), fontsize=7)
    legacy = next(r for name, r in result["configurations"].items() if name.startswith("v1"))
    axes[1].plot([refused(legacy)], [mixed_recall(legacy, -99.0)], "kx", label="v1 (before #14), all SNRs")
    detectors = [(name, r) for name, r in result["configurations"].items() if "detector" in name]
    for floor, marker, label in ((True, "g^", "+ detector (seeds), SNR >= 0 dB"),
                                 (False, "rv", "+ detector, no site floor, SNR >= 0 dB")):
        chosen = [r for name, r in detectors if ("no site floor" not in name) == floor]
        axes[1].plot([refused(r) for r in chosen], [mixed_recall(r) for r in chosen], marker, label=label)
    axes[1].set_xlabel("refused share of reference-negative windows")
    axes[1].set_ylabel("recall of inserted calls")
    axes[1].set_title("v2 over margins: the trade-off")
    axes[1].legend(fontsize=7)
    default = result["configurations"]["v2: default"]
    groups = sorted({k for s in default["sets"].values() for k in s["recall"] if k.startswith("group:")})
    values = [sum(s["recall"][g]["recall"] * s["recall"][g]["n"] for s in default["sets"].values() if g in s["recall"])
              / sum(s["recall"][g]["n"] for s in default["sets"].values() if g in s["recall"]) for g in groups]
    axes[2].bar([g[6:] for g in groups], values)
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("v2 default: recall of inserted calls per group")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def mixed_recall_at(result: dict, snr: float) -> float:
    kept = [(v["recall"], v["n"]) for s in ("duty-cycled", "continuous") for k, v in result["sets"][s]["recall"].items()
            if k == f"snr:{snr:+.0f}"]
    return sum(r * n for r, n in kept) / max(1, sum(n for _, n in kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="train a detector per seed on BirdNET's labels (none: the gate alone)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "screening")
    args = parser.parse_args()
    audio = recordings_dir(args.audio)
    with tempfile.TemporaryDirectory(prefix="nle-screening-") as work:
        result = measure(audio, args.seed, tuple(args.detector_seeds), Path(work))
    write(result, args.out)
    print((args.out / "screening.md").read_text().split("\n## ")[0])


if __name__ == "__main__":
    main()
