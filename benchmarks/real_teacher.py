"""Does a bundle distilled from a real teacher say what the teacher says? BirdNET v2.4, end to end.

Run: ``python -m benchmarks.real_teacher [--audio DIR] [--views 6] [--epochs 30] [--out benchmarks/results/real-teacher]``.

1. ``edge build --teacher birdnet-v2.4`` on every shared recording: the teacher answers every window (and
   augmented copies of the training recordings), the student learns from them, int8 is calibrated on the
   calibration recordings. Recordings, never windows, are split (``distill.scores.recording_role``).
2. On the evaluation recordings (never trained on, never calibrated on), the device's answers, through the
   Python API exactly as ``edge-run`` computes them (gate, int8 student, 3 s windows), are compared with
   BirdNET's own answer for the same window (its best animal class at confidence >= 0.5, else nothing):
   same species, call recall, silence kept, per site (the recording's folder), with counts and 95 % Wilson
   intervals.
3. The cascade: windows the device is unsure of (its confidence below the escalation threshold) are answered
   by the teacher, as ``edge serve --teacher birdnet-v2.4`` answers them; its agreement and the share of
   windows it escalates, for several thresholds (the hourly budget is left out: this is what each threshold
   asks of the server).

Writes ``real_teacher.json``, ``real_teacher.md`` and ``real_teacher.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import machine, pyplot, recordings_dir, write_results

EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]
COST = {"teacher_cpu_s": 0.0, "teacher_windows": 0, "device_cpu_s": 0.0, "audio_s": 0.0}  # filled by windows()
THRESHOLDS = (0.0, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def build(audio: Path, work: Path, views: int, epochs: int) -> tuple[Path, float]:
    bundle = work / "bundle"
    started = time.perf_counter()
    subprocess.run([*EDGE, "build", "--teacher", "birdnet-v2.4", "--audio", str(audio), "--out", str(bundle),
                    "--work", str(work / "build"), "--profile", "x86-cpu", "--encoder-epochs", str(epochs),
                    "--patience", "6"] + (["--views", str(views)] if views else []), check=True)
    return bundle, time.perf_counter() - started


def windows(audio: Path, bundle: Path, recordings: list[str]) -> list[dict]:
    """Per window of each evaluation recording: the device's answer and confidence, and the teacher's."""
    from naturelm_edge.api import EdgeModel
    from naturelm_edge.audio.decode import stream
    from naturelm_edge.edge_runtime.scores import sigmoid
    from naturelm_edge.prompt import NOTHING_HEARD
    from naturelm_edge.teachers.birdnet import BirdNET, pieces

    model, teacher = EdgeModel(bundle, "x86-cpu"), BirdNET(embeddings=False)
    rows = []
    for relative in recordings:
        started = time.process_time()  # the teacher decodes and resamples too: counted on its side
        wave = np.concatenate(list(stream(audio / relative, model.bundle.audio.spec.sample_rate)) or [np.zeros(1)])
        heard = []
        for piece in pieces(wave):
            logits = np.where(teacher.animal, teacher.logits(piece), -np.inf)
            best = int(np.argmax(logits))
            heard.append(teacher.labels[best] if sigmoid(logits[best]) >= 0.5 else NOTHING_HEARD)
        COST["teacher_cpu_s"] += time.process_time() - started
        COST["teacher_windows"] += len(heard)
        COST["audio_s"] += wave.shape[0] / model.bundle.audio.spec.sample_rate
        started = time.process_time()
        results = list(model.detect(audio / relative))  # decoding, gate, student: the device's whole path
        COST["device_cpu_s"] += time.process_time() - started
        for result in results:
            index = int(round(result.offset_s / model.bundle.audio.spec.hop_s))
            rows.append({"recording": relative, "site": relative.split("/")[0], "offset_s": result.offset_s,
                         "device": result.answer if result.answered else NOTHING_HEARD,
                         "confidence": result.confidence if result.answered else 1.0,
                         "outcome": result.outcome, "teacher": heard[index] if index < len(heard) else NOTHING_HEARD})
    return rows


def figures(rows: list[dict], threshold: float) -> dict:
    """Agreement of the cascade at ``threshold`` (0: the device alone) with the teacher."""
    from naturelm_edge.distill.agreement import share
    from naturelm_edge.prompt import NOTHING_HEARD

    def said(row: dict) -> str:
        return row["teacher"] if row["confidence"] < threshold and row["outcome"] == "answered" else row["device"]

    calls = [r for r in rows if r["teacher"] != NOTHING_HEARD]
    quiet = [r for r in rows if r["teacher"] == NOTHING_HEARD]
    escalated = sum(r["confidence"] < threshold and r["outcome"] == "answered" for r in rows)
    per_window = COST["teacher_cpu_s"] / max(1, COST["teacher_windows"])
    hours = COST["audio_s"] / 3600 or 1.0
    cascade = (COST["device_cpu_s"] + escalated * per_window) / hours  # the device, plus the teacher on what it sends
    return {"threshold": threshold, "windows": len(rows),
            "cascade_cpu_s_per_audio_hour": round(cascade, 1),
            "cost_ratio_to_teacher": round(cascade / (COST["teacher_cpu_s"] / hours), 3) if COST["teacher_cpu_s"] else None,
            "species": share(sum(said(r) == r["teacher"] for r in calls), len(calls)),
            "call_recall": share(sum(said(r) != NOTHING_HEARD for r in calls), len(calls)),
            "quiet_kept_quiet": share(sum(said(r) == NOTHING_HEARD for r in quiet), len(quiet)),
            "escalated": share(escalated, len(rows))}


def per_site(rows: list[dict]) -> dict:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["site"]].append(row)
    return {site: figures(group, 0.0) for site, group in sorted(groups.items())}


def cell(f: dict) -> str:
    if f["share"] is None:
        return "n/a"
    return f"{f['share']:.1%} [{f['ci95'][0]:.0%}-{f['ci95'][1]:.0%}] of {f['count']}"


def markdown(report: dict) -> str:
    build = report["build"]
    lines = ["# A bundle distilled from BirdNET v2.4, judged against BirdNET", "",
             f"Command: `{report['command']}`; {report['machine']['processor']}, {report['machine']['cores']} cores.", "",
             f"Build: {build['seconds']:.0f} s on every shared recording ({build['train_windows']} training windows "
             f"with views, {build['labels']} labels, stopped: {build['stopped']}). Evaluation: "
             f"{report['evaluation']['recordings']} recordings never trained or calibrated on, "
             f"{report['evaluation']['windows']} windows of 3 s. Reference: BirdNET's own answer per window "
             "(best animal class at >= 0.5). 95 % Wilson intervals.", "",
             "## Students alone (the build's report, 1.5 s hop, every window)", "",
             "| student | same species | call recall | silence kept |", "|---|---|---|---|"]
    for name in ("fp32", "quantized"):
        f = build["report"][name]
        lines.append(f"| {name} | {cell(f['species'])} | {cell(f['detection_recall'])} | {cell(f['quiet_kept_quiet'])} |")
    lines += ["", "## The device and the cascade (edge-run's path: gate, int8 student, escalation to the teacher)", "",
              "| escalate below | same species | call recall | silence kept | windows escalated | CPU / teacher |",
              "|---|---|---|---|---|---|"]
    for f in report["cascade"]:
        name = "device alone" if f["threshold"] == 0 else f"{f['threshold']:.2f}"
        lines.append(f"| {name} | {cell(f['species'])} | {cell(f['call_recall'])} | {cell(f['quiet_kept_quiet'])} | "
                     f"{cell(f['escalated'])} | {f.get('cost_ratio_to_teacher')} |")
    lines += ["", "Operating point: the x86-cpu profile's escalation threshold, 0.5, escalates nothing from a scores "
              "bundle (its decision's confidence is never below 0.5: the 'device alone' row); `edge-run --threshold "
              "0.9` is the point at the issue's 20 % of windows escalated.",
              "", "CPU / teacher: the device's whole path (decoding, resampling, fbank, gate, speech filter, int8 student) "
              "plus BirdNET on the windows it escalates, over decoding, resampling and BirdNET on every window, CPU-seconds per audio hour, same run, one thread.",
              "", "## The device alone, per site (folder of the shared recordings)", "",
              "| site | same species | call recall | silence kept |", "|---|---|---|---|"]
    for site, f in report["per_site"].items():
        lines.append(f"| {site} | {cell(f['species'])} | {cell(f['call_recall'])} | {cell(f['quiet_kept_quiet'])} |")
    lines += ["", "What this says: the student is fitted to about 20 minutes of audio (with augmented copies); the "
              "teacher was trained on far more. Where it is unsure, the cascade hands the window to the teacher."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    cascade = report["cascade"]
    x = [f["escalated"]["share"] or 0 for f in cascade]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, name in (("species", "same species"), ("call_recall", "call recall"), ("quiet_kept_quiet", "silence kept")):
        ax.plot(x, [f[key]["share"] or 0 for f in cascade], marker="o", label=name)
    ax.set_xlabel("share of windows escalated to BirdNET")
    ax.set_ylabel("agreement with BirdNET")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("BirdNET-distilled bundle: device and cascade vs. the teacher")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work/real-teacher"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real-teacher"))
    args = parser.parse_args()
    audio = recordings_dir(args.audio)
    bundle, seconds = build(audio, args.work, args.views, args.epochs)
    manifest = json.loads((bundle / "manifest.json").read_text())
    trained = json.loads((bundle / "reports" / "classifier.json").read_text())
    roles = json.loads((args.work / "build" / "teacher-birdnet-v2.4" / "recordings.json").read_text())
    evaluation = sorted(r for r, role in roles.items() if role == "evaluation")
    rows = windows(audio, bundle, evaluation)
    report = {"command": "python -m benchmarks.real_teacher " + " ".join(sys.argv[1:]), "machine": machine(),
              "build": {"seconds": round(seconds, 1), "train_windows": trained["training"]["train_windows"],
                        "labels": len(trained["labels"]), "stopped": trained["training"]["stopped"],
                        "epochs": trained["training"]["epochs"], "report": manifest["encoder"]["fidelity"],
                        "steps": manifest["build"]["steps"]},
              "evaluation": {"recordings": len(evaluation), "windows": len(rows)},
              "cascade": [figures(rows, t) for t in THRESHOLDS], "per_site": per_site(rows), "cost": COST}
    write_results(args.out, "real_teacher", report, markdown, plot)


if __name__ == "__main__":
    main()
