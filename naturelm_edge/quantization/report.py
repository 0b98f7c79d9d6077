"""Accuracy report of quantized models against fp32, on held-out and distillation species separately.

Encoder: cosine of every audio token to fp32 (mean, 5th percentile, minimum). Decoder: exact agreement of
answers with fp32, alone (fp32 audio tokens) and end to end (quantized encoder -> quantized decoder), and
the shift in confidence. Also size and single-thread latency ratios on this machine, and for static int8
the tensors that lose most (onnxruntime's QDQ debugging tools, signal-to-quantization-noise in dB).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.edge_runtime.decoder import OnnxDecoder

TIMED_WINDOWS = 4  # per set, for the decoders' latency: timed alone, while the answers are judged on every core


@dataclass
class EvalSet:
    name: str  # held_out | distill
    features: np.ndarray  # (windows, frames, 128)
    teacher: list[dict[str, str]] | None = None  # per window, the teacher's answer per question (from its cache)


def session(path: Path, threads: int = 1):  # noqa: ANN201 - onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def token_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    b = candidate.reshape(-1, candidate.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-300), 1.0)


def run_encoder(sess, features: np.ndarray) -> tuple[np.ndarray, list[float]]:  # noqa: ANN001
    outputs, times = [], []
    for window in features:
        start = time.perf_counter()
        outputs.append(sess.run(None, {"fbank": window[None]})[0][0])
        times.append(time.perf_counter() - start)
    return np.stack(outputs), times


def answers(decoder: OnnxDecoder, tokens: np.ndarray, questions: list[str]) -> list:
    """A float decoder's answer to every question for every window, window-major, each question's windows as one
    batch (the same answers as one at a time; a quantized decoder's are not: see :func:`device_answers`)."""
    by_question = [decoder.generate_many(tokens, question) for question in questions]
    return [by_question[q][w] for w in range(len(tokens)) for q in range(len(questions))]


def device_answers(decoder: OnnxDecoder, tokens: np.ndarray, questions: list[str], workers: int | None = None) -> list:
    """Answers as the device computes them, one window at a time (window-major): a dynamically quantized decoder's
    answers depend on what shares its batch, so windows never share a call. ``workers`` windows run at once on
    threads, one per core unless told (a session's run releases the GIL; one intra-op thread each, as on the device)."""
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        per_window = pool.map(lambda window: [decoder.generate(window, q) for q in questions], tokens)
        return [answer for found in per_window for answer in found]


def answer_times(decoder: OnnxDecoder, tokens: np.ndarray, questions: list[str]) -> list[float]:
    """What each device answer costs, one after another on this thread (nothing else running beside it)."""
    times = []
    for window in tokens:
        for question in questions:
            start = time.perf_counter()
            decoder.generate(window, question)
            times.append(time.perf_counter() - start)
    return times


def accuracy_report(encoder_fp32: Path, encoder_q: Path, decoder_dir: Path, decoder_q: Path,
                    sets: list[EvalSet], questions: list[str], encoder_label: str, decoder_label: str,
                    worst: int = 5, full_encoder: Path | None = None) -> dict:
    """fp32 against quantized answers on each set; with ``full_encoder`` (a bundle whose encoder is a student of
    it), also ``student_encoder``: how the device's answers compare with the full encoder's (see
    :func:`against_full_encoder`), from the same device answers."""
    enc32, encq = session(encoder_fp32), session(encoder_q)
    full = session(full_encoder) if full_encoder is not None else None
    dec32 = OnnxDecoder(decoder_dir, threads=1)  # timed as a device runs it
    reference = OnnxDecoder(decoder_dir, threads=0)  # the float answers, batched, not timed: every core
    decq = OnnxDecoder(decoder_dir, threads=1, model_file=decoder_q)
    report: dict = {"encoder": {"precision": encoder_label, "fp32_bytes": encoder_fp32.stat().st_size,
                                "bytes": encoder_q.stat().st_size},
                    "decoder": {"precision": decoder_label, "fp32_bytes": (decoder_dir / "decoder.onnx").stat().st_size,
                                "bytes": decoder_q.stat().st_size},
                    "sets": {}}
    timing = {"enc32": [], "encq": [], "dec32": [], "decq": []}
    for eval_set in sets:
        tokens32, t32 = run_encoder(enc32, eval_set.features)
        tokensq, tq = run_encoder(encq, eval_set.features)
        timing["enc32"] += t32
        timing["encq"] += tq
        cos = token_cosines(tokens32, tokensq)
        ref = answers(reference, tokens32, questions)
        alone = device_answers(decq, tokens32, questions)
        end_to_end = device_answers(decq, tokensq, questions)
        timing["dec32"] += answer_times(dec32, tokens32[:TIMED_WINDOWS], questions)  # latency on a few windows
        timing["decq"] += answer_times(decq, tokens32[:TIMED_WINDOWS], questions)
        report["sets"][eval_set.name] = {
            "windows": int(len(eval_set.features)),
            "encoder_cosine": {"mean": float(cos.mean()), "p5": float(np.percentile(cos, 5)), "min": float(cos.min())},
            "decoder_agreement": float(np.mean([a.text == r.text for a, r in zip(alone, ref)])),
            "end_to_end_agreement": float(np.mean([a.text == r.text for a, r in zip(end_to_end, ref)])),
            "confidence_shift": float(np.mean([a.confidence_mean - r.confidence_mean for a, r in zip(alone, ref)])),
        }
        if full is not None:
            report.setdefault("student_encoder", {})[eval_set.name] = against_full_encoder(
                full, reference, eval_set, (tokensq, tq), end_to_end, questions)
    for role, fp, q in (("encoder", "enc32", "encq"), ("decoder", "dec32", "decq")):
        entry = report[role]
        entry["size_ratio"] = entry["bytes"] / entry["fp32_bytes"]
        entry["fp32_ms_p50"] = 1000 * float(np.median(timing[fp]))
        entry["ms_p50"] = 1000 * float(np.median(timing[q]))
        entry["speedup"] = entry["fp32_ms_p50"] / entry["ms_p50"]
    if "int8-static" in encoder_label:
        report["encoder"]["worst_tensors"] = worst_tensors(encoder_fp32, encoder_q, sets[0].features[:2], worst)
    return report


def against_full_encoder(full, reference: OnnxDecoder, eval_set: EvalSet, student: tuple[np.ndarray, list[float]],  # noqa: ANN001
                         device: list, questions: list[str]) -> dict:
    """How close the device's answers stay when the student encoder replaces the full one: token cosine, and per
    task the share of the device's answers (``device``: the quantized student encoder's tokens, ``student``, through
    the bundle's decoder) equal to (full encoder + the fp32 decoder); and, where the set carries the teacher's own
    answers, the share of each pipeline's answers equal to the teacher's."""
    reference_tokens, _ = run_encoder(full, eval_set.features)
    student_tokens, times = student
    cos = token_cosines(reference_tokens, student_tokens)
    ref = answers(reference, reference_tokens, questions)
    found = {"windows": int(len(eval_set.features)),
             "token_cosine": {"mean": float(cos.mean()), "p5": float(np.percentile(cos, 5))},
             "agreement": float(np.mean([a.text == r.text for a, r in zip(device, ref)])),
             "agreement_per_task": per_task(device, [r.text for r in ref], questions),
             "student_ms_p50": 1000 * float(np.median(times))}
    if eval_set.teacher:
        teacher = [answers_of.get(q) for answers_of in eval_set.teacher for q in questions]
        found["against_teacher"] = {"student_encoder": per_task(device, teacher, questions),
                                    "full_encoder": per_task(ref, teacher, questions)}
    return found


def per_task(got: list, expected: list[str | None], questions: list[str]) -> dict[str, float | None]:
    """Per question, the share of answers (window-major, as :func:`answers` returns them) equal to the expected
    text; windows without an expected answer are left out (None where a question has none)."""
    shares: dict[str, float | None] = {}
    for i, question in enumerate(questions):
        pairs = [(a.text, e) for a, e in zip(got[i::len(questions)], expected[i::len(questions)]) if e is not None]
        shares[question] = float(np.mean([a == e for a, e in pairs])) if pairs else None
    return shares


def worst_tensors(fp32: Path, qdq: Path, features: np.ndarray, count: int) -> list[dict]:
    """Activations of the QDQ model furthest from fp32 (lowest SQNR), from onnxruntime's QDQ debugger."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from naturelm_edge.quantization.calibration import ArrayReader

    with tempfile.TemporaryDirectory(prefix="nle-debug-") as work:
        float_aug, qdq_aug = Path(work) / "float.onnx", Path(work) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(float_aug))
        modify_model_output_intermediate_tensors(str(qdq), str(qdq_aug))
        inputs = [{"fbank": f[None]} for f in features]
        float_acts = collect_activations(str(float_aug), ArrayReader(inputs))
        qdq_acts = collect_activations(str(qdq_aug), ArrayReader(inputs))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    ranked = sorted(((name, e["xmodel_err"]) for name, e in errors.items() if "xmodel_err" in e), key=lambda x: x[1])
    return [{"tensor": name, "sqnr_db": round(float(err), 2)} for name, err in ranked[:count]]


def format_table(report: dict) -> str:
    lines = [f"encoder {report['encoder']['precision']}: {report['encoder']['size_ratio']:.2f}x size, "
             f"{report['encoder']['speedup']:.2f}x speed ({report['encoder']['ms_p50']:.1f} ms vs "
             f"{report['encoder']['fp32_ms_p50']:.1f} ms fp32)",
             f"decoder {report['decoder']['precision']}: {report['decoder']['size_ratio']:.2f}x size, "
             f"{report['decoder']['speedup']:.2f}x speed ({report['decoder']['ms_p50']:.1f} ms per answer)",
             "", "| species | windows | token cosine mean / p5 / min | decoder agreement | end to end | confidence shift |",
             "|---|---|---|---|---|---|"]
    for name, s in report["sets"].items():
        c = s["encoder_cosine"]
        lines.append(f"| {name} | {s['windows']} | {c['mean']:.4f} / {c['p5']:.4f} / {c['min']:.4f} | "
                     f"{s['decoder_agreement']:.1%} | {s['end_to_end_agreement']:.1%} | {s['confidence_shift']:+.3f} |")
    for t in report["encoder"].get("worst_tensors", []):
        lines.append(f"- loses most: {t['tensor']} ({t['sqnr_db']} dB)")
    for name, s in report.get("student_encoder", {}).items():
        teacher = s.get("against_teacher", {})
        lines.append(f"- student encoder, {name}: token cosine {s['token_cosine']['mean']:.4f}, answers equal to the full "
                     f"encoder's {s['agreement']:.1%}" + "".join(
                         f"; equal to the teacher's: {mean_share(teacher[p]):.1%} ({p.replace('_', ' ')})"
                         for p in ("student_encoder", "full_encoder") if mean_share(teacher.get(p, {})) is not None))
    return "\n".join(lines)


def mean_share(per_question: dict[str, float | None]) -> float | None:
    """The mean of the per-question shares that exist (None when none does)."""
    shares = [v for v in per_question.values() if v is not None]
    return float(np.mean(shares)) if shares else None
