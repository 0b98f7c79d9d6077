"""Species labels of recordings, and the seeded split into distillation and held-out species.

Held-out species feed quantization calibration and evaluation; they are never trained on, so the
accuracy measured on them says how the exported models do on species nobody tuned them for.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from naturelm_edge.audio.files import list_audio
from naturelm_edge.errors import EdgeError
from naturelm_edge.prompt import names_something


class SpeciesError(EdgeError):
    """A label set that cannot be split (empty, one species, held-out species without audio)."""


def labels_from_csv(path: Path) -> dict[str, str]:
    """Relative audio path -> common name, from a LABELS.csv (columns ``path`` and ``species_common``)."""
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise SpeciesError(f"{path}: cannot read the labels ({err.strerror}).") from err
    if rows and not {"path", "species_common"} <= set(rows[0]):
        raise SpeciesError(f"{path}: a labels file needs the columns path and species_common.")
    return {row["path"]: row["species_common"].strip() for row in rows if row.get("species_common", "").strip()}


def labels_from_folders(root: Path) -> dict[str, str]:
    """Relative audio path -> species, for a folder per species (``root/<species>/*.wav``)."""
    return {str(p.relative_to(root)): p.parent.name for p in list_audio(root) if p.parent != root}


def species_from_answers(cache_dir: Path) -> set[str]:
    """The species a teacher named in a cache (its answers), for a split when no labels exist."""
    from naturelm_edge.distill.cache import TeacherCache

    return {r["text"] for r in TeacherCache(cache_dir).records() if names_something(r["text"])}


def labels_for(audio_root: Path, labels_file: Path | None = None) -> dict[str, str]:
    """Labels from ``labels_file``, else ``audio_root/LABELS.csv``, else none."""
    if labels_file is not None:
        return labels_from_csv(labels_file)
    default = audio_root / "LABELS.csv"
    return labels_from_csv(default) if default.is_file() else {}


@dataclass
class SpeciesSplit:
    distill: list[str]
    held_out: list[str]
    seed: int
    source: str

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> SpeciesSplit:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise SpeciesError(f"{path}: not a species split file ({err}).") from err

    def role(self, species: str | None) -> str:
        if species in self.held_out:
            return "held_out"
        return "distill" if species in self.distill else "unlabelled"


def split_species(species: set[str] | list[str], held_out_fraction: float = 0.25, seed: int = 0,
                  source: str = "labels") -> SpeciesSplit:
    """Disjoint, seeded split; at least one species on each side."""
    names = sorted({s for s in species if s})
    if not names:
        raise SpeciesError(f"{source}: no species labels to split.")
    if len(names) < 2:
        raise SpeciesError(f"{source}: only one species ({names[0]}); a split needs at least two.")
    if not 0 < held_out_fraction < 1:
        raise SpeciesError(f"held-out fraction must be between 0 and 1, got {held_out_fraction}.")
    shuffled = names[:]
    random.Random(seed).shuffle(shuffled)
    count = min(len(names) - 1, max(1, round(len(names) * held_out_fraction)))
    return SpeciesSplit(sorted(shuffled[count:]), sorted(shuffled[:count]), seed, source)


def check_present(split: SpeciesSplit, present: set[str], where: str) -> None:
    """Refuse a split whose held-out species have no audio at all (nothing to calibrate or evaluate on)."""
    missing = sorted(set(split.held_out) - present)
    if len(missing) == len(split.held_out):
        raise SpeciesError(f"{where}: none of the held-out species ({', '.join(missing[:3])}) has audio here.")
