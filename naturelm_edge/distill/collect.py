"""``edge distill collect``: ask a teacher every task for every window of a set of recordings."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.audio import DEFAULT_SETTINGS, WindowSpec, probe, window_features
from naturelm_edge.audio.files import list_audio
from naturelm_edge.distill.cache import CacheMeta, TeacherCache, cache_file_name, window_key
from naturelm_edge.distill.species import labels_for
from naturelm_edge.distill.tasks import Task, tasks_digest
from naturelm_edge.errors import AudioError, EdgeError
from naturelm_edge.models.full import FullModelOptions, NatureLMTeacher, Teacher, TeacherAnswer
from naturelm_edge.prompt import GenerationSettings

DEFAULT_TOP_K = 20
DEFAULT_BATCH = 32  # windows per forward pass: generation overhead is per call; 2 beams x 32 windows of KV cache are 3 GB at 8B


@dataclass
class CollectSummary:
    files: int = 0
    windows: int = 0
    asked: int = 0
    reused: int = 0
    failed: list[str] | None = None
    seconds: float = 0.0

    @property
    def answers_per_second(self) -> float:
        return self.asked / self.seconds if self.seconds else 0.0


@dataclass
class _Pending:
    """A window that still needs answers: its key, where it came from, its features, the tasks it lacks."""

    key: str
    file: str
    start_s: float
    valid_s: float
    features: np.ndarray
    tasks: list[Task]


@dataclass(frozen=True)
class TeacherSource:
    """How to load the teacher where it runs: a Ray actor loads its own from the same checkpoint path."""

    checkpoint: str
    options: FullModelOptions

    def load(self) -> Teacher:
        return NatureLMTeacher(self.checkpoint, self.options)


@dataclass(frozen=True)
class PendingWindows:
    """A recording's windows that lack an answer to some task (each window one group of one row)."""

    spec: WindowSpec
    tasks: tuple[Task, ...]

    def __call__(self, unit: tuple[str, str, frozenset[str]]) -> Iterator[tuple[str, int, _Pending]]:
        relative, path, done = unit
        for window, features in window_features(Path(path), self.spec):
            key = window_key(relative, window.start)
            pending = [t for t in self.tasks if f"{key}:{t.id}" not in done]
            if pending:
                yield key, 1, _Pending(key, relative, window.start / self.spec.sample_rate,
                                       window.valid / self.spec.sample_rate, features, pending)


def teacher_answers(teacher: Teacher, top_k: int, known: Callable[[str], np.ndarray | None] = lambda key: None,
                    ) -> Callable[[list[_Pending]], list[tuple]]:
    """What the teacher answers on a batch of windows: audio encoded once per window for every task (``known``
    gives tokens already cached), then one batched generation per task (prompts of one task are of equal
    length, so nothing is padded). Each window's result: (window, its new tokens or None, answers by task)."""
    def answer(batch: list[_Pending]) -> list[tuple]:
        if not batch:
            return []
        cached = [known(item.key) for item in batch]
        fresh = [i for i, tokens in enumerate(cached) if tokens is None]
        new: dict[int, np.ndarray] = {}
        if fresh:
            new = dict(zip(fresh, teacher.audio_tokens(np.stack([batch[i].features for i in fresh]))))
        tokens = np.stack([new[i] if i in new else cached[i] for i in range(len(batch))])
        answers: list[dict[str, TeacherAnswer]] = [{} for _ in batch]
        for task in {task.id: task for item in batch for task in item.tasks}.values():
            index = [i for i, item in enumerate(batch) if task in item.tasks]
            for i, found in zip(index, teacher.answer(tokens[index], task.question,
                                                      task.generation(GenerationSettings()), top_k)):
                answers[i][task.id] = found
        for item in batch:
            item.features = None  # the driver writes records, not audio features: keep the result small
        return [(item, new.get(i), answers[i]) for i, item in enumerate(batch)]
    return answer


def _loaded_answers(source: TeacherSource, top_k: int) -> Callable[[list[_Pending]], list[tuple]]:
    return teacher_answers(source.load(), top_k)


def _described(source: TeacherSource) -> dict:
    return _description(source.load())


def _description(teacher: Teacher) -> dict:
    """What the cache records of the teacher (its identity and its tokenizer's ids)."""
    return {"teacher": teacher.identity, "audio_dim": teacher.audio_dim, "bos_id": teacher.bos_id,
            "stop_ids": list(teacher.stop_ids), "prompt_template": teacher.prompt_template,
            "tokenizer_dir": teacher.tokenizer_dir}


class _Recorder:
    """The driver's side: a window's tokens and records into the cache (append-only, so resumable)."""

    def __init__(self, cache: TeacherCache, labels: dict, summary: CollectSummary) -> None:
        self.cache, self.labels, self.summary = cache, labels, summary

    def __call__(self, item: _Pending, tokens: np.ndarray | None, answers: dict[str, TeacherAnswer]) -> None:
        if tokens is not None and not self.cache.has_audio(item.key):
            self.cache.put_audio(item.key, tokens)
        self.cache.extend([{
            "key": f"{item.key}:{task}", "window": item.key, "file": item.file, "start_s": item.start_s,
            "valid_s": item.valid_s, "task": task, "label": self.labels.get(item.file), "text": answer.text,
            "token_ids": [int(i) for i in answer.token_ids], "stopped": answer.stopped,
            "logprobs": np.round(answer.logprobs, 5).tolist(),
            "topk_ids": answer.topk_ids.tolist(),
            "topk_logprobs": np.round(answer.topk_logprobs, 5).tolist(),
        } for task, answer in answers.items()])
        self.summary.asked += len(answers)


def collect(
    teacher: Teacher | TeacherSource,
    audio_root: Path,
    tasks: list[Task],
    out: Path,
    window_s: float = 10.0,
    hop_s: float = 5.0,
    top_k: int = DEFAULT_TOP_K,
    labels_file: Path | None = None,
    files: list[Path] | None = None,
    progress=None,  # noqa: ANN001 - rich.progress.Progress or None
    batch_size: int = DEFAULT_BATCH,
    ray: str | None = None,
    workers: int | None = None,
) -> CollectSummary:
    """Fill the cache at ``out``; resumes an interrupted collection of the same teacher and tasks.

    ``tasks`` carry their generation settings (see :meth:`Task.resolved`); they are part of the cache's task
    digest, so answers made with other settings are never mixed in. ``ray`` (``local``, ``auto`` or
    ``ray://...``; ``teacher`` then a :class:`TeacherSource`) asks a pool of ``workers`` teacher actors, one GPU
    each when the teacher's placement is a GPU, and fills the same cache.
    """
    audio_root = Path(audio_root)
    paths = files if files is not None else list_audio(audio_root)
    if not paths:
        raise EdgeError(f"{audio_root}: no audio files to collect from.")
    if ray:
        from naturelm_edge.cluster.answers import connect, remote_call

        connect(ray, workers)
        described = remote_call(_described, teacher, gpus=_gpus(teacher))
    else:
        teacher = teacher.load() if isinstance(teacher, TeacherSource) else teacher
        described = _description(teacher)
    tokenizer_dir = described.pop("tokenizer_dir")
    meta = CacheMeta(tasks_sha256=tasks_digest(tasks), window_s=window_s, hop_s=hop_s, top_k=top_k,
                     tasks=[t.__dict__ for t in tasks], **described)
    cache = TeacherCache(out, meta, tokenizer_dir)
    done: dict[str, set[str]] = {}
    for record in cache.records():
        done.setdefault(record["file"], set()).add(record["key"])
    spec = WindowSpec(window_s, hop_s, DEFAULT_SETTINGS.sample_rate)
    units = [(name, str(path), frozenset(done.get(name, ()))) for path in paths
             if (name := cache_file_name(path, audio_root))]
    summary = CollectSummary(failed=[], files=len(paths))
    summary.windows = _window_count(paths, spec) or 0
    summary.reused = sum(map(len, done.values()))
    record = _Recorder(cache, labels_for(audio_root, labels_file), summary)
    bar = progress.add_task("teacher answers (windows)", total=summary.windows) if progress else None
    _advance(progress, bar, summary.reused // max(1, len(tasks)), summary, time.perf_counter())  # resumed past
    started = time.perf_counter()
    windows = PendingWindows(spec, tuple(tasks))
    if ray:
        from naturelm_edge.cluster.answers import answers_on_ray

        groups = answers_on_ray([(u[0], u) for u in units], windows,
                                functools.partial(_loaded_answers, teacher, top_k), batch_size, workers, _gpus(teacher))
    else:
        def known(key: str) -> np.ndarray | None:
            return cache.audio(key) if cache.has_audio(key) else None

        groups = _answers_here(units, windows, teacher_answers(teacher, top_k, known), batch_size)
    for _, found in groups:
        if isinstance(found, str):
            summary.failed.append(found)  # reported by name; the other recordings go on
            summary.files -= 1
            continue
        for item, tokens, answers in found:
            record(item, tokens, answers)
        _advance(progress, bar, len(found), summary, started)
    summary.seconds = time.perf_counter() - started
    return summary


def _gpus(source: TeacherSource | Teacher) -> float:
    """One GPU per teacher actor when the teacher is placed on one."""
    placement = source.options.placement if isinstance(source, TeacherSource) else None
    return 1.0 if placement is not None and placement.device.startswith("cuda") else 0.0


def _answers_here(units: list[tuple], windows: PendingWindows, answer: Callable[[list[_Pending]], list[tuple]],
                  batch_size: int) -> Iterator[tuple[str, list[tuple] | str]]:
    """The single-process route: windows batched across recordings, each answered window one group."""
    batch: list[_Pending] = []
    for unit in units:
        try:
            for _, _, item in windows(unit):
                batch.append(item)
                if len(batch) >= batch_size:
                    yield from ((r[0].key, [r]) for r in answer(batch))
                    batch = []
        except AudioError as err:
            yield unit[0], str(err)
    yield from ((r[0].key, [r]) for r in answer(batch))


def _window_count(paths: list[Path], spec: WindowSpec) -> int | None:
    """Windows the recordings will give (from their headers), for the progress bar's total and ETA."""
    total = 0
    for path in paths:
        try:
            total += spec.windows_in(round(probe(path).duration_s * spec.sample_rate))
        except AudioError:
            pass  # reported when it is read
    return total


def _advance(progress, bar, windows: int, summary: CollectSummary, started: float) -> None:  # noqa: ANN001
    if progress is None:
        return
    rate = summary.asked / max(time.perf_counter() - started, 1e-9)
    progress.update(bar, advance=windows, description=f"teacher answers ({rate:.1f}/s)")
