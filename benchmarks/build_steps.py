"""The export stage step by step: ``edge build`` of the tiny checkpoint for the x86-cpu profile, per step wall
time, CPU time, peak RSS and what the step's time grows with (windows, tasks, epochs, views, token sets).

Run: ``python -m benchmarks.build_steps [--sets small all] [--out benchmarks/results/export-stage]``.

- ``small``: two clips of every labelled species, every soundscape and every background of the shared
  recordings (the set the export-speed target is stated on: <= 5 minutes on two cores);
- ``all``: every shared recording.

The teacher is ``edge checkpoint tiny`` (random weights, the official layout): its answers are as long as a
random model makes them, which is what makes the decoder's teacher forcing cost what it costs. The figures are
the stamps ``edge build`` writes for every step (``WORK/stamps``), read back after the run. Writes
``build_steps.json``, ``build_steps.md`` and ``build_steps.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine, pyplot, recordings_dir, write_results

EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]
TARGET_SMALL_S = 300.0


def chosen_rows(audio: Path, which: str) -> list[dict]:
    rows = list(csv.DictReader((audio / "LABELS.csv").open()))
    if which == "all":
        return rows
    taken: dict[str, int] = {}
    keep = []
    for row in rows:
        if row["kind"] != "focal":
            keep.append(row)
        elif row["species_common"] and taken.get(row["species_common"], 0) < 2:
            taken[row["species_common"]] = taken.get(row["species_common"], 0) + 1
            keep.append(row)
    return keep


def linked_set(audio: Path, rows: list[dict], root: Path) -> Path:
    """The chosen recordings as symlinks under ``root`` with their LABELS.csv rows (nothing copied)."""
    shutil.rmtree(root, ignore_errors=True)
    for row in rows:
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / row["path"]).symlink_to(audio / row["path"])
    with (root / "LABELS.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def run_build(audio: Path, work: Path, checkpoint: Path) -> dict:
    """One ``edge build`` in a process of its own; its steps' stamps and the manifest's student fidelity."""
    out = work / "bundle"
    log = work / "build.log"
    start = time.perf_counter()
    with log.open("w") as handle:
        result = subprocess.run([*EDGE, "build", str(checkpoint), "--audio", str(audio), "--out", str(out),
                                 "--profile", "x86-cpu"], stdout=handle, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"edge build failed; its log: {log}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_s": round(wall, 1), "steps": manifest["build"]["steps"], "encoder": manifest.get("encoder"),
            "log": str(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=None)
    parser.add_argument("--sets", nargs="+", default=["small", "all"], choices=["small", "all"])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work/build-steps"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export-stage"))
    args = parser.parse_args()
    audio = recordings_dir(args.audio)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.work / "tiny-checkpoint"
    if not checkpoint.is_dir():
        subprocess.run([*EDGE, "checkpoint", "tiny", str(checkpoint)], check=True, capture_output=True)
    result: dict = {"machine": machine(), "teacher": "edge checkpoint tiny (random weights)", "sets": {}}
    for which in args.sets:
        rows = chosen_rows(audio, which)
        work = args.work / which
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        linked = linked_set(audio, rows, work / "audio")
        print(f"{which}: {len(rows)} recordings, {sum(float(r['duration_s'] or 0) for r in rows):.0f} s of audio",
              file=sys.stderr)
        measured = run_build(linked, work, checkpoint)
        measured.update(recordings=len(rows), audio_s=round(sum(float(r["duration_s"] or 0) for r in rows), 1))
        result["sets"][which] = measured
    write_results(args.out, "build_steps", result, markdown, plot)


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# edge build, step by step", "",
             f"Machine: {m['processor']} ({m['cores']} cores); teacher: {result['teacher']}; profile x86-cpu "
             "(student encoder). Command: `python -m benchmarks.build_steps`.", ""]
    for name, s in result["sets"].items():
        target = f" (target <= {TARGET_SMALL_S:.0f} s)" if name == "small" else ""
        lines += [f"## {name}: {s['recordings']} recordings, {s['audio_s']:.0f} s of audio: "
                  f"**{s['wall_s']:.0f} s** in all{target}", "",
                  "| step | wall s | CPU s | peak RSS MB | grows with |", "|---|---:|---:|---:|---|"]
        for step, cost in s["steps"].items():
            grows = ", ".join(f"{k} {v}" for k, v in (cost.get("grows_with") or {}).items())
            lines.append(f"| {step} | {cost['wall_s']:.1f} | {cost['cpu_s']:.1f} | {cost['peak_rss_mb']:.0f} | {grows} |")
        fidelity = (s.get("encoder") or {}).get("fidelity") or {}
        if fidelity.get("against_full_encoder"):
            lines += ["", "Student encoder answers = full encoder's (int8 bundle): " + ", ".join(
                f"{k} {v['agreement']:.1%} of {v['windows']} windows" for k, v in fidelity["against_full_encoder"].items())]
        held = fidelity.get("held_back_recordings") or {}
        if held.get("windows"):
            lines += ["", f"Student encoder tokens on {held['windows']} held-back windows: centred cosine "
                          f"{held['centred_cosine_mean']:.3f} (p5 {held['centred_cosine_p5']:.3f})."]
        judged = {step: cost["grows_with"]["best_judged_loss"] for step, cost in s["steps"].items()
                  if (cost.get("grows_with") or {}).get("best_judged_loss") is not None}
        if judged:
            lines += ["", "Decoder, held-out species' loss at its best epoch: " + ", ".join(
                f"{step} {loss:.4f}" for step, loss in judged.items()) + "."]
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(result["sets"])
    bottoms = [0.0] * len(names)
    steps = list(dict.fromkeys(step for s in result["sets"].values() for step in s["steps"]))
    for step in steps:
        values = [result["sets"][n]["steps"].get(step, {}).get("wall_s", 0.0) for n in names]
        ax.bar(names, values, bottom=bottoms, label=step)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    ax.axhline(TARGET_SMALL_S, color="red", linestyle="--", label="target (small set)")
    ax.set_ylabel("wall seconds, two cores")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
