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

import functools
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
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
POOL = 32  # training windows kept to mix under an augmented view


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


@dataclass(frozen=True)
class ScoreWindows:
    """The windows of one recording still to ask about, each view as one group (``<recording>#<view>``): view
    0 as recorded, the others augmented (seeded by recording, view and window, with windows of the mix pool
    under them), so any process, on any machine, in any order, makes the same views."""

    spec: WindowSpec
    settings: FbankSettings
    seed: int
    pool: tuple[np.ndarray, ...]

    def __call__(self, unit: tuple[str, str, tuple[int, ...]]) -> Iterator[tuple[str, int, tuple]]:
        relative, path, views = unit
        windows = list(window_features(Path(path), self.spec, settings=self.settings))
        pool = self.pool or tuple(w.samples for w, _ in windows[::-1])
        name = int(hashlib.sha256(relative.encode()).hexdigest()[:8], 16)
        for view in views:
            for window, feats in windows:
                samples = window.samples
                if view:
                    local = np.random.default_rng([self.seed, name, view, window.start])
                    samples = augmented(samples, window.valid, pool[int(local.integers(len(pool)))], local,
                                        self.spec.sample_rate)
                    feats = fbank(samples, self.settings)
                yield f"{relative}#{view}", len(windows), (samples, feats.astype(np.float16), window.start)


def score_answers(teacher) -> Callable[[list[tuple]], list[tuple]]:  # noqa: ANN001 - a scores teacher's adapter
    """What the teacher answers on a batch of windows: (features, start, logits, embedding) each."""
    def answer(payloads: list[tuple]) -> list[tuple]:
        out = []
        for samples, feats, start in payloads:
            logits, embedding = teacher.run(samples)
            out.append((feats, start, logits.astype(np.float16), embedding.astype(np.float16)))
        return out
    return answer


def _loaded_answers(name: str) -> Callable[[list[tuple]], list[tuple]]:
    """:func:`score_answers` of a teacher loaded where it runs (a Ray actor), one thread (an actor per core)."""
    from naturelm_edge.teachers import teacher

    return score_answers(teacher(name).load(threads=1))


def mix_pool(files: list[Path], audio: Path, roles: dict[str, str], spec: WindowSpec, settings: FbankSettings,
             seed: int) -> tuple[np.ndarray, ...]:
    """Windows of up to eight training recordings (seeded choice, a few windows each) to mix under augmented
    views: only training audio, so no evaluation recording leaks into training."""
    train = sorted(p for p in files if roles[str(p.relative_to(audio))] == "train")
    chosen = np.random.default_rng(seed).permutation(len(train))[:8]
    pool: list[np.ndarray] = []
    for i in sorted(chosen):
        try:
            windows = [w.samples for w, _ in window_features(train[i], spec, settings=settings)]
        except AudioError:
            continue  # reported when the recording itself is asked about
        pool += windows[:: max(1, len(windows) // 4)][: POOL // 8]
    return tuple(pool)


def collect_scores(teacher, audio: Path, out: Path, spec: WindowSpec, settings: FbankSettings, views: int = 3,  # noqa: ANN001
                   seed: int = 0, progress: Progress | None = None, ray: str | None = None,
                   workers: int | None = None, batch: int = 32) -> dict:
    """Every window of ``audio`` answered by ``teacher`` (an adapter: ``.run(window) -> (logits, embedding)``,
    ``.identity`` with its ``name`` in the teacher table), cached in ``out``, here or on Ray (``ray``: ``local``,
    ``auto`` or ``ray://...``; each of ``workers`` actors loads the teacher by its name);
    returns counts and the recordings that could not be read."""
    files = list_audio(audio)
    if not files:
        raise EdgeError(f"{audio}: no recordings to ask the teacher about.")
    _fresh(out, {"teacher": teacher.identity, "spec": asdict(spec), "fbank": asdict(settings), "seed": seed, "pool": 2})
    roles = {str(p.relative_to(audio)): recording_role(str(p.relative_to(audio)), seed) for p in files}
    write_atomic(out / SPLIT, json.dumps(roles, indent=2, sort_keys=True) + "\n")
    wanted = {relative: range(views if role == "train" else 1) for relative, role in roles.items()}
    units = [(relative, str(audio / relative), pending) for relative in sorted(wanted)
             if (pending := tuple(v for v in wanted[relative] if not _file(out, relative, v).is_file()))]
    asking = sum(len(u[2]) for u in units)
    counts = {"recordings": len(files), "asked": 0, "views_reused": sum(map(len, wanted.values())) - asking,
              "unreadable": []}
    windows = ScoreWindows(spec, settings, seed, mix_pool(files, audio, roles, spec, settings, seed) if units else ())
    progress = progress or Progress(quiet=True)
    task = progress.add_task("teacher answers (recording views)", total=asking)
    if ray:
        from naturelm_edge.cluster.answers import answers_on_ray, connect

        connect(ray, workers)
        groups = answers_on_ray([(u[0], u) for u in units], windows, functools.partial(_loaded_answers, teacher.identity["name"]),
                                batch, workers)
    else:
        groups = _answers_here(units, windows, score_answers(teacher), batch)
    for group, found in groups:
        if isinstance(found, str):
            counts["unreadable"].append(found)
            progress.note(f"skipped: {found}")
            progress.update(task, advance=len(next(u[2] for u in units if u[0] == group)))
            continue
        relative, view = group.rsplit("#", 1)
        _write(_file(out, relative, int(view)), relative, found)
        counts["asked"] += len(found)
        progress.update(task, advance=1)
    if not any(out.glob("*.npz")):
        unreadable = counts["unreadable"]
        raise EdgeError(f"{audio}: none of its {len(files)} recordings gave the teacher a window to answer"
                        + (f" ({len(unreadable)} unreadable, the first: {unreadable[0].rstrip('.')})." if unreadable else "."))
    return counts


def _answers_here(units: list[tuple], windows: ScoreWindows, answer: Callable[[list[tuple]], list[tuple]],
                  batch: int) -> Iterator[tuple[str, list[tuple] | str]]:
    """The single-process route: :func:`answers_on_ray`'s groups, computed here one recording at a time."""
    for relative, path, views in units:
        try:
            rows = list(windows((relative, path, views)))
        except AudioError as err:
            yield relative, str(err)
            continue
        if not rows:
            continue  # nothing the window spec can cut (reported as no windows by the counts)
        results = [r for i in range(0, len(rows), batch) for r in answer([p for _, _, p in rows[i:i + batch]])]
        for view in views:
            group = f"{relative}#{view}"
            yield group, [r for (g, _, _), r in zip(rows, results) if g == group]


def _write(target: Path, relative: str, found: list[tuple]) -> None:
    """One recording view's answers as one file, written atomically (so a resumed run trusts what it finds)."""
    features, starts, logits, embedding = zip(*found)
    with atomic_path(target) as tmp, tmp.open("wb") as handle:
        np.savez(handle, features=np.stack(features), logits=np.stack(logits), embedding=np.stack(embedding),
                 starts=np.array(starts), recording=np.array(relative))


def scores_teacher(out: Path):  # noqa: ANN201 - the teacher's adapter
    """The adapter of the teacher whose answers ``out`` caches (named in its meta file), on one thread."""
    from naturelm_edge.teachers import teacher

    try:
        name = json.loads((out / META).read_text())["teacher"]["name"]
    except (OSError, ValueError, KeyError) as err:
        raise EdgeError(f"{out}: not a scores teacher's cache ({err}).") from err
    return teacher(name).load(threads=1)


def read_split(out: Path) -> dict[str, str]:
    return json.loads((out / SPLIT).read_text())


def recorded_answers(out: Path, relative: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(window starts, logits) of one recording as recorded (view 0), its features left unread; None when
    the cache does not hold it."""
    path = _file(out, relative, 0)
    if not path.is_file():
        return None
    with np.load(path) as stored:
        return stored["starts"], stored["logits"]


def load_scores(out: Path, role: str | tuple[str, ...], at_most: int | None = None) -> ScoreSet:
    """Every cached window of the recordings with ``role`` (or any of several; their first ``at_most`` views;
    None: all cached)."""
    roles = (role,) if isinstance(role, str) else role
    parts, recordings, starts, views = [], [], [], []
    for relative, its_role in sorted(read_split(out).items()):
        if its_role not in roles:
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
