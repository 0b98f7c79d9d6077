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
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import pyplot  # noqa: E402

QUESTION = "What is the common name for the focal species in the audio?"
TASKS_TOML = f"""
[[task]]
id = "common_name"
kind = "common_name"
question = "{QUESTION}"
max_new_tokens = 24
"""


@dataclass
class ProofSettings:
    teacher_steps: int = 1500
    student_epochs: int = 80
    student_layers: int = 4
    student_hidden: int = 384
    student_heads: int = 6
    seed: int = 0


def run(audio_root: Path, work: Path, settings: ProofSettings, progress=None,  # noqa: ANN001
        teacher_dir: Path | None = None) -> dict:
    """The whole proof; ``teacher_dir`` reuses an already taught teacher."""
    from naturelm_edge.distill.cache import TeacherCache
    from naturelm_edge.distill.collect import collect
    from naturelm_edge.distill.species import SpeciesSplit, labels_for
    from naturelm_edge.distill.tasks import load_tasks
    from naturelm_edge.distill.teacher import NatureLMTeacher
    from naturelm_edge.distill.teacher_training import finetune_teacher
    from naturelm_edge.distill.train import SPLIT_FILE, TrainConfig, train
    from naturelm_edge.edge_runtime.decoder import OnnxDecoder
    from naturelm_edge.edge_runtime.labels import snap
    from naturelm_edge.export.decoder import export_decoder
    from naturelm_edge.models.tiny import write_tiny_checkpoint

    timings = {}
    start = time.perf_counter()
    if teacher_dir is None:
        base = write_tiny_checkpoint(work / "tiny", seed=settings.seed)
        teacher_dir = finetune_teacher(base, audio_root, work / "teacher", QUESTION, steps=settings.teacher_steps,
                                       seed=settings.seed, progress=progress)
    timings["teach_teacher_s"] = time.perf_counter() - start
    tasks_file = work / "tasks.toml"
    tasks_file.write_text(TASKS_TOML)
    start = time.perf_counter()
    teacher = NatureLMTeacher(teacher_dir)
    collect(teacher, audio_root, load_tasks(tasks_file), work / "cache", progress=progress)
    timings["collect_s"] = time.perf_counter() - start
    start = time.perf_counter()
    config = TrainConfig(epochs=settings.student_epochs, seed=settings.seed, layers=settings.student_layers,
                         hidden=settings.student_hidden, heads=settings.student_heads)
    train(work / "cache", work / "student", config, progress=progress)
    timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    export_report = export_decoder(work / "student", work / "decoder")
    timings["export_s"] = time.perf_counter() - start

    split = SpeciesSplit.read(work / "student" / SPLIT_FILE)
    labels = sorted(set(labels_for(audio_root).values()))
    decoder = OnnxDecoder(work / "decoder", threads=1)
    cache = TeacherCache(work / "cache")
    groups: dict[str, dict[str, int]] = {}
    rows = []
    for record in cache.records():
        answer = decoder.generate(cache.audio(record["window"]), QUESTION)
        role = split.role(record["label"])
        group = groups.setdefault(role, {"windows": 0, "agree": 0, "student_true": 0, "teacher_true": 0})
        group["windows"] += 1
        group["agree"] += answer.text == record["text"]
        if record["label"]:
            group["student_true"] += snap(answer.text, labels).label == record["label"]
            group["teacher_true"] += snap(record["text"], labels).label == record["label"]
        rows.append({"file": record["file"], "start_s": record["start_s"], "label": record["label"], "role": role,
                     "teacher": record["text"], "student": answer.text, "confidence": answer.confidence_mean})
    for group in groups.values():
        n = group["windows"]
        group.update({"agreement": group["agree"] / n, "student_accuracy": group["student_true"] / n,
                      "teacher_accuracy": group["teacher_true"] / n})
    latency = measure_latency(decoder, cache)
    return {"groups": groups, "split": {"distill": split.distill, "held_out": split.held_out},
            "timings_s": {k: round(v, 1) for k, v in timings.items()}, "latency_fp32_1_thread": latency,
            "decoder_parity": export_report["parity"]["logits"], "greedy_equal": export_report["greedy_equal"],
            "greedy_total": export_report["greedy_total"], "answers": rows}


def measure_latency(decoder, cache, windows: int = 20) -> dict:  # noqa: ANN001
    """Prefill (time to first token after the audio tokens), per-token decode, and total per answer."""
    keys = sorted({r["window"] for r in cache.records()})[:windows]
    prefill, per_token, totals = [], [], []
    for key in keys:
        tokens = cache.audio(key)
        embeds = decoder.prompt_embeds(tokens, QUESTION)
        start = time.perf_counter()
        logits, past = decoder.step(embeds, decoder.empty_past(1))
        prefill.append(time.perf_counter() - start)
        for _ in range(8):
            token = int(np.argmax(logits[0]))
            start = time.perf_counter()
            logits, past = decoder.step(decoder.embed_tokens[[token]][None], past)
            per_token.append(time.perf_counter() - start)
        start = time.perf_counter()
        answer = decoder.generate(tokens, QUESTION)
        totals.append((time.perf_counter() - start, len(answer.token_probs)))
    return {"prefill_ms_p50": 1000 * float(np.median(prefill)), "token_ms_p50": 1000 * float(np.median(per_token)),
            "tokens_per_s": float(1 / np.median(per_token)),
            "answer_ms_p50": 1000 * float(np.median([t for t, _ in totals])),
            "tokens_per_answer_mean": float(np.mean([n for _, n in totals])), "target_answer_ms_quantized": 30.0}


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
