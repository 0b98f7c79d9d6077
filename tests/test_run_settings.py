"""Each edge-run setting resolved once, from flag, site, profile, bundle and default, and written to run.json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from naturelm_edge.device_profiles import get
from naturelm_edge.edge_runtime.settings import DEFAULT_PRIVACY, RunFlags, RunSettings
from naturelm_edge.edge_runtime.site import SiteRules


def bundle(time_expansion: float = 1.0, escalation_threshold: float | None = None) -> SimpleNamespace:
    """What RunSettings reads of a bundle: its audio contract, id and (a scores bundle's) escalation threshold."""
    spec = SimpleNamespace(window_s=10.0, hop_s=5.0)
    return SimpleNamespace(id="b-1", audio=SimpleNamespace(spec=spec, time_expansion=time_expansion),
                           escalation_threshold=escalation_threshold)


def test_a_flag_wins_then_the_site_then_the_profile_then_the_bundle_then_the_default():
    profile = get("x86-cpu")
    plain = RunSettings.resolve(RunFlags(), profile, bundle())
    assert (plain.escalate, plain.privacy, plain.time_expansion) == (profile.escalation.mode, DEFAULT_PRIVACY, 1.0)
    assert plain.origin["privacy"] == "default" and plain.origin["escalate"] == "profile"
    assert plain.origin["time_expansion"] == "bundle" and plain.escalation == profile.escalation

    site = RunSettings.resolve(RunFlags(), profile, bundle(10.0), SiteRules(privacy="mask"))
    assert (site.privacy, site.origin["privacy"], site.time_expansion) == ("mask", "site", 10.0)

    bat = replace(profile, audio={**profile.audio, "time_expansion": 8.0})
    assert RunSettings.resolve(RunFlags(), bat, bundle(10.0)).origin["time_expansion"] == "profile"

    flags = RunFlags(escalate="off", confidence_threshold=0.9, privacy="off", time_expansion=20.0)
    given = RunSettings.resolve(flags, bat, bundle(10.0), SiteRules(privacy="mask"))
    assert (given.escalate, given.escalation.confidence_threshold, given.privacy, given.time_expansion) == \
        ("off", 0.9, "off", 20.0)
    assert given.escalation.hourly_budget == profile.escalation.hourly_budget  # only what was asked changes
    assert {given.origin[k] for k in ("escalate", "confidence_threshold", "privacy", "time_expansion")} == {"flag"}
    assert given.queue_url is None and RunSettings.resolve(RunFlags(escalate="https://x/"), profile,
                                                           bundle()).queue_url == "https://x/"


def test_a_bundle_that_chose_its_escalation_threshold_beats_the_profile_and_a_flag_beats_both():
    profile = get("x86-cpu")
    own = RunSettings.resolve(RunFlags(), profile, bundle(escalation_threshold=0.83))
    assert own.escalation.confidence_threshold == 0.83 and own.origin["confidence_threshold"] == "bundle"
    assert own.escalation.hourly_budget == profile.escalation.hourly_budget
    flagged = RunSettings.resolve(RunFlags(confidence_threshold=0.6), profile, bundle(escalation_threshold=0.83))
    assert (flagged.escalation.confidence_threshold, flagged.origin["confidence_threshold"]) == (0.6, "flag")
    plain = RunSettings.resolve(RunFlags(), profile, bundle())
    assert plain.escalation.confidence_threshold == profile.escalation.confidence_threshold


def test_run_json_says_what_ran_and_where_each_value_came_from(tmp_path: Path):
    settings = RunSettings.resolve(RunFlags(privacy="mask"), get("x86-cpu"), bundle())
    written = json.loads(settings.write(tmp_path, get("x86-cpu"), bundle()).read_text())
    assert written["privacy"] == "mask" and written["origin"]["privacy"] == "flag"
    assert written["escalation"]["hourly_budget"] == 60 and written["profile"] == "x86-cpu"
    assert written["bundle_id"] == "b-1" and (written["window_s"], written["hop_s"]) == (10.0, 5.0)


def test_the_site_floor_comes_from_the_site_file_else_the_default():
    from naturelm_edge.edge_runtime.detector import DEFAULT_FLOOR, SiteFloor

    profile = get("x86-cpu")
    plain = RunSettings.resolve(RunFlags(), profile, bundle())
    assert plain.site_floor == DEFAULT_FLOOR and plain.origin["site_floor"] == "default"
    for floor in (SiteFloor(rise_per_minute=3.0), None):
        site = RunSettings.resolve(RunFlags(), profile, bundle(), SiteRules(floor=floor))
        assert site.site_floor == floor and site.origin["site_floor"] == "site"
