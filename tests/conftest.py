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


@pytest.fixture(scope="session")
def subset_audio(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight bird species (three clips each), a whale and a toad chorus, with their labels (copied to tmp)."""
    import csv
    import shutil

    root = tmp_path_factory.mktemp("subset") / "audio"
    rows = list(csv.DictReader((audio_dir / "LABELS.csv").open()))
    by_species: dict[str, list[dict]] = {}
    for row in rows:
        if row["species_common"] and row["path"].startswith("phoebe/"):
            by_species.setdefault(row["species_common"], []).append(row)
    keep = [r for species in sorted(by_species)[:8] for r in by_species[species][:3]]
    keep += [r for r in rows if r["path"] in ("librosa-data/glacier-bay-humpback.hq.ogg",
                                              "opensoundscape/great_plains_toad.wav")]
    for row in keep:
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(audio_dir / row["path"], root / row["path"])
    with (root / "LABELS.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return root


BUILD_TASKS = """[[task]]
id = "common_name"
kind = "common_name"
question = "What is the common name for the focal species in the audio?"
max_new_tokens = 24
"""
SMALL_STUDENT = ["--epochs", "40", "--student-layers", "2", "--student-hidden", "128", "--student-heads", "4"]


@pytest.fixture(scope="session")
def built_bundle(subset_audio: Path, taught_teacher: Path, tmp_path_factory: pytest.TempPathFactory):
    """`edge build` run twice on the subset (the second run must skip every stage)."""
    from typer.testing import CliRunner

    from naturelm_edge.cli import app

    work = tmp_path_factory.mktemp("build")
    (work / "tasks.toml").write_text(BUILD_TASKS)
    args = ["build", str(taught_teacher), "--audio", str(subset_audio), "--out", str(work / "bundle"),
            "--profile", "x86-cpu", "--tasks", str(work / "tasks.toml"), *SMALL_STUDENT]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    return work, args, first.output, again.output


@pytest.fixture(scope="session")
def bundle(built_bundle) -> Path:
    """The tiny bundle `edge build` made for the x86 profile."""
    work, *_ = built_bundle
    return work / "bundle"
