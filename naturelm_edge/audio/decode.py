"""Decode recordings with soundfile (libsndfile: wav, flac, ogg, mp3), block by block, to mono float32.

Long field recordings are never held whole: :func:`read_blocks` yields fixed-size blocks, and
:func:`stream` resamples them on the fly, so a 2-hour 48 kHz file costs a few blocks of memory. What can
be recovered is: a WAV whose header sizes are unset, wrong or cut mid-frame is read to its last whole
frame (``wav_repair``), NaN and infinite samples are zeroed; each with one warning naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from naturelm_edge.audio.resample import StreamResampler
from naturelm_edge.audio.wav_repair import WavLayout, open_raw, read_layout
from naturelm_edge.errors import AudioError

log = logging.getLogger(__name__)

BLOCK_SECONDS = 5.0
# a block never holds more frames than this, whatever the rate: 5 s of a 500 kHz bat recorder would be 2.5 M
# frames, and the resampler's float64 copies of it were the device's peak memory (about 60 MB)
MAX_BLOCK_FRAMES = 2**17


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says, checked for sense."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    layout: WavLayout | None = None  # set when the WAV header had to be repaired to find the samples

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioInfo:
    """Read and check the header of ``path``; raise :class:`AudioError` naming the file if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes).")
    layout = read_layout(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        if layout is None or layout.frames == 0:
            raise AudioError(f"{path}: not a readable audio file ({_reason(err)}).") from err
        info = None
    if layout is not None and (info is None or info.frames <= 0 or layout.repairs):
        if layout.frames == 0:
            raise AudioError(f"{path}: the recording holds no samples.")
        return AudioInfo(path, layout.sample_rate, layout.channels, layout.frames, "WAV", layout)
    if info.frames <= 0:
        raise AudioError(f"{path}: the recording holds no samples.")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"{path}: the header claims {info.samplerate} Hz and {info.channels} channels.")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


def read_blocks(path: str | Path, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at the file's own rate (channels averaged, as NatureLM does), at most
    ``MAX_BLOCK_FRAMES`` long.

    A repaired WAV and zeroed NaN or infinite samples are each reported by one warning naming the file.
    Raises :class:`AudioError` for a file that ends before its header says (a compressed file cut short)
    once the readable part has been yielded.
    """
    yield from _decoded(probe(path), block_seconds)


def _decoded(info: AudioInfo, block_seconds: float) -> Iterator[np.ndarray]:
    """The blocks of a probed recording (callers that probed already do not probe again)."""
    if info.layout is not None:
        log.warning("%s: repaired: %s; reading its %.2f s", info.path, "; ".join(info.layout.repairs) or
                    "libsndfile could not read the header", info.duration_s)
    block_frames = max(1, min(int(block_seconds * info.sample_rate), MAX_BLOCK_FRAMES))
    read = zeroed = 0
    first_bad: float | None = None
    try:
        with open_raw(info.path, info.layout) if info.layout else sf.SoundFile(str(info.path)) as handle:
            while True:
                data = handle.read(block_frames, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                bad = ~np.isfinite(mono)
                if bad.any():  # a burst of NaN costs those samples, not the hour around them
                    if first_bad is None:
                        first_bad = (read + int(np.argmax(bad))) / info.sample_rate
                    zeroed += int(bad.sum())
                    mono = np.where(bad, np.float32(0), mono)
                read += mono.shape[0]
                yield np.ascontiguousarray(mono)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(
            f"{info.path}: decoding failed after {read / info.sample_rate:.2f} s ({_reason(err)})."
        ) from err
    if zeroed:
        log.warning("%s: %d NaN or infinite samples set to 0 (the first at %.3f s)", info.path, zeroed, first_bad)
    if read == 0:
        raise AudioError(f"{info.path}: the recording holds no samples.")
    if read < info.frames * 0.999 - 1:
        raise AudioError(
            f"{info.path}: truncated: the header promises {info.duration_s:.2f} s but only "
            f"{read / info.sample_rate:.2f} s could be read."
        )


def stream(
    path: str | Path, sample_rate: int, block_seconds: float = BLOCK_SECONDS, time_expansion: float = 1.0
) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of ``path`` resampled to ``sample_rate`` as NatureLM does (kaiser_best), in bounded memory.

    ``time_expansion`` N plays the recording N times slower (a 384 kHz bat file read at 38.4 kHz for N=10),
    moving ultrasonic calls into the model's band; callers keep timestamps in real time.
    """
    kept, read = _KEPT, (Path(path), sample_rate, time_expansion)
    if kept is not None and (wave := kept.find(*read)) is not None:
        step = max(1, int(block_seconds * sample_rate))
        for start in range(0, wave.shape[0], step):
            yield wave[start:start + step].copy()
        return
    info = probe(path)
    source_rate = info.sample_rate / time_expansion
    resampler = StreamResampler(source_rate, sample_rate)
    blocks: list[np.ndarray] = []
    for block in _decoded(info, block_seconds):
        out = resampler.process(block)
        if out.size:
            if kept is not None:
                blocks.append(out)
            yield out
    tail = resampler.flush()
    if tail.size:
        if kept is not None:
            blocks.append(tail)
        yield tail
    if kept is not None:
        kept.keep(*read, blocks)


class _Kept:
    """Recordings decoded whole at a rate, kept in memory while :func:`keeping_decoded` is open (see there)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0
        # (path, rate, time expansion) -> (the file's size and modification time when read, its samples)
        self.waves: dict[tuple[Path, int, float], tuple[tuple[int, int], np.ndarray]] = {}

    @staticmethod
    def _version(path: Path) -> tuple[int, int]:
        status = path.stat()
        return status.st_size, status.st_mtime_ns

    def find(self, path: Path, sample_rate: int, time_expansion: float) -> np.ndarray | None:
        found = self.waves.get((path, sample_rate, time_expansion))
        return found[1] if found is not None and found[0] == self._version(path) else None

    def keep(self, path: Path, sample_rate: int, time_expansion: float, blocks: list[np.ndarray]) -> None:
        """Keep a whole read if it fits; it replaces what an earlier version of the file left."""
        key = (path, sample_rate, time_expansion)
        if key in self.waves:
            self.used -= self.waves.pop(key)[1].nbytes
        size = sum(b.nbytes for b in blocks)
        if self.used + size <= self.max_bytes:
            self.waves[key] = (self._version(path), np.concatenate(blocks) if blocks else np.zeros(0, np.float32))
            self.used += size


_KEPT: _Kept | None = None


@contextmanager
def keeping_decoded(max_bytes: int = 512 * 2**20) -> Iterator[None]:
    """While open, :func:`stream` keeps each recording it decoded to the end, up to ``max_bytes`` in all, and
    streams it again from memory (the same file, unchanged, at the same rate). ``edge build`` reads every
    recording in four steps (teacher answers, student encoder, tuning, calibration) and resampling is most of
    a read: kaiser_best from a 500 kHz bat recorder to 16 kHz costs several times the fbank. The first
    recordings that fit stay; later ones are decoded each time (a least-recently-used rule would drop each
    recording just before the next step reads it again). 512 MB hold 2.3 hours at 16 kHz."""
    global _KEPT
    previous, _KEPT = _KEPT, _Kept(max_bytes)
    try:
        yield
    finally:
        _KEPT = previous


def load(path: str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode (the first ``max_seconds`` of) a recording at ``sample_rate``; for short clips only."""
    pieces: list[np.ndarray] = []
    have = 0
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    for block in stream(path, sample_rate):
        pieces.append(block)
        have += block.shape[0]
        if limit is not None and have >= limit:
            break
    wave = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return wave if limit is None else wave[:limit]


def _reason(err: Exception) -> str:
    text = str(err).strip().rstrip(".")
    if ":" in text and text.lower().startswith("error opening"):
        text = text.split(":", 1)[-1].strip()
    return text or type(err).__name__
