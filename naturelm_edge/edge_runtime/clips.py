"""Clips of detections as FLAC, under a retention policy; a full disk costs clips, never detections.

Audio files (clips, the escalation queue's windows) are written only while they leave a reserve free on
their file system (a tenth of it, at most 8 MiB): on a filling card the audio stops first and the event
store, which must never lose a detection, still has room to commit.

Retention (applied after each saved clip, oldest first): clips older than ``max_age_days`` go; while clips
take more than ``max_disk_share`` of their file system, the oldest go; but the newest ``keep_per_label``
clips of every label always stay (BirdNET-Go's policy).
"""

from __future__ import annotations

import errno
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from naturelm_edge.atomic import atomic_path


@dataclass
class RetentionPolicy:
    max_disk_share: float = 0.8
    max_age_days: float = 90.0
    keep_per_label: int = 10  # the newest clips of each label, kept whatever the other limits say
    max_mb: float | None = None  # the clip folder's own size limit (a shared card, a long season)


RESERVE_MAX = 8 * 2**20


def leaves_reserve(folder: Path, size: int) -> bool:
    """Whether writing ``size`` bytes under ``folder`` leaves the event store its reserve."""
    usage = shutil.disk_usage(folder)
    return usage.free - size >= min(RESERVE_MAX, usage.total // 10)


class ClipWriter:
    def __init__(self, root: Path, sample_rate: int, policy: RetentionPolicy | None = None) -> None:
        self.root, self.sample_rate = Path(root), sample_rate
        self.policy = policy or RetentionPolicy()
        self.saved = 0
        self.skipped = 0

    def save(self, label: str | None, source: str, offset_s: float, audio: np.ndarray) -> str | None:
        """Write a clip; on any file-system error (disk full, read-only card) count it and return None."""
        folder = self.root / _slug(label or "unknown")
        path = folder / f"{_slug(Path(source).stem)}_{offset_s:09.3f}.flac"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not leaves_reserve(folder, 2 * np.asarray(audio).size):  # 16-bit PCM bounds the FLAC's size
                raise OSError(errno.ENOSPC, "kept free for the event store")
            with atomic_path(path) as tmp:
                sf.write(str(tmp), np.asarray(audio, np.float32), self.sample_rate, format="FLAC", subtype="PCM_16")
        except (OSError, sf.LibsndfileError, RuntimeError):
            self.skipped += 1
            return None
        self.saved += 1
        self.apply_retention()
        return str(path)

    def apply_retention(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        clips = sorted(self.root.glob("*/*.flac"), key=lambda p: p.stat().st_mtime)
        by_label: dict[str, list[Path]] = {}
        for clip in clips:
            by_label.setdefault(clip.parent.name, []).append(clip)
        protected = {c for group in by_label.values() for c in group[-self.policy.keep_per_label :]}
        for clip in clips:
            if clip not in protected and now - clip.stat().st_mtime > self.policy.max_age_days * 86400:
                clip.unlink(missing_ok=True)
        usage = shutil.disk_usage(self.root)
        for clip in [c for c in clips if c.exists() and c not in protected]:
            if (usage.used / usage.total) <= self.policy.max_disk_share:
                break
            size = clip.stat().st_size
            clip.unlink(missing_ok=True)
            usage = usage._replace(used=usage.used - size)
        if self.policy.max_mb is not None:
            kept = [c for c in clips if c.exists()]
            total = sum(c.stat().st_size for c in kept)
            for clip in [c for c in kept if c not in protected]:  # oldest first
                if total <= self.policy.max_mb * 1e6:
                    break
                total -= clip.stat().st_size
                clip.unlink(missing_ok=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "clip"
