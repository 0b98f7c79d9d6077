"""The gate on annotations nobody here made: calls reach the models, call-free windows mostly do not."""

from __future__ import annotations

from testbed.screening import evaluate


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


def test_digital_silence_does_not_open_the_gate_for_what_follows():
    """A muted second (or a recorder's zero-filled gap) must not drag the noise floor to nothing."""
    import numpy as np

    from naturelm_edge.audio import fbank
    from naturelm_edge.edge_runtime.gate import EnergyGate

    rng = np.random.default_rng(0)
    noise = [fbank(rng.normal(0, 0.01, 160_000).astype(np.float32)) for _ in range(3)]
    gate = EnergyGate()
    assert not gate(noise[0]).passed  # steady noise: nothing above its own floor
    floor = gate.floor_db
    assert not gate(fbank(np.zeros(160_000, np.float32))).passed
    assert gate.floor_db == floor  # the silent window left the floor alone
    assert not gate(noise[1]).passed and not gate(noise[2]).passed
    gate.reset()  # a new recording starts a floor of its own
    assert gate.floor_db is None and not gate(noise[0]).passed and gate.floor_db is not None
