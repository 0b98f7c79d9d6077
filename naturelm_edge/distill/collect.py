"""``edge distill collect``: ask a teacher every task for every window of a set of recordings."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.audio import WindowSpec, probe, window_features
from naturelm_edge.audio.files import list_audio
from naturelm_edge.distill.cache import CacheMeta, TeacherCache, cache_file_name, window_key
from naturelm_edge.distill.species import labels_for
from naturelm_edge.distill.tasks import Task, tasks_digest
from naturelm_edge.errors import AudioError, EdgeError
from naturelm_edge.models.full import Teacher, TeacherAnswer
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


class _Asker:
    """Asks the teacher for a batch of windows at once: audio encoded once per window for every task, then
    one batched generation per task (prompts of one task are of equal length, so nothing is padded)."""

    def __init__(self, teacher: Teacher, cache: TeacherCache, labels: dict, top_k: int, summary: CollectSummary,
                 done: set[str]) -> None:
        self.teacher, self.cache, self.labels, self.top_k = teacher, cache, labels, top_k
        self.summary, self.done = summary, done

    def __call__(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        fresh = [i for i, item in enumerate(batch) if not self.cache.has_audio(item.key)]
        if fresh:
            encoded = self.teacher.audio_tokens(np.stack([batch[i].features for i in fresh]))
            for i, tokens in zip(fresh, encoded):
                self.cache.put_audio(batch[i].key, tokens)
        tokens = np.stack([self.cache.audio(item.key) for item in batch])
        tasks = {task.id: task for item in batch for task in item.tasks}
        for task in tasks.values():
            index = [i for i, item in enumerate(batch) if task in item.tasks]
            answers = self.teacher.answer(tokens[index], task.question, task.generation(GenerationSettings()),
                                          self.top_k)
            for i, answer in zip(index, answers):
                self._record(batch[i], task, answer)

    def _record(self, item: _Pending, task: Task, answer: TeacherAnswer) -> None:
        key = f"{item.key}:{task.id}"
        self.cache.append({
            "key": key, "window": item.key, "file": item.file, "start_s": item.start_s, "valid_s": item.valid_s,
            "task": task.id, "label": self.labels.get(item.file), "text": answer.text,
            "token_ids": [int(i) for i in answer.token_ids], "stopped": answer.stopped,
            "logprobs": np.round(answer.logprobs, 5).tolist(),
            "topk_ids": answer.topk_ids.tolist(),
            "topk_logprobs": np.round(answer.topk_logprobs, 5).tolist(),
        })
        self.done.add(key)
        self.summary.asked += 1


def collect(
    teacher: Teacher,
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
) -> CollectSummary:
    """Fill the cache at ``out``; resumes an interrupted collection of the same teacher and tasks.

    ``tasks`` carry their generation settings (see :meth:`Task.resolved`); they are part of the cache's task
    digest, so answers made with other settings are never mixed in.
    """
    audio_root = Path(audio_root)
    meta = CacheMeta(
        teacher=teacher.identity,
        tasks_sha256=tasks_digest(tasks),
        window_s=window_s,
        hop_s=hop_s,
        top_k=top_k,
        tasks=[t.__dict__ for t in tasks],
        audio_dim=teacher.audio_dim,
        bos_id=teacher.bos_id,
        stop_ids=list(teacher.stop_ids),
        prompt_template=teacher.prompt_template,
    )
    cache = TeacherCache(out, meta, teacher.tokenizer_dir)
    done = cache.done_keys()
    labels = labels_for(audio_root, labels_file)
    paths = files if files is not None else list_audio(audio_root)
    if not paths:
        raise EdgeError(f"{audio_root}: no audio files to collect from.")
    spec = WindowSpec(window_s, hop_s, 16_000)
    summary = CollectSummary(failed=[])
    ask = _Asker(teacher, cache, labels, top_k, summary, done)
    bar = progress.add_task("teacher answers (windows)", total=_window_count(paths, spec)) if progress else None
    started = time.perf_counter()
    batch: list[_Pending] = []
    for path in paths:
        relative = cache_file_name(path, audio_root)
        try:
            for window, features in window_features(path, spec):
                summary.windows += 1
                key = window_key(relative, window.start)
                pending = [t for t in tasks if f"{key}:{t.id}" not in done]
                summary.reused += len(tasks) - len(pending)
                if pending:
                    batch.append(_Pending(key, relative, window.start / spec.sample_rate,
                                          window.valid / spec.sample_rate, features, pending))
                if len(batch) >= batch_size:
                    ask(batch)
                    _advance(progress, bar, len(batch), summary, started)
                    batch = []
                elif not pending:
                    _advance(progress, bar, 1, summary, started)
            summary.files += 1
        except AudioError as err:
            summary.failed.append(str(err))  # reported by name; the other recordings go on
    ask(batch)
    _advance(progress, bar, len(batch), summary, started)
    summary.seconds = time.perf_counter() - started
    return summary


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
