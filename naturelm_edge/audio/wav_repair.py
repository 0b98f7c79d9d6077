"""Read the WAV files recorders leave behind when they stop mid-recording, without changing them.

An AudioMoth or a Song Meter whose batteries die before it closes a file leaves RIFF and data sizes of 0
(or of what was planned), a data chunk cut mid-frame, and sometimes junk before the ``fmt `` chunk; every
sample is still on the card. :func:`read_layout` walks the chunks itself, takes the data chunk's real
extent from the file's length (whole frames only) and says what it repaired; :func:`open_raw` hands that
extent to libsndfile as headerless audio, so every encoding it reads (8-32-bit PCM, float, mu-law, A-law,
any channel count) is recovered the same way.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

# WAVE format tags (and WAVE_FORMAT_EXTENSIBLE's sub-format, same numbers) -> libsndfile subtypes by bit depth
_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_SUBTYPES = {(_PCM, 8): "PCM_U8", (_PCM, 16): "PCM_16", (_PCM, 24): "PCM_24", (_PCM, 32): "PCM_32",
             (_FLOAT, 32): "FLOAT", (_FLOAT, 64): "DOUBLE", (_ALAW, 8): "ALAW", (_ULAW, 8): "ULAW"}
UNSET = (0, 0xFFFFFFFF)  # sizes a recorder writes before it knows them (or streams RF64-style)


@dataclass
class WavLayout:
    """Where a WAV file's samples are and how they are encoded, with what had to be repaired to find them."""

    sample_rate: int
    channels: int
    subtype: str
    block_align: int
    data_offset: int
    data_bytes: int  # whole frames present in the file
    repairs: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.data_bytes // self.block_align


def _chunks(handle, file_size: int, scan_bytes: int) -> dict[bytes, tuple[int, int]]:  # noqa: ANN001 - binary file
    """{chunk id: (payload offset, declared size)} of the first ``fmt `` and ``data`` chunks.

    Chunks are walked by their 8-byte headers, seeking past each payload (a probe reads a few headers, not
    the recording); where a header makes no sense (junk bytes) the next ``scan_bytes`` are searched for a
    ``fmt `` or ``data`` marker and the walk resumes there.
    """
    found: dict[bytes, tuple[int, int]] = {}
    position = 12
    while position + 8 <= file_size:
        handle.seek(position)
        header = handle.read(8)
        kind, size = header[:4], struct.unpack("<I", header[4:])[0]
        if kind in (b"fmt ", b"data"):
            found.setdefault(kind, (position + 8, size))
        if not kind.isascii() or not kind.strip(b" ").isalnum():  # junk: look for the next real chunk
            handle.seek(position + 1)
            ahead = handle.read(scan_bytes)
            markers = [i for i in (ahead.find(b"fmt "), ahead.find(b"data")) if i >= 0]
            if not markers:
                break
            position += 1 + min(markers)
            found.setdefault(b"junk", (position, 0))
            continue
        if kind == b"data":
            break
        position += 8 + size + (size & 1)
    return found


def read_layout(path: Path, scan_bytes: int = 1 << 20) -> WavLayout | None:
    """The layout of a RIFF/WAVE file (None when it is not one, or holds no usable ``fmt `` chunk)."""
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        chunks = _chunks(handle, file_size, scan_bytes)
        if b"fmt " not in chunks or b"data" not in chunks:
            return None
        fmt_offset, fmt_size = chunks[b"fmt "]
        handle.seek(fmt_offset)
        fmt = handle.read(max(16, min(fmt_size, 40)))
    if len(fmt) < 16:
        return None
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID starts with the plain format tag
    subtype = _SUBTYPES.get((tag, bits))
    if subtype is None or channels == 0 or rate == 0 or block_align == 0:
        return None
    repairs = []
    if b"junk" in chunks:
        repairs.append("skipped junk before its chunks")
    declared_riff = struct.unpack("<I", head[4:8])[0]
    offset, declared = chunks[b"data"]
    present = max(0, file_size - offset)
    if declared in UNSET or declared > present:
        what = "no size" if declared in UNSET else f"{declared} bytes"
        repairs.append(f"its data chunk declares {what}, the file holds {present} bytes after the header")
        size = present
    else:
        size = declared
    if size % block_align:
        repairs.append(f"a partial last frame ({size % block_align} bytes) ignored")
    if declared_riff in UNSET and not repairs:
        repairs.append("its RIFF size is unset")
    return WavLayout(rate, channels, subtype, block_align, offset, size - size % block_align, repairs)


class _Slice(io.RawIOBase):
    """A read-only view of bytes [start, start + length) of a file, as libsndfile's virtual I/O wants it."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self._file = path.open("rb")
        self._start, self._length, self._position = start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = min(max(0, base + offset), self._length)
        return self._position

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        want = min(len(buffer), self._length - self._position)
        if want <= 0:
            return 0
        self._file.seek(self._start + self._position)
        got = self._file.readinto(memoryview(buffer)[:want])
        self._position += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def open_raw(path: Path, layout: WavLayout) -> sf.SoundFile:
    """The layout's samples as a libsndfile stream (headerless, little-endian)."""
    return sf.SoundFile(_Slice(path, layout.data_offset, layout.data_bytes), "r", samplerate=layout.sample_rate,
                        channels=layout.channels, subtype=layout.subtype, format="RAW", endian="LITTLE")
