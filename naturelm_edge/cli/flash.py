"""``edge flash BUNDLE TARGET...`` and ``edge flash --rollback TARGET...``: many targets in parallel, one table."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from naturelm_edge.cli.common import console, user_errors
from naturelm_edge.errors import EdgeError


@user_errors
def flash_cmd(
    args: Annotated[list[str], typer.Argument(help="BUNDLE TARGET... (a target: a local path or ssh://user@host[:port]/path)",
                                              show_default=False)],
    rollback: Annotated[bool, typer.Option("--rollback", help="Switch each TARGET back to its previous bundle.")] = False,
    parallel: Annotated[int, typer.Option(help="Targets flashed at once.")] = 4,
    identity: Annotated[Path | None, typer.Option(help="ssh private key.")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="known_hosts file (default: ssh's own).")] = None,
    accept_new_host_key: Annotated[bool, typer.Option("--accept-new-host-key",
                                                      help="Trust a host seen for the first time (a changed key is still refused).")] = False,
    bwlimit: Annotated[int | None, typer.Option(help="Transfer at most this many KB/s (rsync --bwlimit).")] = None,
    transfer: Annotated[str, typer.Option(help="auto (rsync when both ends have it, else SFTP), rsync or sftp.")] = "auto",
    python: Annotated[str, typer.Option(help="Python on the target that has naturelm-edge and onnxruntime.")] = "python3",
    health_check: Annotated[bool, typer.Option("--health-check/--no-health-check", help="Run edge-run --self-test after switching.")] = True,
    restart_service: Annotated[str | None, typer.Option(help="systemd unit to restart after a healthy switch.")] = None,
) -> None:
    """Put a verified bundle on devices: preflight, resumable transfer, sha256 (and signature) on the device,
    atomic switch of `current`, health check with automatic rollback."""
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.flash.flash import FlashOptions, flash, record
    from naturelm_edge.flash.flash import rollback as roll_back
    from naturelm_edge.flash.target import SshOptions, Target

    if transfer not in ("auto", "rsync", "sftp"):
        raise EdgeError(f"--transfer {transfer}: use auto, rsync or sftp.")
    ssh = SshOptions(identity, known_hosts, accept_new_host_key, bwlimit_kbps=bwlimit, transfer=transfer)
    options = FlashOptions(python, health_check, restart_service)
    if rollback:
        targets = [Target.parse(a, ssh) for a in args]
        job = lambda t: roll_back(t, options)  # noqa: E731
    else:
        if len(args) < 2:
            raise EdgeError("give a bundle and at least one target: edge flash BUNDLE TARGET...")
        bundle = load_bundle(Path(args[0]))  # verified here first: a damaged bundle goes nowhere
        targets = [Target.parse(a, ssh) for a in args[1:]]
        job = lambda t: flash(bundle, t, options)  # noqa: E731
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        results = list(pool.map(job, targets))
    path = record(results, "rollback" if rollback else "flash")
    table = Table("target", "result", "time", "bytes sent", title="edge flash")
    for r in results:
        table.add_row(r.target, ("[green]ok[/green] " if r.ok else "[red]FAILED[/red] ") + r.result,
                      f"{r.seconds:.1f} s", f"{r.bytes_sent:,}")
    console.print(table)
    console.print(f"recorded in {path}", highlight=False)
    failed = [r for r in results if not r.ok]
    if failed:
        raise EdgeError(f"{len(failed)} of {len(results)} targets failed: " + "; ".join(r.result for r in failed))
