"""``edge analyze``: a recorder archive through edge-run's pipeline, on one machine or a Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import (
    ProfilesDir,
    RayAddress,
    RayWorkers,
    console,
    err_console,
    read_token,
    user_errors,
)


@user_errors
def analyze_cmd(
    archive: Annotated[list[Path], typer.Argument(help="Recordings or folders of one or many recorders (recursive); "
                                                       "a glob such as /archive/*/*.WAV works.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle directory or .tar (verified before any audio).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (events.db, JSONL, CSV, Raven); resumable.")],
    ray: RayAddress = None,
    workers: RayWorkers = None,
    escalate: Annotated[str | None, typer.Option(help="URL of the full model, 'queue' or 'off'; default: the profile's.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="Bearer token for --escalate URL.")] = None,
    profile: Annotated[str | None, typer.Option(help="Device profile whose settings the analysis follows.")] = None,
    profiles_dir: ProfilesDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary and the per-recorder table as JSON.")] = False,
) -> None:
    """An archive as the devices would have analysed it: the same windows, screening per recorder, escalation
    budget per recorder in its own audio hours, results in one events.db exactly once."""
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.cli.paths import existing_paths
    from naturelm_edge.device_profiles import detect, get
    from naturelm_edge.edge_runtime.runner import Runner, RunOptions
    from naturelm_edge.edge_runtime.settings import RunFlags
    from naturelm_edge.progress import Progress

    existing_paths(archive, "ARCHIVE")
    chosen = get(profile, profiles_dir) if profile else detect(extra_dir=profiles_dir)
    options = RunOptions(out, RunFlags(escalate), read_token(token_file) if token_file else None, quiet=True,
                         drain_s=60.0)
    runner = Runner(load_bundle(bundle), chosen, options, err_console)
    if ray is None:
        from naturelm_edge.edge_runtime.sources import file_sources

        summary, recorders = runner.run(file_sources(archive, runner.spec, runner.settings.time_expansion)), None
    else:
        from naturelm_edge.cluster.analyze import analyse

        summary, recorders = analyse(runner, archive, ray, workers, Progress())
    if as_json:
        from dataclasses import asdict

        print(json.dumps({**asdict(summary), "recorders": recorders, "events": str(out / "events.db")}, indent=2))
        return
    console.print(f"windows {summary.windows} (resumed past {summary.resumed}), answered {summary.answered}, "
                  f"escalated {summary.escalated}, failed files {len(summary.failed)} -> {out / 'events.db'}")
    for name, counts in (recorders or {}).items():
        console.print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)
