"""``edge export encoder``: NatureLM's audio path (fbank -> audio tokens) to one ONNX graph, verified.

The graph takes the normalised fbank of one clip per batch row (batch, 998, 128) and returns the audio
tokens the language model sees (batch, 29, hidden). fbank stays outside the graph: the device computes it
with :func:`naturelm_edge.audio.fbank`, the same function used here to verify the export.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from naturelm_edge.audio import fbank, load, prepare
from naturelm_edge.audio.files import list_audio
from naturelm_edge.errors import AudioError, ExportError
from naturelm_edge.export.onnx_export import ExportSpec, export_module
from naturelm_edge.export.parity import Parity, compare
from naturelm_edge.models.naturelm import AudioEncoder, NatureLM
from naturelm_edge.progress import Progress
from naturelm_edge.sample_data import pick_spread, shared_audio_dir, synthetic_soundscape

ENCODER_FILE = "encoder.onnx"
REPORT_FILE = "export_report.json"
DEFAULT_VERIFY_CLIPS = 6


def encoder_spec(model: NatureLM) -> ExportSpec:
    cfg = model.config
    return ExportSpec(
        role="encoder",
        input_names=["fbank"],
        output_names=["audio_tokens"],
        dynamic_axes={"fbank": {0: "batch"}, "audio_tokens": {0: "batch"}},
        example_inputs=lambda: (torch.zeros(1, cfg.fbank_frames, 128),),
        metadata={
            "naturelm_edge.role": "encoder",
            "naturelm_edge.sample_rate": str(cfg.sample_rate),
            "naturelm_edge.clip_seconds": str(cfg.clip_seconds),
            "naturelm_edge.audio_tokens": str(cfg.audio_tokens),
        },
    )


@dataclass
class VerificationClip:
    name: str
    wave: np.ndarray  # 16 kHz, prepared to clip length


@dataclass
class EncoderReport:
    """What ``export_report.json`` holds."""

    onnx_path: str
    onnx_bytes: int
    parameters: int
    export_seconds: float
    opset: int
    clips: list[str]
    parity: dict[str, dict]
    passed: bool
    source: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")


def verification_clips(paths: list[Path] | None, model: NatureLM, progress: Progress) -> list[VerificationClip]:
    """Clips to verify on: the given files (or folders), else the shared corpus, else synthetic audio."""
    cfg = model.config
    length = int(cfg.clip_seconds * cfg.sample_rate)
    files: list[Path] = []
    for path in paths or []:
        files.extend(list_audio(path) if path.is_dir() else [path])
    if not paths:
        shared = shared_audio_dir()
        files = pick_spread(list_audio(shared), DEFAULT_VERIFY_CLIPS) if shared else []
    if paths and not files:
        raise AudioError(f"{', '.join(map(str, paths))}: no audio files to verify on.")
    if not files:
        progress.note("no recordings found: verifying on a synthetic soundscape")
        wave = synthetic_soundscape(cfg.clip_seconds * 2, cfg.sample_rate)
        return [VerificationClip("synthetic-0", prepare(wave, length)), VerificationClip("synthetic-1", prepare(wave[length:], length))]
    return [VerificationClip(str(f), prepare(load(f, cfg.sample_rate, cfg.clip_seconds), length)) for f in files]


def verify(onnx_path: Path, model: NatureLM, clips: list[VerificationClip], threads: int = 1) -> Parity:
    """Run the ONNX graph and PyTorch on the same fbank batch; compare the audio tokens."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    features = np.stack([fbank(clip.wave) for clip in clips])
    got = session.run(["audio_tokens"], {"fbank": features})[0]
    with torch.no_grad():
        want = model.encode_audio(torch.from_numpy(features)).numpy()
    return compare("audio_tokens", want, got)


def export_encoder(
    model: NatureLM,
    out_dir: Path,
    verify_audio: list[Path] | None = None,
    source: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> EncoderReport:
    """Export, verify on real audio, write ``encoder.onnx`` and ``export_report.json``.

    Raises :class:`ExportError` after writing the report when parity misses.
    """
    progress = progress or Progress(quiet=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.beats.fold_weight_norm()
    spec = encoder_spec(model)
    onnx_path = out_dir / ENCODER_FILE
    with progress.step("exporting encoder to ONNX"):
        seconds = export_module(AudioEncoder(model), spec, onnx_path)
    with progress.step("decoding verification audio"):
        clips = verification_clips(verify_audio, model, progress)
    with progress.step(f"verifying on {len(clips)} clips"):
        start = time.perf_counter()
        parity = verify(onnx_path, model, clips)
        progress.note(f"verification took {time.perf_counter() - start:.1f} s")
    report = EncoderReport(
        onnx_path=str(onnx_path),
        onnx_bytes=onnx_path.stat().st_size,
        parameters=sum(p.numel() for p in model.parameters()) - _unused_parameters(model),
        export_seconds=round(seconds, 3),
        opset=spec.opset,
        clips=[clip.name for clip in clips],
        parity={parity.name: parity.to_dict()},
        passed=parity.passed,
        source=source or {},
    )
    report.write(out_dir / REPORT_FILE)
    if not parity.passed:
        raise ExportError(
            f"{onnx_path}: ONNX output differs from PyTorch (min cosine {parity.min_cosine:.6f}, "
            f"max error {parity.relative_error:.2e} of scale); see {out_dir / REPORT_FILE}."
        )
    return report


def _unused_parameters(model: NatureLM) -> int:
    """The AudioSet predictor head is stored in the checkpoint but not part of the exported graph."""
    predictor = getattr(model.beats, "predictor", None)
    return sum(p.numel() for p in predictor.parameters()) if predictor is not None else 0
