"""The event store: one SQLite file (WAL) holding events, finished windows and the escalation queue.

Every event is committed before the next window is read, so a process killed at any instant keeps every
event it reported; ``windows`` records which (source, offset) pairs are done so a restart never answers a
window twice; ``escalations`` is the store-and-forward queue. The schema is versioned and migrated.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from naturelm_edge.errors import DiskFullError

SCHEMA_VERSION = 4
OVER_BUDGET = "over-budget"  # the escalation status of a window its recorder's hourly budget kept from the full model
MIGRATIONS = {
    1: """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        start_utc TEXT,
        offset_s REAL NOT NULL,
        duration_s REAL NOT NULL,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        label TEXT,
        confidence REAL NOT NULL,
        confidence_min REAL NOT NULL,
        stage TEXT NOT NULL,
        escalation_status TEXT NOT NULL,
        escalation_answer TEXT,
        clip_path TEXT,
        bundle_id TEXT NOT NULL,
        profile TEXT NOT NULL,
        created_utc TEXT NOT NULL
    );
    CREATE TABLE windows (
        source TEXT NOT NULL,
        offset_s REAL NOT NULL,
        gated INTEGER NOT NULL,
        PRIMARY KEY (source, offset_s)
    );
    CREATE TABLE escalations (
        event_id INTEGER PRIMARY KEY REFERENCES events(id),
        status TEXT NOT NULL,            -- queued | delivered
        audio_path TEXT NOT NULL,        -- the window's audio, kept until delivery
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX escalations_due ON escalations(status, next_try);
    """,
    # what each outbound sink (MQTT) has delivered: events go out in id order, so one mark per sink
    2: """
    CREATE TABLE published (
        sink TEXT PRIMARY KEY,
        last_event_id INTEGER NOT NULL
    );
    """,
    # why each window went where it went (edge-run --explain): the screening's outcome and measures
    3: """
    ALTER TABLE windows ADD COLUMN outcome TEXT;
    ALTER TABLE windows ADD COLUMN level_db REAL;
    ALTER TABLE windows ADD COLUMN floor_db REAL;
    ALTER TABLE windows ADD COLUMN detector_score REAL;
    """,
    # the threshold the detector score was held against (the bundle's, or the recorder's site floor)
    4: """
    ALTER TABLE windows ADD COLUMN detector_threshold REAL;
    """,
}
SCREENING_COLUMNS = ("outcome", "level_db", "floor_db", "detector_score", "detector_threshold")


@dataclass(kw_only=True)
class Event:
    source: str
    start_utc: str | None
    offset_s: float
    duration_s: float
    question: str
    answer: str
    label: str | None
    confidence: float
    confidence_min: float
    stage: str  # gate | on-device | full-model
    escalation_status: str  # none | queued | confirmed | revised | over-budget (the recorder's hourly budget was spent)
    escalation_answer: str | None
    clip_path: str | None
    bundle_id: str
    profile: str
    created_utc: str
    id: int | None = None


def check_schema(path: Path, version: int) -> None:
    """A store written by a newer naturelm-edge is refused in one sentence, never rewritten."""
    if version > SCHEMA_VERSION:
        from naturelm_edge.errors import EdgeError

        raise EdgeError(f"{path}: written by a newer naturelm-edge (store schema {version}; this one reads up to "
                        f"{SCHEMA_VERSION}); update naturelm-edge on this device.")


@contextmanager
def disk_full_is(message: str) -> Iterator[None]:
    """SQLite's 'database or disk is full' (and ENOSPC) as one :class:`DiskFullError` sentence."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as err:
        if "full" not in str(err).lower() and getattr(err, "errno", None) != errno.ENOSPC:
            raise
        raise DiskFullError(message) from err


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with disk_full_is(f"{self.path}: the disk is full; nothing was run. Free space and start again."):
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        check_schema(self.path, version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.lock:
                self.db.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, MIGRATIONS[target].split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {target}")
                self.db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def window_done(self, source: str, offset_s: float) -> bool:
        with self.lock:  # asked from the threads that read streams at the same time
            row = self.db.execute("SELECT 1 FROM windows WHERE source = ? AND offset_s = ?", (source, round(offset_s, 3)))
            return row.fetchone() is not None

    def done_offsets(self, source: str) -> set[float]:
        """Every window of ``source`` already committed (an archive analysis sends them to its workers)."""
        with self.lock:
            return {row[0] for row in self.db.execute("SELECT offset_s FROM windows WHERE source = ?", (source,))}

    def record(self, source: str, offset_s: float, gated: bool, events: list[Event],
               escalate: list[str | None], screening: tuple | None = None) -> list[int]:
        """Commit a window's events, its escalations (audio path or None) and its 'done' mark in one transaction.

        ``screening``: the window's outcome, gate level and floor (dB), detector score and threshold
        (``SCREENING_COLUMNS``).

        A full disk raises :class:`DiskFullError` with the transaction rolled back: the window is not marked
        done, so a run started once there is space again answers it.
        """
        with disk_full_is(f"{self.path}: the disk is full; stopped before the window at {offset_s:.1f} s of "
                          f"{source} (every event before it is kept); free space and run again to resume."):
            return self._record(source, offset_s, gated, events, escalate, screening or (None,) * len(SCREENING_COLUMNS))

    def _record(self, source: str, offset_s: float, gated: bool, events: list[Event],
                escalate: list[str | None], screening: tuple) -> list[int]:
        ids = []
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for event, queue in zip(events, escalate):
                    data = asdict(event)
                    data.pop("id")
                    cursor = self.db.execute(
                        f"INSERT INTO events ({', '.join(data)}) VALUES ({', '.join('?' for _ in data)})",
                        list(data.values()))
                    ids.append(cursor.lastrowid)
                    if queue:
                        self.db.execute("INSERT INTO escalations (event_id, status, audio_path) VALUES (?, 'queued', ?)",
                                        (cursor.lastrowid, queue))
                columns = ", ".join(SCREENING_COLUMNS)
                self.db.execute(f"INSERT OR IGNORE INTO windows (source, offset_s, gated, {columns}) VALUES (?, ?, ?, "
                                f"{', '.join('?' for _ in SCREENING_COLUMNS)})",
                                (source, round(offset_s, 3), int(gated), *screening))
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
                    self.db.execute("ROLLBACK")
                raise
        return ids

    def explain(self, source: str) -> list[dict]:
        """Every window of ``source`` with its screening and the events it produced, in time order."""
        cursor = self.db.execute(
            f"SELECT w.offset_s, {', '.join('w.' + c for c in SCREENING_COLUMNS)}, "
            "GROUP_CONCAT(COALESCE(e.label, e.answer), '; ') AS answers FROM windows w LEFT JOIN events e "
            "ON e.source = w.source AND e.offset_s = w.offset_s WHERE w.source = ? GROUP BY w.offset_s "
            "ORDER BY w.offset_s", (source,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def sources(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT source FROM windows ORDER BY source")]

    def events(self) -> list[Event]:
        cursor = self.db.execute("SELECT * FROM events ORDER BY id")
        names = [d[0] for d in cursor.description]
        return [Event(**dict(zip(names, row))) for row in cursor.fetchall()]

    def event(self, event_id: int) -> Event:
        cursor = self.db.execute("SELECT * FROM events WHERE id = ?", (event_id,))
        names = [d[0] for d in cursor.description]
        return Event(**dict(zip(names, cursor.fetchone())))

    def due_escalations(self, limit: int = 8) -> list[int]:
        rows = self.db.execute("SELECT event_id FROM escalations WHERE status = 'queued' AND next_try <= ? "
                               "ORDER BY event_id LIMIT ?", (time.time(), limit))
        return [r[0] for r in rows.fetchall()]

    def escalation_audio(self, event_id: int) -> str | None:
        row = self.db.execute("SELECT audio_path FROM escalations WHERE event_id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    def escalation_attempts(self, event_id: int) -> int:
        row = self.db.execute("SELECT attempts FROM escalations WHERE event_id = ?", (event_id,)).fetchone()
        return int(row[0]) if row else 0

    def queue_length(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM escalations WHERE status = 'queued'").fetchone()[0]

    def delivered(self, event_id: int, answer: str, label: str | None) -> None:
        """Store the full model's answer next to the on-device one (confirmed or revised), exactly once."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            event = self.event(event_id)
            same = (label or answer).strip().lower() == (event.label or event.answer).strip().lower()
            self.db.execute("UPDATE events SET escalation_status = ?, escalation_answer = ? WHERE id = ?",
                            ("confirmed" if same else "revised", answer, event_id))
            self.db.execute("UPDATE escalations SET status = 'delivered', attempts = attempts + 1 WHERE event_id = ?",
                            (event_id,))
            self.db.execute("COMMIT")

    def failed(self, event_id: int, error: str, backoff_s: float) -> None:
        with self.lock:
            self.db.execute("UPDATE escalations SET attempts = attempts + 1, next_try = ?, last_error = ? "
                            "WHERE event_id = ?", (time.time() + backoff_s, error[:200], event_id))

    def close(self) -> None:
        self.db.close()
