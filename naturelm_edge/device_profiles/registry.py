"""Find, load and detect device profiles: the shipped ones plus the user's own folder."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from naturelm_edge.device_profiles.schema import Profile, ProfileError, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_VAR = "NATURELM_EDGE_PROFILES"
FALLBACK = "x86-cpu"


def load_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise ProfileError(f"{path}: cannot read the profile ({err.strerror}).") from err
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{path}: not valid TOML ({err}).") from err
    return validate(data, str(path))


def _sources(extra_dir: Path | None) -> list[Path]:
    shipped = resources.files("naturelm_edge.device_profiles").joinpath("profiles")
    files = sorted(Path(str(shipped)).glob("*.toml"))
    for folder in (os.environ.get(ENV_VAR), extra_dir):
        if folder:
            files += sorted(Path(folder).glob("*.toml"))  # later files override shipped ones by name
    return files


def all_profiles(extra_dir: Path | None = None) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for path in _sources(extra_dir):
        profile = load_file(path)
        profiles[profile.name] = profile
    return profiles


def get(name: str, extra_dir: Path | None = None) -> Profile:
    profiles = all_profiles(extra_dir)
    if name not in profiles:
        raise ProfileError(f"unknown device profile '{name}'; available: {', '.join(sorted(profiles))}.")
    return profiles[name]


@dataclass
class DeviceFacts:
    """What the machine says about itself (recorded samples stand in for it in tests)."""

    machine: str = ""
    device_tree_model: str = ""
    tegra_release: str = ""
    cpu_model: str = ""
    nvidia_smi: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, root: Path = Path("/"), machine: str | None = None) -> DeviceFacts:
        """Facts of this machine; ``root`` points at a recorded file tree instead (tests, offline checks)."""

        def text(path: str) -> str:
            try:
                return (root / path.lstrip("/")).read_text(errors="replace").replace("\x00", "").strip()
            except OSError:
                return ""

        cpu = ""
        for line in text("/proc/cpuinfo").splitlines():
            if line.startswith(("model name", "Model")):
                cpu = line.split(":", 1)[1].strip()
                break
        live = root == Path("/")
        return cls(machine or platform.machine(), text("/proc/device-tree/model"), text("/etc/nv_tegra_release"),
                   cpu or (platform.processor() if live else ""), live and shutil.which("nvidia-smi") is not None)


def matches(profile: Profile, facts: DeviceFacts) -> bool:
    rules = profile.detect
    if not rules:
        return False
    checks = []
    if rules.get("machine"):
        checks.append(facts.machine in rules["machine"])
    for key in ("device_tree_model", "tegra_release", "cpu_model"):
        if rules.get(key):
            checks.append(any(s.lower() in getattr(facts, key).lower() for s in rules[key]))
    if "nvidia_smi" in rules:
        checks.append(facts.nvidia_smi == rules["nvidia_smi"])
    return bool(checks) and all(checks)


def detect(facts: DeviceFacts | None = None, extra_dir: Path | None = None) -> Profile:
    """The matching profile with the highest priority; the generic x86 profile when nothing matches."""
    facts = facts or DeviceFacts.read()
    profiles = all_profiles(extra_dir)
    found = [p for p in profiles.values() if matches(p, facts)]
    if found:
        return max(found, key=lambda p: (p.detect.get("priority", 0), p.name))
    return profiles[FALLBACK]
