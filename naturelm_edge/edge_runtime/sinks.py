"""Event outputs besides the SQLite store: JSONL, CSV and a Raven selection table (append-only)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict
from pathlib import Path

from naturelm_edge.edge_runtime.store import Event

log = logging.getLogger(__name__)
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Common Name", "Answer", "Confidence", "Begin Path", "File Offset (s)", "Begin Date Time"]


# Raven writes frequencies as decimals; readers such as crowsetta refuse the integers an earlier version wrote
class Sinks:
    """Writes each event as it is committed; files are opened in append mode so restarts add, never erase."""

    def __init__(self, out: Path, formats: list[str]) -> None:
        self.out, self.formats = out, formats
        self.skipped = 0  # events the text files missed (full or failing disk); events.db holds them all

    def write(self, event: Event, high_hz: float = 8000.0) -> None:
        """Append the event to every text file; a failing disk costs these copies, never the run.

        ``high_hz``: the top of the band the model heard, in the recording's real Hz (time expansion undone:
        a bat recording slowed 10 times was heard up to 80 kHz).
        """
        try:
            self._write(event, high_hz)
        except OSError as err:
            if not self.skipped:
                log.warning("%s: event files could not be written (%s); events.db keeps every event",
                            self.out, err.strerror or err)
            self.skipped += 1

    def _write(self, event: Event, high_hz: float) -> None:
        row = asdict(event)
        if "jsonl" in self.formats:
            with (self.out / "events.jsonl").open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        if "csv" in self.formats:
            path = self.out / "events.csv"
            new = not path.is_file()
            with path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
        if "raven" in self.formats:
            path = self.out / "events.selections.txt"
            new = not path.is_file()
            with path.open("a", newline="") as handle:
                writer = csv.writer(handle, delimiter="\t")
                if new:
                    writer.writerow(RAVEN_COLUMNS)
                writer.writerow([row["id"], "Spectrogram 1", 1, f"{event.offset_s:.3f}",
                                 f"{event.offset_s + event.duration_s:.3f}", "0.0", f"{high_hz:.1f}",
                                 event.label or event.answer,  # never empty: Raven readers (crowsetta) refuse it
                                 event.answer, f"{event.confidence:.3f}", event.source, f"{event.offset_s:.3f}",
                                 event.start_utc or ""])
