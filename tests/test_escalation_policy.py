"""The escalation decision: one owner, a budget per hour of each recorder's audio, site rules first."""

from __future__ import annotations

from naturelm_edge.device_profiles.schema import EscalationSettings
from naturelm_edge.edge_runtime.escalation import AudioClock, Decision, EscalationPolicy


def policy(per_hour: int) -> EscalationPolicy:
    return EscalationPolicy.for_profile(EscalationSettings(confidence_threshold=0.5, audit_rate=0.0,
                                                           hourly_budget=per_hour))


def test_an_archive_analysed_in_minutes_escalates_what_the_field_would_have():
    """100 one-hour files of one recorder, every window unsure: the budget follows the recorder's audio, so
    each hour gets its share (the wall clock would have given all 60 to the first ten minutes of audio)."""
    chosen, clock = policy(3), AudioClock()
    escalated_hours = []
    for hour in range(100):
        for window in range(720):  # 5 s hop
            at = clock.at("site-a/SMA01", f"SMA01_{hour:03d}.wav", window * 5.0, 10.0)
            if chosen.decide("low-confidence", None, "site-a/SMA01", at).reason:
                escalated_hours.append(int(at // 3600))
    assert len(escalated_hours) == 300
    assert sorted(set(escalated_hours)) == list(range(100))


def test_each_recorder_has_a_budget_of_its_own_and_refusals_say_why():
    chosen = policy(2)
    decisions = [chosen.decide("low-confidence", None, "a", t) for t in (0.0, 5.0, 10.0)]
    assert decisions == [Decision("low-confidence"), Decision("low-confidence"), Decision(over_budget="low-confidence")]
    assert chosen.decide("unknown-label", None, "b", 10.0) == Decision("unknown-label")
    assert chosen.decide("low-confidence", None, "a", 3600.0).reason == "low-confidence"  # the first hour has passed


def test_site_actions_are_decided_by_the_same_owner_and_spend_the_same_budget():
    chosen = policy(1)
    assert chosen.decide("low-confidence", False, "a", 0.0) == Decision()  # never_escalate: nothing spent
    assert chosen.decide(None, True, "a", 1.0) == Decision("site-rule")  # always_escalate spends the budget
    assert chosen.decide(None, True, "a", 2.0) == Decision(over_budget="site-rule")
    assert chosen.decide(None, None, "a", 3.0) == Decision()  # nothing asked: nothing refused either


def test_what_the_answer_alone_asks_for():
    chosen = policy(60)
    assert chosen.wanted(0.2, True, "Dark-eyed Junco") == "low-confidence"
    assert chosen.wanted(0.9, False, "a bird nobody listed") == "unknown-label"
    assert chosen.wanted(0.9, True, "Dark-eyed Junco") is None
    assert chosen.wanted(0.1, None, "None") is None  # no call: nothing for the full model
