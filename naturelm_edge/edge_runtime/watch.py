"""A watched folder: a recorder (or BirdNET-Pi-style ``arecord``) drops files; each is read once complete.

A file counts as complete when its size and modification time have not changed for one polling interval
and, for WAV files, its header promises no more data than is there (a file still being written, or cut
off, is not read until it is whole). What was processed survives restarts: the event store remembers
every window, so a restarted watcher skips finished files and resumes a half-read one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from naturelm_edge.audio import WindowSpec
from naturelm_edge.audio.decode import probe
from naturelm_edge.audio.files import list_audio
from naturelm_edge.edge_runtime.sources import Source, file_source
from naturelm_edge.edge_runtime.timestamps import recording_start
from naturelm_edge.errors import AudioError


class FolderWatcher:
    """``settle_s``: how long a WAV whose header is unfinished must stay unchanged before it is read as
    repaired (a recorder that lost power never finishes it; one still writing appends within seconds)."""

    def __init__(self, folder: Path, spec: WindowSpec, time_expansion: float = 1.0, poll_s: float = 2.0,
                 idle_exit_s: float | None = None, settle_s: float = 30.0) -> None:
        self.folder, self.spec, self.time_expansion = Path(folder), spec, time_expansion
        self.poll_s, self.idle_exit_s, self.settle_s = poll_s, idle_exit_s, settle_s
        self.stopped = False
        self._seen: dict[Path, tuple[tuple[int, float], float]] = {}  # path -> (size and mtime, seen since)
        self._done: set[Path] = set()

    def stop(self) -> None:
        self.stopped = True

    def _complete(self, path: Path) -> bool:
        stat = path.stat()
        signature, now = (stat.st_size, stat.st_mtime), time.monotonic()
        previous = self._seen.get(path)
        if previous is None or previous[0] != signature:
            self._seen[path] = (signature, now)
            return False  # changed since the last poll (or first sighting): wait one more interval
        try:
            info = probe(path)
        except AudioError:
            return True  # unreadable but stable: hand it over, the runner reports it by name
        if info.layout is not None:  # header unfinished: still being written, or abandoned by a dead recorder
            return now - previous[1] >= self.settle_s
        return True

    def sources(self) -> Iterator[Source]:
        idle_since = time.monotonic()
        while not self.stopped:
            ready = [p for p in list_audio(self.folder) if p not in self._done and self._complete(p)]
            for path in sorted(ready, key=lambda p: (str(recording_start(p) or ""), str(p))):
                self._done.add(path)
                idle_since = time.monotonic()
                yield file_source(path, self.spec, self.time_expansion, recording_start(path), self.stop)
                if self.stopped:
                    return
            if self.idle_exit_s is not None and time.monotonic() - idle_since > self.idle_exit_s:
                return
            time.sleep(self.poll_s)
