"""Command line: ``edge`` (one subcommand per stage)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from naturelm_edge.errors import EdgeError

app = typer.Typer(help="naturelm-edge: take NatureLM-audio to field recorders.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
checkpoint_app = typer.Typer(help="Build or inspect NatureLM-audio checkpoints.", no_args_is_help=True)
export_app = typer.Typer(help="Export model parts to ONNX with parity verification.", no_args_is_help=True)
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(export_app, name="export")

console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn :class:`EdgeError` into one line on stderr and a non-zero exit (traceback with ``--debug``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgeError as err:
            if _state["debug"]:
                raise
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for expected errors.")] = False) -> None:
    _state["debug"] = debug


@checkpoint_app.command("tiny")
@user_errors
def checkpoint_tiny(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint to.")],
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
) -> None:
    """Write a tiny NatureLM-audio checkpoint (random weights) in exactly the official layout."""
    from naturelm_edge.models.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(out_dir, seed)
    console.print(f"tiny checkpoint written to {out_dir} (random weights, seed {seed})")


@export_app.command("encoder")
@user_errors
def export_encoder_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory, training file or hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    verify_audio: Annotated[
        list[Path] | None, typer.Option("--verify-audio", help="Audio files or folders to verify on.")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Config preset for a training file without config.json.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Export the audio encoder (fbank -> audio tokens) to ONNX and verify it against PyTorch."""
    run_encoder_export(checkpoint, out, verify_audio, preset, quiet)


def run_encoder_export(
    checkpoint: str, out: Path, verify_audio: list[Path] | None, preset: str | None, quiet: bool
) -> dict:
    from naturelm_edge.export.encoder import REPORT_FILE, export_encoder
    from naturelm_edge.models import load
    from naturelm_edge.progress import Progress

    progress = Progress(quiet=quiet)
    with progress.step(f"loading {checkpoint}"):
        loaded = load(checkpoint, preset_name=preset)
    source = {"checkpoint": loaded.source.name, "sha256": loaded.source.sha256()}
    try:
        report = export_encoder(loaded.model, out, verify_audio, source, progress)
    finally:
        report_path = out / REPORT_FILE
        if report_path.is_file():
            print_report(json.loads(report_path.read_text()))
    return report.__dict__


def print_report(report: dict) -> None:
    table = Table(title=f"encoder export: {report['onnx_path']}")
    for column in ("output", "max abs error", "scale", "min cosine", "result"):
        table.add_column(column)
    for name, stats in report["parity"].items():
        table.add_row(
            name,
            f"{stats['max_abs_error']:.2e}",
            f"{stats['scale']:.3g}",
            f"{stats['min_cosine']:.7f}",
            "[green]pass[/green]" if stats["passed"] else "[red]FAIL[/red]",
        )
    console.print(table)
    console.print(
        f"{report['parameters'] / 1e6:.1f} M parameters, {report['onnx_bytes'] / 1e6:.1f} MB ONNX, "
        f"exported in {report['export_seconds']:.1f} s, verified on {len(report['clips'])} clips"
    )


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory for the demo.")] = Path("demo"),
) -> None:
    """Build the tiny checkpoint, export its encoder, and print the parity report."""
    from naturelm_edge.models.tiny import write_tiny_checkpoint

    checkpoint = out / "tiny-checkpoint"
    if not (checkpoint / "model.safetensors").is_file():
        write_tiny_checkpoint(checkpoint)
    console.print("[yellow]demo weights are random (untrained): answers are meaningless, parity is real[/yellow]")
    run_encoder_export(str(checkpoint), out / "encoder", None, None, quiet=False)


def run() -> None:
    """Entry point of the ``edge`` console script."""
    app(prog_name="edge")


if __name__ == "__main__":
    sys.exit(run())
