"""Command line: ``edge`` (one subcommand per stage) and ``edge-run`` (the field command).

Every command lives in this package; the libraries it drives never import it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from naturelm_edge.cli.analyze import analyze_cmd
from naturelm_edge.cli.bench import bench
from naturelm_edge.cli.bundles import bundle_app
from naturelm_edge.cli.common import state
from naturelm_edge.cli.demo import demo
from naturelm_edge.cli.edge_run import run_app
from naturelm_edge.cli.flash import flash_cmd
from naturelm_edge.cli.profiles import profiles_app
from naturelm_edge.cli.serve import serve_cmd
from naturelm_edge.cli.stages import build_cmd, checkpoint_app, detector_app, distill_app, export_app
from naturelm_edge.cli.station import station_cmd

app = typer.Typer(help="naturelm-edge: take NatureLM-audio to field recorders.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(export_app, name="export")
app.add_typer(distill_app, name="distill")
app.add_typer(detector_app, name="detector")
app.add_typer(bundle_app, name="bundle")
app.add_typer(profiles_app, name="profiles")
app.command("build")(build_cmd)
app.command("bench", no_args_is_help=True)(bench)
app.command("flash", no_args_is_help=True)(flash_cmd)
app.command("serve")(serve_cmd)
app.command("station")(station_cmd)
app.command("demo")(demo)
app.command("analyze", no_args_is_help=True)(analyze_cmd)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for expected errors.")] = False) -> None:
    state["debug"] = debug


def single_threaded_numpy() -> None:
    """One BLAS thread for numpy (before it is imported): its only matrix work on the device is the fbank's
    small mel projection, where extra threads spin against onnxruntime and the audio thread (measured:
    4 ms per window alone, over 200 ms when two cores are busy)."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def warnings_on_stderr() -> None:
    """Library warnings (a repaired recording, zeroed samples, a missing provider) as one line each on stderr."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")


def run() -> None:
    """Entry point of the ``edge`` console script."""
    warnings_on_stderr()
    if sys.argv[1:2] == ["bench"]:
        single_threaded_numpy()  # measure what edge-run runs
    app(prog_name="edge")


def run_edge() -> None:
    """Entry point of the ``edge-run`` console script."""
    warnings_on_stderr()
    single_threaded_numpy()
    run_app(prog_name="edge-run")
