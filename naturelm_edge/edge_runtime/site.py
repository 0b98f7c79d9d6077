"""Site rules: what a recorder at one place reports, in one TOML file (``edge-run --site site.toml``).

What the peers' users ask for most: fewer false alarms and a way to act per species. The rules apply to
answered windows, after the models and before anything is stored::

    privacy = "drop"                 # drop | mask | off (windows where people talk)

    [species]
    allow = ["*Warbler", "Great Plains toad"]   # exact bundle labels or globs; empty: all
    deny = ["Dark-eyed Junco"]

    [thresholds]                     # per label (or glob): below it the answer is not reported ...
    default = 0.2
    "Great Plains toad" = 0.5
    below = "drop"                   # ... or "escalate": reported and sent to the full model

    [actions]                        # always_escalate | never_escalate | no_clip
    "Barred Owl" = ["always_escalate", "no_clip"]

    [confirm]                        # BirdNET-Go's deep detection: a label is reported once it was heard
    count = 2                        # this many times within this many seconds (the earlier ones with it)
    within_s = 15

    [site_floor]                     # the detector's floor learned from this site's background (SiteFloor)
    rise_per_minute = 3.0            # any SiteFloor field; enabled = false: the bundle's threshold alone

The site floor is the one screening setting here: it belongs to the place (how fast its background changes,
how much of a busy soundscape's faint calls the floor may cost), not to the bundle.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from naturelm_edge.edge_runtime.detector import DEFAULT_FLOOR, SiteFloor
from naturelm_edge.edge_runtime.labels import snap
from naturelm_edge.edge_runtime.screening import PRIVACY_MODES
from naturelm_edge.errors import EdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ACTIONS = ("always_escalate", "never_escalate", "no_clip")
SECTIONS = {"privacy": None, "species": ("allow", "deny"), "thresholds": None, "actions": None,
            "confirm": ("count", "within_s"), "site_floor": ("enabled", *(f.name for f in fields(SiteFloor)))}
LOCATIONS = (Path("/etc/naturelm-edge/site.toml"),)  # the device's own, when neither --site nor the bundle has one


class SiteError(EdgeError):
    """A site file that cannot be used, with the line it fails on."""


@dataclass
class Verdict:
    """What the rules decide for one answered window."""

    report: bool = True
    removed_by: str | None = None  # the rule that kept it from being reported
    escalate: bool | None = None  # True: always; False: never; None: as the policy decides
    clip: bool = True


@dataclass
class SiteRules:
    privacy: str | None = None
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    below: str = "drop"
    actions: dict[str, list[str]] = field(default_factory=dict)
    confirm_count: int = 1
    confirm_within_s: float = 0.0
    floor: SiteFloor | None = DEFAULT_FLOOR  # None: the detector's threshold alone
    source: str = "defaults"
    warnings: list[str] = field(default_factory=list)

    def verdict(self, label: str | None, confidence: float) -> Verdict:
        name = label or ""
        if self.deny and _matches(name, self.deny):
            return Verdict(False, "deny")
        if self.allow and not _matches(name, self.allow):
            return Verdict(False, "allow")
        actions = [a for pattern, listed in self.actions.items() if _matches(name, [pattern]) for a in listed]
        escalate = True if "always_escalate" in actions else False if "never_escalate" in actions else None
        threshold = next((v for k, v in self.thresholds.items() if k != "default" and _matches(name, [k])),
                         self.thresholds.get("default"))
        if threshold is not None and confidence < threshold:
            if self.below == "drop":
                return Verdict(False, "threshold")
            escalate = escalate if escalate is False else True
        return Verdict(True, None, escalate, "no_clip" not in actions)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)


def load_site(path: Path | None, labels: list[str], bundle_root: Path | None = None) -> SiteRules:
    """The rules of ``path``, else the bundle's ``site.toml``, else the device's; defaults when none exists."""
    for candidate in ([path] if path else [*([bundle_root / "site.toml"] if bundle_root else []), *LOCATIONS]):
        if candidate.is_file() or path is not None:
            return parse_site(candidate, labels)
    return SiteRules()


def parse_site(path: Path, labels: list[str]) -> SiteRules:
    try:
        text = path.read_text()
    except OSError as err:
        raise SiteError(f"{path}: cannot read the site file ({err.strerror}).") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SiteError(f"{path}: not valid TOML ({err}).") from err
    where = _Where(path, text)
    for key, value in data.items():
        if key not in SECTIONS:
            raise where.error(key, f"unknown key {key!r}; known: {', '.join(SECTIONS)}")
        allowed = SECTIONS[key]
        if allowed and isinstance(value, dict):
            for inner in value:
                if inner not in allowed:
                    raise where.error(inner, f"unknown key {key}.{inner}; known: {', '.join(allowed)}")
    rules = SiteRules(source=str(path))
    rules.privacy = data.get("privacy")
    if rules.privacy is not None and rules.privacy not in PRIVACY_MODES:
        raise where.error("privacy", f"privacy {rules.privacy!r}: use one of {', '.join(PRIVACY_MODES)}")
    species = data.get("species", {})
    rules.allow, rules.deny = (where.patterns(species.get(k, []), k, labels, rules.warnings) for k in ("allow", "deny"))
    thresholds = dict(data.get("thresholds", {}))
    rules.below = thresholds.pop("below", "drop")
    if rules.below not in ("drop", "escalate"):
        raise where.error("below", f"thresholds.below {rules.below!r}: use drop or escalate")
    for name, value in thresholds.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise where.error(name, f"threshold for {name!r} is {value!r}; a confidence between 0 and 1 is needed")
        if name != "default":
            where.patterns([name], "thresholds", labels, rules.warnings)
    rules.thresholds = {k: float(v) for k, v in thresholds.items()}
    for name, listed in data.get("actions", {}).items():
        listed = [listed] if isinstance(listed, str) else listed
        unknown = [a for a in listed if a not in ACTIONS]
        if unknown or not listed:
            raise where.error(name, f"actions for {name!r}: {unknown or listed!r}; use {', '.join(ACTIONS)}")
        where.patterns([name], "actions", labels, rules.warnings)
        rules.actions[name] = list(listed)
    confirm = data.get("confirm", {})
    rules.confirm_count = confirm.get("count", 1)
    rules.confirm_within_s = confirm.get("within_s", 0.0)
    if not isinstance(rules.confirm_count, int) or rules.confirm_count < 1:
        raise where.error("count", "confirm.count must be a whole number >= 1")
    if not isinstance(rules.confirm_within_s, (int, float)) or rules.confirm_within_s < 0 or (
            rules.confirm_count > 1 and rules.confirm_within_s <= 0):
        raise where.error("within_s", "confirm.within_s must be a positive number of seconds")
    rules.floor = _site_floor(data.get("site_floor", {}), where)
    return rules


def _site_floor(table: object, where: _Where) -> SiteFloor | None:
    if not isinstance(table, dict):
        raise where.error("site_floor", "site_floor must be a table of SiteFloor settings ([site_floor])")
    values = dict(table)
    enabled = values.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise where.error("enabled", f"site_floor.enabled is {enabled!r}; use true or false")
    for name, value in values.items():
        try:
            SiteFloor.of({name: value})
        except ValueError as err:
            raise where.error(name, str(err)) from None
    return SiteFloor.of(values) if enabled else None


class _Where:
    """Line numbers for messages: the first line where a key is set."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def line(self, key: str) -> int | None:
        pattern = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*=')
        return next((i + 1 for i, line in enumerate(self.lines) if pattern.search(line) or f'"{key}"' in line), None)

    def error(self, key: str, message: str) -> SiteError:
        line = self.line(key)
        return SiteError(f"{self.path}{f' line {line}' if line else ''}: {message}.")

    def patterns(self, value: object, key: str, labels: list[str], warnings: list[str]) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, f"{key} must be a list of labels or globs")
        for pattern in value:
            if pattern.count("[") != pattern.count("]"):
                raise self.error(pattern, f"{pattern!r} is not a valid glob (unbalanced brackets)")
            if labels and not any(_matches(label, [pattern]) for label in labels):
                warnings.append(f"{self.path} line {self.line(pattern) or '?'}: {pattern!r} names no label of this "
                                f"bundle (nearest: {snap(pattern, labels).label!r})")
        return list(value)

