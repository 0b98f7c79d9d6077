"""The cascade's detection stage on the device: a small ONNX CNN between the gate and the encoder.

A window the gate passes reaches the encoder only when the detector's score for it reaches the bundle's
threshold (set when the detector was trained, for a stated recall of call windows) and stands above what the
recorder's own background scores (:class:`SiteFloor`). The detector reads the fbank already computed for the
encoder; it costs about a millisecond where the official-size encoder costs half a second. Bundles without a
detector run as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

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
    """The threshold a recorder's own background sets, learned only from windows judged call-free.

    The bundle's threshold is set on the training audio's call-free windows; a site's background that the
    detector never heard (another forest's insects, a stream) can score above it all day, and the detector
    then refuses nothing there. The floor follows that background, never the callers: its evidence is the
    scores of windows the detector refused and of windows it passed that the model then answered "None"
    (a false alarm), and the windows the gate refused, too quiet to score, counted as background that sits
    under the bundle's threshold (``margin`` below it); windows whose answer names a call never count.
    Without the gate's windows, a quiet site's evidence would be only its loudest moments, the ones the gate
    lets through, and the floor would rise over its faint calls. The threshold is ``margin`` above the
    ``quantile`` of the last ``evidence_windows`` call-free windows (none older than ``span_s`` of the
    recorder's audio: its own clock, so an archive analysed in minutes behaves as the field would), once
    ``min_windows`` are in: a few minutes of the background now, so the floor leaves a background that has
    gone as soon as the next one has been heard, instead of holding it for an hour. It falls at once when the
    background quietens. Whether it may stand above the bundle's threshold is the models' to say, from their
    verdicts over the last ``judged_s`` of audio: it rises when at least ``min_windows`` of them and a
    ``false_alarms`` share were false alarms, at ``rise_per_minute`` logits per minute of audio, faster in
    proportion as there are more (a background that is nearly all the models hear is refused within minutes; a
    few false alarms among many calls move it slowly); it holds while false alarms keep that share; else it
    sinks back at ``rise_per_minute``, so the calls a floor lifted by a burst refuses cannot hold it up as
    evidence. Where most windows passed are calls, a higher floor saves the models little and costs the faint
    calls, whose scores there sit among the background's (a busy soundscape played at -60 dBFS: a burst of 12
    false alarms among 120 verdicts lifted a floor that could not sink, the calls it refused then held it up,
    and 24 of its 162 calls were lost; sinking, it loses none).

    What it costs: a call no louder than the background's loudest fifth is refused once the floor has risen;
    a caller present in every window and a dawn chorus keep their calls, because the model's answers keep
    their windows out of the evidence. Its figures (benchmarks/results/site-hours, three detector seeds, the
    settings chosen there on one seed's mixed and quiet hours) are in the README.
    Like the gate's noise floor it belongs to the recorder: its files carry it on, a file alone starts its own.
    """

    quantile: float = 0.8
    margin: float = 0.25  # logits
    evidence_windows: int = 40  # the background now: about three minutes of a recorder's call-free windows
    span_s: float = 3600.0  # no evidence older than an hour of the recorder's audio
    min_windows: int = 12
    rise_per_minute: float = 2.0  # logits, at the ``false_alarms`` share; in proportion above it
    false_alarms: float = 0.1  # share of the judged windows
    judged_s: float = 600.0  # the verdicts that share is taken over: the last ten minutes of the recorder's audio

    @classmethod
    def of(cls, values: Mapping[str, object]) -> SiteFloor:
        """A floor of these fields (the rest the defaults'), or ValueError naming the first one that cannot be."""
        kinds = {f.name: type(getattr(cls(), f.name)) for f in fields(cls)}
        for name, value in values.items():
            if name not in kinds:
                raise ValueError(f"unknown site floor setting {name!r}; known: {', '.join(kinds)}")
            whole = kinds[name] is int
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                raise ValueError(f"site floor {name} is {value!r}; a {'whole ' if whole else ''}number is needed")
            if name in ("quantile", "false_alarms") and not 0 <= value <= 1:
                raise ValueError(f"site floor {name} is {value!r}; a share between 0 and 1 is needed")
            if value < 0 or (value == 0 and name not in ("margin", "rise_per_minute", "false_alarms")):
                raise ValueError(f"site floor {name} is {value!r}; it must be {'positive' if value == 0 else 'at least 0'}")
        return cls(**{name: kinds[name](value) for name, value in values.items()})


DEFAULT_FLOOR = SiteFloor()  # what edge-run, the Python API and the benchmarks use unless a site file says otherwise


@dataclass
class _Evidence:
    """One recorder's call-free scores (audio time, score), the models' verdicts on passed windows (audio time,
    false alarm), the floor as last applied, a window awaiting its answer."""

    scores: deque = field(default_factory=deque)
    verdicts: deque = field(default_factory=deque)
    applied: float | None = None
    at_s: float = 0.0
    pending: tuple[float, float] | None = None


@dataclass
class DetectorDecision:
    passed: bool  # the window goes to the encoder
    score: float
    threshold: float  # what the score was held against: the bundle's, or the site's when higher
    heard: bool = False  # a call, but only where the last answered window already listened


class Detector:
    """One detector session; ``threshold`` from the bundle's manifest unless overridden; ``fbank``: the bundle's."""

    def __init__(self, session, threshold: float, sharpness: float = POOL_SHARPNESS,  # noqa: ANN001
                 fbank: FbankSettings = DEFAULT_SETTINGS, site: SiteFloor | None = DEFAULT_FLOOR) -> None:
        self.session, self.threshold, self.sharpness, self.fbank, self.site = session, threshold, sharpness, fbank, site
        self.evidence = _Evidence()  # the current recorder's
        self.sites: dict[str, _Evidence] = {}

    def begin(self, recorder: str | None) -> None:
        """A new recording: ``recorder`` names the device it came from (its files carry the site floor on);
        None starts a floor of its own (a file of unknown origin, a new stream)."""
        self.evidence = _Evidence() if recorder is None else self.sites.setdefault(recorder, _Evidence())

    def threshold_now(self, at_s: float | None = None) -> float:
        """The bundle's threshold, or the site's floor when that is higher (risen no faster than allowed)."""
        site, evidence = self.site, self.evidence
        at_s = evidence.at_s if at_s is None else at_s
        if site is None:
            return self.threshold
        scores, verdicts = evidence.scores, evidence.verdicts
        while scores and (scores[0][0] < at_s - site.span_s or len(scores) > site.evidence_windows):
            scores.popleft()
        while verdicts and verdicts[0][0] < at_s - site.judged_s:
            verdicts.popleft()
        target = self.threshold
        if len(scores) >= site.min_windows:
            level = float(np.quantile([score for _, score in scores], site.quantile))
            target = max(self.threshold, level + site.margin)
        previous = self.threshold if evidence.applied is None else evidence.applied
        minutes, speed = max(0.0, at_s - evidence.at_s) / 60.0, self._speed()
        if speed < 0:  # not earned: it sinks towards the bundle's threshold (or falls at once to the evidence)
            target = max(self.threshold, min(target, previous + speed * minutes))
        elif target > previous:
            target = min(target, previous + speed * minutes)
        evidence.applied, evidence.at_s = target, max(evidence.at_s, at_s)
        return target

    def _speed(self) -> float:
        """Logits per minute of audio the floor may rise (> 0), must sink (< 0), or 0 where it holds: the rule
        :class:`SiteFloor` states, from the models' verdicts over its last ``judged_s``. Verdicts age by audio
        time, not by count: over a floor that refuses nearly everything few new ones come, and a burst's would
        otherwise hold it for long after."""
        verdicts, site = self.evidence.verdicts, self.site
        false_alarms, share = sum(false_alarm for _, false_alarm in verdicts), site.false_alarms * len(verdicts)
        least = max(site.min_windows, share)
        if false_alarms >= least:
            return site.rise_per_minute * false_alarms / least
        return 0.0 if false_alarms and false_alarms >= share else -site.rise_per_minute

    def scores(self, features: np.ndarray, valid_samples: int) -> tuple[float, np.ndarray]:
        """The window's score and its segments' (in time order, equal lengths)."""
        batch = floor_padded(features, valid_samples, self.fbank)[None].astype(np.float32)
        score, segments = self.session.run(["score", "segments"], {"fbank": batch})
        return float(score[0]), segments[0]

    def score(self, features: np.ndarray, valid_samples: int) -> float:
        return self.scores(features, valid_samples)[0]

    def quiet(self, valid_samples: int, at_s: float | None = None) -> None:
        """A window the gate refused (not scored: too quiet for a call): background under the bundle's
        threshold, as evidence for the site floor."""
        if self.site is None:
            return
        self.evidence.scores.append((self._clock(valid_samples, at_s), self.threshold - self.site.margin))

    def _clock(self, valid_samples: int, at_s: float | None) -> float:
        """``at_s``, or, when the caller has no recorder clock, one window after the last."""
        return self.evidence.at_s + valid_samples / self.fbank.sample_rate if at_s is None else at_s

    def judged(self, call: bool) -> None:
        """The model's verdict on the last window this detector passed: a false alarm is background evidence."""
        pending, self.evidence.pending = self.evidence.pending, None
        if pending is None:
            return
        self.evidence.verdicts.append((pending[0], not call))
        if not call:
            self.evidence.scores.append(pending)

    def withdraw(self) -> None:
        """The last window this detector passed is no evidence of the site's background, whatever the models say
        (its audio was changed after it was scored: speech masked)."""
        self.evidence.pending = None

    def __call__(self, features: np.ndarray, valid_samples: int, heard: float = 0.0,
                 at_s: float | None = None) -> DetectorDecision:
        """``heard``: the share of this window, from its start, that the last answered window covered;
        ``at_s``: the window's start on its recorder's audio clock (default: one window after the last).

        A window whose calls all lie in that stretch adds nothing the models have not answered: the
        segments after it, pooled as the window's score is, must reach the threshold on their own. With
        windows overlapping by half, a call heard once is then encoded once, not twice.
        """
        at_s = self._clock(valid_samples, at_s)
        score, segments = self.scores(features, valid_samples)
        threshold = self.threshold_now(at_s)
        self.evidence.pending = None
        if score < threshold:
            self.evidence.scores.append((at_s, score))
            return DetectorDecision(False, score, threshold)
        new = segments[int(np.floor(heard * len(segments))):]
        if heard > 0 and (new.size == 0 or np.logaddexp.reduce(new * self.sharpness) / self.sharpness < threshold):
            return DetectorDecision(False, score, threshold, heard=True)
        self.evidence.pending = (at_s, score)
        return DetectorDecision(True, score, threshold)
