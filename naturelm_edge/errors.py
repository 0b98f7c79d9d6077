"""User-facing errors: one sentence that names the file and the problem.

The CLI prints ``str(error)`` and exits non-zero without a traceback (``--debug`` shows it). Anything that
is not an :class:`EdgeError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeError(Exception):
    """An expected failure caused by the user's input (a file, a flag, a checkpoint)."""

    exit_code = 2


class AudioError(EdgeError):
    """Audio that cannot be decoded or is not usable (empty, truncated, NaN, unsupported)."""


class CheckpointError(EdgeError):
    """A checkpoint that is missing, truncated, or does not match the model it claims to be."""


class ExportError(EdgeError):
    """An export that failed or whose result does not match PyTorch."""

    exit_code = 3


class DiskFullError(EdgeError):
    """The output disk is full: the run stops with every committed event kept, and resumes when space returns."""

    exit_code = 4
