"""The gate on annotations nobody here made: calls reach the models, call-free windows mostly do not."""

from __future__ import annotations

from benchmarks.gate import evaluate


def test_gate_recall_and_skip_lower_bounds(audio_dir):
    result = evaluate(audio_dir)
    assert result["whombat"]["calls"] == 433
    assert result["whombat"]["recall"] >= 0.95
    assert result["opensoundscape_loca"]["recall"] >= 0.95
    assert result["call_free"]["skipped"] >= 0.60


def test_a_closed_gate_would_fail_the_recall_bound(audio_dir):
    from naturelm_edge.edge_runtime.gate import GateSettings

    strict = evaluate(audio_dir, GateSettings(margin_db=60.0))  # the bound above can fail
    assert strict["whombat"]["recall"] < 0.95 and strict["call_free"]["skipped"] == 1.0
