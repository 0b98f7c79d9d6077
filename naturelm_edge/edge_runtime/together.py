"""Several live streams at once: one reader thread per stream, each with its own pipeline and screening state,
their windows handed to one consumer in turn (so the event store keeps one writer)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

from naturelm_edge.edge_runtime.pipeline import WindowPipeline, WindowResult
from naturelm_edge.edge_runtime.sources import Source
from naturelm_edge.errors import AudioError, EdgeError

Item = WindowResult | AudioError | None  # a window, a source that failed, or (None) the end of a source


def read_together(pipeline: WindowPipeline, streams: list[Iterable[Source]], skip: Callable[[Source], Callable],
                  on_source: Callable[[Source], None], stopped: Callable[[], bool],
                  stop_all: Callable[[], None]) -> Iterator[tuple[Item, Source | None]]:
    """(item, source) from every stream as they come. ``skip(source)``: the windows an earlier run did;
    ``on_source``: called as each source opens (its stopper); a stream that can never work (an
    :class:`EdgeError`, such as no audio track) calls ``stop_all`` and is raised once the others have ended."""
    results: queue.Queue = queue.Queue(maxsize=4)  # a slow commit holds the readers back, bounded
    fatal: list[EdgeError] = []
    done = object()

    def read(stream: Iterable[Source]) -> None:
        own = pipeline.fresh()
        try:
            for source in stream:
                on_source(source)
                try:
                    for result in own.run(source, skip=skip(source)):
                        results.put((result, source))
                except AudioError as err:
                    results.put((err, source))
                results.put((None, source))
                if stopped():
                    return
        except EdgeError as err:
            fatal.append(err)
            stop_all()
        except Exception as err:  # noqa: BLE001 - a stream that cannot go on ends; the others do not
            results.put((AudioError(str(err)), None))
        finally:
            results.put((done, None))

    threads = [threading.Thread(target=read, args=(stream,), daemon=True) for stream in streams]
    for thread in threads:
        thread.start()
    running = len(threads)
    while running:
        item, source = results.get()
        if item is done:
            running -= 1
        else:
            yield item, source
    if fatal:
        raise fatal[0]
