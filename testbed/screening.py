"""What the gate (and detector) keep of hand-drawn calls and refuse of call-free audio, window by window.

Both the gate's quality test and ``benchmarks/gate.py`` (and the detector's) compute these measures.
"""

from __future__ import annotations

import csv
from pathlib import Path

from testbed.corpus import BAT_EXPANSION, CALL_FREE, LOCA


def window_outcomes(path: Path, expansion: float, settings, detector=None) -> list[tuple[float, float, bool, float]]:  # noqa: ANN001
    """(offset s, length s, gate passed, detector score or +inf) of every window of ``path``, in real time."""
    from naturelm_edge.audio import WindowSpec, window_features
    from naturelm_edge.edge_runtime.gate import EnergyGate

    gate = EnergyGate(settings)
    spec = WindowSpec()
    return [(w.start / spec.sample_rate / expansion, spec.window_s / expansion, gate(features).passed,
             detector.score(features, w.valid) if detector is not None else float("inf"))
            for w, features in window_features(path, spec, expansion)]


def annotated_outcomes(audio: Path, settings, detector=None) -> dict:  # noqa: ANN001
    """Window outcomes of every annotated and call-free recording, computed once for any threshold."""
    calls: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader((audio / "whombat" / "CALL_ANNOTATIONS.csv").open()):
        calls.setdefault(row["file"], []).append((float(row["start_s"]), float(row["end_s"])))
    return {"bat": [(boxes, window_outcomes(audio / name, BAT_EXPANSION, settings, detector)) for name, boxes in calls.items()],
            "loca": [window_outcomes(audio / name, 1.0, settings, detector) for name in LOCA],
            "free": [window_outcomes(audio / name, expansion, settings, detector) for name, expansion in CALL_FREE]}


def measures(outcomes: dict, keep) -> dict:  # noqa: ANN001 - (gate passed, score) -> reaches the models
    """Recall of annotated calls (some window holding the call reaches the models) and call-free windows skipped."""
    bat = [any(keep(g, s) for offset, length, g, s in windows if offset <= start and end <= offset + length)
           for boxes, windows in outcomes["bat"] for start, end in boxes]
    loca = [any(keep(g, s) for *_, g, s in windows) for windows in outcomes["loca"]]
    free = [not keep(g, s) for windows in outcomes["free"] for *_, g, s in windows]
    return {"whombat": {"calls": len(bat), "recall": sum(bat) / len(bat)},
            "opensoundscape_loca": {"calls": len(loca), "recall": sum(loca) / len(loca)},
            "call_free": {"windows": len(free), "skipped": sum(free) / len(free)}}


def evaluate(audio: Path, settings=None) -> dict:  # noqa: ANN001 - GateSettings
    from naturelm_edge.edge_runtime.gate import GateSettings

    settings = settings or GateSettings()
    return {**measures(annotated_outcomes(audio, settings), lambda gate, _: gate),
            "settings": settings.__dict__, "targets": {"recall": 0.95, "skipped": 0.60}}
