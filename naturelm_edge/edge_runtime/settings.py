"""Every setting of one ``edge-run``, resolved once: a flag wins, then the site file, then the device profile,
then the bundle, then the default (stated once, in :class:`EscalationSettings` and here). One exception: the
escalation threshold of a bundle that chose its own (a scores bundle, whose confidence means something else than
a decoder's token probability the profiles' thresholds were set for) comes before the profile's. The run writes
what it resolved, and where each value came from, to ``OUT/run.json``: a user reading a season's output knows
what ran."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from naturelm_edge.atomic import write_atomic
from naturelm_edge.bundle.open import Bundle
from naturelm_edge.device_profiles import Profile
from naturelm_edge.device_profiles.schema import EscalationSettings
from naturelm_edge.edge_runtime.detector import DEFAULT_FLOOR, SiteFloor
from naturelm_edge.edge_runtime.site import SiteRules

DEFAULT_PRIVACY = "drop"  # people talking leave no audio on the device unless a site or a flag says otherwise


@dataclass(frozen=True)
class RunFlags:
    """What the command line (or a caller of the Python API) asked for; None: not asked."""

    escalate: str | None = None  # off | queue | URL
    confidence_threshold: float | None = None
    privacy: str | None = None
    time_expansion: float | None = None


@dataclass(frozen=True)
class RunSettings:
    escalate: str  # off | queue | URL of the full model
    escalation: EscalationSettings  # the policy's threshold, audit rate and hourly budget
    privacy: str
    time_expansion: float
    window_s: float
    hop_s: float
    site_floor: SiteFloor | None = DEFAULT_FLOOR  # how the detector's threshold follows the background; None: off
    origin: dict[str, str] = field(default_factory=dict)  # setting -> flag | site | profile | bundle | default

    @classmethod
    def resolve(cls, flags: RunFlags, profile: Profile, bundle: Bundle, site: SiteRules | None = None) -> RunSettings:
        origin: dict[str, str] = {}

        def first(name: str, *candidates: tuple[str, object]) -> object:
            for where, value in candidates:
                if value is not None:
                    origin[name] = where
                    return value
            raise AssertionError(f"{name} has no default")  # every chain ends in a default

        profile_escalation = profile.escalation
        escalation = replace(profile_escalation, confidence_threshold=first(
            "confidence_threshold", ("flag", flags.confidence_threshold),
            ("bundle", bundle.escalation_threshold),
            ("profile", profile_escalation.confidence_threshold)))
        origin.update(audit_rate="profile", hourly_budget="profile")
        return cls(
            escalate=first("escalate", ("flag", flags.escalate), ("profile", profile_escalation.mode)),
            escalation=escalation,
            privacy=first("privacy", ("flag", flags.privacy), ("site", site.privacy if site else None),
                          ("default", DEFAULT_PRIVACY)),
            time_expansion=first("time_expansion", ("flag", flags.time_expansion),
                                 ("profile", profile.audio.get("time_expansion")),
                                 ("bundle", bundle.audio.time_expansion), ("default", 1.0)),
            window_s=bundle.audio.spec.window_s, hop_s=bundle.audio.spec.hop_s,
            site_floor=site.floor if site else DEFAULT_FLOOR,
            origin={**origin, "window_s": "bundle", "hop_s": "bundle",
                    "site_floor": "site" if site and site.floor != DEFAULT_FLOOR else "default"},
        )

    @property
    def queue_url(self) -> str | None:
        """Where the sender delivers escalations (None: they wait in the queue)."""
        return self.escalate if self.escalate.startswith(("http://", "https://")) else None

    def write(self, out: Path, profile: Profile, bundle: Bundle) -> Path:
        """``OUT/run.json``: the settings, where each came from, and the profile and bundle they were read from."""
        body = {**asdict(self), "profile": profile.name, "bundle_id": bundle.id}
        return write_atomic(Path(out) / "run.json", json.dumps(body, indent=2) + "\n")
