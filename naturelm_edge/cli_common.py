"""What every ``edge`` subcommand shares: the consoles and the one way expected errors end a command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from naturelm_edge.errors import EdgeError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
state = {"debug": False}
ProfilesDir = Annotated[Path | None, typer.Option("--profiles-dir", help="Folder of your own profile TOML files.")]
F = TypeVar("F", bound=Callable[..., Any])


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
