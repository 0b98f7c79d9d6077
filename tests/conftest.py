"""Shared test fixtures: the shared recordings, the reference fixtures, a tiny checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NATURELM_EDGE_SHARED", REPO.parent / "shared"))
AUDIO = SHARED / "data" / "audio"
FIXTURES = SHARED / "data" / "fixtures"


def _require(path: Path) -> Path:
    if path.exists():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{path} is missing; CI must run with the shared folder at ../shared")
    pytest.skip(f"{path} not available")


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    return _require(AUDIO)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require(FIXTURES)


@pytest.fixture(scope="session")
def reference_io(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "reference_io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from naturelm_edge.models.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def taught_teacher(tiny_checkpoint: Path, audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint taught species names on the shared recordings (answers mean something)."""
    from benchmarks.distillation import QUESTION
    from naturelm_edge.distill.teacher_training import finetune_teacher

    return finetune_teacher(tiny_checkpoint, audio_dir, tmp_path_factory.mktemp("taught") / "teacher", QUESTION,
                            steps=1000)
