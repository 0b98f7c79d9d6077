"""The recipe for NatureLM-audio checkpoints (a ``text`` teacher): its state, its step table, its bundle."""

from __future__ import annotations

from pathlib import Path

from naturelm_edge.build.bundle_step import checked_report, write_bundle_of
from naturelm_edge.build.context import Build as State
from naturelm_edge.build.steps import STEPS


def finish(b: State) -> Path:
    """The bundle, unless the quantized answers agree with fp32 less than ``--min-agreement`` asks."""
    from naturelm_edge.quantization.report import format_table

    report = checked_report(b)
    b.summary["table"] = format_table(report)
    return write_bundle_of(b, report)


__all__ = ["STEPS", "State", "finish"]
