"""When to ask the full model, and the store-and-forward sender that asks it.

A window is escalated when the on-device answer is unsure (confidence below the threshold), names nothing
in the bundle's label list (an unknown species is what the full model is for), is drawn as a random
audit sample, or a site rule asks for it; never more than the budget per hour of each recorder's audio. Escalations wait in the event store's queue and are sent
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
from typing import Protocol

import numpy as np

from naturelm_edge.device_profiles.schema import ESCALATION_DEFAULTS as DEFAULTS
from naturelm_edge.device_profiles.schema import EscalationSettings
from naturelm_edge.edge_runtime.clips import leaves_reserve
from naturelm_edge.edge_runtime.labels import label_of
from naturelm_edge.edge_runtime.store import EventStore
from naturelm_edge.prompt import names_something
from naturelm_edge.wire.client import post_escalation
from naturelm_edge.wire.schema import EscalationRequest


class Answered(Protocol):
    """What the policy reads of a pipeline window (``pipeline.WindowResult``), which imports this module."""

    answered: bool
    answer: str | None
    label: str | None
    confidence: float | None
    recorder: str
    recorder_s: float


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one reported window."""

    reason: str | None = None  # why the full model hears it (None: it does not)
    over_budget: str | None = None  # the reason it would have gone, when the recorder's budget was spent


class AudioBudget:
    """At most ``per_hour`` escalations in any hour of a recorder's audio.

    Counted on the recorder's audio clock (:class:`AudioClock`), not the wall clock: 100 hours of archive
    analysed in ten minutes escalate what 100 hours in the field would have, spread over all of them.
    """

    def __init__(self, per_hour: int) -> None:
        self.per_hour = per_hour
        self._spent: dict[str, deque[float]] = {}

    def take(self, recorder: str, at_s: float) -> bool:
        """Spend one escalation at ``at_s`` seconds of ``recorder``'s audio; False when its hour is full."""
        spent = self._spent.setdefault(recorder, deque())
        while spent and spent[0] <= at_s - 3600:
            spent.popleft()
        if len(spent) >= self.per_hour:
            return False
        spent.append(at_s)
        return True


class AudioClock:
    """Each recorder's position in its own audio: the files of one recorder follow each other on it, in the
    order they are read, so the hour a budget counts is an hour of that recorder's sound."""

    def __init__(self) -> None:
        self._base: dict[str, float] = {}
        self._source: dict[str, str] = {}
        self._end: dict[str, float] = {}

    def at(self, recorder: str, source: str, offset_s: float, duration_s: float) -> float:
        """The window's start on ``recorder``'s clock (``offset_s`` into ``source``)."""
        if self._source.get(recorder) != source:
            self._base[recorder], self._source[recorder] = self._end.get(recorder, 0.0), source
        position = self._base[recorder] + offset_s
        self._end[recorder] = max(self._end.get(recorder, 0.0), position + duration_s)
        return position


@dataclass
class EscalationPolicy:
    """The one owner of the escalation decision, asked once per reported window, after the site rules."""

    confidence_threshold: float = DEFAULTS.confidence_threshold
    audit_rate: float = DEFAULTS.audit_rate
    hourly_budget: int = DEFAULTS.hourly_budget
    seed: int = 0
    # a scores bundle's "None" carries a confidence too (that nothing the teacher would call is there): a silence
    # it is unsure of is where its missed calls hide, so it escalates like an unsure species; a text bundle's does not
    unsure_silence: bool = False

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self.budget = AudioBudget(self.hourly_budget)

    @classmethod
    def for_profile(cls, settings: EscalationSettings, confidence_threshold: float | None = None,
                    unsure_silence: bool = False) -> EscalationPolicy:
        """The policy a device profile's ``[escalation]`` section sets; ``confidence_threshold`` overrides it."""
        threshold = settings.confidence_threshold if confidence_threshold is None else confidence_threshold
        return cls(threshold, settings.audit_rate, settings.hourly_budget, unsure_silence=unsure_silence)

    def wanted(self, confidence: float, known: bool | None, answer: str) -> str | None:
        """Why the model's answer alone asks for the full model (None: it does not); no budget is spent.

        ``known``: whether the answer names one of the bundle's labels (None: the bundle has no labels).
        """
        if not names_something(answer):
            return "unsure-silence" if self.unsure_silence and confidence < self.confidence_threshold else None
        if confidence < self.confidence_threshold:
            return "low-confidence"
        if known is False:
            return "unknown-label"
        if self._random.random() < self.audit_rate:
            return "audit"
        return None

    def decide(self, wanted: str | None, forced: bool | None, recorder: str, at_s: float) -> Decision:
        """The decision for a window the site rules let through: ``wanted`` (see :meth:`wanted`), ``forced``
        the site's action (True: always escalate, False: never, None: as wanted), ``at_s`` its start on
        ``recorder``'s audio clock. Every escalation, a site rule's included, spends the recorder's budget."""
        reason = None if forced is False else (wanted or "site-rule") if forced else wanted
        if reason is None:
            return Decision()
        if not self.budget.take(recorder, at_s):
            return Decision(over_budget=reason)
        return Decision(reason)

    def judge(self, result: Answered, labels: list[str], forced: bool | None = None) -> Decision:
        """:meth:`decide` for one window of the pipeline (nothing for a window that was not answered)."""
        if not result.answered:
            return Decision()
        known = None if not labels else result.label is not None
        wanted = self.wanted(result.confidence or 0.0, known, result.answer or "")
        return self.decide(wanted, forced, result.recorder, result.recorder_s)


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

    def drain(self, within_s: float) -> int:
        """Deliver what is queued for at most ``within_s``, as long as each pass delivers something (a server
        that fails or does not answer ends it at once: a failing link never holds a run); return how many
        stay queued (a run over files ends with the full model's answers in the store when the server is up)."""
        deadline = time.monotonic() + within_s
        while self.url and self.store.queue_length() and time.monotonic() < deadline:
            if not self.flush():
                break
        return self.store.queue_length()

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
