"""``edge station OUT``: the dashboard and ``/metrics`` over an ``edge-run`` output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import err_console, read_token, user_errors


@user_errors
def station_cmd(
    out: Annotated[Path, typer.Argument(help="The folder edge-run writes to (its --out, holding events.db).")],
    host: Annotated[str, typer.Option(help="Address to listen on; any but localhost needs --token-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    token_file: Annotated[Path | None, typer.Option(help="Bearer tokens, one per line (the first is used).")] = None,
) -> None:
    """Serve a read-only web dashboard (detections, charts, clips, health) and Prometheus /metrics."""
    from naturelm_edge.station.server import Station

    station = Station(out, host, port, read_token(token_file) if token_file else None)
    err_console.print(f"station: {station.url} over {out} (Ctrl-C stops)")
    try:
        station.serve_forever()
    except KeyboardInterrupt:
        pass
