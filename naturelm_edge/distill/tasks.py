"""Task files: the prompts a teacher answers for every window (TOML, or YAML when PyYAML is present)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from naturelm_edge.errors import EdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

KINDS = ("common_name", "scientific_name", "detection", "call_type", "caption")


class TaskFileError(EdgeError):
    """A task file that cannot be read or does not describe tasks."""


@dataclass(frozen=True)
class Task:
    id: str
    kind: str
    question: str
    max_new_tokens: int = 24


def load_tasks(path: Path | None = None) -> list[Task]:
    """Tasks from ``path`` (TOML or YAML), or the built-in default task file."""
    if path is None:
        text, name = resources.files("naturelm_edge.distill").joinpath("default_tasks.toml").read_text(), "default"
        return _parse(tomllib.loads(text), name)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise TaskFileError(f"{path}: cannot read the task file ({err.strerror}).") from err
    try:
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except Exception as err:  # noqa: BLE001 - TOML and YAML parsers raise their own types
        raise TaskFileError(f"{path}: not a valid task file ({err}).") from err
    return _parse(data, str(path))


def _parse(data: object, name: str) -> list[Task]:
    entries = data.get("task") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TaskFileError(f"{name}: a task file needs at least one [[task]] entry.")
    tasks = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"id", "kind", "question"} <= set(entry):
            raise TaskFileError(f"{name}: task {i + 1} needs id, kind and question.")
        if entry["kind"] not in KINDS:
            raise TaskFileError(f"{name}: task {entry['id']!r} has kind {entry['kind']!r}; allowed: {', '.join(KINDS)}.")
        unknown = set(entry) - {"id", "kind", "question", "max_new_tokens"}
        if unknown:
            raise TaskFileError(f"{name}: task {entry['id']!r} has unknown keys {sorted(unknown)}.")
        tasks.append(Task(str(entry["id"]), entry["kind"], str(entry["question"]), int(entry.get("max_new_tokens", 24))))
    if len({t.id for t in tasks}) != len(tasks):
        raise TaskFileError(f"{name}: task ids must be unique.")
    return tasks


def tasks_digest(tasks: list[Task]) -> str:
    """Hash of the prompts: a teacher cache is only valid for the tasks it was collected with."""
    return hashlib.sha256(json.dumps([asdict(t) for t in tasks], sort_keys=True).encode()).hexdigest()
