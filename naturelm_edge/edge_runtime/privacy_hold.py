"""Audio kept for a window (its escalation clip, its detection clip) is held from the sender until the next
window of its stream has been checked for speech: windows overlap by half and each is scored on its own, so
speech the next window finds inside a kept one is zeroed there too before anything leaves the device."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from naturelm_edge.atomic import atomic_path
from naturelm_edge.edge_runtime.confirmation import Waiting
from naturelm_edge.edge_runtime.pipeline import WindowResult
from naturelm_edge.edge_runtime.speech import MARGIN_S, masked


@dataclass
class _Kept:
    """Files holding the last answered window's audio (escalation queue, clip) and where that window lies."""

    source: str
    start: int  # first sample in its stream (model rate)
    length: int
    files: list[Path]


class PrivacyHold:
    """``held``: the sender's set of files not to send yet (this class adds and releases them)."""

    def __init__(self, held: set[str], sample_rate: int) -> None:
        self.held, self.margin, self.rate = held, int(MARGIN_S * sample_rate), sample_rate
        self._kept: dict[str, _Kept] = {}  # per source: the last answered window's audio, until the next is screened

    def keep(self, result: WindowResult, files: list[Path]) -> None:
        if files:
            self.held.update(str(p) for p in files)
            self._kept[result.source] = _Kept(result.source, result.window_start, result.samples.shape[0], files)

    def settle(self, result: WindowResult, waiting: Iterable[Waiting]) -> bool:
        """Speech ``result`` heard inside the previous window's kept audio is zeroed there, and inside detections
        still ``waiting`` for confirmation; that audio is then released. True when kept files were masked."""
        for held in waiting:
            for i, (other, verdict) in enumerate(held):
                inside = self.speech_inside(result, other.source, other.window_start, other.samples.shape[0])
                if inside:
                    held[i] = (replace(other, samples=masked(other.samples, inside, self.rate)), verdict)
        kept = self._kept.get(result.source)
        inside = self.speech_inside(result, kept.source, kept.start, kept.length) if kept is not None else []
        for path in kept.files if inside else []:
            mask_file(path, inside, self.rate)
        self.release(result.source)
        return bool(inside)

    def release(self, source: str) -> None:
        kept = self._kept.pop(source, None)
        if kept is not None:
            self.held.difference_update(str(p) for p in kept.files)

    def speech_inside(self, result: WindowResult, source: str, start: int, length: int) -> list[tuple[int, int]]:
        """The speech ``result`` found, in the coordinates of another window of the stream (first sample
        ``start``, ``length`` samples), where it or its masking margin reaches into that window."""
        if source != result.source:
            return []
        shift, margin = result.window_start - start, self.margin
        return [(a + shift, b + shift) for a, b in result.speech if b + shift + margin > 0 and a + shift - margin < length]


def mask_file(path: Path, stretches: list[tuple[int, int]], rate: int) -> None:
    """Zero ``stretches`` (samples at the bundle's ``rate``, with the privacy margins) in a kept clip (.npy or an
    audio file, both at that rate), atomically."""
    import soundfile as sf

    if not path.exists():  # a clip the retention policy already removed
        return
    with atomic_path(path, ".masking") as tmp:
        if path.suffix == ".npy":
            with tmp.open("wb") as handle:
                np.save(handle, masked(np.load(path), stretches, rate))
        else:
            with sf.SoundFile(str(path)) as clip:
                audio, rate, subtype, kind = clip.read(dtype="float32"), clip.samplerate, clip.subtype, clip.format
            sf.write(str(tmp), masked(audio, stretches, rate), rate, subtype=subtype, format=kind)
