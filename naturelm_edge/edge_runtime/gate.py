"""The always-on gate: band-limited energy over an adaptive noise floor, computed from the fbank.

It reuses the features the encoder needs anyway (no second transform): the log-mel energies of the band
where calls live, per frame. A window passes when its loud frames stand ``margin_db`` above the noise floor;
the floor follows the quietest windows (it rises slowly and falls fast), so steady wind or rain does not
open the gate and a quiet night does not close it. Digital silence never passes and never moves the floor
(one muted second would otherwise open the gate for minutes), and each recording starts a floor of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from naturelm_edge.audio.fbank import DEFAULT_SETTINGS, FbankSettings, mel_centres

DB_PER_NEPER = 10 / np.log(10)


@dataclass
class GateSettings:
    low_hz: float = 500.0
    high_hz: float = 8000.0
    margin_db: float = 10.0
    loud_quantile: float = 0.995  # a 5 ms bat call, time-expanded, fills well under 1 % of a window
    quiet_quantile: float = 0.2
    rise: float = 0.05  # how fast the floor follows louder background
    peak_bins: int = 3  # a frame's level: the mean of its loudest mel bins in the band (narrow calls stand out)
    enabled: bool = True


@dataclass
class GateDecision:
    passed: bool
    level_db: float
    floor_db: float


class EnergyGate:
    def __init__(self, settings: GateSettings | None = None, fbank_settings: FbankSettings = DEFAULT_SETTINGS) -> None:
        self.settings = settings or GateSettings()
        self.fbank = fbank_settings
        mel = mel_centres(fbank_settings)
        self.band = (mel >= self.settings.low_hz) & (mel <= self.settings.high_hz)
        self.floor_db: float | None = None
        self.silence_db = float(np.log(np.finfo(np.float32).eps) * DB_PER_NEPER)

    def __call__(self, features: np.ndarray) -> GateDecision:
        log_energy = features * (2 * self.fbank.norm_std) + self.fbank.norm_mean  # undo NatureLM's normalisation
        band = np.sort(log_energy[:, self.band], axis=1)[:, -self.settings.peak_bins :]
        frames_db = band.mean(axis=1) * DB_PER_NEPER
        loud = float(np.quantile(frames_db, self.settings.loud_quantile))
        quiet = float(np.quantile(frames_db, self.settings.quiet_quantile))
        silent = loud <= self.silence_db + 1.0
        if silent:
            pass  # digital silence (a muted input, a recorder's gap) says nothing about the noise floor
        elif self.floor_db is None or quiet < self.floor_db:
            self.floor_db = quiet
        else:
            self.floor_db += self.settings.rise * (quiet - self.floor_db)
        floor = self.floor_db if self.floor_db is not None else quiet
        if not self.settings.enabled:
            return GateDecision(True, loud, floor)
        return GateDecision(not silent and loud - floor >= self.settings.margin_db, loud, floor)

    def reset(self) -> None:
        """Forget the noise floor: a new recording may come from another recorder, gain or place."""
        self.floor_db = None

