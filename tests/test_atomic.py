"""Files appear whole or not at all: a write that fails leaves the previous file and no temporary one."""

from __future__ import annotations

import numpy as np
import pytest

from naturelm_edge.atomic import atomic_path, write_atomic


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing_beside_it(tmp_path):
    target = write_atomic(tmp_path / "report.json", "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("the card was pulled")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_numpy_through_an_open_handle_lands_under_the_real_name(tmp_path):
    target = tmp_path / "tokens.npy"
    with atomic_path(target) as tmp, tmp.open("wb") as handle:
        assert tmp.name == "tokens.npy.tmp"
        np.save(handle, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2] and sorted(p.name for p in tmp_path.iterdir()) == ["tokens.npy"]
