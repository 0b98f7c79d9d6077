"""What only a running ``edge-run`` knows: its counters, the last 30 s of audio, per-stage latencies.

``edge-run --web`` hands one :class:`LiveState` to the runner (a stage clock) and to its sources (a tee of
their blocks); the dashboard and ``/metrics`` read it. Without it the station shows what the store holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from naturelm_edge.edge_runtime.sources import Source

STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LiveState:
    def __init__(self, summary, sample_rate: int, bundle_id: str, profile: str, retention_mb: float | None,  # noqa: ANN001
                 seconds: float = 30.0) -> None:
        self.summary, self.sample_rate = summary, sample_rate
        self.bundle_id, self.profile, self.retention_mb = bundle_id, profile, retention_mb
        self.started = time.time()
        self.ring = np.zeros(int(seconds * sample_rate), np.float32)
        self.written = 0  # samples ever written: the ring's end
        self.lock = threading.Lock()
        self.stages: dict[str, list[float]] = {}  # stage -> per-bucket counts, then sum and count
        self.streams: dict = {}  # network input: URL -> its StreamHealth

    def audio(self) -> np.ndarray:
        """The last ``seconds`` of audio, oldest first (zeros before the run had that much)."""
        with self.lock:
            at = self.written % self.ring.shape[0]
            return np.concatenate([self.ring[at:], self.ring[:at]])

    def feed(self, block: np.ndarray) -> None:
        block = block[-self.ring.shape[0] :]
        with self.lock:
            at = self.written % self.ring.shape[0]
            first = min(block.shape[0], self.ring.shape[0] - at)
            self.ring[at : at + first] = block[:first]
            self.ring[: block.shape[0] - first] = block[first:]
            self.written += block.shape[0]

    def tee(self, source: Source) -> Source:
        """``source`` whose blocks also go to the ring."""
        def blocks() -> Iterator[np.ndarray]:
            for block in source.blocks():
                self.feed(block)
                yield block

        return replace(source, blocks=blocks)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """The runner's stage clock: a latency histogram per stage (decode, fbank, gate, speech, ...)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self.lock:
                counts = self.stages.setdefault(stage, [0.0] * (len(STAGE_BUCKETS) + 2))
                for i, bound in enumerate(STAGE_BUCKETS):
                    counts[i] += elapsed <= bound
                counts[-2] += elapsed
                counts[-1] += 1

    def health(self) -> dict:
        s = self.summary
        return {"uptime_s": time.time() - self.started, "real_time_factor": s.real_time_factor,
                "windows": s.windows, "gated": s.gated, "speech": s.speech, "refused": s.not_calls,
                "answered": s.answered, "escalated": s.escalated, "over_budget": s.over_budget, "delivered": s.delivered, "queue": s.queue,
                "clips_saved": s.clips_saved, "overflows": s.overflows, "bundle_id": self.bundle_id,
                "profile": self.profile, "retention_mb": self.retention_mb, "audio_s": s.audio_s,
                "streams": {url: vars(health) for url, health in self.streams.items()}}
