"""Absolute time of a recording: recorder file names (AudioMoth, Song Meter), GUANO, or the clock.

AudioMoth names files ``YYYYMMDD_HHMMSS.WAV`` in UTC (``T.WAV`` for triggered recordings). Song Meters
write ``PREFIX_YYYYMMDD_HHMMSS.wav`` in the recorder's own time zone (``recorder_tz``), SM3BAT
``PREFIX_ch_YYYYMMDD_HHMMSS`` with ``$`` instead of ``_`` when GPS-synced. GUANO's ``Timestamp`` (ISO 8601)
wins when present: it carries its own offset.
"""

from __future__ import annotations

import re
import struct
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

_NAME = re.compile(r"(?:^|[_$-])(\d{8})[_$](\d{6})(?=T?\.|[_-]|$)")


def from_name(name: str, recorder_tz: tzinfo = timezone.utc) -> datetime | None:
    """Start time from a recorder file name; AudioMoth names (no prefix) are UTC by definition."""
    stem = Path(name).name
    match = _NAME.search(stem)
    if not match:
        return None
    try:
        naive = datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    is_audiomoth = match.start() == 0
    return naive.replace(tzinfo=timezone.utc if is_audiomoth else recorder_tz)


def recorder_of(path: Path) -> str | None:
    """The recorder a file came from, when its name says it is one of a series: its folder and the name's
    prefix (a Song Meter's ``PREFIX_``; AudioMoth names have none, one card per recorder). None otherwise."""
    match = _NAME.search(path.name)
    return f"{path.parent}/{path.name[:match.start()]}" if match else None


def guano(path: Path) -> dict[str, str]:
    """Key/value pairs of a WAV file's GUANO (``guan``) chunk, or an empty dict."""
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return {}
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return {}
                kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"guan":
                    text = handle.read(size).decode("utf-8", errors="replace")
                    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
                    return {k.strip(): v.strip() for k, v in pairs}
                if kind == b"data" and size in (0, 0xFFFFFFFF):
                    return {}
                handle.seek(size + (size & 1), 1)
    except OSError:
        return {}


def from_guano(path: Path) -> datetime | None:
    value = guano(path).get("Timestamp")
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def recording_start(path: Path, recorder_tz: tzinfo = timezone.utc) -> datetime | None:
    """GUANO timestamp, else the file-name timestamp, else None (the caller decides: mtime or clock)."""
    return from_guano(path) or from_name(path.name, recorder_tz)


def offset(start: datetime | None, seconds: float) -> str | None:
    return None if start is None else (start + timedelta(seconds=seconds)).isoformat()
