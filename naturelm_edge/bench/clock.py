"""Per-stage wall and CPU time, with the clock's own cost measured so the report can state its overhead."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class StageClock:
    """Collects one (wall, cpu) sample per timed call, by stage name.

    CPU time is the whole process's (``process_time``), so onnxruntime's worker threads count too: that
    is what a battery pays for.
    """

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.cpu[stage].append(time.process_time() - cpu)
            self.wall[stage].append(time.perf_counter() - wall)

    def add(self, stage: str, wall_s: float, cpu_s: float = 0.0) -> None:
        """A sample measured elsewhere (an end-to-end latency made of timed stages)."""
        self.wall[stage].append(wall_s)
        self.cpu[stage].append(cpu_s)

    @property
    def calls(self) -> int:
        return sum(len(v) for v in self.wall.values())

    def summary(self, stage: str) -> dict:
        """Latency percentiles (ms), call count and totals of one stage."""
        wall = np.asarray(self.wall.get(stage, []), float)
        cpu = np.asarray(self.cpu.get(stage, []), float)
        if wall.size == 0:
            return {"calls": 0, "wall_s": 0.0, "cpu_s": 0.0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
        p50, p95, p99 = (float(x) * 1000 for x in np.percentile(wall, [50, 95, 99]))
        return {"calls": int(wall.size), "wall_s": float(wall.sum()), "cpu_s": float(cpu.sum()),
                "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": float(wall.mean()) * 1000}


def cost_per_call(samples: int = 20_000) -> float:
    """Seconds one empty timed block costs: the harness's overhead per measurement."""
    clock = StageClock()
    started = time.perf_counter()
    for _ in range(samples):
        with clock("empty"):
            pass
    return (time.perf_counter() - started) / samples
