"""Path arguments checked before any work starts: one sentence naming the option, the path and the problem."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from naturelm_edge.errors import EdgeError


def output_folder(path: Path, option: str) -> Path:
    """A folder results can be written to (made when missing): not a file, writable, not on a read-only card."""
    if path.exists() and not path.is_dir():
        raise EdgeError(f"{path}: {option} names a file; give a folder to write results into.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        why = {errno.EROFS: "is on a read-only file system (a locked or read-only card?)",
               errno.EACCES: "is not writable by this user", errno.EPERM: "is not writable by this user",
               errno.ENOSPC: "is on a full disk", errno.ENOTDIR: "lies under a file, not a folder"}
        raise EdgeError(f"{path}: {option} {why.get(err.errno, f'cannot be written ({err.strerror})')}.") from err
    return path


def existing_file(path: Path, option: str) -> Path:
    if not path.exists():
        raise EdgeError(f"{path}: {option} names no such file.")
    if not path.is_file():
        raise EdgeError(f"{path}: {option} names a folder; give a file.")
    if not os.access(path, os.R_OK):
        raise EdgeError(f"{path}: {option} is not readable by this user.")
    return path


def existing_folder(path: Path, option: str) -> Path:
    if not path.exists():
        raise EdgeError(f"{path}: {option} names no such folder.")
    if not path.is_dir():
        raise EdgeError(f"{path}: {option} names a file; give a folder.")
    return path


def existing_paths(paths: list[Path], option: str) -> list[Path]:
    """Recordings or folders that all exist (every missing one named, not only the first)."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise EdgeError(f"{', '.join(missing)}: {option} names no such file or folder.")
    return paths
