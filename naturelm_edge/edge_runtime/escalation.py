"""When to ask the full model, and the store-and-forward sender that asks it.

A window is escalated when the on-device answer is unsure (confidence below the threshold), names nothing
in the bundle's label list (an unknown species is what the full model is for), or is drawn as a random
audit sample; never more than the hourly budget. Escalations wait in the event store's queue and are sent
when the link is up, retried with exponential back-off when it is not, and marked delivered exactly once.
"""

from __future__ import annotations

import errno
import http.client
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.edge_runtime.clips import leaves_reserve
from naturelm_edge.edge_runtime.labels import label_of
from naturelm_edge.edge_runtime.store import EventStore
from naturelm_edge.prompt import names_something
from naturelm_edge.wire.client import post_escalation
from naturelm_edge.wire.schema import EscalationRequest


@dataclass
class EscalationPolicy:
    confidence_threshold: float = 0.5
    audit_rate: float = 0.01
    hourly_budget: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        self._recent: deque[float] = deque()
        self._random = random.Random(self.seed)

    @classmethod
    def for_profile(cls, settings: dict, confidence_threshold: float | None = None) -> EscalationPolicy:
        """The policy a device profile's ``[escalation]`` section sets; ``confidence_threshold`` overrides it."""
        policy = cls(settings.get("confidence_threshold", 0.5), settings.get("audit_rate", 0.01),
                     settings.get("hourly_budget", 60))
        if confidence_threshold is not None:
            policy.confidence_threshold = confidence_threshold
        return policy

    def reason(self, confidence: float, known: bool | None, answer: str, now: float | None = None) -> str | None:
        """Why this answer should go to the full model (None: it should not, or the budget is spent).

        ``known``: whether the answer names one of the bundle's labels (None: the bundle has no labels).
        """
        if not names_something(answer):
            return None
        why = None
        if confidence < self.confidence_threshold:
            why = "low-confidence"
        elif known is False:
            why = "unknown-label"
        elif self._random.random() < self.audit_rate:
            why = "audit"
        if why is None:
            return None
        now = time.time() if now is None else now
        while self._recent and self._recent[0] < now - 3600:
            self._recent.popleft()
        if len(self._recent) >= self.hourly_budget:
            return None
        self._recent.append(now)
        return why


class ClipStore:
    """The folder holding the audio of escalated windows until the full model has answered them.

    The audio is written before its escalation is committed and named in the queue row, so a crash
    between the two leaves at worst an orphan file, never an escalation without audio.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, samples: np.ndarray) -> Path:
        """Write one window's audio under a fresh name; the caller names it in the queue row."""
        path = self.root / f"{uuid.uuid4().hex}.npy"
        if not leaves_reserve(self.root, 4 * samples.size + 128):
            raise OSError(errno.ENOSPC, "kept free for the event store")
        try:
            np.save(path, samples.astype(np.float32))
        except OSError:
            path.unlink(missing_ok=True)  # no half-written audio left behind for the sender to choke on
            raise
        return path


class Sender:
    """Delivers queued escalations to ``url`` from a background thread (or on demand with ``flush``)."""

    def __init__(self, store: EventStore, url: str | None, sample_rate: int, labels: list[str],
                 token: str | None = None, timeout_s: float = 10.0, max_backoff_s: float = 300.0) -> None:
        self.store, self.url = store, url
        self.sample_rate, self.labels, self.token = sample_rate, labels, token
        self.timeout_s, self.max_backoff_s = timeout_s, max_backoff_s
        self.delivered = 0
        self.held: set[str] = set()  # clips not to send yet (the next window may still find speech in them)
        self._stop = threading.Event()
        self._flushing = threading.Lock()  # one delivery pass at a time: each escalation is sent once
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.url and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="escalation-sender", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.timeout_s + 1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.flush():
                self._stop.wait(0.5)

    def flush(self) -> int:
        """Try every escalation that is due once; return how many were delivered."""
        if not self.url:
            return 0
        with self._flushing:
            return self._flush()

    def _flush(self) -> int:
        sent = 0
        for event_id in self.store.due_escalations():
            event = self.store.event(event_id)
            stored = self.store.escalation_audio(event_id)
            if stored in self.held:
                continue
            clip = Path(stored) if stored else None
            audio = np.load(clip) if clip and clip.is_file() else None
            if audio is None:
                self.store.failed(event_id, "clip missing", self.max_backoff_s)
                continue
            request = EscalationRequest.build(
                f"{event.bundle_id}:{event_id}", event.question, audio, self.sample_rate,
                {"source": event.source, "start_utc": event.start_utc, "offset_s": event.offset_s,
                 "device_answer": event.answer, "device_confidence": event.confidence, "bundle_id": event.bundle_id})
            try:
                reply = post_escalation(self.url, request, self.token, self.timeout_s)
            except (OSError, ValueError, TimeoutError, http.client.HTTPException) as err:
                attempts = self.store.escalation_attempts(event_id)
                self.store.failed(event_id, str(err) or type(err).__name__, min(self.max_backoff_s, 0.5 * 2 ** attempts))
                break  # the link or the server is the trouble: the rest waits for the next pass, not a timeout each
            self.store.delivered(event_id, reply["answer"], label_of(reply["answer"], self.labels))
            clip.unlink(missing_ok=True)
            self.delivered += 1
            sent += 1
        return sent
