"""Dynamic batching: requests wait at most ``max_wait_ms`` for others to share one forward pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)


class DynamicBatcher:
    """Collects submitted items into batches of up to ``max_batch`` and runs ``run_batch`` in a worker thread.

    The model runs off the event loop, so health checks and metrics answer while a batch is computing;
    one batch runs at a time (the model is not re-entrant), and the queue depth is what waits behind it.
    """

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], max_batch: int = 8, max_wait_ms: float = 20.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self.stats = BatchStats()
        self._task: asyncio.Task | None = None
        self._gathering = 0  # items taken off the queue into the batch being gathered

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    @property
    def depth(self) -> int:
        """Items waiting for the model: queued, or held while a batch gathers (not yet running)."""
        return (self.queue.qsize() if self.queue else 0) + self._gathering

    async def submit(self, item: Any) -> Any:
        assert self.queue is not None, "start() the batcher inside the server's event loop"
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            self._gathering = 1
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                    self._gathering = len(batch)
                except asyncio.TimeoutError:
                    break
            self._gathering = 0
            items = [item for item, _ in batch]
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.sizes.append(len(items))
            if self.on_batch:
                self.on_batch(len(items))
            try:
                results = await asyncio.to_thread(self.run_batch, items)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
