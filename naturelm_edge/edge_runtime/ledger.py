"""Each window into the event store once: its event (with its escalation) and its 'done' mark in one
transaction, then the event files (JSONL, CSV, Raven). A window with no event is only marked done, with the
screening's measures, so a restarted run skips it and ``--explain`` can say why it went where it went."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from naturelm_edge.edge_runtime.pipeline import WindowResult
from naturelm_edge.edge_runtime.screening import SPEECH
from naturelm_edge.edge_runtime.sinks import Sinks
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.edge_runtime.store import Event, EventStore


class Ledger:
    def __init__(self, store: EventStore, sinks: Sinks, bundle_id: str, profile: str, sample_rate: int) -> None:
        self.store, self.sinks = store, sinks
        self.bundle_id, self.profile, self.sample_rate = bundle_id, profile, sample_rate

    def done(self, result: WindowResult, outcome: str | None = None) -> None:
        """A window with nothing to report (gated, not a call, removed by a site rule: ``outcome``)."""
        self.store.record(result.source, result.offset_s, True, [], [], screening(result, outcome))

    def event(self, result: WindowResult, source: Source, stage: str, queued: Path | None = None,
              saved: str | None = None, status: str = "none") -> None:
        """The window's event; ``queued``: its audio for the full model (status ``queued``), ``saved``: its clip."""
        speech = result.outcome == SPEECH
        event = Event(source=result.source, start_utc=result.start_utc, offset_s=result.offset_s,
                      duration_s=result.duration_s, question=result.question or "", answer=result.answer,
                      label=result.label, confidence=1.0 if speech else result.confidence,
                      confidence_min=1.0 if speech else result.confidence_min, stage=stage,
                      escalation_status="queued" if queued else status, escalation_answer=None,
                      clip_path=saved, bundle_id=self.bundle_id, profile=self.profile,
                      created_utc=datetime.now(timezone.utc).isoformat())
        (event.id,) = self.store.record(result.source, result.offset_s, False, [event],
                                        [str(queued) if queued else None], screening(result))
        self.sinks.write(event, high_hz=self.sample_rate / 2 * source.time_expansion)


def screening(result: WindowResult, outcome: str | None = None) -> tuple:
    """The window's row of ``SCREENING_COLUMNS``: why it was dropped, or how it reached the models."""
    why = result.why
    measures = (why.level_db, why.floor_db, why.detector_score, why.detector_threshold) if why else (None,) * 4
    return (outcome or result.outcome, *measures)
