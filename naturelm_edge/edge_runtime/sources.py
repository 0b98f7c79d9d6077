"""Where audio comes from: recordings (files, folders sorted by recorder time) and raw PCM on stdin."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np

from naturelm_edge.audio import WindowSpec
from naturelm_edge.audio.decode import stream as decode_stream
from naturelm_edge.audio.files import list_audio
from naturelm_edge.audio.resample import StreamResampler
from naturelm_edge.edge_runtime.timestamps import recorder_of, recording_start
from naturelm_edge.errors import EdgeError


@dataclass
class Source:
    """One stream of audio at the model's rate, ``time_expansion`` times slower than it was recorded.

    The window pipeline cuts it into windows and reports offsets in real seconds from ``start``.
    """

    id: str
    start: datetime | None
    time_expansion: float
    blocks: Callable[[], Iterator[np.ndarray]]  # model-rate mono float32 blocks, decoded as pulled
    stop: Callable[[], None] | None = None  # ask a live source to finish its current block
    overflows: Callable[[], int] | None = None  # blocks a live source has dropped so far
    recorder: str | None = None  # the device of a series of files: they share the gate's noise floor


def file_source(path: Path, spec: WindowSpec, time_expansion: float = 1.0, start: datetime | None = None,
                stop: Callable[[], None] | None = None) -> Source:
    """One recording, decoded and resampled block by block as the pipeline pulls it."""
    return Source(str(path), start, time_expansion,
                  lambda: decode_stream(path, spec.sample_rate, time_expansion=time_expansion), stop,
                  recorder=recorder_of(path))


def file_sources(paths: list[Path], spec: WindowSpec, time_expansion: float = 1.0) -> list[Source]:
    """Files and folders (recursive), ordered by recorder timestamp, then path."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += list_audio(path)
        elif path.exists():
            files.append(path)
        else:
            raise EdgeError(f"{path}: no such file or folder.")
    starts = {f: recording_start(f) for f in files}
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    files.sort(key=lambda f: (starts[f] or epoch, str(f)))
    return [file_source(f, spec, time_expansion, starts[f]) for f in files]


def stdin_source(spec: WindowSpec, rate: int, channels: int = 1, stream: BinaryIO | None = None,
                 block_seconds: float = 0.5, time_expansion: float = 1.0) -> Source:
    """Raw signed 16-bit little-endian PCM (``arecord -f S16_LE``) at ``rate`` Hz; the wall clock dates it."""
    if rate <= 0 or channels <= 0:
        raise EdgeError(f"stdin: --rate and --channels must be positive (got {rate}, {channels}).")
    handle = stream or sys.stdin.buffer
    started = datetime.now(timezone.utc)

    def blocks() -> Iterator[np.ndarray]:
        resampler = StreamResampler(rate / time_expansion, spec.sample_rate)
        frame = 2 * channels
        size = int(rate * block_seconds) * frame
        leftover = b""
        while True:
            data = handle.read(size)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % frame
            leftover = data[usable:]
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
            out = resampler.process(samples.reshape(-1, channels).mean(axis=1))
            if out.size:
                yield out
        tail = resampler.flush()
        if tail.size:
            yield tail

    return Source(f"stdin:{started.isoformat()}", started, time_expansion, blocks)

