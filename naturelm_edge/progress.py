"""One progress display for long work (export, calibration, distillation, batch runs), built on rich.

A step prints one line when it ends (its name and time) or why it was skipped, on a terminal and in a pipe or a
log file alike. Inside a step, work that knows its size (``add_task`` / ``update``, the subset of
``rich.progress.Progress`` the training loops use) shows a bar with the time remaining on a terminal, and in a
pipe or a log one line every ``every_s`` seconds with done/total and the ETA, so a log shows a step is alive.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    printed: float = field(default_factory=time.perf_counter)


def eta_text(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``: short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Named steps with elapsed time on stderr, and progress with an ETA inside them; silent when ``quiet``."""

    def __init__(self, quiet: bool = False, console: Console | None = None, every_s: float = 30.0) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.every_s = every_s
        self._tasks: dict[int, _Task] = {}
        self._bars = None  # rich.progress.Progress while a step runs on a terminal

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.quiet:
            yield
            return
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bars

            self._bars = Bars(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), console=self.console, transient=True)
            self._bars.add_task(f"{label} ...", total=None)
            with self._bars:
                yield
            self._bars = None
        else:
            self.console.print(f"> {label} ...", highlight=False)
            yield
        self._tasks.clear()
        self.console.print(f"[green]✓[/green] {label} [dim]({time.perf_counter() - start:.1f} s)[/dim]")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  [dim]{text}[/dim]")

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        """A unit of work of known size inside the current step; returns its id for :meth:`update`."""
        if self._bars is not None:
            return self._bars.add_task(description, total=total, completed=completed)
        task_id = len(self._tasks)
        self._tasks[task_id] = _Task(description, total, completed)
        return task_id

    def update(self, task_id: int, advance: float = 0, description: str | None = None,
               total: float | None = None) -> None:
        if self._bars is not None:
            self._bars.update(task_id, advance=advance, description=description, total=total)
            return
        task = self._tasks.get(task_id)
        if task is None:
            return
        task.completed += advance
        task.description = description or task.description
        task.total = total if total is not None else task.total
        now = time.perf_counter()
        finished = task.total is not None and task.completed >= task.total
        if not self.quiet and (now - task.printed >= self.every_s or finished):
            task.printed = now
            self.console.print(f"  {self.line(task, now)}", highlight=False, markup=False)

    @staticmethod
    def line(task: _Task, now: float) -> str:
        """``description: done/total (share), ETA left`` for a log."""
        if not task.total:
            return f"{task.description}: {task.completed:g} done, {eta_text(now - task.started)} so far"
        share = task.completed / task.total
        rate = task.completed / max(now - task.started, 1e-9)
        left = (task.total - task.completed) / rate if rate > 0 else float("inf")
        eta = "done" if share >= 1 else "ETA unknown" if left == float("inf") else f"{eta_text(left)} left"
        return f"{task.description}: {task.completed:g}/{task.total:g} ({share:.0%}), {eta}"
