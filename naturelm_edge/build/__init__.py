"""``edge build``: the whole export stage, from a NatureLM checkpoint to a verified (signed) bundle.

The steps are one table (:data:`naturelm_edge.build.steps.STEPS`), as a format table drives an exporter:
each names what makes it stale, what it runs and what it writes, and is skipped when the digest of its inputs
matches the last run's (``WORK/stamps``, which also keep each run's wall time, CPU time and peak RSS). The
bundle is assembled in a staging folder and renamed into place, so a failed build leaves the previous bundle
untouched.
"""

from __future__ import annotations

from naturelm_edge.build.context import Build, BuildOptions
from naturelm_edge.build.steps import STEPS, Step, run_step
from naturelm_edge.progress import Progress


def build(options: BuildOptions, progress: Progress | None = None) -> dict:
    """Run every step that applies; return a summary with the bundle path, each step's state and cost and the
    quantization report."""
    from naturelm_edge.build.bundle_step import checked_report, write_bundle_of

    state = Build(options, progress or Progress(quiet=True))
    for step in STEPS:
        if step.applies(state):
            run_step(state, step)
    write_bundle_of(state, checked_report(state))
    return state.summary


__all__ = ["STEPS", "Build", "BuildOptions", "Step", "build"]
