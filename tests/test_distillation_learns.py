"""On real audio: a taught tiny teacher, its cached answers, a student trained on distillation species."""

from __future__ import annotations

import pytest

from testbed.distillation import ProofSettings, run


@pytest.fixture(scope="module")
def proof(audio_dir, tmp_path_factory, taught_teacher):
    settings = ProofSettings(student_epochs=60, student_layers=2, student_hidden=128, student_heads=4)
    return run(audio_dir, tmp_path_factory.mktemp("proof"), settings, teacher_dir=taught_teacher)


def test_student_memorises_the_teacher_on_training_windows(proof):
    distill = proof["groups"]["distill"]
    assert distill["windows"] >= 100
    assert distill["agreement"] >= 0.9, distill


def test_held_out_species_were_never_trained_on(proof):
    held_out = set(proof["split"]["held_out"])
    assert held_out and not held_out & set(proof["split"]["distill"])
    trained_on = {a["label"] for a in proof["answers"] if a["role"] == "distill"}
    assert not held_out & trained_on
    assert proof["groups"]["held_out"]["windows"] > 0  # reported separately


def test_onnx_generation_equals_pytorch(proof):
    assert proof["greedy_equal"] == proof["greedy_total"] > 0
    assert proof["decoder_parity"]["min_cosine"] > 0.9999


def test_teacher_learnt_species_names(proof):
    # the point of teaching the tiny teacher: its answers are species names, so agreement means something
    assert proof["groups"]["distill"]["teacher_accuracy"] > 0.5
