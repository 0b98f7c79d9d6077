"""The student encoder against the official-size audio path: size, time per window, fidelity, cascade cost.

Run: ``python -m benchmarks.student_encoder [--work benchmarks/.work] [--out benchmarks/results]``.

The teacher is the official-size audio path (BEATs + Q-Former + the projection to Llama's 4096, 112 M
parameters) with seeded random weights, as in the other benchmarks: the real weights cannot be fetched here.
``edge distill encoder``'s code trains the student on every shared recording but the held-out species folders
(each window as recorded plus augmented views, the teacher's tokens computed once per view), then:

- size and time per 10 s window, fp32 and static int8 (calibrated on held-out windows, as ``edge build``
  does), one thread, beside the official-size int8 encoder's time from ``results/quantization``;
- token cosine of the int8 student against the teacher on held-out-species windows, raw and centred on the
  teacher's mean token: a random teacher's tokens share a large common part, so raw cosine is easy to earn
  and the centred figure is the one that says how much of the window-specific part the student learned;
- the cost behind the cascade: ``edge bench`` of the cascade bundle (``benchmarks/detector.py``) with the
  int8 student measured as its encoder, on all shared recordings beside BirdNET in the same run
  (``OUT/<device>/x86-cpu/student-int8-cascade.*``).

- answers through a taught teacher: ``edge build --profile x86-cpu`` (the profile's student encoder) on the tiny
  NatureLM taught species names as ``benchmarks/distillation.py`` teaches it, on every shared recording; its
  manifest's ``encoder.fidelity``: answers of (int8 student encoder + bundle decoder) against (teacher encoder +
  fp32 decoder) and against the teacher's own cached answers, on distillation and held-out species.

What random and tiny teachers cannot show: whether a student keeps what a trained NatureLM encodes about 36
groups of species across the world's recorders. On a GPU box with the real weights: ``edge build CHECKPOINT
--audio DIR --profile x86-cpu`` (or ``edge distill encoder CHECKPOINT --audio DIR --out S``) measures it.
Writes ``OUT/student-encoder/student_encoder.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import machine, pyplot, recordings_dir  # noqa: E402
from benchmarks.quantization import latency, official_model  # noqa: E402
from testbed.corpus import HELD_OUT  # noqa: E402

EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]
EDGE_RUN = [sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()"]
TARGET_MS_RATIO = 0.1  # <= 1/10 of the official-size int8 encoder's time per window


def distilled(audio: Path, work: Path, epochs: int, views: int) -> tuple[Path, dict, object]:
    """Train (or resume) the student on the official-size random teacher; its folder, report and teacher."""
    import torch

    from naturelm_edge.cli.common import progress_bar
    from naturelm_edge.distill.encoder import EncoderStudentConfig, drop_stale_state, teacher_path_of
    from naturelm_edge.export.student_encoder import distill_encoder

    torch.set_num_threads(max(1, os.cpu_count() or 1))  # the teacher's tokens: every core; timings below: one
    teacher = teacher_path_of(official_model(), "official-size, random weights (seed 0)")
    out = work / "student-encoder-official"
    config = EncoderStudentConfig(epochs=epochs, views=views)
    drop_stale_state(out, config, teacher)
    with progress_bar() as progress:
        report = distill_encoder(teacher, audio, out, config,
                                 lambda relative, _: relative.startswith(tuple(HELD_OUT)), progress)
    return out, report, teacher


def int8(student: Path, audio: Path, work: Path) -> tuple[Path, np.ndarray]:
    """The student quantized as x86 profiles quantize their encoder, and the held-out windows it is judged on."""
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.audio.files import list_audio
    from naturelm_edge.quantization.calibration import ArrayReader, calibration_set, encoder_inputs
    from naturelm_edge.quantization.quantize import QuantSpec, quantize

    held = [f for folder in HELD_OUT for f in list_audio(audio / folder)]
    calibration = calibration_set(held[::2], WindowSpec(), 16)
    evaluation = calibration_set(held[1::2], WindowSpec(), 48, 1)
    out = work / "student-encoder-int8.onnx"
    quantize(student / "encoder.onnx", out, QuantSpec("int8-static", "x86", "minmax"),
             ArrayReader(encoder_inputs(calibration)), work / "student-ranges", calibration.digest())
    return out, evaluation.features


def fidelity(path: Path, teacher, features: np.ndarray) -> dict:  # noqa: ANN001 - TeacherPath
    """Token cosine of an encoder ONNX against the teacher's projected tokens, raw and centred."""
    from naturelm_edge.distill.encoder import token_fidelity
    from naturelm_edge.quantization.report import run_encoder, session

    reference = np.concatenate([teacher.tokens(features[i:i + 8]) for i in range(0, len(features), 8)])
    reference = reference @ teacher.projection_weight.T + teacher.projection_bias
    tokens, _ = run_encoder(session(path), features)
    return {"windows": int(len(features)), **token_fidelity(tokens, reference)}


def cascade(encoder: Path, work: Path, audio: Path, out: Path) -> dict | None:
    """`edge bench` of the cascade bundle with the student as its encoder; the run's cost beside BirdNET."""
    from benchmarks.detector import detector_bundle

    bundle = work / "detector-bundle"
    if not (bundle / "manifest.json").is_file():
        bundle = detector_bundle(work, audio)
    subprocess.run([*EDGE, "bench", str(bundle), "--profile", "x86-cpu", "--out", str(out), "--encoder", str(encoder),
                    "--name", "student-int8-cascade"], check=True)
    runs = sorted(out.glob("*/x86-cpu/student-int8-cascade.json"))
    return json.loads(runs[-1].read_text()) if runs else None


def taught_teacher_bundle(audio: Path, work: Path, encoder_epochs: int) -> dict:
    """`edge build --profile x86-cpu` (the profile's student encoder) on the tiny teacher taught species names as
    ``benchmarks/distillation.py`` teaches it, on every shared recording; the manifest's encoder section: answers
    through the student encoder against answers through the teacher's encoder and against the teacher's own."""
    from naturelm_edge.distill.teacher_training import finetune_teacher
    from naturelm_edge.models.tiny import write_tiny_checkpoint
    from testbed.corpus import QUESTION, TASKS_TOML
    from testbed.distillation import ProofSettings

    settings, teacher = ProofSettings(), work / "taught-teacher"
    if not (teacher / "model.safetensors").is_file():
        base = write_tiny_checkpoint(work / "tiny-checkpoint", seed=settings.seed)
        finetune_teacher(base, audio, teacher, QUESTION, steps=settings.teacher_steps, seed=settings.seed)
    (work / "tasks.toml").write_text(TASKS_TOML)
    bundle = work / "taught-student-bundle"
    subprocess.run([*EDGE, "build", str(teacher), "--audio", str(audio), "--out", str(bundle), "--profile", "x86-cpu",
                    "--tasks", str(work / "tasks.toml"), "--epochs", str(settings.student_epochs), "--student-layers",
                    "2", "--student-hidden", "256", "--student-heads", "4", "--encoder-epochs", str(encoder_epochs)],
                   check=True)
    return {**json.loads((bundle / "manifest.json").read_text())["encoder"], "edge_run": edge_run_rss(bundle, audio, work)}


def edge_run_rss(bundle: Path, audio: Path, work: Path) -> dict:
    """`edge-run` with the student bundle plus a detector (trained as ``benchmarks/detector.py`` trains one) on
    every shared recording, in a process of its own: its peak RSS (the target's figure) and wall time."""
    import time

    from benchmarks.detector import detector_bundle

    with_detector = work / "taught-student-detector"
    if not (with_detector / "manifest.json").is_file():
        detector_bundle(work, audio, bundle, with_detector.name)
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    run_dir = work / "taught-student-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, *EDGE_RUN, "--bundle", str(with_detector), "--profile",
                           "x86-cpu", str(audio), "--out", str(run_dir), "--escalate", "off", "-q"],
                          check=True, capture_output=True, text=True)
    return {"peak_rss_mb": int(done.stdout.split()[-1]) / 1024, "wall_s": time.perf_counter() - started,
            "bundle": str(with_detector)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--no-cascade", action="store_true", help="skip the edge bench run")
    parser.add_argument("--taught-epochs", type=int, default=24, help="student encoder epochs on the taught tiny teacher")
    parser.add_argument("--no-taught", action="store_true", help="skip the build on the taught tiny teacher")
    args = parser.parse_args()
    audio = recordings_dir(args.audio)
    args.work.mkdir(parents=True, exist_ok=True)
    student, trained, teacher = distilled(audio, args.work, args.epochs, args.views)
    quantized, features = int8(student, audio, args.work)
    official = json.loads((args.out / "quantization" / "quantization.json").read_text())
    result = {"machine": machine(), "teacher": teacher.identity, "training": trained,
              "fp32": {"bytes": (student / "encoder.onnx").stat().st_size,
                       "ms_per_window": latency(student / "encoder.onnx", features),
                       "fidelity_held_out": fidelity(student / "encoder.onnx", teacher, features)},
              "int8": {"bytes": quantized.stat().st_size, "ms_per_window": latency(quantized, features),
                       "fidelity_held_out": fidelity(quantized, teacher, features)},
              "official_int8_ms_per_window": official_int8_ms(official)}
    if not args.no_cascade:
        result["cascade"] = cascade_figures(cascade(quantized, args.work, audio, args.out))
    if not args.no_taught:
        result["taught_tiny_teacher"] = taught_teacher_bundle(audio, args.work, args.taught_epochs)
    write(result, args.out / "student-encoder")
    print((args.out / "student-encoder" / "student_encoder.md").read_text())


def official_int8_ms(quantization: dict) -> float:
    """The official-size encoder's static int8 time per window in the quantization benchmark (x86, minmax)."""
    return float(next(r["ms_p50"] for r in quantization["formats"] if r["format"] == "int8-static-x86-minmax"))


def cascade_figures(report: dict | None) -> dict | None:
    """What the targets ask of an `edge bench` run: cost beside BirdNET, peak RSS, window end -> answer p95."""
    if report is None:
        return None
    return {"cpu_s_per_audio_hour": report["totals"]["cpu_s_per_audio_hour"],
            "birdnet_cpu_s_per_audio_hour": (report.get("birdnet") or {}).get("cpu_s_per_audio_hour"),
            "ratio_to_birdnet": report.get("cost_ratio_to_birdnet"), "peak_rss_mb": report["peak_rss_mb"],
            "window_p95_ms": report["stages"]["window"]["p95_ms"], "outcomes": {
                k: report["audio"][k] for k in ("windows", "gated", "not_calls", "heard", "answered")}}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "student_encoder.json").write_text(json.dumps(result, indent=2) + "\n")
    fp32, q, training = result["fp32"], result["int8"], result["training"]
    ratio = q["ms_per_window"] / result["official_int8_ms_per_window"]
    lines = ["# Student encoder against the official-size audio path (random weights), one thread", "",
             f"{result['machine'].get('processor', '')}. Student {training['config']['arch']}, "
             f"{training['parameters'] / 1e6:.2f} M parameters, {training['windows']} windows x "
             f"{training['config']['views']} views, {training['config']['epochs']} epochs.", "",
             "| format | size | ms / 10 s window | token cosine (held-out species) mean / p5 | centred cosine mean / p5 |",
             "|---|---:|---:|---:|---:|"]
    for name, row in (("fp32", fp32), ("int8 (static, x86)", q)):
        f = row["fidelity_held_out"]
        lines.append(f"| {name} | {row['bytes'] / 1e6:.1f} MB | {row['ms_per_window']:.1f} | "
                     f"{f['token_cosine_mean']:.4f} / {f['token_cosine_p5']:.4f} | "
                     f"{f['centred_cosine_mean']:.3f} / {f['centred_cosine_p5']:.3f} |")
    lines += ["", f"Official-size int8 encoder: {result['official_int8_ms_per_window']:.0f} ms per window; the int8 "
              f"student takes {ratio:.3f} of it (target <= {TARGET_MS_RATIO}).", "",
              "Raw cosine is easy against a random teacher (its tokens share a large common part); the centred cosine "
              "(both centred on the teacher's mean token) is what the student learned of each window."]
    c = result.get("cascade")
    if c:
        lines += ["", f"Behind the cascade on all shared recordings: **{c['cpu_s_per_audio_hour']:.1f}** CPU-s per audio "
                  f"hour, BirdNET v2.4 **{c['birdnet_cpu_s_per_audio_hour']:.1f}** in the same run (ratio "
                  f"{c['ratio_to_birdnet']:.2f}; target <= 1.0); peak RSS of `edge bench` {c['peak_rss_mb']:.0f} MB (it "
                  "also holds the demo bundle's fp32 encoder to feed the decoder; the target's figure is edge-run's, "
                  f"below), window end -> answer p95 {c['window_p95_ms']:.0f} ms (target <= 150)."]
    lines += taught_lines(result.get("taught_tiny_teacher"))
    (out / "student_encoder.md").write_text("\n".join(lines) + "\n")
    plot(result, out / "student_encoder.png")


def taught_lines(section: dict | None) -> list[str]:
    """The taught tiny teacher's student bundle: answers through the student encoder, per species set."""
    if not section:
        return []
    from naturelm_edge.quantization.report import mean_share

    rss = section.get("edge_run")
    edge_run = ([f"`edge-run` with this student bundle and a detector, on every shared recording, in a process of its "
                 f"own: peak RSS **{rss['peak_rss_mb']:.0f} MB** (target <= 250)."] if rss else [])
    lines = ["", f"## Through a taught teacher (tiny NatureLM taught species names; student {section['arch']}, "
             f"{section['parameters'] / 1e6:.2f} M parameters, int8 as the x86-cpu bundle carries it)", "",
             "| species set | windows | token cosine | answers = through the teacher's encoder (target >= 90 % on "
             "distillation species) | student bundle = teacher | teacher's encoder + bundle decoder = teacher |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in section["fidelity"]["against_full_encoder"].items():
        teacher = s.get("against_teacher", {})
        shares = [mean_share(teacher.get(p, {})) for p in ("student_encoder", "full_encoder")]
        lines.append(f"| {name} | {s['windows']} | {s['token_cosine']['mean']:.4f} | {s['agreement']:.1%} | "
                     + " | ".join("" if v is None else f"{v:.1%}" for v in shares) + " |")
    return [*lines, "", *edge_run] if edge_run else lines


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    names = ["official int8", "student fp32", "student int8"]
    values = [result["official_int8_ms_per_window"], result["fp32"]["ms_per_window"], result["int8"]["ms_per_window"]]
    ax.bar(names, values, color=["grey", "tab:blue", "tab:green"])
    ax.axhline(result["official_int8_ms_per_window"] * TARGET_MS_RATIO, color="red", linestyle="--", label="target")
    ax.set_ylabel("ms per 10 s window, one thread")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
