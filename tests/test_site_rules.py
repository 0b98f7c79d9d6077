"""Site rules: each rule changes exactly the events it names; a bad site file is one sentence with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from naturelm_edge.edge_runtime.site import SiteError, parse_site
from tests.helpers import events, run_edge

LABELS = ["Great Plains toad", "Dark-eyed Junco", "Townsend's Warbler", "Humpback whale"]


@pytest.mark.parametrize("text, message", [
    ('privacy = "drop"\ncolour = "red"\n', r"line 2: unknown key 'colour'"),
    ('[species]\nallow = ["Great Plains toad"]\nblock = ["x"]\n', r"line 3: unknown key species.block"),
    ('[species]\ndeny = ["[Junco"]\n', r"line 2: '\[Junco' is not a valid glob"),
    ('[thresholds]\n"Great Plains toad" = 1.5\n', r"line 2: threshold for 'Great Plains toad' is 1.5"),
    ('[actions]\n"Dark-eyed Junco" = ["shout"]\n', r"line 2: actions for 'Dark-eyed Junco'"),
    ('privacy = "loud"\n', r"line 1: privacy 'loud': use one of drop, mask, off"),
    ('[confirm]\ncount = 3\n', r"confirm.within_s must be a positive number"),
    ('[species\n', r"not valid TOML"),
    ('[site_floor]\nspeed = 2\n', r"line 2: unknown key site_floor.speed"),
    ('[site_floor]\nenabled = "no"\n', r"line 2: site_floor.enabled is 'no'; use true or false"),
    ('[site_floor]\nquantile = 0.5\nrise_per_minute = -1\n', r"line 3: site floor rise_per_minute is -1; it must be at least 0"),
    ('[site_floor]\nmin_windows = 2.5\n', r"line 2: site floor min_windows is 2.5; a whole number is needed"),
])
def test_bad_site_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(SiteError, match=message):
        parse_site(path, LABELS)


def test_a_label_no_bundle_label_resembles_is_a_warning_with_the_nearest(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[species]\ndeny = ["Dark eyed Junko", "*Warbler"]\n')
    rules = parse_site(path, LABELS)
    assert rules.deny == ["Dark eyed Junko", "*Warbler"]
    assert len(rules.warnings) == 1 and "line 2: 'Dark eyed Junko' names no label" in rules.warnings[0]
    assert "nearest: 'Dark-eyed Junco'" in rules.warnings[0]


def test_check_validates_without_running(bundle, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('privacy = "mask"\n[species]\ndeny = ["*Junco"]\n[confirm]\ncount = 2\nwithin_s = 15\n')
    result = run_edge("--site", str(good), "--check")
    assert result.returncode == 0 and "valid" in result.stdout and "privacy mask" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[thresholds]\ndefault = -1\n')
    result = run_edge("--bundle", str(bundle), "--site", str(bad), "--check")
    assert result.returncode != 0 and f"{bad} line 2: threshold for 'default' is -1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def baseline(bundle, subset_audio, tmp_path_factory):
    files = [str(subset_audio / "opensoundscape" / "great_plains_toad.wav"),
             *map(str, sorted((subset_audio / "phoebe").glob("*.mp3"))[:9])]
    root = tmp_path_factory.mktemp("site")

    def run(name: str, site: str | None, *extra: str) -> tuple[list[dict], dict]:
        args = ["--bundle", str(bundle), *files, "--no-gate", "--escalate", "queue", "--json", "--out", str(root / name)]
        if site is not None:
            (root / f"{name}.toml").write_text(site)
            args += ["--site", str(root / f"{name}.toml")]
        result = run_edge(*args, *extra)
        assert result.returncode == 0, result.stderr
        return events(root / name), json.loads(result.stdout)

    return run, run("baseline", None)[0]


def _key(event: dict) -> tuple:
    return event["source"], event["offset_s"]


def _detection(event: dict) -> bool:
    """An answer naming something (rules apply to these; 'None' answers are reported as they are)."""
    return event["answer"].strip().lower() != "none"


def test_each_rule_changes_exactly_the_events_it_names(baseline):
    run, base = baseline
    detections = [e for e in base if e["label"]]
    labels = sorted({e["label"] for e in detections}, key=lambda name: -sum(e["label"] == name for e in detections))
    assert len(labels) >= 2, "the fixture must answer with at least two labels"
    named, other = labels[0], labels[1]

    denied, summary = run("deny", f'[species]\ndeny = ["{named}"]\n')
    assert {_key(e) for e in denied} == {_key(e) for e in base if e["label"] != named}
    assert summary["removed"] == {"deny": sum(e["label"] == named for e in base)}

    allowed, _ = run("allow", f'[species]\nallow = ["{other}"]\n')
    assert {_key(e) for e in allowed} == {_key(e) for e in base if not _detection(e) or e["label"] == other}

    cut = sorted(e["confidence"] for e in base if e["label"] == named)[len([e for e in base if e["label"] == named]) // 2]
    thresholded, _ = run("threshold", f'[thresholds]\n"{named}" = {cut}\n')
    assert {_key(e) for e in thresholded} == {_key(e) for e in base if e["label"] != named or e["confidence"] >= cut}

    unclipped, _ = run("no-clip", f'[actions]\n"{named}" = ["no_clip"]\n')
    assert [(_key(e), bool(e["clip_path"])) for e in unclipped] == [
        (_key(e), bool(e["clip_path"]) and e["label"] != named) for e in base]

    escalated, _ = run("escalate", f'[actions]\n"{named}" = ["always_escalate"]\n"{other}" = ["never_escalate"]\n')
    for before, after in zip(base, escalated):
        assert _key(before) == _key(after)
        want = "queued" if after["label"] == named else "none" if after["label"] == other else before["escalation_status"]
        assert after["escalation_status"] == want


def test_confirmation_reports_a_label_only_when_heard_again(baseline):
    run, base = baseline
    confirmed, summary = run("confirm", "[confirm]\ncount = 2\nwithin_s = 5\n")
    kept = []
    for event in base:
        if not _detection(event):
            kept.append(_key(event))
            continue
        name = event["label"] or event["answer"]
        near = [e for e in base if e["source"] == event["source"] and (e["label"] or e["answer"]) == name
                and abs(e["offset_s"] - event["offset_s"]) <= 5 and e is not event]
        if near:
            kept.append(_key(event))
    assert sorted(_key(e) for e in confirmed) == sorted(kept)
    assert summary["removed"].get("confirm", 0) == len(base) - len(kept) > 0


def test_the_budget_is_spent_after_the_site_rules_per_recorder_and_never_when_off(baseline, tmp_path):
    """One escalation per hour of each recorder's audio: windows a rule removes spend none of it, a rule's own
    escalations spend it, what the budget refuses is stored as such, and ``--escalate off`` queues nothing."""
    from naturelm_edge.device_profiles import get

    run, base = baseline
    detections = [e for e in base if e["label"]]

    def several_in_a_file_without(name: str) -> bool:  # the budget's refusals need a file with two detections left
        per_file = [e["source"] for e in detections if e["label"] != name]
        return any(per_file.count(source) > 1 for source in per_file)

    # the rarest label whose denial leaves a file with several detections
    denied = min((e["label"] for e in detections if several_in_a_file_without(e["label"])),
                 key=lambda name: sum(e["label"] == name for e in detections))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = Path(get("x86-cpu").source).read_text().replace('name = "x86-cpu"', 'name = "one-an-hour"')
    (profiles / "one-an-hour.toml").write_text(text.replace("hourly_budget = 60", "hourly_budget = 1"))
    site = f'[species]\ndeny = ["{denied}"]\n[actions]\n"*" = ["always_escalate"]\n'
    budget = ("--profile", "one-an-hour", "--profiles-dir", str(profiles))

    limited, summary = run("budget", site, *budget)
    by_source: dict[str, list[dict]] = {}
    for event in limited:
        if event["label"]:
            by_source.setdefault(event["source"], []).append(event)
    assert denied not in {e["label"] for e in limited}
    assert sum(map(len, by_source.values())) > len(by_source), "needs several detections in one file"
    for source, found in by_source.items():  # each file is its own recorder here, shorter than an hour
        statuses = [e["escalation_status"] for e in sorted(found, key=lambda e: e["offset_s"])]
        assert statuses == ["queued"] + ["over-budget"] * (len(statuses) - 1), (source, statuses)
    assert summary["over_budget"] == sum(e["escalation_status"] == "over-budget" for e in limited) > 0
    assert summary["escalated"] == len(by_source)

    off, summary = run("budget-off", site, *budget, "--escalate", "off")
    assert {e["escalation_status"] for e in off} == {"none"}
    assert summary["escalated"] == summary["over_budget"] == 0
