"""One progress display for long work (export, calibration, distillation, batch runs), built on rich."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


class Progress:
    """Named steps with elapsed time on stderr; silent when ``quiet``."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.quiet:
            yield
            return
        with self.console.status(f"{label} ..."):
            yield
        self.console.print(f"[green]✓[/green] {label} [dim]({time.perf_counter() - start:.1f} s)[/dim]")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  [dim]{text}[/dim]")
