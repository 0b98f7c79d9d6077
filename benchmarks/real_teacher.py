"""Does a bundle distilled from a real teacher say what the teacher says? BirdNET v2.4, end to end.

Run: ``python -m benchmarks.real_teacher [--audio DIR] [--views 6] [--epochs 30] [--seed 0] [--work DIR]
[--out benchmarks/results/real-teacher]``; ``--seed`` splits the recordings another way (give it its own
``--work`` and ``--out``).

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
   asks of the server): recall of the teacher's detections, agreement of the device's own answers, the
   operating point, per site, per species and per recording; CPU-seconds of the cascade against the teacher on
   every window, same samples, same run.
   The recording with the most escalated windows the teacher calls empty is also played over and over as one
   recorder for six minutes: what it escalates pass by pass, as the detector's site floor learns it.
4. ``edge bench`` of the bundle with the raspberry-pi-5 profile on one thread: peak RSS and window p95.
5. With ``--extra-audio DIR --extra-source TEXT``: recordings from outside the shared set, judged the same way
   (no training, no calibration on them) and reported apart, with where they come from and their licence.
   The real recordings a registry holds: the ``pykanto`` 0.1.8 wheel carries 25 (great tit songs of Wytham
   Woods, two European storm-petrel recordings from xeno-canto, Bengalese finch song, an AudioMoth minute):
   ``pip download --no-deps pykanto==0.1.8``, unzip, ``--extra-audio pykanto/data``.

Writes ``real_teacher.json``, ``real_teacher.md`` and ``real_teacher.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import machine, pyplot, recordings_dir, write_results

EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]
THRESHOLDS = (0.0, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
# the targets: recall and agreement at least, the rest at most
GOALS = {"recall": 0.97, "agreement": 0.95, "escalated": 0.2, "cpu": 0.3, "rss_mb": 200, "p95_ms": 60}


def build(audio: Path, work: Path, views: int, epochs: int, seed: int) -> tuple[Path, float]:
    bundle = work / "bundle"
    started = time.perf_counter()
    subprocess.run([*EDGE, "build", "--teacher", "birdnet-v2.4", "--audio", str(audio), "--out", str(bundle),
                    "--work", str(work / "build"), "--profile", "x86-cpu", "--encoder-epochs", str(epochs),
                    "--patience", "6", "--seed", str(seed)] + (["--views", str(views)] if views else []), check=True)
    return bundle, time.perf_counter() - started


def windows(audio: Path, bundle: Path, recordings: list[str]) -> list[dict]:
    """Per window of each evaluation recording: the device's answer and confidence, and the teacher's.

    Each recording is decoded and resampled to the bundle's rate once (timed apart: a recorder's microphone
    gives the device audio at that rate, a file costs both sides the same decoding), then the teacher answers
    every window and the device runs its whole path on the same samples, each timed in CPU seconds; each row
    carries its share of its recording's seconds (``decoding_s``, ``teacher_s``, ``device_s``, ``audio_s``), so
    any group of rows has its own costs."""
    from naturelm_edge.api import EdgeModel
    from naturelm_edge.audio.decode import stream
    from naturelm_edge.edge_runtime.scores import sigmoid
    from naturelm_edge.prompt import NOTHING_HEARD
    from naturelm_edge.teachers.birdnet import BirdNET, pieces

    model, teacher = EdgeModel(bundle, "x86-cpu"), BirdNET(embeddings=False)
    rate = model.bundle.audio.spec.sample_rate
    rows = []
    for relative in recordings:
        started = time.process_time()
        wave = np.concatenate(list(stream(audio / relative, rate)) or [np.zeros(1, np.float32)])
        decoding = time.process_time() - started
        started = time.process_time()
        heard = []
        for piece in pieces(wave):
            logits = np.where(teacher.animal, teacher.logits(piece), -np.inf)
            best = int(np.argmax(logits))
            heard.append(teacher.labels[best] if sigmoid(logits[best]) >= 0.5 else NOTHING_HEARD)
        taught = time.process_time() - started
        started = time.process_time()
        # fbank, gate, detector, the speech check where audio could be kept, int8 student: the device's whole path
        results = list(model.detect(wave, sample_rate=rate))
        device = time.process_time() - started
        share = {"decoding_s": decoding, "teacher_s": taught, "device_s": device, "audio_s": wave.shape[0] / rate}
        share = {key: round(value / max(1, len(results)), 6) for key, value in share.items()}
        for result in results:
            index = int(round(result.offset_s / model.bundle.audio.spec.hop_s))
            rows.append({"recording": relative, "site": relative.split("/")[0],
                         "folder": relative.rsplit("/", 1)[0] if "/" in relative else ".", "offset_s": result.offset_s,
                         "device": result.answer if result.answered else NOTHING_HEARD,
                         "confidence": result.confidence if result.answered else 1.0,
                         "outcome": result.outcome, "teacher": heard[index] if index < len(heard) else NOTHING_HEARD,
                         **share})
    return rows


def escalates(row: dict, threshold: float) -> bool:
    """Whether the device sends this window to the teacher: answered (not refused by the screening) and unsure."""
    return row["confidence"] < threshold and row["outcome"] == "answered"


def missed(rows: list[dict], threshold: float, labels: list[str]) -> dict:
    """Where the teacher's detections the cascade loses at ``threshold`` go: refused by the screening (gate,
    detector) before the student, or called silence by the student as sure as the threshold; and how many of
    them are of species the bundle does not carry (it can only escalate those)."""
    from naturelm_edge.prompt import NOTHING_HEARD

    lost = [r for r in rows if r["teacher"] != NOTHING_HEARD and r["device"] == NOTHING_HEARD
            and not escalates(r, threshold)]
    return {"lost": len(lost), "screened_out": sum(r["outcome"] != "answered" for r in lost),
            "called_silence": sum(r["outcome"] == "answered" for r in lost),
            "outside_labels": sum(r["teacher"] not in labels for r in lost)}


def unsupported(rows: list[dict]) -> dict:
    """The names the support floor withdrew (confidence 0: they escalate), and how many of them the teacher
    gives too (a floor that withdrew right names would cost escalations for nothing)."""
    from naturelm_edge.prompt import NOTHING_HEARD

    withdrawn = [r for r in rows if r["outcome"] == "answered" and r["device"] != NOTHING_HEARD and r["confidence"] == 0]
    return {"withdrawn": len(withdrawn), "withdrawn_right": sum(r["device"] == r["teacher"] for r in withdrawn)}


def figures(rows: list[dict], threshold: float) -> dict:
    """The cascade at ``threshold`` (0: the device alone) against the teacher: (a) recall of the teacher's
    detections (answered on the device or escalated), (b) agreement of the device's own species answers
    (those it does not escalate) with the teacher's, the share of windows escalated, and the CPU it costs."""
    from naturelm_edge.distill.agreement import share
    from naturelm_edge.prompt import NOTHING_HEARD

    def said(row: dict) -> str:
        return row["teacher"] if escalates(row, threshold) else row["device"]

    calls = [r for r in rows if r["teacher"] != NOTHING_HEARD]
    quiet = [r for r in rows if r["teacher"] == NOTHING_HEARD]
    named = [r for r in rows if not escalates(r, threshold) and r["device"] != NOTHING_HEARD]  # the device names one
    escalated = sum(escalates(r, threshold) for r in rows)
    cost = totals(rows)
    hours = cost["audio_s"] / 3600 or 1.0
    sent = sum(r["teacher_s"] for r in rows if escalates(r, threshold))
    cascade = (cost["device_cpu_s"] + sent) / hours  # the device, plus the teacher on what it sends
    teacher, decoding = cost["teacher_cpu_s"] / hours, cost["decoding_cpu_s"] / hours
    return {"threshold": threshold, "windows": len(rows),
            "cascade_cpu_s_per_audio_hour": round(cascade, 1),
            "cost_ratio_to_teacher": round(cascade / teacher, 3) if teacher else None,
            "cost_ratio_from_files": round((cascade + decoding) / (teacher + decoding), 3) if teacher else None,
            "call_recall": share(sum(said(r) != NOTHING_HEARD for r in calls), len(calls)),
            "device_agreement": share(sum(r["device"] == r["teacher"] for r in named), len(named)),
            "species": share(sum(said(r) == r["teacher"] for r in calls), len(calls)),
            "quiet_kept_quiet": share(sum(said(r) == NOTHING_HEARD for r in quiet), len(quiet)),
            "escalated": share(escalated, len(rows))}


def empty_escalations(rows: list[dict], threshold: float) -> dict[str, int]:
    """Per recording, the windows the device escalates at ``threshold`` in which the teacher hears nothing."""
    from naturelm_edge.prompt import NOTHING_HEARD

    found: dict[str, int] = defaultdict(int)
    for r in rows:
        if escalates(r, threshold) and r["teacher"] == NOTHING_HEARD:
            found[r["recording"]] += 1
    return found


def settling(audio: Path, bundle: Path, rows: list[dict], threshold: float, minutes: float = 6.0) -> dict | None:
    """The recording the device escalates most windows of that the teacher calls empty, played again and again
    as one recorder for ``minutes``: the detector's site floor learns the device's own "nothing" there as the
    site's background, so the evaluation, which hears each recording once, sees only its first pass."""
    from naturelm_edge.api import EdgeModel
    from naturelm_edge.audio.decode import stream

    empty = empty_escalations(rows, threshold)
    if not empty:
        return None
    name = max(empty, key=empty.get)
    model = EdgeModel(bundle, "x86-cpu")
    rate = model.bundle.audio.spec.sample_rate
    wave = np.concatenate(list(stream(audio / name, rate)))
    seconds = wave.shape[0] / rate
    passes = max(2, int(np.ceil(minutes * 60 / seconds)))
    found = list(model.detect(np.tile(wave, passes), sample_rate=rate))
    per_pass = [[r for r in found if k * seconds <= r.offset_s < (k + 1) * seconds] for k in range(passes)]
    return {"recording": name, "seconds": round(seconds, 1), "passes": [
        {"windows": len(p), "escalated": sum(r.answered and r.confidence < threshold for r in p),
         "refused": sum(not r.answered for r in p)} for p in per_pass]}


def totals(rows: list[dict]) -> dict:
    """CPU-seconds of ``rows``' decoding, teacher on every window and device path, and their audio seconds."""
    return {"decoding_cpu_s": sum(r["decoding_s"] for r in rows), "teacher_cpu_s": sum(r["teacher_s"] for r in rows),
            "device_cpu_s": sum(r["device_s"] for r in rows), "audio_s": sum(r["audio_s"] for r in rows)}


def extra(root: Path | None, source: str, bundle: Path, threshold: float) -> dict | None:
    """The cascade at the operating point on recordings from outside the shared set, per folder."""
    if root is None:
        return None
    from naturelm_edge.audio.files import list_audio

    rows = windows(root, bundle, [str(path.relative_to(root)) for path in list_audio(root)])
    found = {"source": source, "root": root.name, "recordings": len({r["recording"] for r in rows}),
             "all": figures(rows, threshold), "per_folder": grouped(rows, "folder", threshold), "windows": rows}
    return found


def grouped(rows: list[dict], key: str, threshold: float) -> dict:
    """:func:`figures` per value of ``key`` (site, recording, the teacher's species) at one threshold."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    return {name: figures(group, threshold) for name, group in sorted(groups.items())}


def device_bench(bundle: Path, audio: Path, recordings: list[str], work: Path) -> dict:
    """The bundle with the raspberry-pi-5 profile on one thread (its runtime section with one intra-op thread,
    the process pinned to one core) over the evaluation recordings: ``edge-run``'s peak RSS (the process's own
    high-water mark, from the kernel) and ``edge bench``'s window latency."""
    from importlib import resources

    profiles = work / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    text = resources.files("naturelm_edge.device_profiles").joinpath("profiles/raspberry-pi-5.toml").read_text()
    text, named = re.subn(r'(?m)^name = "raspberry-pi-5"$', 'name = "raspberry-pi-5-one-thread"', text)
    text, threads = re.subn(r"(?m)^intra_op_threads = \d+$", "intra_op_threads = 1", text)
    if (named, threads) != (1, 1):
        raise SystemExit("the raspberry-pi-5 profile no longer has one name and one intra_op_threads line to rewrite")
    (profiles / "raspberry-pi-5-one-thread.toml").write_text(text)
    one_core = ["taskset", "-c", str(min(os.sched_getaffinity(0)))]
    profile = ["--profile", "raspberry-pi-5-one-thread", "--profiles-dir", str(profiles)]
    files = [str(audio / r) for r in recordings]
    shutil.rmtree(work / "run", ignore_errors=True)
    peak = work / "edge-run-peak-rss-mb"
    # the process's own high-water mark (VmHWM starts afresh at exec; a forked child's maxrss would carry this
    # process's), written as edge-run exits
    record = (f"import atexit; from pathlib import Path; from naturelm_edge.bench.pipeline import peak_rss_mb; "
              f"atexit.register(lambda: Path({str(peak)!r}).write_text(str(peak_rss_mb()))); "
              "from naturelm_edge.cli import run_edge; run_edge()")
    subprocess.run([*one_core, sys.executable, "-c", record, "--bundle", str(bundle), *profile, "--escalate", "off",
                    "--out", str(work / "run"), "--input", *files], check=True, capture_output=True)
    out = work / "bench"
    subprocess.run([*one_core, *EDGE, "bench", str(bundle), *profile, "--no-birdnet", "--out", str(out), "--name",
                    "rpi5", *[a for f in files for a in ("--audio", f)]], check=True, capture_output=True, text=True)
    report = json.loads(next(out.rglob("rpi5.json")).read_text())
    window = report["stages"]["window"]
    return {"peak_rss_mb": round(float(peak.read_text()), 1), "model_rss_mb": round(report["model_rss_mb"], 1),
            "window_p95_ms": window["p95_ms"], "window_p50_ms": window["p50_ms"], "windows": window["calls"],
            "stages_p50_ms": {name: stage["p50_ms"] for name, stage in report["stages"].items() if stage["calls"]}}


def cell(f: dict) -> str:
    if f["share"] is None:
        return "n/a"
    return f"{f['share']:.1%} [{f['ci95'][0]:.0%}-{f['ci95'][1]:.0%}] of {f['count']}"


def targets(report: dict) -> list[str]:
    """The issue's targets, each with what was measured at the operating point beside its goal."""
    point = next(f for f in report["cascade"] if f["threshold"] == report["operating_point"])
    device = report["device"]
    checks = [("recall of the teacher's detections", point["call_recall"]["share"], ">=", GOALS["recall"], True),
              ("device-answered agreement", point["device_agreement"]["share"], ">=", GOALS["agreement"], True),
              ("windows escalated", point["escalated"]["share"], "<=", GOALS["escalated"], True),
              ("cascade CPU / teacher on every window", point["cost_ratio_to_teacher"], "<=", GOALS["cpu"], False),
              ("edge-run peak RSS, MB (raspberry-pi-5, one thread)", device["peak_rss_mb"], "<=", GOALS["rss_mb"],
               False),
              ("window p95, ms (raspberry-pi-5, one thread)", device["window_p95_ms"], "<=", GOALS["p95_ms"], False)]
    lines = ["| target | measured | goal | met |", "|---|---|---|---|"]
    for name, value, sign, goal, share in checks:
        met = value is not None and (value >= goal if sign == ">=" else value <= goal)
        shown = "n/a" if value is None else (f"{value:.1%}" if share else f"{value:g}")
        lines.append(f"| {name} | {shown} | {sign} {f'{goal:.0%}' if share else goal} | {'yes' if met else 'no'} |")
    return lines


def why_missed(report: dict) -> list[str]:
    """Each missed target with how far it is from its goal and what this run's own windows say of why."""
    from naturelm_edge.prompt import NOTHING_HEARD

    point, rows = report["operating_point"], report["windows"]
    at = next(f for f in report["cascade"] if f["threshold"] == point)
    alone = next(f for f in report["cascade"] if f["threshold"] == 0)
    lines = ["### Why the missed targets are missed", ""]
    recall = at["call_recall"]["share"]
    if recall is not None and recall < GOALS["recall"]:
        lines.append(f"- Recall, {(GOALS['recall'] - recall) * 100:.1f} points short: of the teacher's detections the cascade "
                     "loses, {screened_out} were refused by the screening (gate or detector) before the student and "
                     "{called_silence} the student called silence at least as surely as the threshold; "
                     "{outside_labels} of the {lost} are species the bundle does not carry (it can only escalate "
                     "those).".format(**report["missed"]))
    agreement = at["device_agreement"]["share"]
    if agreement is not None and agreement < GOALS["agreement"]:
        wrong: dict[tuple[str, str], int] = defaultdict(int)
        for r in rows:
            if not escalates(r, point) and r["device"] not in (NOTHING_HEARD, r["teacher"]):
                wrong[r["device"], r["teacher"]] += 1
        pairs = "; ".join(f"{device} for {teacher} ({n})" for (device, teacher), n in
                          sorted(wrong.items(), key=lambda item: -item[1]))
        within = [f for f in report["cascade"] if f["device_agreement"]["share"] is not None
                  and f["escalated"]["share"] <= GOALS["escalated"]]  # the thresholds that keep that target
        best = max(within or [at], key=lambda f: (f["device_agreement"]["share"], -f["escalated"]["share"]))
        lines.append(f"- Device agreement, {(GOALS['agreement'] - agreement) * 100:.1f} points short: the device's "
                     f"wrong names (its name for the teacher's) are {pairs or 'none'}; the best a threshold here gives "
                     f"within {GOALS['escalated']:.0%} escalated is "
                     f"{cell(best['device_agreement'])}, escalating {best['escalated']['share']:.1%}. The student "
                     "names the teacher's species in "
                     f"{cell(report['build']['report']['quantized']['species'])} of the held-out call windows on its "
                     "own (the build's report, 1.5 s hop).")
    escalated = at["escalated"]["share"]
    if escalated is not None and escalated > GOALS["escalated"]:
        sent = sum(escalates(r, point) for r in rows)
        empty = empty_escalations(rows, point)
        name, most = max(empty.items(), key=lambda item: item[1], default=("none", 0))
        lines.append(f"- Windows escalated, {(escalated - GOALS['escalated']) * 100:.1f} points over: "
                     f"{chosen_text(report['escalation'])}; it sends {sent} of {len(rows)} here, and the teacher "
                     f"hears nothing in {sum(empty.values())} of them, {most} in one recording ({name}). What that few "
                     "held-back windows say holds only roughly on other recordings" + settled_text(report.get("settling"))
                     + ".")
    ratio = at["cost_ratio_to_teacher"]
    if ratio is not None and ratio > GOALS["cpu"]:
        stages = {k: v for k, v in report["device"]["stages_p50_ms"].items() if k not in ("window", "decode")}
        largest = max(stages, key=stages.get)
        lines.append(f"- Cascade CPU, {ratio / GOALS['cpu']:.1f} times the goal: the device's path alone costs "
                     f"{alone['cost_ratio_to_teacher']} of the teacher on every window before anything is escalated "
                     f"(its largest stage: {largest}, {stages[largest]:.1f} ms of a window's p50 "
                     f"{report['device']['window_p50_ms']:.1f} ms), and each escalated window adds a whole teacher "
                     "run. It follows what a site's windows hold: per site, " + ", ".join(
                         f"{site} {f['cost_ratio_to_teacher']} ({f['windows']} windows, {f['escalated']['share']:.0%} "
                         "escalated)" for site, f in sorted(report["per_site"].items(),
                                                            key=lambda item: item[1]["cost_ratio_to_teacher"] or 0)) + ".")
    return lines if len(lines) > 2 else []


def chosen_text(chosen: dict) -> str:
    """How the build chose the bundle's escalation threshold, and what it did on the held-back windows."""
    text = (f"the threshold was chosen at build on the {chosen['windows']} windows of the held-back recordings, to "
            f"escalate at least their least sure {chosen['share']:.0%}")
    if chosen.get("calls"):
        text += (f" and to keep {chosen['recall']:.0%} of the teacher's {chosen['calls']} calls there (it kept "
                 f"{chosen['calls_kept']:.0%}, escalating {chosen['escalated']:.0%} of those windows)")
    return text


def settled_text(settled: dict | None) -> str:
    if not settled:
        return ""
    passes = settled["passes"]
    return (f"; and the evaluation hears each recording once: played {len(passes)} times over as one recorder, "
            f"{settled['recording']} ({settled['seconds']:.0f} s) has "
            + ", ".join(str(p["escalated"]) for p in passes) + f" of its {passes[0]['windows']} windows escalated "
            "pass by pass, as the detector's site floor learns the device's own \"nothing\" there as the site's "
            "background")


def group_table(groups: dict, title: str) -> list[str]:
    lines = [f"| {title} | windows | recall | device agreement | silence kept | escalated | CPU / teacher |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {f['windows']} | {cell(f['call_recall'])} | {cell(f['device_agreement'])} | "
              f"{cell(f['quiet_kept_quiet'])} | {cell(f['escalated'])} | {f['cost_ratio_to_teacher']} |"
              for name, f in groups.items()]
    return lines


def markdown(report: dict) -> str:
    build, device, cost = report["build"], report["device"], report["cost"]
    steps = sum(step["wall_s"] for step in build["steps"].values())
    lines = ["# A bundle distilled from BirdNET v2.4, judged against BirdNET", "",
             f"Command: `{report['command']}`; {report['machine']['processor']}, {report['machine']['cores']} cores.", "",
             f"Build: {steps:.0f} s of steps on every shared recording (this run: {build['seconds']:.0f} s, cached steps "
             f"skipped; {build['train_windows']} training windows with views, {build['labels']} labels, stopped: "
             f"{build['stopped']}). Evaluation: {report['evaluation']['recordings']} recordings never trained or "
             f"calibrated on, {report['evaluation']['windows']} windows of 3 s, {cost['audio_s'] / 60:.1f} minutes. "
             "Reference: BirdNET's own answer per window (best animal class at >= 0.5, else nothing). 95 % Wilson "
             "intervals, with the number of windows each share rests on.", "",
             f"## Targets, at the bundle's operating point (escalate below {report['operating_point']:.3f})", "",
             *targets(report), "", *why_missed(report),
             "", "## Students alone (the build's report, 1.5 s hop, every window)", "",
             "| student | same species | call recall | silence kept |", "|---|---|---|---|"]
    for name in ("fp32", "quantized"):
        f = build["report"][name]
        lines.append(f"| {name} | {cell(f['species'])} | {cell(f['detection_recall'])} | {cell(f['quiet_kept_quiet'])} |")
    lines += ["", "## Risk and coverage: the cascade as the escalation threshold moves", "",
              "| escalate below | recall of teacher's detections | device agreement | same species, cascade | "
              "silence kept | windows escalated | CPU / teacher | from files |", "|---|---|---|---|---|---|---|---|"]
    for f in report["cascade"]:
        name = "device alone" if f["threshold"] == 0 else f"{f['threshold']:.3g}"
        mark = " (the bundle's)" if f["threshold"] == report["operating_point"] else ""
        lines.append(f"| {name}{mark} | {cell(f['call_recall'])} | {cell(f['device_agreement'])} | {cell(f['species'])} "
                     f"| {cell(f['quiet_kept_quiet'])} | {cell(f['escalated'])} | {f['cost_ratio_to_teacher']} | "
                     f"{f['cost_ratio_from_files']} |")
    lines += ["", "Recall: the teacher's detections the cascade keeps (answered on the device or escalated). Device "
              "agreement: of the windows where the device itself names a species (not escalated), the share where "
              "it is the teacher's. Operating point: the bundle's own escalation threshold, what `edge-run` uses "
              f"without `--threshold` ({chosen_text(report['escalation'])}; a profile's threshold is set for a "
              "decoder's token probabilities). A `None` is as sure as the student's presence head says nothing the teacher would "
              "call is there. A name is as sure as its own score when its support (the cosine similarity of the "
              "window's embedding to the nearest of the "
              f"{report['support']['precedents']} training windows the teacher named, of that label) reaches the "
              f"bundle's floor ({report['support']['floor']}, chosen at build on the held-back recordings' right "
              f"names), else 0: the floor withdrew {report['support']['withdrawn']} names here, "
              f"{report['support']['withdrawn_right']} of them the teacher's own species.",
              "", "CPU / teacher: CPU-seconds per audio hour of the device's path (fbank, gate, detector, the speech "
              "check on the windows that could keep audio, int8 student) plus BirdNET on the windows it escalates, over BirdNET on every window, on the same samples at 48 kHz, one "
              "thread, same run (a microphone's audio). From files: both sides also decode and resample each "
              f"recording ({cost['decoding_cpu_s'] / max(cost['audio_s'], 1) * 3600:.0f} CPU-s per audio hour).",
              "", f"Device: the raspberry-pi-5 profile on one thread (one intra-op thread, pinned to one core of this "
              f"machine, not a Pi), over the evaluation recordings: `edge-run --escalate off` peaks at "
              f"{device['peak_rss_mb']:.0f} MB RSS (the process's VmHWM; models "
              f"{device['model_rss_mb']:.0f} MB); `edge bench`, {device['windows']} answered windows: window p50 "
              f"{device['window_p50_ms']:.1f} ms, p95 {device['window_p95_ms']:.1f} ms; per stage p50 (ms): "
              + ", ".join(f"{k} {v:.1f}" for k, v in device["stages_p50_ms"].items() if k != "window") + ".",
              *extra_lines(report.get("extra")),
              "", "## Per site (folder of the shared recordings), at the operating point", "",
              *group_table(report["per_site"], "site"),
              "", "## Per species (the teacher's answer), at the operating point", "",
              *group_table(report["per_species"], "teacher's species"),
              "", "## Per recording, at the operating point", "", *group_table(report["per_recording"], "recording"),
              "", "What this says: the student is fitted to about 20 minutes of audio (with augmented copies); the "
              "teacher was trained on far more. Where it is unsure, the cascade hands the window to the teacher."]
    return "\n".join(lines) + "\n"


def extra_lines(found: dict | None) -> list[str]:
    if not found:
        return []
    return ["", f"## Recordings from outside the shared set, at the operating point: {found['source']}", "",
            f"{found['recordings']} recordings, {found['all']['windows']} windows, never trained or calibrated on.",
            "", *group_table({"all": found["all"], **found["per_folder"]}, "folder")]


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    cascade = report["cascade"]
    x = [f["escalated"]["share"] or 0 for f in cascade]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, name in (("device_agreement", "device agreement"), ("call_recall", "recall of teacher's detections"),
                      ("quiet_kept_quiet", "silence kept")):
        ax.plot(x, [f[key]["share"] or 0 for f in cascade], marker="o", label=name)
    point = next(f for f in cascade if f["threshold"] == report["operating_point"])
    ax.axvline(point["escalated"]["share"] or 0, ls=":", color="grey", label=f"operating point ({point['threshold']})")
    ax.set_xlabel("share of windows escalated to BirdNET (coverage lost)")
    ax.set_ylabel("agreement with BirdNET")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("BirdNET-distilled bundle: risk and coverage against the teacher")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="another split of the recordings (and weights' seed)")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work/real-teacher"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real-teacher"))
    parser.add_argument("--extra-audio", type=Path, help="more real recordings to judge on, apart (see 5.)")
    parser.add_argument("--extra-source", default="", help="where --extra-audio comes from, and its licence")
    args = parser.parse_args()
    audio = recordings_dir(args.audio)
    bundle, seconds = build(audio, args.work, args.views, args.epochs, args.seed)
    manifest = json.loads((bundle / "manifest.json").read_text())
    trained = json.loads((bundle / "reports" / "classifier.json").read_text())
    roles = json.loads((args.work / "build" / "teacher-birdnet-v2.4" / "recordings.json").read_text())
    evaluation = sorted(r for r, role in roles.items() if role == "evaluation")
    rows = windows(audio, bundle, evaluation)
    point = manifest["escalation"]["confidence_threshold"]  # the bundle's own, chosen on calibration recordings
    cascade = [figures(rows, t) for t in sorted({*THRESHOLDS, point})]
    report = {"command": "python -m benchmarks.real_teacher " + " ".join(sys.argv[1:]), "machine": machine(),
              "build": {"seconds": round(seconds, 1), "seed": args.seed, "train_windows": trained["training"]["train_windows"],
                        "labels": len(trained["labels"]), "stopped": trained["training"]["stopped"],
                        "epochs": trained["training"]["epochs"], "report": manifest["encoder"]["fidelity"],
                        "steps": manifest["build"]["steps"]},
              "evaluation": {"recordings": len(evaluation), "windows": len(rows)},
              "cascade": cascade, "operating_point": point, "escalation": manifest["escalation"],
              "missed": missed(rows, point, manifest["labels"]),
              "support": {**manifest["answers"]["support"], **unsupported(rows)},
              "per_site": grouped(rows, "site", point),
              "per_species": grouped(rows, "teacher", point), "per_recording": grouped(rows, "recording", point),
              "device": device_bench(bundle, audio, evaluation, args.work), "cost": totals(rows), "windows": rows,
              "settling": settling(audio, bundle, rows, point),
              "extra": extra(args.extra_audio, args.extra_source, bundle, point)}
    write_results(args.out, "real_teacher", report, markdown, plot)


if __name__ == "__main__":
    main()
