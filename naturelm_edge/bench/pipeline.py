"""Measure a bundle the way ``edge-run`` uses it: decode -> fbank -> gate -> detector -> encoder -> decoder -> store.

Windows go through the runtime's own :class:`WindowPipeline` with this module's stage clock; nothing is
re-implemented for the benchmark, so what it reports is what a device pays. The escalation round trip is measured separately
against a loopback server that speaks the API (network and encoding cost, not the full model's).
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from naturelm_edge.audio import fbank
from naturelm_edge.bench.clock import StageClock
from naturelm_edge.bundle import roles
from naturelm_edge.bundle.open import Bundle
from naturelm_edge.device_profiles import Profile
from naturelm_edge.edge_runtime.engine import Engine, encode, session_options
from naturelm_edge.edge_runtime.gate import GateSettings
from naturelm_edge.edge_runtime.pipeline import WindowPipeline
from naturelm_edge.edge_runtime.sources import Source, file_sources
from naturelm_edge.edge_runtime.store import EventStore
from naturelm_edge.errors import AudioError

# Stages that every window pays for: the screening that decides whether the models run.
SCREENING = ("decode", "fbank", "gate", "speech", "detector", "store")
# Stages paid only by windows that reach the models (the answer in words).
ANSWERING = ("encoder", "decoder")
# Everything edge-run spends on the audio: its cost per hour.
ALWAYS_ON = (*SCREENING, *ANSWERING)
# Parts of the decoder stage, reported for latency only (their time is already in "decoder").
DECODER_PARTS = ("decoder_prefill", "decoder_token")


@dataclass
class BenchSettings:
    quick: bool = False
    time_expansion: float = 1.0
    gate: GateSettings = field(default_factory=GateSettings)
    escalation_rounds: int = 20
    encoder: Path | None = None  # measure this encoder ONNX instead of the bundle's (e.g. the official size)

    @property
    def max_windows(self) -> int | None:
        return 8 if self.quick else None


def _status_mb(field_name: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb() -> float:
    """Resident memory now (MB)."""
    return _status_mb("VmRSS") or float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB).

    VmHWM belongs to the address space, so it starts afresh at exec; getrusage's maxrss survives exec and
    would report the memory of whatever process forked this one (a test runner holding torch).
    """
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_decoder_steps(engine: Engine, clock: StageClock) -> None:
    """Split the decoder's time into prefill (the whole prompt) and per generated token."""
    step = engine.decoder.step

    def timed(embeds: np.ndarray, past: dict[str, np.ndarray]):  # noqa: ANN202
        prefill = next(iter(past.values())).shape[2] == 0
        with clock("decoder_prefill" if prefill else "decoder_token"):
            return step(embeds, past)

    engine.decoder.step = timed  # type: ignore[method-assign]


class Measurement:
    """Loads the bundle once, then times every window of the given recordings through the runtime's pipeline."""

    def __init__(self, bundle: Bundle, profile: Profile, settings: BenchSettings) -> None:
        self.bundle, self.profile, self.settings = bundle, profile, settings
        self.clock = StageClock()
        self.spec = bundle.audio.spec
        self.rss_before_load = rss_mb()
        started = time.perf_counter()
        self.engine = Engine(bundle, profile)
        self.encoder = self.engine.encoder
        if settings.encoder is not None:
            import onnxruntime as ort

            self.encoder = ort.InferenceSession(str(settings.encoder), session_options(profile),
                                                providers=self.engine.encoder.get_providers())
        self.load_s = time.perf_counter() - started
        self.model_rss_mb = rss_mb() - self.rss_before_load
        self.own_tokens_fit = True  # settled by warm_up: do the measured encoder's tokens fit the decoder?
        # the privacy filter as edge-run runs it by default, when the bundle carries its speech model
        self.pipeline = WindowPipeline(self.engine, settings.gate, timed=self.clock, encode=self._encode,
                                       privacy="drop" if self.engine.speech is not None else "off")
        self.windows = 0
        self.outcomes: Counter[str] = Counter()  # screening outcome -> windows
        self.audio_s = 0.0
        self.files: list[tuple[str, float]] = []  # (recording, real seconds measured)
        self.failed: list[str] = []

    def _encode(self, features: np.ndarray, timed) -> np.ndarray:  # noqa: ANN001 - the stage clock
        """The measured encoder, timed; when its tokens do not fit the bundle's decoder (another width), the
        bundle's own encoder feeds the decoder, untimed."""
        with timed("encoder"):
            tokens = encode(self.encoder, features)
        return tokens if self.own_tokens_fit else self.engine.audio_tokens(features)

    def warm_up(self) -> None:
        features = fbank(np.random.default_rng(0).normal(0, 0.1, self.spec.window).astype(np.float32),
                         self.bundle.audio.fbank)
        tokens = encode(self.encoder, features)
        self.own_tokens_fit = self.engine.decoder.fits(tokens)
        self.engine.answer(tokens if self.own_tokens_fit else self.engine.audio_tokens(features))

    def _full(self) -> bool:
        return self.settings.max_windows is not None and self.windows >= self.settings.max_windows

    def run(self, paths: list[Path]) -> None:
        self.warm_up()
        if self.bundle.answer_kind == roles.TEXT:  # a scores bundle's answer is read off the encoder's logits
            _timed_decoder_steps(self.engine, self.clock)
        with tempfile.TemporaryDirectory() as tmp:
            store = EventStore(Path(tmp) / "events.db")
            try:
                for source in file_sources(paths, self.spec, self.settings.time_expansion):
                    if self._full():
                        break
                    try:
                        self._source(source, store)
                    except AudioError as err:
                        self.failed.append(str(err))
            finally:
                store.close()

    def _source(self, source: Source, store: EventStore) -> None:
        """Every window of one recording, as edge-run pays for it (the store commit included)."""
        seconds = 0.0
        for result in self.pipeline.run(source):
            self.windows += 1
            self.outcomes[result.outcome] += 1
            seconds = result.offset_s + result.duration_s  # real time, of the audio the windows covered
            started = time.perf_counter()
            with self.clock("store"):
                store.record(source.id, result.offset_s, True, [], [])
            if result.answered:  # latency only: its CPU is in the stages
                self.clock.add("window", result.busy_s + time.perf_counter() - started)
            if self._full():
                break
        self.audio_s += seconds
        self.files.append((source.id, seconds))

    def escalation_round_trips(self, rounds: int) -> None:
        """POST ``rounds`` 10 s windows to a loopback server speaking the API; time each round trip."""
        from naturelm_edge.sample_data import synthetic_soundscape
        from naturelm_edge.wire.client import post_escalation
        from naturelm_edge.wire.loopback import EscalationServer
        from naturelm_edge.wire.schema import EscalationRequest

        server = EscalationServer().start()
        try:
            audio = synthetic_soundscape(self.spec.window_s, self.spec.sample_rate)
            for i in range(rounds):
                with self.clock("escalation"):
                    request = EscalationRequest.build(f"bench:{i}", "What is this?", audio, self.spec.sample_rate, {})
                    post_escalation(server.url, request)
        finally:
            server.stop()
