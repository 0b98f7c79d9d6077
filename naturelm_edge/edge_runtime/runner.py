"""``edge-run``: sources -> windows -> gate -> detector -> encoder -> decoder -> escalation policy -> store and sinks.

Every window's outcome is committed to ``OUT/events.db`` before the next window is read; on restart,
windows already recorded for a source are skipped, so nothing is answered twice and nothing reported is
lost. SIGINT and SIGTERM finish the current window, flush, and exit 0.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console

from naturelm_edge.audio import Window
from naturelm_edge.bundle.manifest import Bundle
from naturelm_edge.device_profiles import Profile
from naturelm_edge.edge_runtime.clips import ClipWriter, RetentionPolicy
from naturelm_edge.edge_runtime.engine import Engine
from naturelm_edge.edge_runtime.escalation import ClipStore, EscalationPolicy, Sender
from naturelm_edge.edge_runtime.gate import EnergyGate, GateSettings
from naturelm_edge.edge_runtime.live_view import LiveView
from naturelm_edge.edge_runtime.screening import ANSWER, Screening
from naturelm_edge.edge_runtime.sinks import Sinks
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.edge_runtime.store import Event, EventStore
from naturelm_edge.edge_runtime.timestamps import offset as absolute
from naturelm_edge.errors import AudioError

KNOWN_LABEL_DISTANCE = 0.2


@dataclass
class RunOptions:
    out: Path
    escalate: str = "queue"  # off | queue | URL
    token: str | None = None
    gate: GateSettings = field(default_factory=GateSettings)
    formats: list[str] = field(default_factory=lambda: ["jsonl", "csv", "raven"])
    quiet: bool = False
    confidence_threshold: float | None = None
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    clips: bool = True
    detector: bool = True  # the bundle's detection stage, when it has one
    detector_threshold: float | None = None


@dataclass
class Summary:
    windows: int = 0
    resumed: int = 0
    gated: int = 0
    not_calls: int = 0  # passed the gate, refused by the detector
    heard: int = 0  # calls only where the last answered window already listened
    answered: int = 0
    escalated: int = 0
    delivered: int = 0
    queue: int = 0
    failed: list[str] = field(default_factory=list)
    clips_saved: int = 0
    clips_skipped: int = 0
    audio_s: float = 0.0
    busy_s: float = 0.0
    providers: list[str] = field(default_factory=list)
    missing_providers: list[str] = field(default_factory=list)
    overflows: int = 0  # live input: blocks PortAudio dropped (set by the microphone source)

    @property
    def real_time_factor(self) -> float:
        return self.busy_s / self.audio_s if self.audio_s else 0.0


class Runner:
    def __init__(self, bundle: Bundle, profile: Profile, options: RunOptions, console: Console | None = None) -> None:
        self.bundle, self.profile, self.options = bundle, profile, options
        self.console = console or Console(stderr=True, soft_wrap=True)
        options.out.mkdir(parents=True, exist_ok=True)
        self.engine = Engine(bundle, profile, options.detector, options.detector_threshold)
        self.spec = bundle.window_spec
        self.store = EventStore(options.out / "events.db")
        self.sinks = Sinks(options.out, options.formats)
        self.screening = Screening(EnergyGate(options.gate), self.engine.detector, self.spec.window)
        escalation = profile.escalation
        self.policy = EscalationPolicy(
            confidence_threshold=options.confidence_threshold if options.confidence_threshold is not None
            else escalation.get("confidence_threshold", 0.5),
            audit_rate=escalation.get("audit_rate", 0.01), hourly_budget=escalation.get("hourly_budget", 60))
        self.clips = ClipStore(options.out / "escalation-clips")
        self.clip_writer = ClipWriter(options.out / "clips", self.spec.sample_rate, options.retention)
        url = options.escalate if options.escalate.startswith(("http://", "https://")) else None
        self.sender = Sender(self.store, self.clips, url, self.spec.sample_rate, self.engine.labels, options.token)
        self.summary = Summary(providers=self.engine.providers, missing_providers=self.engine.missing)
        self.view = LiveView(self.console, self.summary)
        self._stop = False
        self._source: Source | None = None

    def stop(self, *_: object) -> None:
        self._stop = True
        if self._source is not None and self._source.stop is not None:
            self._source.stop()

    def run(self, sources: Iterable[Source]) -> Summary:
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.sender.start()
        try:
            with self.view:
                self._run_sources(sources)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sender.stop()  # the background thread first: two concurrent flushes could send twice
            self.sender.flush()
            self.summary.delivered = self.sender.delivered
            self.summary.clips_saved, self.summary.clips_skipped = self.clip_writer.saved, self.clip_writer.skipped
            self.summary.queue = self.store.queue_length()
            self.store.close()
        return self.summary

    def _run_sources(self, sources: Iterable[Source]) -> None:
        for source in sources:
            if self._stop:
                break
            self._run_source(source)

    def _run_source(self, source: Source) -> None:
        self._source = source
        self.screening.reset()
        try:
            for window, features in source.windows():
                offset_s = window.start / self.spec.sample_rate / source.time_expansion
                duration_s = window.valid / self.spec.sample_rate / source.time_expansion
                if self.store.window_done(source.id, offset_s):
                    self.summary.resumed += 1
                    continue
                self.summary.windows += 1
                if source.overflows is not None:
                    self.summary.overflows = source.overflows()
                self.summary.audio_s += min(duration_s, self.spec.hop_s / source.time_expansion)
                started = time.perf_counter()
                self._window(source, offset_s, duration_s, window, features)
                self.summary.busy_s += time.perf_counter() - started
                if self._stop:
                    return
        except AudioError as err:
            self.summary.failed.append(str(err))
            self.console.print(f"[yellow]skipped:[/yellow] {err}", highlight=False)

    def _window(self, source: Source, offset_s: float, duration_s: float, window: Window, features: np.ndarray) -> None:
        outcome = self.screening(window, features)
        if outcome != ANSWER:  # gated, not a call, or already heard: done, nothing to report
            setattr(self.summary, outcome, getattr(self.summary, outcome) + 1)
            self.store.record(source.id, offset_s, True, [], [])
            return
        result = self.engine.answer(self.engine.audio_tokens(features))
        answer, snapped = result.answer, result.snapped
        label = snapped.label if snapped and snapped.distance <= KNOWN_LABEL_DISTANCE else None
        reason = None if self.options.escalate == "off" else self.policy.reason(
            answer.confidence_mean, snapped.distance if snapped else None, answer.text)
        clip = None
        if reason:
            clip = self.clips.root / f"{uuid.uuid4().hex}.npy"
            np.save(clip, window.samples.astype(np.float32))
        detection = self.options.clips and answer.text.strip().lower() != "none"
        saved = self.clip_writer.save(label, source.id, offset_s, window.samples) if detection else None
        event = Event(source.id, absolute(source.start, offset_s), round(offset_s, 3), round(duration_s, 3),
                      result.question, answer.text, label, round(answer.confidence_mean, 4),
                      round(answer.confidence_min, 4), "on-device", "queued" if reason else "none", None,
                      saved, self.bundle.id, self.profile.name,
                      datetime.now(timezone.utc).isoformat())
        (event.id,) = self.store.record(source.id, offset_s, False, [event], [str(clip) if clip else None])
        self.summary.answered += 1
        self.summary.escalated += bool(reason)
        self.sinks.write(event)
        if not self.options.quiet:
            flag = f" [magenta]-> full model ({reason})[/magenta]" if reason else ""
            self.view.answer(f"{Path(source.id).name} {offset_s:7.1f}s  {answer.text!r} "
                             f"({answer.confidence_mean:.2f}){flag}")
