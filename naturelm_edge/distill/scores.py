"""A scores teacher's answers (logits over its labels and its embedding) on every window of a folder: what a
classifier student learns from, cached so it is asked once.

Recordings, never windows, are split: each recording's role (train, validation, calibration, evaluation) comes
from a hash of its path, so a recording's windows never sit on both sides, and adding recordings never moves
another one. Training recordings are also read in ``views - 1`` augmented copies (gain, another recording
mixed in, a shift, noise) that the teacher answers too; the others only as they are. Each (recording, view)
is one ``.npz`` written atomically once the teacher answered all its windows, so an interrupted run resumes
where it stopped; a cache made with another teacher, window or fbank is cleared, never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.atomic import atomic_path, write_atomic
from naturelm_edge.audio import FbankSettings, WindowSpec, fbank, window_features
from naturelm_edge.audio.files import list_audio
from naturelm_edge.distill.encoder import augmented
from naturelm_edge.errors import AudioError, EdgeError
from naturelm_edge.progress import Progress

ROLES = ("train", "validation", "calibration", "evaluation")
SHARES = (0.6, 0.1, 0.05, 0.25)  # of recordings, in ROLES order
META, SPLIT = "meta.json", "recordings.json"
POOL = 32  # windows kept from earlier recordings to mix under a training view


def recording_role(relative: str, seed: int = 0) -> str:
    """The role of one recording: a hash of its path against :data:`SHARES`."""
    u = int(hashlib.sha256(f"{seed}:{relative}".encode()).hexdigest()[:12], 16) / 16**12
    edge = 0.0
    for role, share in zip(ROLES, SHARES):
        edge += share
        if u < edge:
            return role
    return ROLES[-1]


@dataclass
class ScoreSet:
    """Windows with the teacher's answers: fbank (float16), logits over every teacher label, embedding."""

    features: np.ndarray
    logits: np.ndarray
    embedding: np.ndarray
    recordings: list[str]
    starts: np.ndarray
    views: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])


def _file(out: Path, relative: str, view: int) -> Path:
    return out / f"{hashlib.sha256(relative.encode()).hexdigest()[:16]}-{view}.npz"


def _fresh(out: Path, meta: dict) -> None:
    """Clear a cache made with other settings (its answers would not be the teacher's for these windows)."""
    path = out / META
    if path.is_file() and json.loads(path.read_text()) != meta:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def collect_scores(teacher, audio: Path, out: Path, spec: WindowSpec, settings: FbankSettings, views: int = 3,  # noqa: ANN001
                   seed: int = 0, progress: Progress | None = None) -> dict:
    """Every window of ``audio`` answered by ``teacher`` (``.run(window) -> (logits, embedding)``), cached in
    ``out``; returns counts and the recordings that could not be read."""
    files = list_audio(audio)
    if not files:
        raise EdgeError(f"{audio}: no recordings to ask the teacher about.")
    _fresh(out, {"teacher": teacher.identity, "spec": asdict(spec), "fbank": asdict(settings), "seed": seed})
    roles = {str(p.relative_to(audio)): recording_role(str(p.relative_to(audio)), seed) for p in files}
    write_atomic(out / SPLIT, json.dumps(roles, indent=2, sort_keys=True) + "\n")
    rng, pool = np.random.default_rng(seed), []
    counts = {"recordings": len(files), "asked": 0, "reused": 0, "unreadable": []}
    progress = progress or Progress(quiet=True)
    task = progress.add_task("teacher answers", total=len(files))
    for path in files:
        relative = str(path.relative_to(audio))
        wanted = range(views if roles[relative] == "train" else 1)
        try:
            windows = list(window_features(path, spec, settings=settings))
        except AudioError as err:
            counts["unreadable"].append(str(err))
            progress.update(task, advance=1)
            continue
        for view in wanted:
            target = _file(out, relative, view)
            if target.is_file():
                counts["reused"] += len(windows)
                continue
            _answer(teacher, windows, view, relative, target, pool or [w.samples for w, _ in windows[::-1]], seed,
                    spec, settings)
            counts["asked"] += len(windows)
        for window, _ in windows[:: max(1, len(windows) // 4)]:  # a few windows of each recording to mix later
            if len(pool) < POOL:
                pool.append(window.samples)
            else:
                pool[int(rng.integers(POOL))] = window.samples
        progress.update(task, advance=1)
    return counts


def _answer(teacher, windows: list, view: int, relative: str, target: Path, pool: list[np.ndarray],  # noqa: ANN001
            seed: int, spec: WindowSpec, settings: FbankSettings) -> None:
    """The teacher's answers on one view of one recording's windows, written as one file (each augmentation
    seeded by the recording, view and window, so a resumed run makes the same views)."""
    name = int(hashlib.sha256(relative.encode()).hexdigest()[:8], 16)
    features, logits, embedding = [], [], []
    for window, feats in windows:
        samples = window.samples
        if view:
            local = np.random.default_rng([seed, name, view, window.start])
            samples = augmented(samples, window.valid, pool[int(local.integers(len(pool)))], local, spec.sample_rate)
            feats = fbank(samples, settings)
        answer, embedded = teacher.run(samples)
        features.append(feats.astype(np.float16)), logits.append(answer.astype(np.float16))
        embedding.append(embedded.astype(np.float16))
    with atomic_path(target) as tmp, tmp.open("wb") as handle:
        np.savez(handle, features=np.stack(features), logits=np.stack(logits), embedding=np.stack(embedding),
                 starts=np.array([w.start for w, _ in windows]), recording=np.array(relative))


def read_split(out: Path) -> dict[str, str]:
    return json.loads((out / SPLIT).read_text())


def load_scores(out: Path, role: str, at_most: int | None = None) -> ScoreSet:
    """Every cached window of the recordings with ``role`` (their first ``at_most`` views; None: all cached)."""
    parts, recordings, starts, views = [], [], [], []
    for relative, its_role in sorted(read_split(out).items()):
        if its_role != role:
            continue
        view = 0
        while (at_most is None or view < at_most) and (path := _file(out, relative, view)).is_file():
            with np.load(path) as stored:
                parts.append((stored["features"], stored["logits"], stored["embedding"]))
                starts.append(stored["starts"])
            recordings += [relative] * parts[-1][0].shape[0]
            views.append(np.full(parts[-1][0].shape[0], view))
            view += 1
    if not parts:
        return ScoreSet(np.zeros((0, 0, 0), np.float16), np.zeros((0, 0), np.float16), np.zeros((0, 0), np.float16),
                        [], np.zeros(0, int), np.zeros(0, int))
    return ScoreSet(*(np.concatenate([p[i] for p in parts]) for i in range(3)), recordings, np.concatenate(starts),
                    np.concatenate(views))
