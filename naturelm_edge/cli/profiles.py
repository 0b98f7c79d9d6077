"""``edge profiles``: list, show, validate and detect device profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import ProfilesDir, console, print_table, user_errors

profiles_app = typer.Typer(help="Device profiles: list, show, validate, detect.", no_args_is_help=True)


@profiles_app.command("list")
@user_errors
def profiles_list(profiles_dir: ProfilesDir = None,
                  as_json: Annotated[bool, typer.Option("--json", help="JSON records, for scripts.")] = False) -> None:
    """All known device profiles."""
    from naturelm_edge.device_profiles import all_profiles

    columns = ["name", "providers", "encoder", "decoder", "threads", "memory MB", "latency ms"]
    rows = [[p.name, ", ".join(x.name.replace("ExecutionProvider", "") for x in p.providers),
             p.precision["encoder"], p.precision["decoder"], str(p.intra_op_threads),
             str(p.runtime.get("memory_budget_mb", "")), str(p.runtime.get("latency_budget_ms", ""))]
            for p in all_profiles(profiles_dir).values()]
    print_table(columns, rows, as_json=as_json)


@profiles_app.command("show")
@user_errors
def profiles_show(name: str, profiles_dir: ProfilesDir = None) -> None:
    """One profile, as TOML source."""
    from naturelm_edge.device_profiles import get

    console.print(Path(get(name, profiles_dir).source).read_text(), highlight=False, markup=False)


@profiles_app.command("validate")
@user_errors
def profiles_validate(path: Path) -> None:
    """Check a profile file against the schema."""
    from naturelm_edge.device_profiles import load_file

    profile = load_file(path)
    console.print(f"{path}: valid profile '{profile.name}'")


@profiles_app.command("detect")
@user_errors
def profiles_detect(profiles_dir: ProfilesDir = None) -> None:
    """The profile that matches this machine."""
    from naturelm_edge.device_profiles import DeviceFacts, detect

    facts = DeviceFacts.read()
    console.print(f"{detect(facts, profiles_dir).name} (machine {facts.machine}, cpu {facts.cpu_model or '?'}, "
                  f"device-tree {facts.device_tree_model or '-'}, nvidia-smi {'yes' if facts.nvidia_smi else 'no'})")


