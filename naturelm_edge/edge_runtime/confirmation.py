"""A site's confirmation rule: a label is reported once it was heard ``count`` times within ``within_s``
seconds of one recording (the earlier detections with it); detections that never reach that are not reported."""

from __future__ import annotations

from collections.abc import Iterable

from naturelm_edge.edge_runtime.pipeline import WindowResult
from naturelm_edge.edge_runtime.site import SiteRules, Verdict

Waiting = list[tuple[WindowResult, Verdict | None]]  # a verdict of None: already reported, it still confirms


class Confirmation:
    def __init__(self, site: SiteRules) -> None:
        self.site = site
        self._pending: dict[tuple[str, str], Waiting] = {}  # (source, label) -> detections awaiting confirmation

    def take(self, result: WindowResult, verdict: Verdict) -> tuple[list[tuple[WindowResult, Verdict]], list[WindowResult]]:
        """(detections ready to report, detections that waited too long and are not reported)."""
        site = self.site
        if site.confirm_count <= 1 or not result.detection:
            return [(result, verdict)], []
        key = (result.source, result.label or result.answer)
        held = self._pending.pop(key, [])
        stale = [r for r, v in held if result.offset_s - r.offset_s > site.confirm_within_s and v]
        held = [p for p in held if result.offset_s - p[0].offset_s <= site.confirm_within_s] + [(result, verdict)]
        if len(held) >= site.confirm_count:
            self._pending[key] = [(r, None) for r, _ in held]
            return [(r, v) for r, v in held if v is not None], stale
        self._pending[key] = held
        return [], stale

    def expire(self, source: str) -> list[WindowResult]:
        """The recording ended: its detections still waiting for confirmation, which are not reported."""
        expired = []
        for key in [k for k in self._pending if k[0] == source]:
            expired += [result for result, verdict in self._pending.pop(key) if verdict is not None]
        return expired

    def waiting(self) -> Iterable[Waiting]:
        """The lists of detections awaiting confirmation (the privacy hold masks speech inside them in place)."""
        return self._pending.values()
