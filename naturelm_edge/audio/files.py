"""Finding recordings on disk: the suffixes the decoder reads and a recursive, sorted lister."""

from __future__ import annotations

from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")


def list_audio(root: Path) -> list[Path]:
    """Every audio file under ``root`` (recursive), sorted by path."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
