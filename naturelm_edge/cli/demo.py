"""``edge demo``: the embedded default, from a tiny checkpoint to named detections on a soundscape."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import console, err_console, print_table, progress_bar, user_errors

QUESTION = "What is the common name for the focal species in the audio?"
DEMO_TASKS = f"""[[task]]
id = "common_name"
kind = "common_name"
question = "{QUESTION}"
max_new_tokens = 12
"""
TEACHER_STEPS = 600  # then the tiny teacher names every window of the four species it was taught (20 s, one core)


@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory for the demo.")] = Path("demo"),
    recording: Annotated[Path | None, typer.Option(help="Your own recording to run on (default: a synthetic soundscape).")] = None,
) -> None:
    """The field demo: tiny teacher taught four synthetic species -> bundle -> edge-run on a soundscape of them."""
    import dataclasses
    import shutil

    import soundfile as sf

    from naturelm_edge.build import BuildOptions, build
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.device_profiles import detect
    from naturelm_edge.distill.teacher_training import finetune_teacher
    from naturelm_edge.edge_runtime.runner import Runner, RunOptions
    from naturelm_edge.edge_runtime.settings import RunFlags
    from naturelm_edge.edge_runtime.sources import file_sources
    from naturelm_edge.edge_runtime.store import EventStore
    from naturelm_edge.models.tiny import write_tiny_checkpoint
    from naturelm_edge.progress import Progress
    from naturelm_edge.sample_data import species_soundscape, write_synthetic_species

    console.print("[yellow]demo: a tiny NatureLM-audio checkpoint (random weights, not NatureLM's) is taught four "
                  "synthetic species; the pipeline, parity checks and bookkeeping are real, the species are not.[/yellow]")
    audio = out / "synthetic-species"
    if not (audio / "LABELS.csv").is_file():
        write_synthetic_species(audio)
    teacher = out / "taught-teacher"
    if not (teacher / "model.safetensors").is_file():
        checkpoint = write_tiny_checkpoint(out / "tiny-checkpoint")
        with progress_bar() as bar:
            finetune_teacher(checkpoint, audio, teacher, QUESTION, steps=TEACHER_STEPS, progress=bar)
    tasks = out / "tasks.toml"
    tasks.write_text(DEMO_TASKS)
    # the full encoder on every profile: a student encoder learns a teacher's tokens from hours of audio
    # (benchmarks/results/student-encoder), not from the demo's minute of synthetic calls.
    # A random-weight encoder keeps only ~0.9 token cosine in int8 (its quantization report says so), which
    # turns every answer into one name; NatureLM's trained encoder is what int8 is measured on
    # (benchmarks/results/quantization), so the demo keeps its encoder at fp32 and quantizes the decoder
    detected = detect()
    profile = dataclasses.replace(detected, precision={**detected.precision, "encoder": "fp32"})
    options = BuildOptions(str(teacher), audio, profile, out / "bundle", out / "bundle.work", tasks, None,
                           epochs=100, student_layers=2, student_hidden=128, student_heads=4, held_out_fraction=0.25,
                           calibration_windows=8, encoder="full",
                           patience=0)  # a held-out synthetic species is unlearnable: its loss would stop training
    summary = build(options, Progress())
    console.print(f"bundle {summary['bundle_id']} for profile {profile.name} -> {summary['bundle']}")
    truth: list[str] | None = None
    if recording is None:
        recording = out / "soundscape.wav"
        wave, rate, truth = species_soundscape(audio)
        sf.write(str(recording), wave, rate, subtype="PCM_16")
    bundle = load_bundle(out / "bundle")
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo answers afresh each time (edge-run itself resumes)
    result = Runner(bundle, profile, RunOptions(run_dir, RunFlags(escalate="queue"), quiet=True), err_console).run(
        file_sources([recording], bundle.audio.spec))
    store = EventStore(run_dir / "events.db")
    events = [e for e in store.events() if e.source == str(recording)]
    store.close()
    calling = [heard_there(truth, e.offset_s, e.duration_s) if truth else [] for e in events]
    rows = [[f"{e.offset_s:.0f}-{e.offset_s + e.duration_s:.0f} s", e.label or e.answer, f"{e.confidence:.2f}",
             *([" / ".join(names) or "none"] if truth else [])] for e, names in zip(events, calling)]
    print_table(["window", "answer", "confidence", *(["calling there"] if truth else [])], rows, f"edge-run on {recording}")
    if truth:
        right = sum(1 for e, names in zip(events, calling) if (e.label or e.answer) in names)
        console.print(f"{right} of {len(events)} answered windows name a species calling in them "
                      f"(held out of distillation, to calibrate quantization: {', '.join(bundle.manifest['species_split']['held_out'])})")
    console.print(f"{result.windows} windows, {result.gated} gated, {result.answered} answered, {result.escalated} "
                  f"queued for the full model; events in {run_dir / 'events.db'}")


def heard_there(truth: list[str], offset_s: float, duration_s: float, stretch_s: float = 10.0) -> list[str]:
    """The species calling in a window of the demo soundscape (its stretches are ``stretch_s`` long)."""
    first, last = int(offset_s // stretch_s), int((offset_s + duration_s - 1e-6) // stretch_s)
    return [truth[i] for i in range(first, min(last, len(truth) - 1) + 1) if truth[i]]
