"""The cascade's detection stage on the device: a small ONNX CNN between the gate and the encoder.

A window the gate passes reaches the encoder only when the detector's score for it reaches the bundle's
threshold (set when the detector was trained, for a stated recall of call windows) and stands above what the
recorder's own background scores (:class:`SiteFloor`). The detector reads the fbank already computed for the
encoder; it costs about a millisecond where the official-size encoder costs half a second. Bundles without a
detector run as before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from naturelm_edge.audio import DEFAULT_SETTINGS, FbankSettings

FLOOR_QUANTILE = 0.2  # a mel bin's noise floor: the level its quieter frames reach
POOL_SHARPNESS = 4.0  # log-sum-exp pooling of segments: 1 is a soft mean, large values approach the max


def floor_padded(features: np.ndarray, valid_samples: int, settings: FbankSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """The window's real frames, the rest filled with the recording's own noise floor instead of zeros.

    Zero padding is far quieter than any background and would make every sound of a short clip stand out;
    repeating the clip would make its one call a third of the window. A call in a 1 s clip then looks as it
    would in a long recording: itself, over the background it was recorded in.
    """
    real = min(features.shape[0], max(1, settings.num_frames(valid_samples)))
    if real >= features.shape[0]:
        return features
    out = np.empty_like(features)
    out[:real] = features[:real]
    out[real:] = np.quantile(features[:real], FLOOR_QUANTILE, axis=0)
    return out


@dataclass(frozen=True)
class SiteFloor:
    """The threshold a recorder's own background sets: ``margin`` above the score its quietest ``quantile`` of
    the last ``windows`` windows reached (once it has ``min_windows``), never below the bundle's threshold.

    The bundle's threshold is set on the training audio's call-free windows; a site's background that the
    detector never heard (another forest's insects, a stream) can score above it all day, and the detector
    then refuses nothing there. Like the gate's noise floor, this floor belongs to the recorder: files of one
    recorder carry it on, a file alone starts one of its own. What it costs: in an hour where calls fill
    nine windows in ten (a frog chorus), only the windows that stand out of the chorus pass, as with the gate.
    ``benchmarks/results/screening``: on held-back backgrounds it refused 73-100 % over three training seeds
    (the bundle's threshold alone: 50-100 %), keeping every call at SNR >= 0 dB.
    """

    quantile: float = 0.1
    margin: float = 0.5  # logits
    windows: int = 720  # an hour of a continuous stream (5 s hop)
    min_windows: int = 12


@dataclass
class DetectorDecision:
    passed: bool  # the window goes to the encoder
    score: float
    threshold: float  # what the score was held against: the bundle's, or the site's when higher
    heard: bool = False  # a call, but only where the last answered window already listened


class Detector:
    """One detector session; ``threshold`` from the bundle's manifest unless overridden; ``fbank``: the bundle's."""

    def __init__(self, session, threshold: float, sharpness: float = POOL_SHARPNESS,  # noqa: ANN001
                 fbank: FbankSettings = DEFAULT_SETTINGS, site: SiteFloor | None = SiteFloor()) -> None:
        self.session, self.threshold, self.sharpness, self.fbank, self.site = session, threshold, sharpness, fbank, site
        self.recent: deque[float] = deque(maxlen=site.windows if site else 1)  # this recorder's last scores
        self.sites: dict[str, deque[float]] = {}

    def begin(self, recorder: str | None) -> None:
        """A new recording: ``recorder`` names the device it came from (its files carry the site floor on);
        None starts a floor of its own (a file of unknown origin, a new stream)."""
        if recorder is None:
            self.recent = deque(maxlen=self.recent.maxlen)
        else:
            self.recent = self.sites.setdefault(recorder, deque(maxlen=self.recent.maxlen))

    def threshold_now(self) -> float:
        """The bundle's threshold, or the site's floor plus the margin when that is higher."""
        site = self.site
        if site is None or len(self.recent) < site.min_windows:
            return self.threshold
        return max(self.threshold, float(np.quantile(self.recent, site.quantile)) + site.margin)

    def scores(self, features: np.ndarray, valid_samples: int) -> tuple[float, np.ndarray]:
        """The window's score and its segments' (in time order, equal lengths)."""
        batch = floor_padded(features, valid_samples, self.fbank)[None].astype(np.float32)
        score, segments = self.session.run(["score", "segments"], {"fbank": batch})
        return float(score[0]), segments[0]

    def score(self, features: np.ndarray, valid_samples: int) -> float:
        return self.scores(features, valid_samples)[0]

    def __call__(self, features: np.ndarray, valid_samples: int, heard: float = 0.0) -> DetectorDecision:
        """``heard``: the share of this window, from its start, that the last answered window covered.

        A window whose calls all lie in that stretch adds nothing the models have not answered: the
        segments after it, pooled as the window's score is, must reach the threshold on their own. With
        windows overlapping by half, a call heard once is then encoded once, not twice.
        """
        score, segments = self.scores(features, valid_samples)
        threshold = self.threshold_now()
        self.recent.append(score)
        if score < threshold:
            return DetectorDecision(False, score, threshold)
        new = segments[int(np.floor(heard * len(segments))):]
        if heard > 0 and (new.size == 0 or np.logaddexp.reduce(new * self.sharpness) / self.sharpness < threshold):
            return DetectorDecision(False, score, threshold, heard=True)
        return DetectorDecision(True, score, threshold)

