"""Files that appear whole or not at all: written under a temporary name beside their place, then renamed.

A cut (a full card, a power loss, ``kill -9``) leaves the previous file or nothing, never half a file that a
later run would read as complete; the temporary name is removed when writing fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A name beside ``path`` to write to (``x.flac`` -> ``x.flac.tmp``, which no listing of ``*.flac`` picks up);
    renamed over ``path`` when the block ends, removed if it raises. Writers that choose the format from the
    name are given it (``format=``) or an open file (``np.save(handle, ...)``, which adds no ``.npy``).
    """
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> Path:
    """``data`` to ``path``, whole or not at all."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)
