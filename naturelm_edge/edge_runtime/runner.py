"""``edge-run``: the window pipeline's results -> event store, sinks, clips, escalation queue and live view.

Every window's outcome is committed to ``OUT/events.db`` before the next window is read; on restart,
windows already recorded for a source are skipped, so nothing is answered twice and nothing reported is
lost. SIGINT and SIGTERM finish the current window, flush, and exit 0.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console

from naturelm_edge.atomic import atomic_path
from naturelm_edge.bundle.open import Bundle
from naturelm_edge.device_profiles import Profile
from naturelm_edge.edge_runtime.clips import ClipWriter, RetentionPolicy
from naturelm_edge.edge_runtime.engine import Engine
from naturelm_edge.edge_runtime.escalation import ClipStore, Decision, EscalationPolicy, Sender
from naturelm_edge.edge_runtime.gate import GateSettings
from naturelm_edge.edge_runtime.live_view import LiveView
from naturelm_edge.edge_runtime.pipeline import RESUMED, WindowPipeline, WindowResult
from naturelm_edge.edge_runtime.screening import SPEECH
from naturelm_edge.edge_runtime.sinks import Sinks
from naturelm_edge.edge_runtime.site import SiteRules, Verdict
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.edge_runtime.speech import MARGIN_S, masked
from naturelm_edge.edge_runtime.store import OVER_BUDGET, Event, EventStore
from naturelm_edge.errors import AudioError, EdgeError


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
    privacy: str = "drop"  # drop | mask | off: what happens to windows where people talk
    site: SiteRules = field(default_factory=SiteRules)


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

    @property
    def real_time_factor(self) -> float:
        return self.busy_s / self.audio_s if self.audio_s else 0.0


class Runner:
    """``edge-run``'s consumer of the window pipeline: it commits, writes, saves clips, queues and shows."""

    def __init__(self, bundle: Bundle, profile: Profile, options: RunOptions, console: Console | None = None) -> None:
        self.bundle, self.profile, self.options = bundle, profile, options
        self.console = console or Console(stderr=True, soft_wrap=True)
        options.out.mkdir(parents=True, exist_ok=True)
        self.engine = Engine(bundle, profile, options.detector, options.detector_threshold)
        self.spec = bundle.audio.spec
        self.policy = None if options.escalate == "off" else EscalationPolicy.for_profile(
            profile.escalation, options.confidence_threshold)
        self.pipeline = WindowPipeline(self.engine, options.gate, privacy=options.privacy)  # refuses first
        self.store = EventStore(options.out / "events.db")
        self.sinks = Sinks(options.out, options.formats)
        self.clips = ClipStore(options.out / "escalation-clips")
        self.clip_writer = ClipWriter(options.out / "clips", self.spec.sample_rate, options.retention)
        url = options.escalate if options.escalate.startswith(("http://", "https://")) else None
        self.sender = Sender(self.store, url, self.spec.sample_rate, self.engine.labels, options.token)
        self.summary = Summary(providers=self.engine.providers, missing_providers=self.engine.missing)
        self.view = LiveView(self.console, self.summary)
        self._stop = False
        self._stoppers: list[Callable[[], None]] = []  # what ends the live sources (a watcher, a stream, a mic)
        self._kept: dict[str, _Kept] = {}  # per source: the last answered window's audio, held until the next is screened
        self.site = options.site
        self._pending: dict[tuple[str, str], list[tuple[WindowResult, Verdict | None]]] = {}  # awaiting confirmation

    def stop(self, *_: object) -> None:
        self._stop = True
        for stop in list(self._stoppers):
            stop()

    def run(self, sources: Iterable[Source], together: list[Iterable[Source]] | None = None,
            stoppers: Iterable[Callable[[], None]] = ()) -> Summary:
        """Every window of ``sources`` in turn; or of several live streams at once (``together``: one
        iterable of sources per stream, each read by a thread with its own pipeline and screening state,
        its windows committed here one at a time so the store keeps one writer). ``stoppers``: what ends
        those streams on SIGTERM, even between two connections."""
        for stop in stoppers:
            self._add_stopper(stop)
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
            self.sender.stop()  # the background thread first: two concurrent flushes could send twice
            self.sender.flush()
            self.summary.delivered = self.sender.delivered
            self.summary.clips_saved, self.summary.clips_skipped = self.clip_writer.saved, self.clip_writer.skipped
            self.summary.event_files_skipped = self.sinks.skipped
            self.summary.queue = self.store.queue_length()
            self.store.close()
        return self.summary

    def _skip(self, source: Source) -> Callable[[float], bool]:
        return lambda offset_s: self.store.window_done(source.id, offset_s)

    def _add_stopper(self, stop: Callable[[], None] | None) -> None:
        """Kept after the source ends: a watcher's or a stream's stop also ends its wait for the next one
        (each is the same bound method every time, so the list stays as short as the kinds of input)."""
        if stop is not None and stop not in self._stoppers:
            self._stoppers.append(stop)

    def _run_source(self, source: Source) -> None:
        self._add_stopper(source.stop)
        try:
            for result in self.pipeline.run(source, skip=self._skip(source)):
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
        self._expire(source.id)
        self._release(source.id)

    def _run_together(self, streams: list[Iterable[Source]]) -> None:
        results: queue.Queue = queue.Queue(maxsize=4)  # a slow commit holds the readers back, bounded

        def read(stream: Iterable[Source]) -> None:
            pipeline = self.pipeline.fresh()
            try:
                for source in stream:
                    self._add_stopper(source.stop)
                    try:
                        for result in pipeline.run(source, skip=self._skip(source)):
                            results.put((result, source))
                    except AudioError as err:
                        results.put((err, source))
                    results.put((None, source))
                    if self._stop:
                        return
            except EdgeError as err:  # a stream that can never work (no audio track): the whole run stops
                fatal.append(err)
                self.stop()
            except Exception as err:  # noqa: BLE001 - a stream that cannot go on ends; the others do not
                results.put((AudioError(str(err)), None))
            finally:
                results.put((StopIteration, None))

        fatal: list[EdgeError] = []

        threads = [threading.Thread(target=read, args=(stream,), daemon=True) for stream in streams]
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            item, source = results.get()
            if item is StopIteration:
                running -= 1
            elif isinstance(item, AudioError):
                self._failed(item)
            elif item is None:
                self._done(source)
            elif not self._stop:
                self._take(item, source)
        if fatal:
            raise fatal[0]

    def _release(self, source: str) -> None:
        kept = self._kept.pop(source, None)
        if kept is not None:
            self.sender.held.difference_update(str(p) for p in kept.files)

    def _settle(self, result: WindowResult) -> None:
        """Speech this window heard inside the previous window's kept audio is zeroed there too, before the
        sender may send it (windows overlap by half; each is scored on its own); so is speech inside
        detections still waiting for confirmation."""
        for held in self._pending.values():
            for i, (waiting, verdict) in enumerate(held):
                inside = self._speech_inside(result, waiting.source, waiting.window_start, waiting.samples.shape[0])
                if inside:
                    held[i] = (replace(waiting, samples=masked(waiting.samples, inside)), verdict)
        kept = self._kept.get(result.source)
        inside = self._speech_inside(result, kept.source, kept.start, kept.length) if kept is not None else []
        if inside:
            for path in kept.files:
                mask_file(path, inside)
            self.summary.masked_after += 1
        self._release(result.source)

    def _speech_inside(self, result: WindowResult, source: str, start: int, length: int) -> list[tuple[int, int]]:
        """The speech ``result`` found, in the coordinates of another window of the stream (first sample
        ``start``, ``length`` samples), where it or its masking margin reaches into that window."""
        if source != result.source:
            return []
        shift, margin = result.window_start - start, int(MARGIN_S * self.spec.sample_rate)
        return [(a + shift, b + shift) for a, b in result.speech if b + shift + margin > 0 and a + shift - margin < length]

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
        summary = self.summary
        if result.outcome == RESUMED:
            summary.resumed += 1
            return
        summary.windows += 1
        if source.overflows is not None:
            summary.overflows = source.overflows()
        summary.audio_s += min(result.duration_s, self.spec.hop_s / source.time_expansion)
        setattr(summary, result.outcome, getattr(summary, result.outcome) + 1)
        self._settle(result)
        if result.outcome == SPEECH:
            self._commit(result, source, None, None, stage="privacy")
            return
        if not result.answered:  # gated, not a call, or already heard: done, nothing to report
            self.store.record(result.source, result.offset_s, True, [], [], _screening(result))
            return
        summary.speech_masked += bool(result.speech)
        verdict = self.site.verdict(result.label, result.confidence) if result.detection else Verdict()
        if not verdict.report:
            self._remove(result, verdict.removed_by)
            return
        for ready, ready_verdict in self._confirmed(result, verdict):
            self._report(ready, source, ready_verdict)

    def _remove(self, result: WindowResult, rule: str) -> None:
        """A window a site rule keeps from being reported: counted, marked done, nothing stored."""
        self.summary.removed[rule] = self.summary.removed.get(rule, 0) + 1
        self.store.record(result.source, result.offset_s, True, [], [], _screening(result, f"removed:{rule}"))

    def _confirmed(self, result: WindowResult, verdict: Verdict) -> list[tuple[WindowResult, Verdict]]:
        """Detections ready to report: all at once when the site asks for none, else a label's detections
        once it was heard ``confirm_count`` times within ``confirm_within_s`` (the earlier ones with it)."""
        site = self.site
        if site.confirm_count <= 1 or not result.detection:
            return [(result, verdict)]
        key = (result.source, result.label or result.answer)
        held = self._pending.pop(key, [])  # a verdict of None: already reported, it still confirms what follows
        for stale in [p for p in held if result.offset_s - p[0].offset_s > site.confirm_within_s and p[1]]:
            self._remove(stale[0], "confirm")
        held = [p for p in held if result.offset_s - p[0].offset_s <= site.confirm_within_s] + [(result, verdict)]
        if len(held) >= site.confirm_count:
            self._pending[key] = [(r, None) for r, _ in held]
            return [p for p in held if p[1] is not None]
        self._pending[key] = held
        return []

    def _expire(self, source: str) -> None:
        """The recording ended: detections still waiting for confirmation are not reported."""
        for key in [k for k in self._pending if k[0] == source]:
            for result, verdict in self._pending.pop(key):
                if verdict is not None:
                    self._remove(result, "confirm")

    def _report(self, result: WindowResult, source: Source, verdict: Verdict) -> None:
        summary = self.summary
        decision = self.policy.judge(result, self.engine.labels, verdict.escalate) if self.policy else Decision()
        escalation = decision.reason
        result = replace(result, escalation=escalation)
        queued = self._queue_audio(result) if escalation else None
        saved = None
        if self.options.clips and result.detection and verdict.clip:
            saved = self.clip_writer.save(result.label, result.source, result.offset_s, result.samples)
        kept = [Path(p) for p in (queued, saved) if p]
        if kept:  # held back from the sender until the next window has been checked for speech
            self.sender.held.update(str(p) for p in kept)
            self._kept[result.source] = _Kept(result.source, result.window_start, result.samples.shape[0], kept)
        self._commit(result, source, queued, saved, stage="on-device", over_budget=decision.over_budget is not None)
        summary.escalated += bool(queued)
        summary.over_budget += decision.over_budget is not None
        if not self.options.quiet:
            flag = f" [magenta]-> full model ({escalation})[/magenta]" if queued else ""
            self.view.answer(f"{Path(result.source).name} {result.offset_s:7.1f}s  {result.answer!r} "
                             f"({result.confidence:.2f}){flag}")

    def _commit(self, result: WindowResult, source: Source, queued: Path | None, saved: str | None,
                stage: str, over_budget: bool = False) -> None:
        """The window's event, its escalation and its 'done' mark in one transaction, then the event files."""
        speech = result.outcome == SPEECH
        event = Event(source=result.source, start_utc=result.start_utc, offset_s=result.offset_s,
                      duration_s=result.duration_s, question=result.question or "", answer=result.answer,
                      label=result.label, confidence=1.0 if speech else result.confidence,
                      confidence_min=1.0 if speech else result.confidence_min, stage=stage,
                      escalation_status="queued" if queued else OVER_BUDGET if over_budget else "none",
                      escalation_answer=None,
                      clip_path=saved, bundle_id=self.bundle.id, profile=self.profile.name,
                      created_utc=datetime.now(timezone.utc).isoformat())
        (event.id,) = self.store.record(result.source, result.offset_s, False, [event], [str(queued) if queued else None],
                                        _screening(result))
        self.sinks.write(event, high_hz=self.spec.sample_rate / 2 * source.time_expansion)


def _screening(result: WindowResult, outcome: str | None = None) -> tuple:
    """The window's row of ``SCREENING_COLUMNS``: why it was dropped, or how it reached the models."""
    why = result.why
    measures = (why.level_db, why.floor_db, why.detector_score, why.detector_threshold) if why else (None,) * 4
    return (outcome or result.outcome, *measures)


@dataclass
class _Kept:
    """Files holding the last answered window's audio (escalation queue, clip) and where that window lies."""

    source: str
    start: int  # first sample in its stream (model rate)
    length: int
    files: list[Path]


def mask_file(path: Path, stretches: list[tuple[int, int]]) -> None:
    """Zero ``stretches`` (with the privacy margins) in a kept clip (.npy or an audio file), atomically."""
    import soundfile as sf

    if not path.exists():  # a clip the retention policy already removed
        return
    with atomic_path(path, ".masking") as tmp:
        if path.suffix == ".npy":
            with tmp.open("wb") as handle:
                np.save(handle, masked(np.load(path), stretches))
        else:
            with sf.SoundFile(str(path)) as clip:
                audio, rate, subtype, kind = clip.read(dtype="float32"), clip.samplerate, clip.subtype, clip.format
            sf.write(str(tmp), masked(audio, stretches), rate, subtype=subtype, format=kind)
