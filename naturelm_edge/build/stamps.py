"""What makes a build step stale: digests of its inputs, kept per step in ``WORK/stamps``, and what it cost."""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from naturelm_edge.atomic import write_atomic
from naturelm_edge.hashing import sha256_file


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_digest(path: Path) -> str:
    return sha256_file(path)[:24]


def audio_digest(files: list[Path]) -> str:
    return digest([(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in files])


class Stamps:
    """Input digests of finished steps (a step re-runs only when its inputs changed) and each run's cost."""

    def __init__(self, work: Path) -> None:
        self.root = work / "stamps"
        self.root.mkdir(parents=True, exist_ok=True)

    def fresh(self, step: str, key: str, outputs: list[Path]) -> bool:
        path = self.root / f"{step}.json"
        return path.is_file() and json.loads(path.read_text()).get("digest") == key and all(p.exists() for p in outputs)

    def mark(self, step: str, key: str, cost: dict) -> None:
        write_atomic(self.root / f"{step}.json", json.dumps({"digest": key, "cost": cost}))


@contextmanager
def measured() -> Iterator[dict]:
    """Wall time, CPU time (this process and the children it waited for) and peak RSS of the block, filled in
    when it ends. Peak RSS is the process's high-water mark so far: a step that raised it shows by how much."""
    cost: dict = {}
    start, cpu = time.perf_counter(), _cpu_s()
    yield cost
    cost.update(wall_s=round(time.perf_counter() - start, 3), cpu_s=round(_cpu_s() - cpu, 3),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
