"""``edge bench BUNDLE`` and ``edge bench compare A.json B.json ...``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import ProfilesDir, console, err_console, print_table, user_errors
from naturelm_edge.errors import EdgeError

DEFAULT_OUT = Path("benchmarks/results")


def default_audio(scratch: Path) -> list[Path]:
    """The shared recordings when present (soundscapes, background and focal clips), else a synthetic minute."""
    import soundfile as sf

    from naturelm_edge.audio.files import list_audio
    from naturelm_edge.sample_data import shared_audio_dir, synthetic_soundscape

    shared = shared_audio_dir()
    if shared is not None:
        return list_audio(shared)
    path = scratch / "synthetic-soundscape.wav"
    sf.write(path, synthetic_soundscape(60.0), 16_000)
    return [path]


def run_bench(bundle_path: Path, profile_name: str | None, audio: list[Path] | None, quick: bool, out: Path,
              encoder: Path | None = None, birdnet: bool = True, time_expansion: float | None = None,
              profiles_dir: Path | None = None, name: str = "bench") -> tuple[dict, list[Path]]:
    from naturelm_edge.audio.files import list_audio
    from naturelm_edge.bench.birdnet import run_beside
    from naturelm_edge.bench.clock import cost_per_call
    from naturelm_edge.bench.pipeline import BenchSettings, Measurement
    from naturelm_edge.bench.report import build_report, output_dir, write
    from naturelm_edge.bench.tegrastats import TegraStats, summarise
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.device_profiles import DeviceFacts, detect, get
    from naturelm_edge.edge_runtime.settings import RunFlags, RunSettings

    bundle = load_bundle(bundle_path)
    facts = DeviceFacts.read()
    profile = get(profile_name, profiles_dir) if profile_name else detect(facts, profiles_dir)
    if encoder is not None and not encoder.is_file():
        raise EdgeError(f"{encoder}: no such encoder ONNX file.")
    expansion = RunSettings.resolve(RunFlags(time_expansion=time_expansion), profile, bundle).time_expansion
    settings = BenchSettings(quick=quick, time_expansion=expansion, encoder=encoder,
                             escalation_rounds=5 if quick else 20)
    with tempfile.TemporaryDirectory() as scratch:
        missing = [p for p in audio or [] if not p.exists()]
        if missing:
            raise EdgeError(f"{missing[0]}: no such recording.")
        paths = [f for p in audio for f in (list_audio(p) if p.is_dir() else [p])] if audio else default_audio(Path(scratch))
        measurement = Measurement(bundle, profile, settings)
        if measurement.engine.missing:
            err_console.print(f"[yellow]note:[/yellow] {', '.join(measurement.engine.missing)} not available here; "
                              f"figures are for {', '.join(measurement.engine.providers)}, not {profile.name}",
                              highlight=False)
        err_console.print(f"benchmarking {bundle.id} on {profile.name}: {len(paths)} recordings"
                          + (" (quick)" if quick else ""), highlight=False)
        with TegraStats() as power:
            measurement.run(paths)
        if not measurement.windows:
            raise EdgeError(f"no audio could be measured: {'; '.join(measurement.failed) or 'no recordings given'}")
        measurement.escalation_round_trips(settings.escalation_rounds)
        used = measurement.files
        side = run_beside(used, profile.intra_op_threads, expansion) if birdnet and used else None
        if birdnet and side is None:
            err_console.print("[yellow]note:[/yellow] BirdNET not installed (pip install 'naturelm-edge[birdnet]'): "
                              "no side-by-side", highlight=False)
        tegra = summarise(power.samples, power.stopped - power.started, measurement.audio_s) if power.available else None
        report = build_report(measurement, profile, facts, cost_per_call(), side, tegra)
    return report, write(report, output_dir(out, report), name)


def show(report: dict) -> None:
    from naturelm_edge.bench.report import markdown

    console.print(markdown(report), highlight=False)


def compare(paths: list[Path]) -> None:
    from naturelm_edge.bench.report import COMPARE_COLUMNS, compare_rows, load

    if not paths:
        raise EdgeError("give the bench.json files to compare.")
    print_table(COMPARE_COLUMNS, compare_rows([load(p) for p in paths]), "edge bench")


@user_errors
def bench(
    args: Annotated[list[str], typer.Argument(help="BUNDLE, or: compare A.json B.json ...", show_default=False)],
    profile: Annotated[str | None, typer.Option(help="Device profile; default: the detected device.")] = None,
    profiles_dir: ProfilesDir = None,
    audio: Annotated[list[Path] | None, typer.Option("--audio", help="Recordings or folders (default: the shared set).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A few windows only: checks, not figures.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Results root; files go to OUT/<device>/<profile>/.")] = DEFAULT_OUT,
    encoder: Annotated[Path | None, typer.Option(help="Measure this encoder ONNX instead of the bundle's.")] = None,
    birdnet: Annotated[bool, typer.Option("--birdnet/--no-birdnet", help="Run BirdNET beside it when installed.")] = True,
    time_expansion: Annotated[float | None, typer.Option(help="Slow ultrasonic audio N times.")] = None,
    name: Annotated[str, typer.Option(help="File name of the results (NAME.json, .md, .png).")] = "bench",
) -> None:
    """Per-stage latency, real-time factor, CPU cost per audio hour, memory and a verdict per profile."""
    if args[0] == "compare":
        compare([Path(a) for a in args[1:]])
        return
    if len(args) != 1:
        raise EdgeError("give one bundle (or: edge bench compare A.json B.json ...).")
    started = time.perf_counter()
    report, files = run_bench(Path(args[0]), profile, audio, quick, out, encoder, birdnet, time_expansion,
                              profiles_dir, name)
    show(report)
    console.print(f"wrote {', '.join(map(str, files))} in {time.perf_counter() - started:.1f} s", highlight=False)
