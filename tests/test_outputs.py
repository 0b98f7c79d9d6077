"""edge-run's outputs as the tools people use read them: crowsetta for the Raven table, pandas for the CSV."""

from __future__ import annotations

import crowsetta
import pandas as pd

from tests.helpers import events, run_edge

BAT = "whombat/XC820302-Noctilio_leporinus-2013.01.08-CL00088_A_15.wav"


def test_raven_table_and_csv_load_with_times_bands_and_labels(bundle, subset_audio, audio_dir, tmp_path):
    out = tmp_path / "out"
    for recording, expansion in ((subset_audio / "opensoundscape" / "great_plains_toad.wav", "1"),
                                 (audio_dir / BAT, "10")):
        result = run_edge("--bundle", str(bundle), str(recording), "--out", str(out), "--profile", "x86-cpu",
                          "--escalate", "off", "--no-gate", "-q", "--time-expansion", expansion)
        assert result.returncode == 0, result.stderr
    stored = events(out)
    raven = crowsetta.Transcriber(format="raven").from_file(out / "events.selections.txt", annot_col="Common Name")
    boxes = raven.to_annot().bboxes
    assert len(boxes) == len(stored)
    for box, event in zip(boxes, stored):
        assert (box.onset, box.offset) == (event["offset_s"], round(event["offset_s"] + event["duration_s"], 3))
        assert box.low_freq == 0.0
        assert box.high_freq == (80000.0 if "whombat" in event["source"] else 8000.0)  # real Hz, expansion undone
        assert box.label == (event["label"] or event["answer"])  # the answer where it names no bundle label
    bat = [e for e in stored if "whombat" in e["source"]]
    assert bat and all(e["duration_s"] == 1.0 for e in bat[:-1])  # a 10 s window of 10x-slowed audio: 1 real s
    table = pd.read_csv(out / "events.csv")
    assert list(table["id"]) == [e["id"] for e in stored]
    assert list(table["offset_s"]) == [e["offset_s"] for e in stored]
    assert list(table["answer"]) == [e["answer"] for e in stored]
