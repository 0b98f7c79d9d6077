"""``edge-run``: the window pipeline's results -> event store, sinks, clips, escalation queue and live view.

Every window's outcome is committed to ``OUT/events.db`` before the next window is read; on restart,
windows already recorded for a source are skipped, so nothing is answered twice and nothing reported is
lost. SIGINT and SIGTERM finish the current window, flush, and exit 0.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from naturelm_edge.bundle import roles
from naturelm_edge.bundle.open import Bundle
from naturelm_edge.device_profiles import Profile
from naturelm_edge.edge_runtime.clips import ClipWriter, RetentionPolicy
from naturelm_edge.edge_runtime.confirmation import Confirmation
from naturelm_edge.edge_runtime.engine import Engine
from naturelm_edge.edge_runtime.escalation import ClipStore, Decision, EscalationPolicy, Sender
from naturelm_edge.edge_runtime.gate import GateSettings
from naturelm_edge.edge_runtime.ledger import Ledger
from naturelm_edge.edge_runtime.live_view import LiveView
from naturelm_edge.edge_runtime.pipeline import RESUMED, WindowPipeline, WindowResult
from naturelm_edge.edge_runtime.privacy_hold import PrivacyHold
from naturelm_edge.edge_runtime.screening import SPEECH
from naturelm_edge.edge_runtime.settings import RunFlags, RunSettings
from naturelm_edge.edge_runtime.sinks import Sinks
from naturelm_edge.edge_runtime.site import SiteRules, Verdict
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.edge_runtime.store import OVER_BUDGET, EventStore
from naturelm_edge.edge_runtime.together import read_together
from naturelm_edge.errors import AudioError


@dataclass
class RunOptions:
    out: Path
    flags: RunFlags = field(default_factory=RunFlags)  # what the command line asked; RunSettings resolves the rest
    token: str | None = None
    gate: GateSettings = field(default_factory=GateSettings)
    formats: list[str] = field(default_factory=lambda: ["jsonl", "csv", "raven"])
    quiet: bool = False
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    clips: bool = True
    detector: bool = True  # the bundle's detection stage, when it has one
    detector_threshold: float | None = None
    site: SiteRules = field(default_factory=SiteRules)
    drain_s: float = 0.0  # at the end, how long to keep delivering queued escalations (a run over files: 60 s)


@dataclass
class Summary:
    windows: int = 0
    resumed: int = 0
    gated: int = 0
    speech: int = 0  # people talking: no audio kept (privacy drop)
    speech_masked: int = 0  # people talking, zeroed, the rest answered (privacy mask)
    masked_after: int = 0  # audio kept for an earlier window, masked when the next window heard speech in it
    removed: dict[str, int] = field(default_factory=dict)  # detections each site rule kept from being reported
    not_calls: int = 0  # passed the gate, refused by the detector
    heard: int = 0  # calls only where the last answered window already listened
    answered: int = 0
    escalated: int = 0
    over_budget: int = 0  # windows that asked for the full model when their recorder's hourly budget was spent
    delivered: int = 0
    queue: int = 0
    failed: list[str] = field(default_factory=list)
    clips_saved: int = 0
    clips_skipped: int = 0
    escalations_skipped: int = 0  # windows whose audio could not be queued (disk full or failing)
    event_files_skipped: int = 0  # events the JSONL/CSV/Raven copies missed (events.db holds them all)
    audio_s: float = 0.0
    busy_s: float = 0.0
    providers: list[str] = field(default_factory=list)
    missing_providers: list[str] = field(default_factory=list)
    overflows: int = 0  # live input: blocks PortAudio dropped (set by the microphone source)

    def count(self, result: WindowResult, source: Source, hop_s: float) -> None:
        """A window read: its outcome, and the audio it adds (a hop, in real seconds)."""
        if result.outcome == RESUMED:
            self.resumed += 1
            return
        self.windows += 1
        if source.overflows is not None:
            self.overflows = source.overflows()
        self.audio_s += min(result.duration_s, hop_s / source.time_expansion)
        setattr(self, result.outcome, getattr(self, result.outcome) + 1)

    def close(self, sender: Sender, clip_writer: ClipWriter, sinks: Sinks, store: EventStore) -> None:
        """The counts only the parts know at the end of a run; the store is closed."""
        self.delivered, self.event_files_skipped, self.queue = sender.delivered, sinks.skipped, store.queue_length()
        self.clips_saved, self.clips_skipped = clip_writer.saved, clip_writer.skipped
        store.close()

    @property
    def real_time_factor(self) -> float:
        return self.busy_s / self.audio_s if self.audio_s else 0.0


def finish_sending(sender: Sender, drain_s: float, console: Console, store: Path) -> None:
    """The sender's thread stopped first (two concurrent flushes could send twice), one last pass, then, for a
    run over files, up to ``drain_s`` more to deliver what is still queued, and one line for what stays."""
    sender.stop()
    sender.flush()
    waiting = sender.store.queue_length() if sender.url and drain_s > 0 else 0
    if waiting:
        console.print(f"sending {waiting} escalations to {sender.url} (at most {drain_s:g} s)")
        left = sender.drain(drain_s)
        if left:
            console.print(f"{left} escalations stay queued in {store} for the next run")


class Runner:
    """``edge-run``'s consumer of the window pipeline: it commits, writes, saves clips, queues and shows."""

    def __init__(self, bundle: Bundle, profile: Profile, options: RunOptions, console: Console | None = None) -> None:
        self.bundle, self.profile, self.options = bundle, profile, options
        self.console = console or Console(stderr=True, soft_wrap=True)
        options.out.mkdir(parents=True, exist_ok=True)
        self.spec, self.settings = bundle.audio.spec, RunSettings.resolve(options.flags, profile, bundle, options.site)
        self.engine = Engine(bundle, profile, options.detector, options.detector_threshold, self.settings.site_floor)
        settings = self.settings
        self.policy = None if settings.escalate == "off" else EscalationPolicy.for_profile(
            settings.escalation, unsure_silence=bundle.answer_kind == roles.SCORES)
        self.pipeline = WindowPipeline(self.engine, options.gate, privacy=settings.privacy)  # refuses first
        self.windows_of = self.pipeline.run  # (source, skip) -> its windows; `edge analyze` computes them elsewhere
        settings.write(options.out, profile, bundle)
        self.store = EventStore(options.out / "events.db")
        self.sinks = Sinks(options.out, options.formats)
        self.ledger = Ledger(self.store, self.sinks, bundle.id, profile.name, self.spec.sample_rate)
        self.clips = ClipStore(options.out / "escalation-clips")
        self.clip_writer = ClipWriter(options.out / "clips", self.spec.sample_rate, options.retention)
        self.sender = Sender(self.store, settings.queue_url, self.spec.sample_rate, self.engine.labels, options.token)
        self.summary = Summary(providers=self.engine.providers, missing_providers=self.engine.missing)
        self.view = LiveView(self.console, self.summary)
        self._stop, self._stoppers = False, Stoppers()  # what ends the live sources (a watcher, a stream, a mic)
        self.site, self.confirmation = options.site, Confirmation(options.site)
        self.hold = PrivacyHold(self.sender.held, self.spec.sample_rate)

    def stop(self, *_: object) -> None:
        self._stop = True
        self._stoppers.stop_all()

    def run(self, sources: Iterable[Source], together: list[Iterable[Source]] | None = None,
            stoppers: Iterable[Callable[[], None]] = ()) -> Summary:
        """Every window of ``sources`` in turn; or of several live streams at once (``together``: one
        iterable of sources per stream, each read by a thread with its own pipeline and screening state,
        its windows committed here one at a time so the store keeps one writer). ``stoppers``: what ends
        those streams on SIGTERM, even between two connections."""
        for stop in stoppers:
            self._stoppers.add(stop)
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.sender.start()
        try:
            with self.view:
                if together:
                    self._run_together(together)
                for source in sources:
                    if self._stop:
                        break
                    self._run_source(source)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            finish_sending(self.sender, 0.0 if self._stop else self.options.drain_s, self.console,
                           self.options.out / "events.db")
            self.summary.close(self.sender, self.clip_writer, self.sinks, self.store)
        return self.summary

    def _skip(self, source: Source) -> Callable[[float], bool]:
        return lambda offset_s: self.store.window_done(source.id, offset_s)

    def _run_source(self, source: Source) -> None:
        self._stoppers.add(source.stop)
        try:
            for result in self.windows_of(source, skip=self._skip(source)):
                self._take(result, source)
                if self._stop:
                    return
        except AudioError as err:
            self._failed(err)
        finally:
            self._done(source)

    def _take(self, result: WindowResult, source: Source) -> None:
        started = time.perf_counter()
        self._record(result, source)
        if result.outcome != RESUMED:  # the models' time and the bookkeeping's: the real-time factor
            self.summary.busy_s += result.busy_s + time.perf_counter() - started

    def _failed(self, err: AudioError) -> None:
        self.summary.failed.append(str(err))
        self.console.print(f"[yellow]skipped:[/yellow] {err}", highlight=False)

    def _done(self, source: Source) -> None:
        for result in self.confirmation.expire(source.id):
            self._remove(result, "confirm")
        self.hold.release(source.id)

    def _run_together(self, streams: list[Iterable[Source]]) -> None:
        for item, source in read_together(self.pipeline, streams, self._skip, lambda s: self._stoppers.add(s.stop),
                                          lambda: self._stop, self.stop):
            if isinstance(item, AudioError):
                self._failed(item)
            elif item is None:
                self._done(source)
            elif not self._stop:
                self._take(item, source)

    def _queue_audio(self, result: WindowResult) -> Path | None:
        """The window's audio for the full model; a full or failing disk skips the escalation, not the event."""
        try:
            return self.clips.save(result.samples)
        except OSError as err:
            self.summary.escalations_skipped += 1
            self.console.print(f"[yellow]escalation skipped:[/yellow] {self.clips.root}: {err.strerror or err}",
                               highlight=False)
            return None

    def _record(self, result: WindowResult, source: Source) -> None:
        """Commit the window (its event, escalation and 'done' mark in one transaction), then write and show it."""
        self.summary.count(result, source, self.spec.hop_s)
        if result.outcome == RESUMED:
            return
        self.summary.masked_after += self.hold.settle(result, self.confirmation.waiting())
        if result.outcome == SPEECH:
            self.ledger.event(result, source, stage="privacy")
            return
        if not result.answered:  # gated, not a call, or already heard: done, nothing to report
            self.ledger.done(result)
            return
        self.summary.speech_masked += bool(result.speech)
        verdict = self.site.verdict(result.label, result.confidence) if result.detection else Verdict()
        if not verdict.report:
            self._remove(result, verdict.removed_by)
            return
        ready, stale = self.confirmation.take(result, verdict)
        for waited in stale:
            self._remove(waited, "confirm")
        for detection, its_verdict in ready:
            self._report(detection, source, its_verdict)

    def _remove(self, result: WindowResult, rule: str) -> None:
        """A window a site rule keeps from being reported: counted, marked done, nothing stored."""
        self.summary.removed[rule] = self.summary.removed.get(rule, 0) + 1
        self.ledger.done(result, f"removed:{rule}")

    def _report(self, result: WindowResult, source: Source, verdict: Verdict) -> None:
        summary = self.summary
        decision = self.policy.judge(result, self.engine.labels, verdict.escalate) if self.policy else Decision()
        escalation = decision.reason
        result = replace(result, escalation=escalation)
        queued = self._queue_audio(result) if escalation else None
        saved = None
        if self.options.clips and result.detection and verdict.clip:
            saved = self.clip_writer.save(result.label, result.source, result.offset_s, result.samples)
        self.hold.keep(result, [Path(p) for p in (queued, saved) if p])  # until the next window is checked for speech
        self.ledger.event(result, source, "on-device", queued, saved, OVER_BUDGET if decision.over_budget else "none")
        summary.escalated += bool(queued)
        summary.over_budget += decision.over_budget is not None
        if not self.options.quiet:
            self.view.answered(result, escalation if queued else None)


class Stoppers:
    """What ends the live sources on SIGTERM. Kept after a source ends: a watcher's or a stream's stop also
    ends its wait for the next one (each is the same bound method every time, so the list stays as short as
    the kinds of input)."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []

    def add(self, stop: Callable[[], None] | None) -> None:
        if stop is not None and stop not in self._stops:
            self._stops.append(stop)

    def stop_all(self) -> None:
        for stop in list(self._stops):
            stop()
