"""``edge distill collect``: ask a teacher every task for every window of a set of recordings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.audio import WindowSpec, window_features
from naturelm_edge.audio.files import list_audio
from naturelm_edge.distill.cache import CacheMeta, TeacherCache, window_key
from naturelm_edge.distill.species import labels_for
from naturelm_edge.distill.tasks import Task, tasks_digest
from naturelm_edge.distill.teacher import Teacher
from naturelm_edge.errors import AudioError, EdgeError

DEFAULT_TOP_K = 20


@dataclass
class CollectSummary:
    files: int = 0
    windows: int = 0
    asked: int = 0
    reused: int = 0
    failed: list[str] | None = None


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
) -> CollectSummary:
    """Fill the cache at ``out``; resumes an interrupted collection of the same teacher and tasks."""
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
    task_bar = progress.add_task("teacher answers", total=len(paths)) if progress else None
    for path in paths:
        relative = str(path.relative_to(audio_root)) if path.is_relative_to(audio_root) else str(path)
        try:
            for window, features in window_features(path, spec):
                summary.windows += 1
                key = window_key(relative, window.start)
                pending = [t for t in tasks if f"{key}:{t.id}" not in done]
                summary.reused += len(tasks) - len(pending)
                if not pending:
                    continue
                if cache.has_audio(key):
                    tokens = cache.audio(key)[None]
                else:
                    tokens = teacher.audio_tokens(features[None])
                    cache.put_audio(key, tokens[0])
                for task in pending:
                    answer = teacher.answer(tokens, task.question, task.max_new_tokens, top_k)[0]
                    cache.append({
                        "key": f"{key}:{task.id}", "window": key, "file": relative,
                        "start_s": window.start / spec.sample_rate, "valid_s": window.valid / spec.sample_rate,
                        "task": task.id, "label": labels.get(relative), "text": answer.text,
                        "token_ids": [int(i) for i in answer.token_ids], "stopped": answer.stopped,
                        "logprobs": np.round(answer.logprobs, 5).tolist(),
                        "topk_ids": answer.topk_ids.tolist(),
                        "topk_logprobs": np.round(answer.topk_logprobs, 5).tolist(),
                    })
                    done.add(f"{key}:{task.id}")
                    summary.asked += 1
            summary.files += 1
        except AudioError as err:
            summary.failed.append(str(err))  # reported by name; the other recordings go on
        if progress:
            progress.advance(task_bar)
    return summary
