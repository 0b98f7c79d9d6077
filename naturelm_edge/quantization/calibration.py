"""Calibration data: held-out species' windows through exactly the runtime's front end.

The encoder is calibrated on fbank windows; the decoder on the inputs it really sees, produced by running
the fp32 encoder and the fp32 decoder's own greedy generation (the prefill and every cached step).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from naturelm_edge.audio import DEFAULT_SETTINGS, FbankSettings, WindowSpec, window_features
from naturelm_edge.errors import AudioError, EdgeError


class CalibrationError(EdgeError):
    """Not enough usable audio to calibrate on."""


@dataclass
class CalibrationSet:
    """The windows quantization is calibrated on, and what they are (for the report and the cache key)."""

    files: list[Path]
    features: np.ndarray  # (windows, frames, 128)
    sources: list[str]  # file of each window
    skipped: list[str]
    starts: list[int]  # the sample each window starts at in its file (its teacher cache key, with the file)

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.features).tobytes())
        return h.hexdigest()[:24]


def calibration_set(files: list[Path], spec: WindowSpec, max_windows: int = 64, min_windows: int = 4,
                    where: str = "calibration audio", settings: FbankSettings = DEFAULT_SETTINGS) -> CalibrationSet:
    """Up to ``max_windows`` windows spread over ``files`` (round-robin, so no file dominates), with the fbank
    of the bundle's contract (``settings``)."""
    if not files:
        raise CalibrationError(f"{where}: no recordings of the held-out species to calibrate on.")
    per_file: list[list[tuple[int, np.ndarray]]] = []
    skipped = []
    kept_files = []
    for path in files:
        try:
            windows = [(window.start, feats) for window, feats in window_features(path, spec, settings=settings)]
        except AudioError as err:
            skipped.append(str(err))
            continue
        per_file.append(windows)
        kept_files.append(path)
    features, sources, starts = [], [], []
    depth = 0
    while len(features) < max_windows and any(depth < len(w) for w in per_file):
        for path, windows in zip(kept_files, per_file):
            if depth < len(windows) and len(features) < max_windows:
                starts.append(windows[depth][0])
                features.append(windows[depth][1])
                sources.append(str(path))
        depth += 1
    if len(features) < min_windows:
        raise CalibrationError(
            f"{where}: only {len(features)} usable windows of held-out species, at least {min_windows} are needed."
        )
    return CalibrationSet(kept_files, np.stack(features).astype(np.float32), sources, skipped, starts)


class ArrayReader(CalibrationDataReader):
    """Feeds a list of input dicts to onnxruntime's calibrators (rewindable)."""

    def __init__(self, inputs: list[dict[str, np.ndarray]]) -> None:
        self.inputs = inputs
        self._iter: Iterator[dict[str, np.ndarray]] = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.inputs)

    def __len__(self) -> int:
        return len(self.inputs)


def encoder_inputs(calibration: CalibrationSet) -> list[dict[str, np.ndarray]]:
    return [{"fbank": f[None]} for f in calibration.features]


def decoder_inputs(decoder, audio_tokens: np.ndarray, questions: list[str], max_steps: int = 8) -> list[dict[str, np.ndarray]]:  # noqa: ANN001
    """Inputs of every decoder run during fp32 greedy generation: the prefill and each cached step."""
    inputs = []
    for tokens in audio_tokens:
        for question in questions:
            past = decoder.empty_past(1)
            embeds = decoder.prompt_embeds(tokens, question)
            for _ in range(max_steps):
                inputs.append({"inputs_embeds": embeds, **past})
                logits, past = decoder.step(embeds, past)
                token = int(np.argmax(logits[0]))
                if token in decoder.stop_student:
                    break
                embeds = decoder.embed_tokens[[token]][None]
    return inputs
