"""The cascade's detection stage on the device: a small ONNX CNN between the gate and the encoder.

A window the gate passes reaches the encoder only when the detector's score for it reaches the bundle's
threshold (set when the detector was trained, for a stated recall of call windows). The detector reads the
fbank already computed for the encoder; it costs about a millisecond where the official-size encoder costs
half a second. Bundles without a detector run as before.
"""

from __future__ import annotations

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


@dataclass
class DetectorDecision:
    passed: bool  # the window goes to the encoder
    score: float
    heard: bool = False  # a call, but only where the last answered window already listened


class Detector:
    """One detector session; ``threshold`` from the bundle's manifest unless overridden; ``fbank``: the bundle's."""

    def __init__(self, session, threshold: float, sharpness: float = POOL_SHARPNESS,  # noqa: ANN001
                 fbank: FbankSettings = DEFAULT_SETTINGS) -> None:
        self.session, self.threshold, self.sharpness, self.fbank = session, threshold, sharpness, fbank

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
        if score < self.threshold:
            return DetectorDecision(False, score)
        new = segments[int(np.floor(heard * len(segments))):]
        if heard > 0 and (new.size == 0 or np.logaddexp.reduce(new * self.sharpness) / self.sharpness < self.threshold):
            return DetectorDecision(False, score, heard=True)
        return DetectorDecision(True, score)

