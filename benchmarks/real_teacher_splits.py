"""The real-teacher benchmark over several splits of the recordings: how much its figures hang on which
recordings were held out.

Run ``python -m benchmarks.real_teacher`` once per seed (``--seed N --work W --out DIR``), then
``python -m benchmarks.real_teacher_splits DIR [DIR ...] [--out benchmarks/results/real-teacher/splits]``.
Each split builds its own bundle (its own student, calibration and operating point) and judges it on its own
evaluation recordings; a recording can be evaluated under one seed and trained on under another, so the pooled
row counts windows, not independent recordings: it is what a user who rebuilt the bundle three times would
have seen in all. Writes splits.json, splits.md and splits.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import pyplot, write_results
from benchmarks.real_teacher import GOALS, cell

MEASURES = (("call_recall", "recall of the teacher's detections"), ("device_agreement", "device agreement"),
            ("escalated", "windows escalated"))


def split_row(report: dict) -> dict:
    """One split at its bundle's operating point."""
    point = report["operating_point"]
    at = next(f for f in report["cascade"] if f["threshold"] == point)
    return {"seed": report["build"]["seed"], "operating_point": point, "evaluation": report["evaluation"],
            "labels": report["build"]["labels"], "student_alone": report["build"]["report"]["quantized"]["species"],
            "cost_ratio_to_teacher": at["cost_ratio_to_teacher"], **{key: at[key] for key, _ in MEASURES}}


def pooled(rows: list[dict]) -> dict:
    """Every split's counts added up, with the interval of the sum."""
    from naturelm_edge.distill.agreement import share

    return {key: share(sum(r[key]["agree"] for r in rows), sum(r[key]["count"] for r in rows)) for key, _ in MEASURES}


def markdown(report: dict) -> str:
    lines = ["# The real-teacher benchmark over several splits of the recordings", "",
             "Each split: its own bundle (student, calibration, operating point) judged on its own evaluation "
             "recordings, at the bundle's operating point. 95 % Wilson intervals.", "",
             "| seed | evaluation | operating point | student alone, same species | recall | device agreement | "
             "escalated | CPU / teacher |", "|---|---|---|---|---|---|---|---|"]
    for r in report["splits"]:
        lines.append(f"| {r['seed']} | {r['evaluation']['recordings']} recordings, {r['evaluation']['windows']} "
                     f"windows | {r['operating_point']:.3f} | {cell(r['student_alone'])} | {cell(r['call_recall'])} | "
                     f"{cell(r['device_agreement'])} | {cell(r['escalated'])} | {r['cost_ratio_to_teacher']} |")
    p = report["pooled"]
    lines += [f"| all | | | | {cell(p['call_recall'])} | {cell(p['device_agreement'])} | {cell(p['escalated'])} | |",
              "", f"Goals: recall >= {GOALS['recall']:.0%}, device agreement >= {GOALS['agreement']:.0%} with "
              f"<= {GOALS['escalated']:.0%} escalated, CPU <= {GOALS['cpu']}x the teacher. Sources: "
              + ", ".join(f"`{source}`" for source in report["sources"]) + "."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    rows = report["splits"]
    width = 0.8 / len(MEASURES)
    for i, (key, name) in enumerate(MEASURES):
        ax.bar([j + i * width for j in range(len(rows))], [r[key]["share"] or 0 for r in rows], width, label=name)
    ax.set_xticks([j + width for j in range(len(rows))], [f"seed {r['seed']}" for r in rows])
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("BirdNET-distilled bundle, one per split of the recordings")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="folders that hold a real_teacher.json each")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real-teacher/splits"))
    args = parser.parse_args()
    rows = [split_row(json.loads((folder / "real_teacher.json").read_text())) for folder in args.results]
    rows.sort(key=lambda r: r["seed"])
    write_results(args.out, "splits", {"splits": rows, "pooled": pooled(rows),
                                       "sources": [str(folder) for folder in args.results]}, markdown, plot)


if __name__ == "__main__":
    main()
