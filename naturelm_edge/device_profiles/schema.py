"""The device-profile schema: every key, its type and what values are allowed.

A profile is a TOML file; :func:`validate` turns a parsed file into a :class:`Profile` or raises
:class:`ProfileError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from naturelm_edge.errors import EdgeError

PRECISIONS = {
    "encoder": ("fp32", "fp16", "int8-static", "int8-dynamic"),
    "decoder": ("fp32", "fp16", "int8-static", "int8-dynamic", "int4"),
}
QUANT_TARGETS = ("x86", "arm", "tensorrt")
CALIBRATIONS = ("minmax", "entropy", "percentile")
ESCALATION_MODES = ("off", "queue", "http")
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider",
             "CoreMLExecutionProvider", "OpenVINOExecutionProvider", "XnnpackExecutionProvider")


class ProfileError(EdgeError):
    """A device profile that does not follow the schema."""


# section -> key -> (type, check, description of what is allowed)
def _positive(x: Any) -> bool:
    return x > 0


def _at_least_one(x: Any) -> bool:
    return x >= 1


def _share(x: Any) -> bool:
    return 0 <= x <= 1


def _strings(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(i, str) for i in x)


# "full": NatureLM's own audio path (BEATs + Q-Former), for devices with a GPU; "student": the distilled CNN
# (`edge distill encoder`), for CPU-only devices where the full one costs more than the field's peers
ENCODERS = ("full", "student")

SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any, str]]] = {
    "": {
        "name": (str, None, "a name"),
        "description": (str, None, "text"),
        "install_notes": (str, None, "text"),
    },
    "detect": {
        "machine": (list, _strings, "a list of platform.machine() values"),
        "device_tree_model": (list, _strings, "a list of substrings of /proc/device-tree/model"),
        "tegra_release": (list, _strings, "a list of substrings of /etc/nv_tegra_release"),
        "cpu_model": (list, _strings, "a list of substrings of the CPU model name"),
        "nvidia_smi": (bool, None, "true when the device has nvidia-smi (a discrete NVIDIA GPU)"),
        "priority": (int, None, "an integer (higher wins when several profiles match)"),
    },
    "runtime": {
        "intra_op_threads": (int, _at_least_one, "an integer >= 1"),
        "audio_threads": (int, _at_least_one, "an integer >= 1"),
        "spinning": (bool, None, "true or false"),
        "low_memory": (bool, None, "true or false"),
        "memory_budget_mb": ((int, float), _positive, "a number > 0"),
        "latency_budget_ms": ((int, float), _positive, "a number > 0"),
    },
    "precision": {
        "encoder": (str, lambda x: x in PRECISIONS["encoder"], f"one of {', '.join(PRECISIONS['encoder'])}"),
        "decoder": (str, lambda x: x in PRECISIONS["decoder"], f"one of {', '.join(PRECISIONS['decoder'])}"),
    },
    "models": {
        "encoder": (str, lambda x: x in ENCODERS, f"one of {', '.join(ENCODERS)}"),
    },
    "quantization": {
        "target": (str, lambda x: x in QUANT_TARGETS, f"one of {', '.join(QUANT_TARGETS)}"),
        "calibration": (str, lambda x: x in CALIBRATIONS, f"one of {', '.join(CALIBRATIONS)}"),
    },
    "audio": {
        "window_s": ((int, float), _positive, "a number of seconds > 0"),
        "hop_s": ((int, float), _positive, "a number of seconds > 0"),
        "time_expansion": ((int, float), _at_least_one, "a factor >= 1"),
    },
    "escalation": {
        "mode": (str, lambda x: x in ESCALATION_MODES, f"one of {', '.join(ESCALATION_MODES)}"),
        "confidence_threshold": ((int, float), _share, "a number between 0 and 1"),
        "audit_rate": ((int, float), _share, "a number between 0 and 1"),
        "hourly_budget": (int, lambda x: x >= 0, "an integer >= 0"),
    },
    "power": {
        "nvpmodel": (str, None, "an nvpmodel mode hint, e.g. 'MAXN' or '15W'"),
    },
}
REQUIRED = ("name", "providers", "precision")


@dataclass(frozen=True)
class EscalationSettings:
    """A profile's ``[escalation]`` section; every default of the escalation policy is stated here, once."""

    mode: str = "queue"  # off | queue | URL of the full model
    confidence_threshold: float = 0.5  # answers less sure than this go to the full model
    audit_rate: float = 0.01  # share of sure answers sent anyway, to measure the device against the full model
    hourly_budget: int = 60  # escalations per hour of each recorder's audio


ESCALATION_DEFAULTS = EscalationSettings()


@dataclass
class Provider:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Profile:
    name: str
    source: str
    description: str = ""
    install_notes: str = ""
    detect: dict[str, Any] = field(default_factory=dict)
    providers: list[Provider] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)
    quantization: dict[str, str] = field(default_factory=dict)
    audio: dict[str, float] = field(default_factory=dict)
    escalation: EscalationSettings = ESCALATION_DEFAULTS
    power: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)

    @property
    def encoder(self) -> str:
        """Which encoder the profile's bundles carry: "full" (NatureLM's audio path) or "student" (distilled)."""
        return self.models.get("encoder", "full")

    @property
    def intra_op_threads(self) -> int:
        return int(self.runtime.get("intra_op_threads", 1))

    @property
    def audio_threads(self) -> int:
        """Threads of numpy's BLAS for the audio path (fbank, gate, resampling): see ``Engine``."""
        return int(self.runtime.get("audio_threads", 1))

    @property
    def quant_target(self) -> str:
        return self.quantization.get("target", "x86")

    @property
    def calibration(self) -> str:
        return self.quantization.get("calibration", "minmax")


def validate(data: dict[str, Any], source: str) -> Profile:
    """Check ``data`` (a parsed TOML profile) against the schema."""
    for key in REQUIRED:
        if key not in data:
            raise ProfileError(f"{source}: the required key '{key}' is missing.")
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key == "providers":
            continue
        if key in SCHEMA and key:
            if not isinstance(value, dict):
                raise ProfileError(f"{source}: '{key}' must be a table ([{key}]).")
            sections[key] = {k: _check(source, f"{key}.{k}", SCHEMA[key], k, v) for k, v in value.items()}
        elif key in SCHEMA[""]:
            sections[key] = _check(source, key, SCHEMA[""], key, value)
        else:
            allowed = sorted(k for k in [*SCHEMA[""], *SCHEMA] if k) + ["providers"]
            raise ProfileError(f"{source}: unknown key '{key}'; allowed: {', '.join(allowed)}.")
    providers = data["providers"]
    if not isinstance(providers, list) or not providers:
        raise ProfileError(f"{source}: 'providers' must be a non-empty list of [[providers]] tables.")
    parsed = []
    for i, entry in enumerate(providers):
        if not isinstance(entry, dict) or set(entry) - {"name", "options"} or "name" not in entry:
            raise ProfileError(f"{source}: providers[{i}] must have 'name' and optional 'options' only.")
        if entry["name"] not in PROVIDERS:
            raise ProfileError(f"{source}: providers[{i}].name '{entry['name']}' is not one of {', '.join(PROVIDERS)}.")
        if not isinstance(entry.get("options", {}), dict):
            raise ProfileError(f"{source}: providers[{i}].options must be a table.")
        parsed.append(Provider(entry["name"], dict(entry.get("options", {}))))
    for role in ("encoder", "decoder"):
        if role not in sections["precision"]:
            raise ProfileError(f"{source}: 'precision.{role}' is missing; allowed: {', '.join(PRECISIONS[role])}.")
    audio = sections.get("audio", {})
    if audio.get("hop_s", 0) > audio.get("window_s", float("inf")):
        raise ProfileError(f"{source}: 'audio.hop_s' ({audio['hop_s']}) is longer than 'audio.window_s'; windows would skip audio.")
    sections["escalation"] = EscalationSettings(**sections.get("escalation", {}))
    return Profile(source=source, providers=parsed, **sections)


def _check(source: str, path: str, table: dict, key: str, value: Any) -> Any:
    if key not in table:
        raise ProfileError(f"{source}: unknown key '{path}'; allowed: {', '.join(sorted(table))}.")
    kind, check, allowed = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # TOML true is not a number here
        raise ProfileError(f"{source}: '{path}' must be {allowed}, got {value!r}.")
    if not isinstance(value, kind) or (check is not None and not check(value)):
        raise ProfileError(f"{source}: '{path}' must be {allowed}, got {value!r}.")
    return value
