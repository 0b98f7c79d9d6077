"""Task files: the prompts a teacher answers for every window (TOML, or YAML when PyYAML is present)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

from naturelm_edge.errors import EdgeError
from naturelm_edge.prompt import GenerationSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

KINDS = ("common_name", "scientific_name", "detection", "call_type", "caption")


class TaskFileError(EdgeError):
    """A task file that cannot be read or does not describe tasks."""


@dataclass(frozen=True)
class Task:
    """One prompt. ``max_new_tokens`` and ``num_beams`` left out take the command's generation settings
    (the original's: 2 beams, 300 tokens); :meth:`resolved` fixes them before a teacher answers."""

    id: str
    kind: str
    question: str
    max_new_tokens: int | None = None
    num_beams: int | None = None

    def resolved(self, settings: GenerationSettings) -> Task:
        generation = self.generation(settings)
        return replace(self, max_new_tokens=generation.max_new_tokens, num_beams=generation.num_beams)

    def generation(self, settings: GenerationSettings) -> GenerationSettings:
        return settings.but(num_beams=self.num_beams, max_new_tokens=self.max_new_tokens)


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
        unknown = set(entry) - {"id", "kind", "question", "max_new_tokens", "num_beams"}
        if unknown:
            raise TaskFileError(f"{name}: task {entry['id']!r} has unknown keys {sorted(unknown)}.")
        limits = {key: entry.get(key) for key in ("max_new_tokens", "num_beams")}
        for key, value in limits.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TaskFileError(f"{name}: task {entry['id']!r}: {key} must be a whole number >= 1.")
        tasks.append(Task(str(entry["id"]), entry["kind"], str(entry["question"]), **limits))
    if len({t.id for t in tasks}) != len(tasks):
        raise TaskFileError(f"{name}: task ids must be unique.")
    return tasks


def tasks_digest(tasks: list[Task]) -> str:
    """Hash of the prompts: a teacher cache is only valid for the tasks it was collected with."""
    return hashlib.sha256(json.dumps([asdict(t) for t in tasks], sort_keys=True).encode()).hexdigest()
