"""Small helpers several test modules share: edge and edge-run in their own process, the stored events."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def run_edge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``edge-run ARGS`` in a fresh interpreter, as a device runs it."""
    return subprocess.run([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", *args],
                          capture_output=True, text=True, timeout=timeout)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``edge ARGS`` in a fresh interpreter (its own peak memory, its own exit code)."""
    return subprocess.run([sys.executable, "-c", "from naturelm_edge.cli import run; run()", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def events(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "events.db")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM events ORDER BY id")]
    db.close()
    return rows
