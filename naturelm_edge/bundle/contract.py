"""What a bundle promises the runtime, read once and typed: its audio front end, its files by role.

The manifest records the sample rate, window, hop, time expansion and every fbank setting the models were
exported and calibrated with; the runtime computes features with exactly these and refuses, in one
sentence, a bundle whose settings it cannot honour (a window the encoder's input cannot take, fbank
settings this version does not know, a hop that would leave audio unheard, a required file missing).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from naturelm_edge.audio import FbankSettings, WindowSpec
from naturelm_edge.bundle import roles
from naturelm_edge.errors import EdgeError


class BundleError(EdgeError):
    """A bundle that is incomplete, altered, of an unknown schema, not trusted, or not runnable here."""


@dataclass(frozen=True)
class AudioContract:
    """The front end the bundle's models expect: windows at the model's rate and the fbank settings."""

    spec: WindowSpec
    fbank: FbankSettings
    time_expansion: float = 1.0

    @property
    def frames(self) -> int:
        """fbank frames of one full window (the encoder's fixed input length)."""
        return self.fbank.num_frames(self.spec.window)


@dataclass(frozen=True)
class DecoderFiles:
    model: Path
    tables: Path
    config: Path
    tokenizer: Path


@dataclass(frozen=True)
class DetectorSpec:
    model: Path
    threshold: float
    pool_sharpness: float | None  # None: the runtime's default


def read_audio(section: dict, where: str) -> AudioContract:
    """The manifest's ``audio`` section as a contract; anything this runtime could not honour is refused."""
    known = {f.name for f in fields(FbankSettings)}
    stored = dict(section.get("fbank") or {})
    unknown = sorted(set(stored) - known)
    if unknown:
        raise BundleError(f"{where}: audio.fbank has settings this naturelm-edge does not know ({', '.join(unknown)}); "
                          "upgrade naturelm-edge on this device.")
    try:
        settings = FbankSettings(**stored)
        spec = WindowSpec(float(section["window_s"]), float(section["hop_s"]), int(section["sample_rate"]))
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{where}: the manifest's audio section is incomplete or invalid ({err}).") from err
    if settings.sample_rate != spec.sample_rate:
        raise BundleError(f"{where}: audio.fbank.sample_rate {settings.sample_rate} differs from audio.sample_rate "
                          f"{spec.sample_rate}.")
    if settings.precision not in ("float32", "float64"):
        raise BundleError(f"{where}: audio.fbank.precision {settings.precision!r} must be float32 or float64.")
    if settings.frame_shift <= 0 or settings.frame_length < settings.frame_shift or settings.num_mel_bins <= 0:
        raise BundleError(f"{where}: audio.fbank frames of {settings.frame_length_ms} ms every "
                          f"{settings.frame_shift_ms} ms with {settings.num_mel_bins} mel bins cannot be computed.")
    if spec.hop > spec.window:
        raise BundleError(f"{where}: a hop of {spec.hop_s} s is longer than the {spec.window_s} s window; "
                          "audio between windows would never be heard.")
    expansion = float(section.get("time_expansion") or 1.0)
    if expansion <= 0:
        raise BundleError(f"{where}: audio.time_expansion {expansion} must be positive.")
    return AudioContract(spec, settings, expansion)


def check_model_input(entry: dict, audio: AudioContract, where: str) -> None:
    """An fbank-reading ONNX model whose fixed input shape differs from the bundle's windows is refused."""
    for spec in entry.get("inputs") or []:
        if spec.get("name") != "fbank":
            continue
        frames, bins = spec["shape"][1:3]
        if isinstance(bins, int) and bins != audio.fbank.num_mel_bins:
            raise BundleError(f"{where}: {entry['path']} reads {bins} mel bins, the bundle's fbank gives "
                              f"{audio.fbank.num_mel_bins}.")
        if isinstance(frames, int) and frames != audio.frames:
            raise BundleError(f"{where}: {entry['path']} reads {frames} frames, the bundle's {audio.spec.window_s} s "
                              f"window and {audio.fbank.frame_shift_ms} ms frame shift give {audio.frames}.")


def check_roles(entries: list[dict], audio: AudioContract, where: str, answers: str = roles.TEXT) -> None:
    """Every required role present, each role once, every fbank reader shaped for the bundle's windows."""
    present = [e["role"] for e in entries]
    missing = [r.name for r in roles.required(answers) if r.name not in present]
    if missing:
        raise BundleError(f"{where}: the bundle has no {', '.join(missing)} file; rebuild it with `edge build`.")
    doubled = sorted({r for r in present if r != roles.REPORT.name and present.count(r) > 1})
    if doubled:
        raise BundleError(f"{where}: the manifest lists more than one {', '.join(doubled)} file.")
    for entry in entries:
        if entry["role"] in (roles.ENCODER.name, roles.DETECTOR.name):
            check_model_input(entry, audio, where)
