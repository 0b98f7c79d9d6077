"""Network audio: RTSP and HTTP(S) streams (an IP camera, an Icecast feed) through PyAV, like any source.

Each connection is one :class:`Source` dated by the wall clock when its audio starts, resampled to the
model's rate by the same kaiser-best filter as files. A stream that stalls (no data for ``read_timeout_s``),
drops or ends is reconnected with exponential back-off (1 s doubling to a minute), so a dead camera costs a
connection attempt a minute, not a CPU; every connection, drop and failed attempt is counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from naturelm_edge.audio import WindowSpec
from naturelm_edge.audio.resample import StreamResampler
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.errors import EdgeError

SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "srt://", "udp://", "tcp://")


def is_stream(text: str) -> bool:
    return text.lower().startswith(SCHEMES)


@dataclass
class StreamHealth:
    connections: int = 0  # connections that delivered audio
    drops: int = 0  # a flowing stream that stalled, broke or ended
    failed_attempts: int = 0  # connection attempts that gave no audio
    last_error: str | None = None


class NetworkStream:
    """``sources()`` yields one Source per connection until stopped (or ``max_attempts`` fail in a row)."""

    def __init__(self, url: str, spec: WindowSpec, time_expansion: float = 1.0, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0, max_backoff_s: float = 60.0, max_attempts: int | None = None,
                 console=None) -> None:  # noqa: ANN001 - a rich Console
        self.url, self.spec, self.time_expansion = url, spec, time_expansion
        self.timeouts = (open_timeout_s, read_timeout_s)
        self.max_backoff_s, self.max_attempts = max_backoff_s, max_attempts
        self.health = StreamHealth()
        self.stopped = threading.Event()
        self.console = console

    def stop(self) -> None:
        self.stopped.set()

    def sources(self) -> Iterator[Source]:
        backoff, failures = 1.0, 0
        while not self.stopped.is_set():
            container = self._open()
            if container is None:
                failures += 1
                if self.max_attempts is not None and failures >= self.max_attempts:
                    raise EdgeError(f"{self.url}: no audio after {failures} attempts ({self.health.last_error}).")
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            flowing = threading.Event()
            started = datetime.now(timezone.utc)
            yield Source(f"{self.url}@{started.strftime('%Y%m%dT%H%M%SZ')}", started, self.time_expansion,
                         lambda c=container, f=flowing: self._blocks(c, f), self.stop)
            if flowing.is_set():
                backoff, failures = 1.0, 0
            else:
                failures += 1
            if not self.stopped.is_set():
                self.stopped.wait(backoff if not flowing.is_set() else 1.0)

    def _open(self):  # noqa: ANN202 - an av container or None
        import av

        options = {"rtsp_transport": "tcp"} if self.url.lower().startswith(("rtsp://", "rtsps://")) else {}
        try:
            container = av.open(self.url, options=options, timeout=self.timeouts)
        except (av.FFmpegError, OSError) as err:
            self._failed(err)
            return None
        if not container.streams.audio:
            container.close()
            raise EdgeError(f"{self.url}: the stream has no audio track.")
        return container

    def _failed(self, err: BaseException) -> None:
        self.health.failed_attempts += 1
        message = f"{self.url}: {type(err).__name__}: {str(err)[:160]}"
        if message != self.health.last_error and self.console is not None:
            self.console.print(f"[yellow]stream:[/yellow] {message}; retrying with back-off", highlight=False)
        self.health.last_error = message

    def _blocks(self, container, flowing: threading.Event) -> Iterator[np.ndarray]:  # noqa: ANN001
        import av

        stream = container.streams.audio[0]
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=stream.rate or None)
        resampler: StreamResampler | None = None
        try:
            for frame in container.decode(stream):
                if self.stopped.is_set():
                    return
                for mono in to_mono.resample(frame):
                    if resampler is None:
                        resampler = StreamResampler(mono.sample_rate / self.time_expansion, self.spec.sample_rate)
                        self.health.connections += 1
                        flowing.set()
                    out = resampler.process(mono.to_ndarray().reshape(-1).astype(np.float32))
                    if out.size:
                        yield out
            if not self.stopped.is_set():
                self.health.drops += flowing.is_set()
                self.health.last_error = f"{self.url}: the stream ended"
        except (av.FFmpegError, OSError) as err:  # a stall past the read timeout, a reset connection
            if flowing.is_set():
                self.health.drops += 1
                self.health.last_error = f"{self.url}: {type(err).__name__}: {str(err)[:160]}"
            else:
                self._failed(err)
        finally:
            container.close()
        if resampler is not None:  # the connection's last samples
            tail = resampler.flush()
            if tail.size:
                yield tail
