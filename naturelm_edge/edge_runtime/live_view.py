"""The console while edge-run runs: a live panel on a terminal, one line per answer in a log (journald, a pipe)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table


class LiveView:
    """Counters of the run and the latest answers, redrawn in place at most a few times a second."""

    def __init__(self, console: Console, summary, recent: int = 8) -> None:  # noqa: ANN001 - runner.Summary
        self.console, self.summary = console, summary
        self.lines: deque[str] = deque(maxlen=recent)
        self.live = Live(self.render(), console=console, refresh_per_second=4, transient=False) if console.is_terminal else None

    def __enter__(self) -> LiveView:
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live:
            self.live.update(self.render())
            self.live.stop()

    def answer(self, line: str) -> None:
        """One answered window: kept in the panel, or printed as a line when there is no terminal."""
        if self.live:
            self.lines.append(line)
            self.live.update(self.render())
        else:
            self.console.print(line, highlight=False)

    def answered(self, result, escalation: str | None) -> None:  # noqa: ANN001 - pipeline.WindowResult
        """An answered window's line, flagged when its audio went to the full model (``escalation``: why)."""
        flag = f" [magenta]-> full model ({escalation})[/magenta]" if escalation else ""
        self.answer(f"{Path(result.source).name} {result.offset_s:7.1f}s  {result.answer!r} ({result.confidence:.2f}){flag}")

    def render(self) -> Group:
        s = self.summary
        counts = Table.grid(padding=(0, 2))
        for _ in range(6):
            counts.add_column(justify="right")
        counts.add_row("windows", str(s.windows), "gated", f"{s.gated} (+{s.not_calls} not calls, {s.heard} heard)",
                       "answered", str(s.answered))
        counts.add_row("escalated", f"{s.escalated} (+{s.over_budget} over budget)", "people talking", f"{s.speech} dropped, {s.speech_masked} masked",
                       "real-time factor", f"{s.real_time_factor:.3f}")
        removed = ", ".join(f"{k} {v}" for k, v in sorted(s.removed.items())) or "0"
        counts.add_row("overflows", str(s.overflows), "site rules removed", removed, "", "")
        recent = Table("latest answers", show_header=True, header_style="bold", box=None)
        for line in self.lines:
            recent.add_row(line)
        return Group(counts, recent)
