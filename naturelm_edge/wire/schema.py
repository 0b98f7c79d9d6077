"""The escalation API, version 1: one module for both sides (device client and server).

``POST /v1/escalations`` with a JSON body::

    {"schema": 1, "escalation_id": "<bundle id>:<event id>", "question": "...", "sample_rate": 16000,
     "audio_flac_b64": "<base64 FLAC, mono>", "metadata": {"source": ..., "start_utc": ..., "offset_s": ...,
     "device_answer": ..., "device_confidence": ..., "bundle_id": ...}}

answered with ``{"schema": 1, "escalation_id": ..., "answer": "...", "prompt": "...", "model_id": "...",
"timing_ms": 12.3, "scores": [...]}`` (``scores``: a scores teacher's best labels with their confidence; empty
from NatureLM). The escalation id makes retries idempotent: the same id gets the same answer.
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

SCHEMA = 1
PATH = "/v1/escalations"
MAX_AUDIO_BYTES = 4 * 1024 * 1024


def read_tokens(path: str | Path) -> list[str]:
    """Bearer tokens from a file, one per line; blank lines and ``#`` comments are skipped.

    The server accepts any of them; a device sends the first.
    """
    lines = Path(path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class EscalationRequest:
    escalation_id: str
    question: str
    sample_rate: int
    audio_flac_b64: str
    metadata: dict = field(default_factory=dict)
    schema: int = SCHEMA

    @classmethod
    def build(cls, escalation_id: str, question: str, audio: np.ndarray, sample_rate: int, metadata: dict) -> EscalationRequest:
        buffer = io.BytesIO()
        sf.write(buffer, np.asarray(audio, np.float32), sample_rate, format="FLAC", subtype="PCM_16")
        return cls(escalation_id, question, sample_rate, base64.b64encode(buffer.getvalue()).decode(), metadata)

    def audio(self) -> np.ndarray:
        data, _ = sf.read(io.BytesIO(base64.b64decode(self.audio_flac_b64)), dtype="float32")
        return data if data.ndim == 1 else data.mean(axis=1)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class EscalationAnswer:
    escalation_id: str
    answer: str
    prompt: str
    model_id: str
    timing_ms: float
    schema: int = SCHEMA
    scores: list = field(default_factory=list)  # a scores teacher's best labels: {label, scientific, confidence}

    def to_json(self) -> dict:
        return asdict(self)
