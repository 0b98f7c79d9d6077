"""``edge serve CHECKPOINT``: the full model behind the escalation API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import (
    Beams,
    Device,
    Dtype,
    LlamaPath,
    MaxNewTokens,
    err_console,
    full_model_options,
    user_errors,
)
from naturelm_edge.errors import EdgeError


@user_errors
def serve_cmd(
    checkpoint: Annotated[str | None, typer.Argument(
        help="NatureLM-audio checkpoint (directory, training file or hub id); not used with --teacher birdnet-v2.4.")] = None,
    teacher: Annotated[str, typer.Option(help="Who answers: naturelm (CHECKPOINT) or birdnet-v2.4 (the birdnet extra).")] = "naturelm",
    threshold: Annotated[float, typer.Option(help="--teacher birdnet-v2.4: name a species from this confidence.")] = 0.5,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    token_file: Annotated[Path | None, typer.Option(help="Bearer tokens, one per line (none: no authentication).")] = None,
    state_dir: Annotated[Path, typer.Option(help="Where answers are kept by escalation id (shared by workers).")] = Path("serve-state"),
    max_batch: Annotated[int, typer.Option(help="Clips per forward pass at most.")] = 8,
    max_wait_ms: Annotated[float, typer.Option(help="How long a clip waits for others to batch with.")] = 20.0,
    rate_per_minute: Annotated[float, typer.Option(help="Requests per minute per token.")] = 600.0,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); with --tls-key serves HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (each loads its own model; answers are shared).")] = 1,
    device: Device = "auto",
    dtype: Dtype = "auto",
    llama_path: LlamaPath = None,
    beams: Beams = None,
    max_new_tokens: MaxNewTokens = None,
) -> None:
    """The full model behind the escalation API (OpenAPI at /docs): POST /v1/escalations, /healthz, /v1/model, /metrics."""
    import uvicorn

    from naturelm_edge.serve.app import ServeSettings, create_app, settings_env
    from naturelm_edge.teachers import TEXT
    from naturelm_edge.teachers import teacher as teacher_named

    text = teacher_named(teacher).answers == TEXT
    if text and checkpoint is None:
        raise EdgeError("edge serve: give the NatureLM CHECKPOINT (or --teacher birdnet-v2.4).")
    if bool(tls_cert) != bool(tls_key):
        raise EdgeError("give both --tls-cert and --tls-key, or neither.")
    if token_file is not None and not token_file.is_file():
        raise EdgeError(f"{token_file}: no such token file.")
    options = full_model_options(device, dtype, llama_path, beams, max_new_tokens)
    settings = ServeSettings(str(checkpoint or ""), device, dtype, llama_path, options.generation.num_beams,
                             options.generation.max_new_tokens, str(state_dir), str(token_file) if token_file else None,
                             max_batch, max_wait_ms, rate_per_minute=rate_per_minute, teacher=teacher,
                             threshold=threshold)
    tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert else {}
    if not settings.tokens():
        err_console.print("[yellow]note:[/yellow] no --token-file: anyone who reaches this port can use the model")
    if workers > 1:
        import os

        if text:
            from naturelm_edge.models import full_model_parameters

            options.placement.check_memory(full_model_parameters(checkpoint, llama_path) * workers,
                                           f"--workers {workers} (one model per worker process)")

        os.environ.update(settings_env(settings))
        uvicorn.run("naturelm_edge.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", **tls)
    else:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", **tls)
