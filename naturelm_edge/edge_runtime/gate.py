"""The always-on gate: how far a window's loudest moments stand above the recorder's noise floor, per band.

It reuses the features the encoder needs anyway (no second transform): the log-mel energies of the band
where calls live, per frame. The floor is kept per mel bin: a faint owl hoot at 300 Hz stands well above
the floor of its own bins even when wind or a stream is louder in others, which a single broadband level
hides. A frame's level is the mean excess of its ``peak_bins`` most exceeding bins, so a narrow call counts
in full; a window passes when its loud frames stand ``margin_db`` above the floor.

The floor belongs to the recorder, not the file: consecutive files of one recorder carry it on (a
duty-cycled 10 s file is too short to tell a continuous chorus from the background), and it follows the
quietest windows (falls at once, rises slowly), so steady wind or rain does not open the gate and a quiet
night does not close it. A file alone starts from a floor no continuous chorus can lift: each bin's quiet
level, but never above the spectrum's lower envelope across neighbouring bins (backgrounds are smooth over
frequency; a chorus is a band standing out of it). Digital silence never passes and never moves the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter, uniform_filter1d

from naturelm_edge.audio.fbank import DEFAULT_SETTINGS, FbankSettings, mel_centres

DB_PER_NEPER = 10 / np.log(10)
# fbank energies are on the 16-bit sample scale: one LSB of white noise fills a mel bin at about 30 dB, so a
# window whose loudest moment stays below 20 dB holds digital silence (and a few stray LSBs), not sound
SILENCE_DB = 20.0


def _loudest(levels: np.ndarray, count: int) -> np.ndarray:
    """Per frame (row), the mean of its ``count`` largest values (a partition: no full sort of every frame)."""
    count = min(count, levels.shape[1])
    return np.partition(levels, levels.shape[1] - count, axis=1)[:, -count:].mean(axis=1)


@dataclass
class GateSettings:
    low_hz: float = 150.0  # owls, grouse, toads and whales call below 500 Hz
    high_hz: float = 8000.0
    margin_db: float = 10.0  # benchmarks/results/gate: 6-15 dB keep every hand-drawn call, 20 dB loses some
    loud_quantile: float = 0.995  # a 5 ms bat call, time-expanded, fills well under 1 % of a window
    quiet_quantile: float = 0.2
    rise: float = 0.2  # how fast the floor follows louder background (a steady chorus joins it in ~10 windows)
    peak_bins: int = 3  # a frame's level: the mean of its loudest (most exceeding) mel bins in the band
    per_bin_floor: bool = True  # False: one broadband floor per window (the gate before #14; kept to compare)
    smooth_frames: int = 5  # per-bin levels are averaged over 50 ms ...
    smooth_bins: int = 3  # ... and three neighbouring mel bins before they are compared with the floor
    envelope_bins: int = 6  # a lone file's floor: at most the lower envelope over +-this many mel bins
    enabled: bool = True


@dataclass
class GateDecision:
    passed: bool
    level_db: float  # the window's loud level in the band
    floor_db: float  # the level it was measured against: level - floor is how far it stood out


class EnergyGate:
    def __init__(self, settings: GateSettings | None = None, fbank_settings: FbankSettings = DEFAULT_SETTINGS) -> None:
        self.settings = settings or GateSettings()
        self.fbank = fbank_settings
        mel = mel_centres(fbank_settings)
        self.band = (mel >= self.settings.low_hz) & (mel <= self.settings.high_hz)
        self.floor: np.ndarray | None = None  # per band bin (one value when the floor is broadband)
        self.recorder: str | None = None
        self.floors: dict[str, np.ndarray] = {}

    @property
    def floor_db(self) -> float | None:
        """The floor as one number (the band's mean floor when it is kept per bin), or None before any window."""
        return None if self.floor is None else float(np.mean(self.floor))

    def __call__(self, features: np.ndarray) -> GateDecision:
        log_energy = features * (2 * self.fbank.norm_std) + self.fbank.norm_mean  # undo NatureLM's normalisation
        s = self.settings
        levels = log_energy[:, self.band]
        if s.per_bin_floor:  # a mel bin's frame energy fluctuates by several dB in steady noise: average a little
            levels = np.log(np.maximum(uniform_filter(np.exp(levels), (s.smooth_frames, s.smooth_bins), mode="nearest"), 1e-30))
        levels = levels * DB_PER_NEPER  # frames x band bins, dB
        if not s.per_bin_floor:
            levels = _loudest(levels, s.peak_bins)[:, None]
        quiet = np.quantile(levels, s.quiet_quantile, axis=0)
        loud = float(np.quantile(levels.max(axis=1), s.loud_quantile))
        silent = loud <= SILENCE_DB
        if not silent:  # digital silence (a muted input, a recorder's gap) says nothing about the noise floor
            self._follow(quiet)
        floor = self.floor if self.floor is not None else quiet
        stands = float(np.quantile(_loudest(levels - floor, s.peak_bins), s.loud_quantile))
        level = float(np.quantile(_loudest(levels, s.peak_bins), s.loud_quantile))
        passed = not s.enabled or (not silent and stands >= s.margin_db)
        return GateDecision(passed, level, level - stands)

    def _follow(self, quiet: np.ndarray) -> None:
        if self.floor is None:
            self.floor = self._lone(quiet)
        else:  # falls at once, rises slowly, bin by bin
            self.floor = np.where(quiet < self.floor, quiet, self.floor + self.settings.rise * (quiet - self.floor))
        if self.recorder is not None:
            self.floors[self.recorder] = self.floor

    def _lone(self, quiet: np.ndarray) -> np.ndarray:
        """A first floor from one window: each bin's quiet level, never above the smoothed lower envelope."""
        if quiet.shape[0] < 2 * self.settings.envelope_bins + 1:
            return quiet
        envelope = minimum_filter1d(quiet, 2 * self.settings.envelope_bins + 1, mode="nearest")
        envelope = uniform_filter1d(envelope, 2 * self.settings.envelope_bins + 1, mode="nearest")
        return np.minimum(quiet, envelope + self.settings.margin_db / 2)

    def begin(self, recorder: str | None) -> None:
        """A new recording: ``recorder`` names the device it came from (files of one recorder carry the floor
        on); None starts a floor of its own (a file of unknown origin, a new stream)."""
        self.recorder = recorder
        self.floor = self.floors.get(recorder) if recorder is not None else None
