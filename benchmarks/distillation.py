"""Prove that distillation learns: teacher -> cache -> species split -> student -> ONNX -> agreement.

Run: ``python -m benchmarks.distillation [--out benchmarks/results/distillation]`` (a few minutes on two
cores). A tiny NatureLM teacher is first taught species names on the labelled shared recordings (the
official teacher cannot run here); then the real pipeline runs: teacher answers are cached, species are
split into distillation and held-out sets, a student is trained on the distillation species only,
exported to ONNX and run without torch. Reported per species set: student-teacher exact agreement and
accuracy against the labels (answers snapped to the label list), plus the student's latency (fp32 ONNX,
one thread): time to first token after the audio tokens, tokens per second, total per answer.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import pyplot  # noqa: E402
from testbed.distillation import ProofSettings, run  # noqa: E402


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "distillation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Distillation proof", "", "| species set | windows | student = teacher | student accuracy | teacher accuracy |",
             "|---|---|---|---|---|"]
    for role, g in sorted(result["groups"].items()):
        lines.append(f"| {role} | {g['windows']} | {g['agreement']:.1%} | {g['student_accuracy']:.1%} | {g['teacher_accuracy']:.1%} |")
    lat = result["latency_fp32_1_thread"]
    lines += ["", f"Student latency (fp32 ONNX, 1 thread): prefill {lat['prefill_ms_p50']:.1f} ms, "
              f"{lat['token_ms_p50']:.2f} ms per token ({lat['tokens_per_s']:.0f} tokens/s), "
              f"{lat['answer_ms_p50']:.1f} ms per answer ({lat['tokens_per_answer_mean']:.1f} tokens).",
              f"ONNX greedy answers equal to PyTorch: {result['greedy_equal']}/{result['greedy_total']}.",
              f"Held-out species (never trained on): {', '.join(result['split']['held_out'])}.", ""]
    (out / "distillation.md").write_text("\n".join(lines))
    plt = pyplot()
    if plt is None:
        return
    roles = sorted(result["groups"])
    x = np.arange(len(roles))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for i, (key, label) in enumerate([("agreement", "student = teacher"), ("student_accuracy", "student vs labels"),
                                      ("teacher_accuracy", "teacher vs labels")]):
        ax.bar(x + (i - 1) * 0.27, [result["groups"][r][key] for r in roles], 0.27, label=label)
    ax.set_xticks(x, roles)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Distillation on the shared recordings (tiny teacher)")
    fig.tight_layout()
    fig.savefig(out / "distillation.png", dpi=120)


def main() -> None:
    from rich.progress import Progress

    from naturelm_edge.sample_data import shared_audio_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distillation")
    parser.add_argument("--audio", type=Path, default=None)
    args = parser.parse_args()
    audio = args.audio or shared_audio_dir()
    if audio is None:
        raise SystemExit("no recordings: pass --audio DIR or set NATURELM_EDGE_AUDIO")
    with tempfile.TemporaryDirectory() as work, Progress() as progress:
        result = run(audio, Path(work), ProofSettings(), progress)
    write_outputs(result, args.out)
    print((args.out / "distillation.md").read_text())


if __name__ == "__main__":
    main()
