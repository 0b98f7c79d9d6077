"""The one table of what a bundle holds: every file's role, its name, its kind, and who reads it.

``edge build``, ``extend_bundle``, the engine and the decoder all name files through these roles, never
through literals, so a role added here (a student encoder, a speech filter) is one row and its readers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str  # the manifest's ``role`` field
    file: str  # where ``edge build`` puts it in the bundle
    kind: str  # onnx | npz | json | tokenizer
    required: bool  # a text bundle (a decoder that answers questions) cannot run without it
    reader: str  # the code that opens it


ENCODER = Role("encoder", "encoder.onnx", "onnx", True,
               "edge_runtime.engine: fbank -> audio tokens (a scores bundle's: fbank -> one logit per label)")
DECODER = Role("decoder", "decoder.onnx", "onnx", True, "edge_runtime.decoder: the student with its KV cache")
DECODER_TABLES = Role("decoder-tables", "decoder_tables.npz", "npz", True,
                      "edge_runtime.decoder: token embeddings and the audio projection")
DECODER_CONFIG = Role("decoder-config", "decoder.json", "json", True,
                      "edge_runtime.decoder: trimmed vocabulary, stop ids, prompt template")
TOKENIZER = Role("tokenizer", "tokenizer.json", "tokenizer", True, "edge_runtime.decoder: text <-> teacher ids")
DETECTOR = Role("detector", "detector.onnx", "onnx", False, "edge_runtime.detector: the cascade's detection stage")
SPEECH = Role("speech", "speech_vad.onnx", "onnx", False,
              "edge_runtime.speech: human speech in a window (Silero VAD), for the privacy filter")
REPORT = Role("report", "reports/", "json", False, "people: export, distillation and quantization reports")

ROLES: dict[str, Role] = {r.name: r for r in (ENCODER, DECODER, DECODER_TABLES, DECODER_CONFIG, TOKENIZER, DETECTOR,
                                               SPEECH, REPORT)}
REQUIRED = tuple(r for r in ROLES.values() if r.required)
TEXT, SCORES = "text", "scores"  # what a bundle answers with (its teacher's kind; the manifest's ``answers.kind``)


def required(answers: str) -> tuple[Role, ...]:
    """The roles a bundle cannot run without: a scores bundle's encoder answers by itself, without a decoder."""
    return REQUIRED if answers == TEXT else (ENCODER,)
