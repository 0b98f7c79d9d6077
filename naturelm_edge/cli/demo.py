"""``edge demo``: the embedded default, from a tiny checkpoint to detections on a soundscape."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import console, err_console, user_errors

DEMO_TASKS = """[[task]]
id = "common_name"
kind = "common_name"
question = "What is the common name for the focal species in the audio?"
max_new_tokens = 12
"""


@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory for the demo.")] = Path("demo"),
    recording: Annotated[Path | None, typer.Option(help="Your own recording to run on (default: a synthetic soundscape).")] = None,
) -> None:
    """The field demo: tiny checkpoint -> bundle (export, distil, quantize) -> edge-run on a soundscape."""
    import soundfile as sf

    from naturelm_edge.build import BuildOptions, build
    from naturelm_edge.bundle.manifest import load_bundle
    from naturelm_edge.device_profiles import detect
    from naturelm_edge.edge_runtime.runner import Runner, RunOptions
    from naturelm_edge.edge_runtime.sources import file_sources
    from naturelm_edge.models.tiny import write_tiny_checkpoint
    from naturelm_edge.progress import Progress
    from naturelm_edge.sample_data import synthetic_soundscape, write_synthetic_species

    console.print("[yellow]demo: the NatureLM weights are random (untrained) and the 'species' are synthetic: "
                  "the answers are meaningless; the pipeline, parity checks and bookkeeping are real.[/yellow]")
    checkpoint = out / "tiny-checkpoint"
    if not (checkpoint / "model.safetensors").is_file():
        write_tiny_checkpoint(checkpoint)
    audio = out / "synthetic-species"
    if not (audio / "LABELS.csv").is_file():
        write_synthetic_species(audio)
    tasks = out / "tasks.toml"
    tasks.write_text(DEMO_TASKS)
    profile = detect()
    options = BuildOptions(str(checkpoint), audio, profile, out / "bundle", out / "bundle.work", tasks, None,
                           epochs=30, student_layers=2, student_hidden=128, student_heads=4, held_out_fraction=0.25,
                           calibration_windows=8)
    summary = build(options, Progress())
    console.print(f"bundle {summary['bundle_id']} for profile {profile.name} -> {summary['bundle']}")
    if recording is None:
        recording = out / "soundscape.wav"
        if not recording.is_file():
            sf.write(str(recording), synthetic_soundscape(60.0), 16000, subtype="PCM_16")
    bundle = load_bundle(out / "bundle")
    runner = Runner(bundle, profile, RunOptions(out / "run", escalate="queue"), err_console)
    result = runner.run(file_sources([recording], bundle.audio.spec))
    console.print(f"edge-run on {recording}: {result.windows} windows, {result.gated} gated, {result.answered} answered, "
                  f"{result.escalated} queued for the full model; events in {out / 'run' / 'events.db'}")


