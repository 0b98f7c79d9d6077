"""``edge build``: the whole export stage, from a teacher to a verified (signed) bundle.

Each teacher names its recipe (:data:`naturelm_edge.teachers.TEACHERS`): a module with a build ``State``, a
table of ``STEPS`` and a ``finish`` that writes the bundle (:mod:`naturelm_edge.build.naturelm` for NatureLM
checkpoints, :mod:`naturelm_edge.build.scores` for teachers that score labels, such as BirdNET). Each step
names what makes it stale, what it runs and what it writes, as a format table drives an exporter, and is
skipped when the digest of its inputs matches the last run's (``WORK/stamps``, which also keep each run's
wall time, CPU time and peak RSS). The bundle is assembled in a staging folder and renamed into place, so a
failed build leaves the previous bundle untouched.
"""

from __future__ import annotations

import importlib

from naturelm_edge.audio.decode import keeping_decoded
from naturelm_edge.build.context import BuildOptions
from naturelm_edge.build.steps import Step, run_step
from naturelm_edge.progress import Progress


def build(options: BuildOptions, progress: Progress | None = None) -> dict:
    """Run every step of the teacher's recipe that applies; return a summary with the bundle path, each step's
    state and cost and the accuracy report."""
    from naturelm_edge.teachers import teacher

    recipe = importlib.import_module(teacher(options.teacher).recipe)
    state = recipe.State(options, progress or Progress(quiet=True))
    with keeping_decoded():  # the steps read the same recordings: each resampled once
        for step in recipe.STEPS:
            if step.applies(state):
                run_step(state, step)
    recipe.finish(state)
    return state.summary


__all__ = ["BuildOptions", "Step", "build"]
