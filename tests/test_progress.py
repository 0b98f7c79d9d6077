"""Long work shows progress with an ETA, on a terminal and in a log file alike."""

from __future__ import annotations

import io
import re

from rich.console import Console

from naturelm_edge.progress import Progress, eta_text


def test_a_log_gets_a_line_per_step_and_lines_with_the_time_left():
    log = io.StringIO()
    progress = Progress(console=Console(file=log, force_terminal=False, width=200), every_s=0.0)
    with progress.step("distillation"):
        bar = progress.add_task("distilling", total=4)
        for _ in range(4):
            progress.update(bar, advance=1, description="distilling (ce 0.1)")
    progress.note("quantization: inputs unchanged, skipped")
    lines = log.getvalue().splitlines()
    assert lines[0] == "> distillation ..."
    assert re.fullmatch(r"  distilling \(ce 0\.1\): 1/4 \(25%\), \d+s left", lines[1]), lines[1]
    assert lines[4] == "  distilling (ce 0.1): 4/4 (100%), done"
    assert re.fullmatch(r"✓ distillation \(\d+\.\d s\)", lines[5]) and "skipped" in lines[6]


def test_a_log_is_not_flooded():
    log = io.StringIO()
    progress = Progress(console=Console(file=log, force_terminal=False), every_s=3600.0)
    with progress.step("teacher answers"):
        bar = progress.add_task("windows", total=1000)
        for _ in range(1000):
            progress.update(bar, advance=1)
    assert len(log.getvalue().splitlines()) == 3  # the start, the finished count, the step's time


def test_eta_text():
    assert [eta_text(s) for s in (5, 185, 3725)] == ["5s", "3m05s", "1h02m"]
