"""The cascade's detection stage on the device: a small ONNX CNN between the gate and the encoder.

A window the gate passes reaches the encoder only when the detector's score for it reaches the bundle's
threshold (set when the detector was trained, for a stated recall of call windows). The detector reads the
fbank already computed for the encoder; it costs about a millisecond where the official-size encoder costs
half a second. Bundles without a detector run as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from naturelm_edge.audio import DEFAULT_SETTINGS

FLOOR_QUANTILE = 0.2  # a mel bin's noise floor: the level its quieter frames reach


def floor_padded(features: np.ndarray, valid_samples: int) -> np.ndarray:
    """The window's real frames, the rest filled with the recording's own noise floor instead of zeros.

    Zero padding is far quieter than any background and would make every sound of a short clip stand out;
    repeating the clip would make its one call a third of the window. A call in a 1 s clip then looks as it
    would in a long recording: itself, over the background it was recorded in.
    """
    real = min(features.shape[0], max(1, DEFAULT_SETTINGS.num_frames(valid_samples)))
    if real >= features.shape[0]:
        return features
    out = np.empty_like(features)
    out[:real] = features[:real]
    out[real:] = np.quantile(features[:real], FLOOR_QUANTILE, axis=0)
    return out


@dataclass
class DetectorDecision:
    passed: bool
    score: float


class Detector:
    """One detector session; ``threshold`` from the bundle's manifest unless overridden."""

    def __init__(self, session, threshold: float) -> None:  # noqa: ANN001 - onnxruntime.InferenceSession
        self.session, self.threshold = session, threshold

    def score(self, features: np.ndarray, valid_samples: int) -> float:
        batch = floor_padded(features, valid_samples)[None].astype(np.float32)
        return float(self.session.run(["score"], {"fbank": batch})[0][0])

    def __call__(self, features: np.ndarray, valid_samples: int) -> DetectorDecision:
        score = self.score(features, valid_samples)
        return DetectorDecision(score >= self.threshold, score)
