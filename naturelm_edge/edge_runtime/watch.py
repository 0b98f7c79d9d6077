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
    def __init__(self, folder: Path, spec: WindowSpec, time_expansion: float = 1.0, poll_s: float = 2.0,
                 idle_exit_s: float | None = None) -> None:
        self.folder, self.spec, self.time_expansion = Path(folder), spec, time_expansion
        self.poll_s, self.idle_exit_s = poll_s, idle_exit_s
        self.stopped = False
        self._seen: dict[Path, tuple[int, float]] = {}
        self._done: set[Path] = set()

    def stop(self) -> None:
        self.stopped = True

    def _complete(self, path: Path) -> bool:
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime)
        previous, self._seen[path] = self._seen.get(path), signature
        if previous != signature:
            return False  # changed since the last poll (or first sighting): wait one more interval
        try:
            info = probe(path)
        except AudioError:
            return True  # unreadable but stable: hand it over, the runner reports it by name
        if path.suffix.lower() == ".wav":
            import soundfile as sf

            return sf.info(str(path)).frames >= info.frames  # header promise met: the recorder closed it
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
