"""What the dashboard shows, read from ``OUT/events.db`` while ``edge-run`` writes it (SQLite WAL readers).

Every request opens its own read-only connection: readers never block the writer and never see half a
window, and a station started on a folder that ``edge-run`` has not created yet says so in one sentence.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from naturelm_edge.edge_runtime.store import OVER_BUDGET, check_schema
from naturelm_edge.errors import EdgeError

EVENT_COLUMNS = ("id", "source", "start_utc", "offset_s", "duration_s", "answer", "label", "confidence", "stage",
                 "escalation_status", "escalation_answer", "clip_path", "bundle_id", "profile", "created_utc")
WHEN = "COALESCE(start_utc, created_utc)"  # recorder time when the recording is dated, else when answered


class StationData:
    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.db_path = self.out / "events.db"
        if not self.db_path.is_file():
            raise EdgeError(f"{self.out}: no events.db in it; give the folder edge-run writes to (its --out).")
        with self._connect() as db:
            check_schema(self.db_path, db.execute("PRAGMA user_version").fetchone()[0])

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def _rows(self, query: str, args: tuple = ()) -> list[sqlite3.Row]:
        db = self._connect()
        try:
            return db.execute(query, args).fetchall()
        finally:
            db.close()

    def events(self, limit: int = 100, after_id: int = 0) -> list[dict]:
        """Events newest first (only those after ``after_id`` when polling), with the answer's source."""
        rows = self._rows(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id DESC LIMIT ?",
                          (after_id, limit))
        return [dict(row, clip=self.clip_name(row["clip_path"]),
                     answered_by="full model" if row["escalation_status"] in ("confirmed", "revised") else "device")
                for row in rows]

    def counts(self, now: datetime | None = None) -> dict:
        """Detections per label per hour for the last 24 h and per day for the last 30 days."""
        now = now or datetime.now(timezone.utc)
        named = "label IS NOT NULL AND stage != 'privacy'"
        since_hour = (now - timedelta(hours=23)).strftime("%Y-%m-%dT%H")
        since_day = (now - timedelta(days=29)).strftime("%Y-%m-%d")
        hourly = self._rows(f"SELECT substr({WHEN}, 1, 13) AS bucket, label, COUNT(*) AS n FROM events "
                            f"WHERE {named} AND substr({WHEN}, 1, 13) >= ? GROUP BY bucket, label", (since_hour,))
        daily = self._rows(f"SELECT substr({WHEN}, 1, 10) AS bucket, label, COUNT(*) AS n FROM events "
                           f"WHERE {named} AND substr({WHEN}, 1, 10) >= ? GROUP BY bucket, label", (since_day,))
        hours = [(now - timedelta(hours=23 - i)).strftime("%Y-%m-%dT%H") for i in range(24)]
        days = [(now - timedelta(days=29 - i)).strftime("%Y-%m-%d") for i in range(30)]
        return {"hours": hours, "hourly": _series(hourly, hours), "days": days, "daily": _series(daily, days)}

    def totals(self) -> dict:
        """Counts from the store alone (what a station without a running ``edge-run`` can say)."""
        windows = self._rows("SELECT COUNT(*) AS n, COALESCE(SUM(gated), 0) AS gated FROM windows")[0]
        stages = {r["stage"]: r["n"] for r in self._rows("SELECT stage, COUNT(*) AS n FROM events GROUP BY stage")}
        queue = self._rows("SELECT COUNT(*) AS n FROM escalations WHERE status = 'queued'")[0]["n"]
        over = self._rows("SELECT COUNT(*) AS n FROM events WHERE escalation_status = ?", (OVER_BUDGET,))[0]["n"]
        last = self._rows("SELECT bundle_id, profile, created_utc FROM events ORDER BY id DESC LIMIT 1")
        return {"windows": windows["n"], "gated": windows["gated"], "events_by_stage": stages,
                "escalation_queue": queue, "over_budget": over, "bundle_id": last[0]["bundle_id"] if last else None,
                "profile": last[0]["profile"] if last else None, "last_event_utc": last[0]["created_utc"] if last else None}

    def clip_name(self, clip_path: str | None) -> str | None:
        """A clip's path relative to ``OUT/clips`` (the only files the station serves), else None."""
        if not clip_path:
            return None
        path = Path(clip_path)
        path = path if path.is_absolute() else self.out / path
        try:
            return path.resolve().relative_to((self.out / "clips").resolve()).as_posix()
        except ValueError:
            return None

    def clip_file(self, name: str) -> Path | None:
        """The clip file called ``name`` under ``OUT/clips``; None for anything outside it or missing."""
        root = (self.out / "clips").resolve()
        path = (root / name).resolve()
        return path if path.is_file() and path.is_relative_to(root) else None

    def disk(self) -> dict:
        """The clip folder's size and the free space of the output's file system."""
        clips = self.out / "clips"
        used = sum(p.stat().st_size for p in clips.rglob("*") if p.is_file()) if clips.is_dir() else 0
        usage = shutil.disk_usage(self.out)
        return {"clips_bytes": used, "free_bytes": usage.free, "total_bytes": usage.total}


def _series(rows: list[sqlite3.Row], buckets: list[str]) -> dict[str, list[int]]:
    """label -> counts aligned with ``buckets``."""
    index = {b: i for i, b in enumerate(buckets)}
    out: dict[str, list[int]] = {}
    for row in rows:
        if row["bucket"] in index:
            out.setdefault(row["label"], [0] * len(buckets))[index[row["bucket"]]] += row["n"]
    return out


def temperatures() -> dict[str, float]:
    """Thermal zones the device reports (Linux sysfs), in degrees Celsius."""
    found = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip()
            found[kind] = int((zone / "temp").read_text().strip()) / 1000
        except (OSError, ValueError):
            continue
    return found
