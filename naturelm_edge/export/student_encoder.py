"""The student encoder's export stage: train it (:mod:`naturelm_edge.distill.encoder`), write it as the bundle's
encoder graph, and the teacher cache with its tokens for tuning the decoder on them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from naturelm_edge.audio import WindowSpec, window_features
from naturelm_edge.distill.cache import window_key
from naturelm_edge.distill.encoder import (
    ARCHITECTURES,
    ONNX_FILE,
    REPORT_FILE,
    TOKENS_DIR,
    EncoderStudentConfig,
    StudentEncoderError,
    TeacherPath,
    every_fifth,
    fidelity,
    prepare_views,
    train_student_encoder,
)


def export_student_encoder(net, path: Path, teacher: TeacherPath) -> None:  # noqa: ANN001 - the student module
    """The student as the bundle's encoder graph: fbank (batch, 998, 128) -> audio_tokens (batch, 29, llm width)."""
    import torch

    from naturelm_edge.audio import DEFAULT_SETTINGS
    from naturelm_edge.bundle import roles
    from naturelm_edge.export.onnx_export import ExportSpec, export_module

    frames = DEFAULT_SETTINGS.num_frames(WindowSpec().window)
    example = torch.zeros(1, frames, DEFAULT_SETTINGS.num_mel_bins)
    with torch.no_grad():
        tokens = net(example).shape[1]  # also fixes the pooling matrix for this window length
    export_module(net, ExportSpec(
        role=roles.ENCODER.name, input_names=["fbank"], output_names=["audio_tokens"],
        dynamic_axes={"fbank": {0: "batch"}, "audio_tokens": {0: "batch"}}, example_inputs=lambda: (example,),
        metadata={"naturelm_edge.role": roles.ENCODER.name, "naturelm_edge.encoder": "student",
                  "naturelm_edge.teacher": teacher.identity, "naturelm_edge.audio_tokens": str(tokens)}), path)


def distill_encoder(teacher: TeacherPath, audio: Path, out: Path, config: EncoderStudentConfig,
                    held_out: Callable[[str, int], bool] | None = None, progress=None) -> dict:  # noqa: ANN001
    """``edge distill encoder``: views and teacher tokens, training, fidelity on held-back recordings, ONNX.

    ``held_out(relative path, index in the folder)`` says which recordings only judge; default every fifth.
    """
    if config.arch not in ARCHITECTURES:
        raise StudentEncoderError(f"--arch {config.arch}: choose one of {', '.join(ARCHITECTURES)}.")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    views = prepare_views(audio, out, teacher, config, held_out or every_fifth, progress)
    net, training = train_student_encoder(views, out, teacher, config, progress)
    report = {"teacher": teacher.identity, "config": asdict(config), "encoder": "student",
              "windows": len({k.rsplit("-", 1)[0] for k in views.keys}), "views": len(views.keys),
              "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
              "training": training,
              "fidelity_held_back": fidelity(net, views, out / TOKENS_DIR), "seconds": time.perf_counter() - started}
    export_student_encoder(net, out / ONNX_FILE, teacher)
    report["onnx_bytes"] = (out / ONNX_FILE).stat().st_size
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


TEACHER_COPY = "~full"  # suffix of a window's key whose tokens are the full encoder's in the decoder's tuning cache


def student_token_cache(cache_dir: Path, audio_root: Path, encoder: Path, out: Path) -> Path:
    """The teacher cache's answers, each once: half with the student encoder's tokens of its window, half (by a
    hash of its key, its window's key suffixed :data:`TEACHER_COPY`) with the full encoder's, so the decoder tuned
    on it answers the same whichever encoder feeds it, every window seen through both. Tuned on the student's
    tokens alone it drifts from what the full encoder's tokens make it answer: on the taught tiny teacher, the
    two paths then agreed on 79 % of distillation windows, and 96 % tuned on both. Each answer once costs half
    of every answer twice: on the small shared set 37 steps where 74 took 53 s, the device's answers then equal
    to the full encoder's on 89 % of held-out and 100 % of distillation windows (100 % and 90 % with both)."""
    import os
    import shutil
    import zlib

    from naturelm_edge.distill.cache import META_FILE, TeacherCache
    from naturelm_edge.quantization.report import session

    cache = TeacherCache(cache_dir)
    shutil.rmtree(out, ignore_errors=True)
    (out / "audio").mkdir(parents=True)
    shutil.copy2(cache.root / META_FILE, out / META_FILE)
    if (cache.root / "tokenizer").is_dir():
        shutil.copytree(cache.root / "tokenizer", out / "tokenizer")
    tuned = TeacherCache(out)
    spec, student, records = WindowSpec(cache.meta.window_s, cache.meta.hop_s), session(encoder), list(cache.records())
    for file in sorted({r["file"] for r in records}):
        for window, features in window_features(audio_root / file, spec):
            key = window_key(file, window.start)
            if cache.has_audio(key):
                tuned.put_audio(key, student.run(None, {"fbank": features[None].astype(np.float32)})[0][0])
                try:
                    os.link(cache.audio_path(key), tuned.audio_path(key + TEACHER_COPY))
                except OSError:  # another file system: a copy
                    shutil.copy2(cache.audio_path(key), tuned.audio_path(key + TEACHER_COPY))
    either = []
    for record in (r for r in records if tuned.has_audio(r["window"])):
        if zlib.crc32(record["key"].encode()) & 1:
            window = record["window"] + TEACHER_COPY
            record = {**record, "window": window, "key": f"{window}:{record['task']}"}
        either.append(record)
    tuned.extend(either)
    return out
