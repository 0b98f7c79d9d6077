"""The Python API: a bundle as a model object, and a lazy generator of what it hears.

    from naturelm_edge import EdgeModel

    model = EdgeModel("bundle/")
    for r in model.detect("dawn.wav"):
        if r.detection:
            print(r.offset_s, r.label or r.answer, r.confidence)

``detect`` runs the same window pipeline as ``edge-run`` (gate, detector, encoder, decoder, labels) and
yields one :class:`WindowResult` per window as it is computed; it writes nothing to disk and never
contacts the full model (``escalation`` still says which windows ``edge-run`` would send it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from naturelm_edge.audio import resample
from naturelm_edge.bundle import roles
from naturelm_edge.bundle.open import Bundle, load_bundle
from naturelm_edge.device_profiles import Profile, detect, get
from naturelm_edge.edge_runtime.detector import DEFAULT_FLOOR, SiteFloor
from naturelm_edge.edge_runtime.engine import Engine
from naturelm_edge.edge_runtime.escalation import EscalationPolicy
from naturelm_edge.edge_runtime.gate import GateSettings
from naturelm_edge.edge_runtime.pipeline import WindowPipeline, WindowResult
from naturelm_edge.edge_runtime.settings import RunFlags, RunSettings
from naturelm_edge.edge_runtime.sources import Source, file_sources
from naturelm_edge.errors import EdgeError


class EdgeModel:
    """One bundle's on-device models, loaded once, with sessions set up for a device profile.

    ``profile``: a profile name or object (default: the detected device). ``detector``: use the bundle's
    detection stage when it has one. ``gate``: gate settings (``GateSettings(enabled=False)`` sends every
    window to the models). ``site_floor``: how the detector's threshold follows each recorder's background
    (:class:`~naturelm_edge.edge_runtime.detector.SiteFloor`; None: the bundle's threshold alone).
    ``trusted_keys``: only accept bundles signed by these keys.
    """

    def __init__(self, bundle: str | Path | Bundle, profile: str | Profile | None = None, detector: bool = True,
                 detector_threshold: float | None = None, gate: GateSettings | None = None,
                 site_floor: SiteFloor | None = DEFAULT_FLOOR, trusted_keys: Path | None = None) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle), trusted_keys)
        self.profile = profile if isinstance(profile, Profile) else get(profile) if profile else detect()
        self.engine = Engine(self.bundle, self.profile, detector, detector_threshold, site_floor)
        self.gate = gate

    @property
    def labels(self) -> list[str]:
        return self.engine.labels

    def detect(self, audio: str | Path | Iterable[str | Path] | np.ndarray, sample_rate: int | None = None,
               time_expansion: float | None = None) -> Iterator[WindowResult]:
        """Every window of ``audio`` (a recording, a folder, several, or a mono array at ``sample_rate``), lazily.

        Recordings in a folder come in recorder-time order, each with a noise floor of its own.
        ``time_expansion`` defaults as in ``edge-run``: the profile's, then the bundle's.
        """
        settings = RunSettings.resolve(RunFlags(time_expansion=time_expansion), self.profile, self.bundle)
        expansion = settings.time_expansion
        pipeline = WindowPipeline(self.engine, self.gate)
        policy = EscalationPolicy.for_profile(settings.escalation, 
                                            unsure_silence=self.bundle.answer_kind == roles.SCORES)
        for source in self._sources(audio, sample_rate, expansion):
            for result in pipeline.run(source):
                reason = policy.judge(result, self.engine.labels).reason
                yield replace(result, escalation=reason) if reason else result

    def _sources(self, audio: str | Path | Iterable[str | Path] | np.ndarray, sample_rate: int | None,
                 expansion: float) -> list[Source]:
        spec = self.bundle.audio.spec
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise EdgeError("give sample_rate= with an array of samples.")
            if audio.ndim != 1:
                raise EdgeError(f"expected mono samples (one dimension), got an array of shape {audio.shape}.")
            model_rate = resample(audio.astype(np.float32), sample_rate / expansion, spec.sample_rate)
            return [Source("array", None, expansion, lambda: iter([model_rate]))]
        paths = [Path(audio)] if isinstance(audio, (str, Path)) else [Path(p) for p in audio]
        return file_sources(paths, spec, expansion)


__all__ = ["EdgeModel", "WindowResult"]
