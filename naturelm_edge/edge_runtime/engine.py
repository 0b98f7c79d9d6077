"""The on-device models of a bundle, with sessions created once per the device profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.bundle import roles
from naturelm_edge.bundle.contract import BundleError
from naturelm_edge.bundle.open import Bundle
from naturelm_edge.device_profiles import Profile
from naturelm_edge.edge_runtime.decoder import Answer, OnnxDecoder
from naturelm_edge.edge_runtime.detector import DEFAULT_FLOOR, POOL_SHARPNESS, Detector, SiteFloor
from naturelm_edge.edge_runtime.labels import Snapped, snap
from naturelm_edge.edge_runtime.scores import ScoreAnswers
from naturelm_edge.edge_runtime.speech import SpeechFilter

log = logging.getLogger(__name__)


def providers_for(profile: Profile) -> tuple[list, list[str]]:
    """The profile's providers that this onnxruntime has, in order, plus the names it lacks."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen, missing = [], []
    for provider in profile.providers:
        if provider.name in available:
            options = {k: (str(Path(v).expanduser()) if isinstance(v, str) and v.startswith("~") else v)
                       for k, v in provider.options.items()}
            chosen.append((provider.name, options) if options else provider.name)
        else:
            missing.append(provider.name)
    if not chosen:
        chosen = ["CPUExecutionProvider"]
    return chosen, missing


def session_options(profile: Profile):  # noqa: ANN201 - onnxruntime.SessionOptions
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = profile.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not profile.runtime.get("spinning", False):
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile.runtime.get("low_memory", False):
        # prepacked copies of the int8 weights (~60 MB of the official encoder's) and the per-shape memory
        # pattern (~40 MB of planned buffers) trade RAM for a few per cent of speed; boards that share 4-8 GB
        # between CPU and GPU want the RAM back. Without the CPU arena, freed tensors go back to the allocator
        # (17 MB less peak RSS for a student bundle with its detector).
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_mem_pattern = False
        options.enable_cpu_mem_arena = False
    return options


def bound_audio_threads(profile: Profile) -> None:
    """numpy's BLAS pool held to the profile's ``audio_threads``, for the whole process: OpenBLAS otherwise keeps a
    thread per core that spins after every small matmul of the audio path (the fbank's mel projection), which
    doubled the CPU-seconds of a 48 kHz bundle's window path on two cores and takes cores a device shares."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=profile.audio_threads, user_api="blas")


def encode(session, features: np.ndarray) -> np.ndarray:  # noqa: ANN001 - onnxruntime.InferenceSession
    """Audio tokens (tokens, dim) of one window's fbank (frames, 128) through an encoder session."""
    return session.run(None, {"fbank": features[None].astype(np.float32)})[0][0]


@dataclass
class WindowAnswer:
    question: str
    answer: Answer
    snapped: Snapped | None


class Engine:
    """Encoder + decoder (+ detector) sessions of one bundle; ``missing`` names profile providers this machine lacks.

    A scores bundle has no decoder: its encoder's logits are read by :class:`ScoreAnswers` instead.

    ``detector``: use the bundle's detection stage when it has one; ``detector_threshold`` overrides the
    threshold the bundle was built with (lower keeps more calls and runs the encoder more often);
    ``site_floor``: how the detector's threshold follows each recorder's background (None: it does not).
    """

    def __init__(self, bundle: Bundle, profile: Profile, detector: bool = True,
                 detector_threshold: float | None = None, site_floor: SiteFloor | None = DEFAULT_FLOOR) -> None:
        import onnxruntime as ort

        self.bundle, self.profile = bundle, profile
        bound_audio_threads(profile)
        if bundle.answer_kind == roles.TEXT and bundle.encoder_kind == "student" and profile.encoder == "full":
            raise BundleError(f"{bundle.root}: this bundle carries the distilled student encoder, and profile "
                              f"{profile.name} asks for NatureLM's full one (its device can run it); build one for "
                              f"this profile with `edge build --profile {profile.name}`.")
        providers, self.missing = providers_for(profile)
        if self.missing:
            log.warning("providers %s are not available here; falling back to %s", ", ".join(self.missing),
                        ", ".join(p if isinstance(p, str) else p[0] for p in providers))
        self.encoder = ort.InferenceSession(str(bundle.encoder), session_options(profile), providers=providers)
        self.decoder = OnnxDecoder(bundle.decoder, providers=providers, session_options=session_options(profile)) \
            if bundle.answer_kind == roles.TEXT \
            else ScoreAnswers(bundle.labels, bundle.threshold, bundle.presence, bundle.support)
        self.detector: Detector | None = None
        spec = bundle.detector
        if detector and spec is not None:
            self.detector = Detector(ort.InferenceSession(str(spec.model), session_options(profile), providers=providers),
                                     spec.threshold if detector_threshold is None else detector_threshold,
                                     spec.pool_sharpness or POOL_SHARPNESS, bundle.audio.fbank, site_floor)
        # the privacy filter's speech model: small and single-threaded on the CPU, whatever the profile
        self.speech = SpeechFilter(bundle.file(roles.SPEECH), rate=bundle.audio.spec.sample_rate) \
            if bundle.has(roles.SPEECH) else None
        self.providers = self.encoder.get_providers()
        self.labels = bundle.labels
        self.questions = bundle.questions

    def audio_tokens(self, features: np.ndarray) -> np.ndarray:
        return encode(self.encoder, features)

    def answer(self, tokens: np.ndarray, question: str | None = None) -> WindowAnswer:
        question = question or self.questions[0]
        answer = self.decoder.generate(tokens, question)
        return WindowAnswer(question, answer, snap(answer.text, self.labels) if self.labels else None)
