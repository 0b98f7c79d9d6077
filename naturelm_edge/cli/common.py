"""What every ``edge`` subcommand shares: the consoles and the one way expected errors end a command."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from naturelm_edge.errors import EdgeError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
state = {"debug": False}
ProfilesDir = Annotated[Path | None, typer.Option("--profiles-dir", help="Folder of your own profile TOML files.")]
F = TypeVar("F", bound=Callable[..., Any])
# every command that runs the full model (collect, build, serve) takes these, with one meaning
Device = Annotated[str, typer.Option("--device", help="auto (a GPU when there is one), cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto (bfloat16 on a GPU as the original, float32 on a CPU), "
                                                     "bfloat16 or float32.")]
LlamaPath = Annotated[str | None, typer.Option("--llama-path", help="Llama-3.1-8B-Instruct folder or hub id "
                                                                     "(default: the checkpoint's llama_path).")]
Beams = Annotated[int | None, typer.Option("--beams", help="Beams per answer (default: the original's 2; a task "
                                                           "file's num_beams wins for its task).")]
MaxNewTokens = Annotated[int | None, typer.Option("--max-new-tokens", help="Answer length limit (default: the "
                                                  "original's 300; a task file's max_new_tokens wins for its task).")]
# every command that can spread its work over Ray (analyze, distill collect, build) takes these
RayAddress = Annotated[str | None, typer.Option("--ray", help="Run on Ray: 'local' (a Ray on this machine), 'auto' or "
                                                "ray://HOST:PORT (an existing cluster; inputs at the same paths on "
                                                "every node).")]
RayWorkers = Annotated[int | None, typer.Option("--workers", help="--ray: worker processes or teacher actors "
                                                "(default: one per CPU, or per GPU with --device cuda).")]


def full_model_options(device: str, dtype: str, llama_path: str | None, beams: int | None,
                       max_new_tokens: int | None, merging_factor: float = 1.0):  # noqa: ANN201 - FullModelOptions
    """The options above as one object; the placement is checked now, before anything is loaded."""
    from naturelm_edge.models.full import FullModelOptions

    options = FullModelOptions.from_flags(device, dtype, llama_path, beams, max_new_tokens, merging_factor)
    options.placement.check()
    return options


def progress_bar():  # noqa: ANN201 - rich.progress.Progress
    """A progress bar on stderr with done/total and the time remaining (long work shows an ETA)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=False)


def print_table(columns: list[str], rows: list[list[str]], title: str | None = None, as_json: bool = False) -> None:
    """A table as a script or a person wants it: JSON records with ``as_json``, a rich table on a terminal,
    and a Markdown table in a pipe or a log (rich would cut cells to the pipe's assumed width)."""
    if as_json:
        print(json.dumps([dict(zip(columns, row)) for row in rows], indent=2))
        return
    if not console.is_terminal:
        for line in (columns, ["---"] * len(columns), *rows):
            console.print("| " + " | ".join(line) + " |", highlight=False, markup=False)
        return
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def user_errors(func: F) -> F:
    """Turn :class:`EdgeError` into one line on stderr and a non-zero exit (traceback with ``--debug``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgeError as err:
            if state["debug"]:
                raise
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def read_token(path: Path) -> str:
    """The first bearer token of a token file (one per line; # starts a comment)."""
    from naturelm_edge.wire.schema import read_tokens

    tokens = read_tokens(path) if path.is_file() else []
    if not tokens:
        raise EdgeError(f"{path}: no bearer token in it (one per line; # starts a comment).")
    return tokens[0]


def web_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``) of ``edge-run --web``."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise EdgeError(f"--web {text}: give HOST:PORT, such as 127.0.0.1:8765.")
    return host or "127.0.0.1", int(port)
