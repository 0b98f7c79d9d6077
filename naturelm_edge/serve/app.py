"""``edge serve``: the full model behind the escalation API (FastAPI + uvicorn), the devices' other half.

Requests are authenticated (bearer tokens, constant-time comparison), size- and rate-limited, decoded and
batched; answers are stored by escalation id in SQLite, so a device retrying after a lost response gets
the stored answer, not a second inference, even from another worker process sharing the state folder.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sqlite3
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import TypeAdapter

from naturelm_edge.prompt import GenerationSettings
from naturelm_edge.serve.batcher import DynamicBatcher
from naturelm_edge.wire.schema import MAX_AUDIO_BYTES, PATH, SCHEMA, EscalationAnswer, EscalationRequest, read_tokens

CONFIG_ENV = "NATURELM_EDGE_SERVE_CONFIG"
# JSON and base64 add about a third to the clip's bytes
MAX_BODY_BYTES = MAX_AUDIO_BYTES * 4 // 3 + 64 * 1024


@dataclass
class ServeSettings:
    checkpoint: str  # NatureLM's; unused with another teacher
    device: str = "auto"
    dtype: str = "auto"
    llama_path: str | None = None
    num_beams: int = GenerationSettings.num_beams
    max_new_tokens: int = GenerationSettings.max_new_tokens
    state_dir: str = "serve-state"
    token_file: str | None = None
    max_batch: int = 8
    max_wait_ms: float = 20.0
    max_body_bytes: int = MAX_BODY_BYTES
    rate_per_minute: float = 600.0  # per token (or client address without tokens)
    burst: int = 60
    teacher: str = "naturelm"  # or a scores teacher (birdnet-v2.4)
    threshold: float = 0.5  # a scores teacher names a label from this confidence

    def full_model(self):  # noqa: ANN201 - FullModelOptions (imports torch: only where the model runs)
        from naturelm_edge.models.full import FullModelOptions

        return FullModelOptions.from_flags(self.device, self.dtype, self.llama_path, self.num_beams,
                                           self.max_new_tokens)

    def model(self):  # noqa: ANN201 - serve.model.FullModel or TeacherScores
        """The teacher that answers, loaded once per worker."""
        from naturelm_edge.serve.model import FullModel, TeacherScores
        from naturelm_edge.teachers import TEXT, teacher

        if teacher(self.teacher).answers == TEXT:
            return FullModel(self.checkpoint, self.full_model())
        return TeacherScores(self.teacher, self.threshold)

    def tokens(self) -> list[bytes]:
        return [t.encode() for t in read_tokens(self.token_file)] if self.token_file else []


class AnswerStore:
    """Answers by escalation id (SQLite, WAL): shared by worker processes, kept across restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (escalation_id TEXT PRIMARY KEY, reply TEXT NOT NULL, created REAL)")
        self.lock = threading.Lock()

    def get(self, escalation_id: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT reply FROM answers WHERE escalation_id = ?", (escalation_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, escalation_id: str, reply: dict) -> dict:
        """Store ``reply`` unless another worker stored one first; return the stored one."""
        with self.lock:
            self.db.execute("INSERT OR IGNORE INTO answers VALUES (?, ?, ?)", (escalation_id, json.dumps(reply), time.time()))
        return self.get(escalation_id) or reply


class RateLimiter:
    """A token bucket per caller: ``burst`` requests at once, refilled at ``rate_per_minute``."""

    def __init__(self, rate_per_minute: float, burst: int) -> None:
        self.rate, self.burst = rate_per_minute / 60.0, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, caller: str, now: float | None = None) -> float:
        """0 when allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        level, last = self.buckets.get(caller, (float(self.burst), now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level < 1:
            self.buckets[caller] = (level, now)
            return (1 - level) / self.rate
        self.buckets[caller] = (level - 1, now)
        return 0.0


class Escalations:
    """The server's state and the checks every request passes: tokens, rate, type, size, schema, audio."""

    def __init__(self, settings: ServeSettings, model) -> None:  # noqa: ANN001 - FullModel
        from naturelm_edge.serve.model import Clip

        self.settings, self.model, self.clip = settings, model, Clip
        self.tokens = settings.tokens()
        self.store = AnswerStore(Path(settings.state_dir) / "answers.db")
        self.limiter = RateLimiter(settings.rate_per_minute, settings.burst)
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("escalation_requests_total", "Escalation requests by outcome", ["status"],
                                registry=registry)
        self.latency = Histogram("escalation_latency_seconds", "Time from request to answer", registry=registry)
        self.inferences = Counter("escalation_inferences_total", "Clips the full model answered", registry=registry)
        batch_sizes = Histogram("escalation_batch_size", "Clips per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64),
                                registry=registry)
        self.batcher = DynamicBatcher(self.run_batch, settings.max_batch, settings.max_wait_ms,
                                      on_batch=batch_sizes.observe)
        Gauge("escalation_queue_depth", "Clips waiting for the model", registry=registry).set_function(
            lambda: self.batcher.depth)
        self.in_flight: dict[str, asyncio.Future] = {}

    def run_batch(self, clips: list) -> list[tuple[object, float]]:
        started = time.perf_counter()
        answers = self.model.answer(clips)
        self.inferences.inc(len(clips))
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [(a, elapsed_ms) for a in answers]

    def refuse(self, status: int, message: str, headers: dict | None = None) -> JSONResponse:
        self.requests.labels(str(status)).inc()
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def caller(self, request: Request) -> str | None:
        """The token's identity when authorised (the client address when no tokens are configured)."""
        if not self.tokens:
            return request.client.host if request.client else "unknown"
        header = request.headers.get("authorization", "")
        given = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
        matched = None
        for i, token in enumerate(self.tokens):  # every token compared, in constant time each
            if hmac.compare_digest(given, token):
                matched = f"token-{i}"
        return matched

    async def admit(self, request: Request) -> EscalationRequest | JSONResponse:
        """The request as an escalation, or the refusal that names what is wrong with it."""
        settings = self.settings
        who = self.caller(request)
        if who is None:
            return self.refuse(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        wait = self.limiter.allow(who)
        if wait:
            return self.refuse(429, f"rate limit of {settings.rate_per_minute:g} requests per minute exceeded",
                               {"Retry-After": str(max(1, round(wait)))})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self.refuse(415, "send the escalation as application/json (see naturelm_edge.wire.schema)")
        declared = int(request.headers.get("content-length") or 0)
        if declared > settings.max_body_bytes:
            return self.refuse(413, f"request of {declared} bytes exceeds the limit of {settings.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                return self.refuse(413, f"request exceeds the limit of {settings.max_body_bytes} bytes")
        try:
            escalation = EscalationRequest(**json.loads(body))
        except (ValueError, TypeError) as err:
            return self.refuse(422, f"not an escalation request: {err}")
        if escalation.schema != SCHEMA:
            return self.refuse(422, f"schema {escalation.schema} is not supported (this server speaks {SCHEMA})")
        if not isinstance(escalation.sample_rate, int) or not 1_000 <= escalation.sample_rate <= 1_000_000:
            return self.refuse(422, f"sample_rate {escalation.sample_rate!r} is not a rate in Hz between 1000 and "
                                    "1000000")
        if not isinstance(escalation.question, str) or not escalation.question.strip():
            return self.refuse(422, "the question is empty")
        return escalation

    async def answer(self, escalation: EscalationRequest, started: float):  # noqa: ANN201 - stored JSON or refusal
        """The stored answer for this id, or one inference (shared by duplicates arriving meanwhile), stored."""
        stored = self.store.get(escalation.escalation_id)
        if stored is not None:
            self.requests.labels("200").inc()
            return stored
        try:
            audio = escalation.audio()
        except Exception:  # noqa: BLE001 - libsndfile says only that it cannot read it
            return self.refuse(415, "audio_flac_b64 holds no FLAC or WAV audio")
        if audio.size == 0 or not np.all(np.isfinite(audio)):
            return self.refuse(422, "the clip is empty or holds non-finite samples")
        key = escalation.escalation_id
        if key not in self.in_flight:  # a duplicate arriving meanwhile waits for this inference
            clip = self.clip(audio, escalation.sample_rate, escalation.question)
            self.in_flight[key] = asyncio.ensure_future(self.batcher.submit(clip))
        try:
            answer, elapsed_ms = await asyncio.shield(self.in_flight[key])
        except Exception as err:  # noqa: BLE001 - the model failed on this batch
            self.in_flight.pop(key, None)
            return self.refuse(500, f"the full model failed: {err}")
        reply = EscalationAnswer(key, answer.answer, answer.prompt, self.model.model_id, round(elapsed_ms, 2),
                                 scores=answer.scores)
        result = self.store.put(key, reply.to_json())
        self.in_flight.pop(key, None)
        self.latency.observe(time.perf_counter() - started)
        self.requests.labels("200").inc()
        return result


def create_app(settings: ServeSettings, model=None) -> FastAPI:  # noqa: ANN001 - FullModel
    """The FastAPI application; ``model`` defaults to the teacher in ``settings`` (loaded once)."""
    service = Escalations(settings, model or settings.model())

    @asynccontextmanager
    async def lifespan(_app):  # noqa: ANN001, ANN202
        service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="naturelm-edge escalation server", version=str(SCHEMA), lifespan=lifespan,
                  description="The full NatureLM-audio model answering windows that devices escalate. "
                              "Request and answer bodies are defined in naturelm_edge.wire.schema.")
    body_schema = TypeAdapter(EscalationRequest).json_schema()
    errors = {code: {"description": why} for code, why in (
        (401, "missing or wrong bearer token"), (413, "request too large"), (415, "not JSON, or the clip is not FLAC/WAV"),
        (422, "not an escalation request of this schema"), (429, "rate limit exceeded; see Retry-After"))}

    @app.post(PATH, response_model=EscalationAnswer, summary="Answer one escalated window with the full model",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
              responses=errors)
    async def escalate(request: Request):  # noqa: ANN202
        started = time.perf_counter()
        escalation = await service.admit(request)
        if isinstance(escalation, JSONResponse):
            return escalation
        return await service.answer(escalation, started)

    @app.get("/healthz", summary="Liveness: the model is loaded and the batcher runs")
    async def healthz() -> dict:
        return {"status": "ok", "queue_depth": service.batcher.depth}

    @app.get("/v1/model", summary="Which model answers, and how requests are batched and limited")
    async def model_info() -> dict:
        return {"model_id": service.model.model_id, "checkpoint": service.model.checkpoint,
                "device": service.model.device, "schema": SCHEMA, "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms, "max_body_bytes": settings.max_body_bytes,
                "rate_per_minute": settings.rate_per_minute, "auth": bool(service.tokens)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():  # noqa: ANN202
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.batcher, app.state.store = service.batcher, service.store
    return app


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` / gunicorn workers: settings come as JSON in $NATURELM_EDGE_SERVE_CONFIG."""
    return create_app(ServeSettings(**json.loads(os.environ[CONFIG_ENV])))


def settings_env(settings: ServeSettings) -> dict[str, str]:
    return {CONFIG_ENV: json.dumps(asdict(settings))}
