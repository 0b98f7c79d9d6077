"""Silero VAD's ONNX model, taken from the installed ``silero-vad`` wheel into a bundle.

The wheel depends on torch, so only the export side installs it; nothing here imports it (the file is found
from the package's location), and the device runs the ONNX file with onnxruntime alone. The sequence
variant is taken: it scores every 32 ms frame of a window in one call, where the streaming model needs a
Python loop of 312 calls per 10 s window.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from naturelm_edge.errors import EdgeError

PACKAGE, DISTRIBUTION = "silero_vad", "silero-vad"
SEQUENCE_MODEL = "data/silero_vad_16k_sequence.onnx"
STREAMING_MODEL = "data/silero_vad.onnx"  # the stock frame-by-frame model, to prove the sequence one equal


def silero_file(name: str = SEQUENCE_MODEL) -> Path:
    """A file of the installed silero-vad package; one sentence when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError("silero-vad is not installed: `pip install -e '.[export]'` brings it (the privacy "
                        "filter's speech model comes from its wheel).")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise EdgeError(f"{path}: this silero-vad version has no {name}; install silero-vad 6.2 or later.")
    return path


def provenance() -> dict:
    """What the manifest records about the speech model: where it comes from, its version and licence."""
    meta = importlib.metadata.metadata(DISTRIBUTION)
    licence = meta.get("License-Expression") or next(
        (c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")), "")
    return {"model": "Silero VAD", "package": f"{DISTRIBUTION} {meta['Version']}", "file": SEQUENCE_MODEL,
            "licence": licence or "MIT", "url": "https://github.com/snakers4/silero-vad", "sample_rate": 16_000}


def speech_addition() -> dict:
    """The speech model as ``stage_files``/``extend_bundle`` take it: {source: (path, role, precision)}."""
    from naturelm_edge.bundle import roles

    return {silero_file(): (roles.SPEECH.file, roles.SPEECH, "fp32")}


def add_speech(bundle_dir: Path, out: Path | None = None) -> Path:
    """A bundle with the speech model (in place when ``out`` is None: written beside, then swapped)."""
    from naturelm_edge.bundle.open import extend_bundle, load_bundle

    bundle = load_bundle(bundle_dir)
    return extend_bundle(bundle, out or Path(bundle_dir), speech_addition(), speech_filter=provenance())
