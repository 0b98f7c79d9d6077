"""Constants of the shared reference recordings that tests and benchmarks both rely on, and a labelled subset."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

# folders of ../shared/data/audio never used to train or calibrate, only to judge
HELD_OUT = ["whombat", "Rthoptera", "librosa-data"]
BAT_EXPANSION = 10.0  # whombat's recordings are read 10 times slower, as bat workers do
LOCA = [f"opensoundscape/LOCA_2021_09_24_652_{i}.wav" for i in range(3, 9)]  # 1 s clips, one flight call each
CALL_FREE = [("birdvoxdetect/BirdVox-scaper_example_background.wav", 1.0),
             ("birdvoxdetect/ff3d3feb-3371-44ad-a3b3-85969c2cd5ab.wav", 1.0),
             ("batdetect2/AudiomothNoBatCalls.WAV", BAT_EXPANSION)]
# the question the tiny teachers are taught to answer with species names
QUESTION = "What is the common name for the focal species in the audio?"
TASKS_TOML = f"""
[[task]]
id = "common_name"
kind = "common_name"
question = "{QUESTION}"
max_new_tokens = 24
"""


def labelled_subset(audio_dir: Path, root: Path, species: int = 8, per_species: int = 3, link: bool = False) -> Path:
    """A few clips of the first ``species`` labelled bird species, the whale and the toad chorus, with their
    LABELS.csv rows, under ``root`` (copied, or symlinked with ``link``)."""
    rows = list(csv.DictReader((audio_dir / "LABELS.csv").open()))
    by_species: dict[str, list[dict]] = {}
    for row in rows:
        if row["species_common"] and row["path"].startswith("phoebe/"):
            by_species.setdefault(row["species_common"], []).append(row)
    keep = [r for name in sorted(by_species)[:species] for r in by_species[name][:per_species]]
    keep += [r for r in rows if r["path"] in ("librosa-data/glacier-bay-humpback.hq.ogg",
                                              "opensoundscape/great_plains_toad.wav")]
    for row in keep:
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        if link:
            os.symlink(audio_dir / row["path"], root / row["path"])
        else:
            shutil.copy2(audio_dir / row["path"], root / row["path"])
    with (root / "LABELS.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return root
