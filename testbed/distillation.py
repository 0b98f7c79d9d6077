"""The distillation proof both ``tests/test_distillation_learns.py`` and ``benchmarks/distillation.py`` run.

A tiny NatureLM teacher is taught species names on the labelled shared recordings; the real pipeline then
caches its answers, splits species, trains a student on the distillation species, exports it and runs it
without torch; agreement and accuracy are reported per species set, with the student's latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.corpus import QUESTION, TASKS_TOML


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
    from naturelm_edge.distill.teacher_training import finetune_teacher
    from naturelm_edge.distill.train import SPLIT_FILE, TrainConfig, train
    from naturelm_edge.edge_runtime.decoder import OnnxDecoder
    from naturelm_edge.edge_runtime.labels import snap
    from naturelm_edge.export.decoder import export_decoder
    from naturelm_edge.models.full import NatureLMTeacher
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
                         hidden=settings.student_hidden, heads=settings.student_heads,
                         patience=0)  # the proof is that the student memorises its training windows: every epoch
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
    records = list(cache.records())
    said = decoder.generate_many(np.stack([cache.audio(r["window"]) for r in records]), QUESTION) if records else []
    for record, answer in zip(records, said):
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
