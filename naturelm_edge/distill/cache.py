"""The teacher-answer cache: what a teacher said about every window, on disk, append-only and resumable.

Layout of ``CACHE_DIR``::

    cache.json        format version, teacher identity, task-file hash, window/hop, top-k, tasks
    records.jsonl     one JSON object per (recording, window, task), appended and fsynced one by one
    audio/<key>.npy   the window's audio tokens (tokens, audio_dim) float32, written before its records
    tokenizer/        the teacher's tokenizer files, so training needs no checkpoint

A record: ``key`` (window key + task id), ``window`` (key), ``file`` (path relative to the audio root),
``start_s``, ``valid_s``, ``task``, ``label`` (species from the labels, or null), ``text``, ``token_ids``
(teacher ids, ending with the stop token when ``stopped``), ``logprobs``, ``topk_ids``, ``topk_logprobs``.

A collection killed at any instant resumes where it stopped: a half-written last line is dropped, every
complete record is kept, and no window is asked twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.atomic import atomic_path, write_atomic
from naturelm_edge.errors import EdgeError

FORMAT_VERSION = 1
META_FILE = "cache.json"
RECORDS_FILE = "records.jsonl"


class CacheError(EdgeError):
    """A cache that belongs to another teacher or task file, or is damaged."""


@dataclass(frozen=True)
class CacheMeta:
    teacher: str
    tasks_sha256: str
    window_s: float
    hop_s: float
    top_k: int
    tasks: list[dict]
    audio_dim: int
    bos_id: int
    stop_ids: list[int]
    prompt_template: str
    format: int = FORMAT_VERSION


def window_key(relative_path: str, start_sample: int) -> str:
    return hashlib.sha1(f"{relative_path}|{start_sample}".encode()).hexdigest()[:16]


def cache_file_name(path: Path, audio_root: Path) -> str:
    """How a recording is named in the cache (its records' ``file``, the first part of its window keys): relative
    to the audio folder collected from, or as given when it lies outside it."""
    return str(path.relative_to(audio_root)) if path.is_relative_to(audio_root) else str(path)


class TeacherCache:
    """Open (or create) a cache directory for one teacher and task set."""

    def __init__(self, root: Path, meta: CacheMeta | None = None, tokenizer_dir: Path | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if meta_path.is_file():
            try:
                stored = CacheMeta(**json.loads(meta_path.read_text()))
            except (json.JSONDecodeError, TypeError) as err:
                raise CacheError(f"{meta_path}: damaged cache description ({err}).") from err
            if meta is not None:
                self._check_compatible(stored, meta)
            self.meta = stored
        elif meta is None:
            raise CacheError(f"{self.root}: not a teacher cache (no {META_FILE}).")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "audio").mkdir(exist_ok=True)
            if tokenizer_dir is not None:
                target = self.root / "tokenizer"
                target.mkdir(exist_ok=True)
                for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                    if (tokenizer_dir / name).is_file():
                        shutil.copy2(tokenizer_dir / name, target / name)
            write_atomic(meta_path, json.dumps(meta.__dict__, indent=2))
            self.meta = meta
        self._records_path = self.root / RECORDS_FILE
        self._repair_tail()

    def _check_compatible(self, stored: CacheMeta, wanted: CacheMeta) -> None:
        if stored.teacher != wanted.teacher:
            raise CacheError(
                f"{self.root}: this cache was collected from another checkpoint ({stored.teacher}, not "
                f"{wanted.teacher}); use a new --out directory."
            )
        if stored.tasks_sha256 != wanted.tasks_sha256:
            raise CacheError(f"{self.root}: this cache was collected with another task file; use a new --out directory.")
        if (stored.window_s, stored.hop_s, stored.top_k) != (wanted.window_s, wanted.hop_s, wanted.top_k):
            raise CacheError(f"{self.root}: this cache used other window, hop or top-k settings.")

    def _repair_tail(self) -> None:
        """Drop a record cut off by a crash mid-write (everything before it is complete)."""
        if not self._records_path.is_file():
            return
        data = self._records_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self._records_path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def records(self) -> Iterator[dict]:
        if not self._records_path.is_file():
            return
        with self._records_path.open() as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def done_keys(self) -> set[str]:
        return {record["key"] for record in self.records()}

    def audio_path(self, window: str) -> Path:
        return self.root / "audio" / f"{window}.npy"

    def has_audio(self, window: str) -> bool:
        return self.audio_path(window).is_file()

    def put_audio(self, window: str, tokens: np.ndarray) -> None:
        path = self.audio_path(window)
        with atomic_path(path) as tmp:
            with tmp.open("wb") as handle:
                np.save(handle, np.ascontiguousarray(tokens, dtype=np.float32))

    def audio(self, window: str) -> np.ndarray:
        return np.load(self.audio_path(window))

    def append(self, record: dict) -> None:
        self.extend([record])

    def extend(self, records: list[dict]) -> None:
        """Append records, one line each, made durable together (one fsync, not one per record)."""
        text = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)
        with self._records_path.open("a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
