"""Where the detector's window labels come from: a LABELS.csv, or what a model answered for each window.

Field users rarely have labels, but they have a teacher: NatureLM answers the detection question ("What are
the common names for the species in the audio, if any?") with "None" when nothing calls, so its answers
cached by ``edge distill collect`` label every window of the user's own unlabelled recordings. A LABELS.csv
labels whole recordings (focal: a call somewhere in it; background: none). Benchmarks and tests also label
windows with BirdNET's detections (:mod:`naturelm_edge.teachers.birdnet`), through the same per-window form.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.audio import WindowSpec, probe
from naturelm_edge.errors import EdgeError
from naturelm_edge.prompt import names_something

ULTRASONIC_HZ = 96_000  # above this a recording is of bats or insects: read it slowed down, as bat workers do
BAT_TIME_EXPANSION = 10.0
DETECTION_KIND = "detection"  # the task kind whose answers say whether anything calls (distill/tasks.py)
# a scores teacher's (BirdNET's) confidence in its best animal class: a window reaching CALL holds a call, one
# below CALL_FREE holds none, one between is undecided (left out of training, and of any figure judged on it)
CALL, CALL_FREE = 0.5, 0.1
UNJUDGED = ("train", "validation", "calibration")  # a scores cache's recordings its build's report does not judge


class DetectorError(EdgeError):
    """Training data that cannot teach a detector (one class only, no readable audio, no usable labels)."""


@dataclass(frozen=True)
class LabelledRecording:
    """A recording and what is known of it: one label for the whole of it, or one per window.

    ``windows`` maps a window's first sample (at the window spec's rate) to whether something calls in it;
    windows it does not name are left out of training (a model that was unsure, a window never asked).
    """

    path: Path
    call: bool | None
    time_expansion: float = 1.0
    windows: Mapping[int, bool] | None = None

    def label_at(self, start: int) -> bool | None:
        return self.call if self.windows is None else self.windows.get(start)


def expansion_for(path: Path) -> float:
    """Ultrasonic recordings are read slowed down ``BAT_TIME_EXPANSION`` times; audible ones as they are."""
    return BAT_TIME_EXPANSION if probe(path).sample_rate > ULTRASONIC_HZ else 1.0


def verdict(confidence: float) -> bool | None:
    """A call (True), none (False) or undecided (None), from a scores teacher's best animal confidence."""
    return True if confidence >= CALL else False if confidence < CALL_FREE else None


def recordings_from_scores(cache_dir: Path, audio_root: Path, spec: WindowSpec, animal: np.ndarray,
                           roles: tuple[str, ...]) -> list[LabelledRecording]:
    """Per-window labels from a scores teacher's cache (``edge build --teacher birdnet-v2.4``): its
    :func:`verdict` on each window of the recordings with one of ``roles`` (the cache's split by recording),
    as recorded (augmented views are the student's, not the site's). Windows at starts other than the
    bundle's hop are left out; ``animal`` masks the teacher's labels that are calls."""
    from naturelm_edge.distill.scores import read_split, recorded_answers
    from naturelm_edge.edge_runtime.scores import sigmoid

    try:
        split = read_split(cache_dir)
    except (OSError, ValueError) as err:
        raise DetectorError(f"{cache_dir}: not a scores teacher's cache ({err}).") from err
    found = []
    for relative, role in sorted(split.items()):
        answers = recorded_answers(cache_dir, relative) if role in roles else None
        if answers is None:
            continue
        starts, logits = answers
        best = sigmoid(np.where(animal, logits.astype(np.float32), -np.inf).max(axis=1))
        windows = {int(start): call for start, confidence in zip(starts, best)
                   if int(start) % spec.hop == 0 and (call := verdict(float(confidence))) is not None}
        if windows and (audio_root / relative).is_file():
            found.append(LabelledRecording(audio_root / relative, None, 1.0, windows))
    if not found:
        raise DetectorError(f"{cache_dir}: no window of the {'/'.join(roles)} recordings is decided (teacher "
                            f"confidence >= {CALL} or < {CALL_FREE}).")
    return found


def recordings_from_labels(audio_root: Path, rows: Iterable[dict]) -> list[LabelledRecording]:
    """Calls from ``focal`` rows and call-free audio from ``background`` rows of a LABELS.csv.

    Unlabelled soundscapes say nothing per window and are left out.
    """
    out = []
    for row in rows:
        if row.get("kind") not in ("focal", "background"):
            continue
        path = audio_root / row["path"]
        if path.is_file():
            out.append(LabelledRecording(path, row["kind"] == "focal", expansion_for(path)))
    return out


def read_label_rows(labels_path: Path, exclude: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a LABELS.csv whose path is under none of the ``exclude`` folders."""
    import csv

    try:
        with labels_path.open(newline="") as handle:
            return [r for r in csv.DictReader(handle) if not (exclude and r.get("path", "").startswith(exclude))]
    except OSError as err:
        raise DetectorError(f"{labels_path}: cannot read the labels ({err.strerror}).") from err


def recordings_from_teacher(cache_dir: Path, audio_root: Path, spec: WindowSpec,
                            exclude: tuple[str, ...] = ()) -> list[LabelledRecording]:
    """Per-window labels from a teacher cache: the detection task's "None" is call-free, any name a call.

    The windows are read as the teacher heard them (no time expansion); the cache must use the bundle's
    window length, and windows at other starts than the bundle's hop are left out. A scores teacher's cache
    (``edge build --teacher birdnet-v2.4``'s) gives the teacher's :func:`verdict` per window instead, on the
    recordings its build's report does not judge.
    """
    from naturelm_edge.distill.cache import CacheError, TeacherCache
    from naturelm_edge.distill.scores import SPLIT, scores_teacher

    if (cache_dir / SPLIT).is_file():
        animal = scores_teacher(cache_dir).animal
        return [r for r in recordings_from_scores(cache_dir, audio_root, spec, animal, UNJUDGED)
                if not str(r.path.relative_to(audio_root)).startswith(exclude)]

    try:
        cache = TeacherCache(cache_dir)
    except CacheError as err:
        raise DetectorError(f"{cache_dir}: not a teacher cache from `edge distill collect` ({err}).") from err
    detection = {t["id"] for t in cache.meta.tasks if t.get("kind") == DETECTION_KIND}
    if not detection:
        raise DetectorError(f"{cache_dir}: the teacher was never asked a detection question (a task of kind "
                            f"'{DETECTION_KIND}'); collect with the default task file or add one.")
    if abs(cache.meta.window_s - spec.window_s) > 1e-6:
        raise DetectorError(f"{cache_dir}: the teacher answered {cache.meta.window_s:g} s windows and the bundle "
                            f"reads {spec.window_s:g} s ones; collect again with --window {spec.window_s:g}.")
    windows: dict[str, dict[int, bool]] = defaultdict(dict)
    for record in cache.records():
        if record["task"] in detection and not record["file"].startswith(exclude):
            windows[record["file"]][round(record["start_s"] * spec.sample_rate)] = names_something(record["text"])
    if not windows:
        raise DetectorError(f"{cache_dir}: the cache holds no detection answers for recordings that are not excluded.")
    return [LabelledRecording(audio_root / file, None, 1.0, labels) for file, labels in sorted(windows.items())
            if (audio_root / file).is_file()]
