"""Train the cascade's detection stage: a small CNN on the window's fbank that says "a call is here".

The official-size encoder costs about half a CPU-second per 10 s window on one core, several times
BirdNET's whole budget, so it cannot run on every window that the energy gate passes. The detector reads
the fbank the encoder would read (no second transform), costs about a millisecond, and passes a window to
the encoder only when some 80 ms segment of it looks like a call: wind, rain, engine hum and other steady
or broadband noise that opens an energy gate is what it learns to refuse.

Labels are what a trained model would answer: where a teacher has answered (``edge distill collect``), its
answer to the detection question per window (:mod:`naturelm_edge.detection.labels`); else what is known
about the audio: windows of focal recordings (a labelled species calls in them) are calls; background
recordings; and, whatever the source, digital silence,
coloured noise at many levels and gusts, and each call window with its phase randomised (same spectrum,
the call smeared into steady noise) are not. Labels are per window (a focal clip says *that* a call is
in the window, not *where*), so the network scores every segment and the window takes the
log-sum-exp of its segments: training finds the segment that makes the window a call (multiple-instance
learning). The threshold is set on held-back windows: as low as still refuses a stated share of call-free windows,
never higher than keeps a stated share of every kind of call window (loud, under noise, faint and short,
synthetic). Held-back calls are easier than calls of taxa nobody labelled, so the bar sits as far below
them as the noise allows; what that costs in encoder runs is measured, not assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.audio import DEFAULT_SETTINGS, FbankSettings, WindowSpec, fbank, window_features
from naturelm_edge.bundle import roles
from naturelm_edge.detection.labels import (
    DetectorError,
    LabelledRecording,
    read_label_rows,
    recordings_from_labels,
    recordings_from_teacher,
)
from naturelm_edge.edge_runtime.detector import POOL_SHARPNESS, floor_padded
from naturelm_edge.errors import AudioError


@dataclass(frozen=True)
class DetectorConfig:
    channels: int = 16
    epochs: int = 16
    batch: int = 16
    lr: float = 3e-3
    recall: float = 0.98  # share of held-back call windows of every kind the threshold must pass
    skip: float = 0.98  # share of held-back call-free windows it must still refuse (recall wins a conflict)
    noise_windows: int = 160  # synthetic call-free windows (coloured noise, gusts, silence)
    call_windows: int = 200  # synthetic call windows (sweeps, whistles, pulse trains over noise)
    augment: int = 1  # copies of each call window under extra noise, and as a faint short call
    seed: int = 0


def synthetic_noise(rng: np.random.Generator, samples: int, sample_rate: int) -> np.ndarray:
    """One call-free window: coloured noise of random tilt and level, sometimes in gusts, or digital silence."""
    if rng.random() < 0.08:
        return np.zeros(samples, np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1 / sample_rate)
    tilt = rng.uniform(-2.0, 0.5)  # 0 white, -1 pink, -2 brown (wind, rain on leaves, distant traffic)
    spectrum *= np.maximum(freqs, 20.0) ** (tilt / 2)
    if rng.random() < 0.3:  # a band of steady hum or insect chorus: not a call the model is for
        centre = rng.uniform(200, 6000)
        spectrum *= 1 + 20 * np.exp(-((freqs - centre) / rng.uniform(50, 800)) ** 2)
    wave = np.fft.irfft(spectrum, samples)
    if rng.random() < 0.4:  # gusts: slow amplitude modulation
        t = np.arange(samples) / sample_rate
        wave *= 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    level = 10 ** (rng.uniform(-70, -15) / 20)
    return (wave / (np.sqrt(np.mean(wave**2)) + 1e-12) * level).astype(np.float32)


def synthetic_calls(rng: np.random.Generator, samples: int, sample_rate: int) -> np.ndarray:
    """A few generic calls (FM sweeps as time-expanded bats make, whistles, pulse trains) over background.

    Real call windows of a few taxa teach what those taxa sound like; these teach the shape every call
    shares (a narrow band that moves or pulses above the floor), so a taxon not in the labels still passes.
    """
    wave = synthetic_noise(rng, samples, sample_rate)
    noise_rms = float(np.sqrt(np.mean(wave**2))) or 10 ** (rng.uniform(-70, -40) / 20)
    nyquist = sample_rate / 2
    for _ in range(rng.integers(1, 8)):
        length = rng.uniform(0.01, 0.8)
        t = np.arange(int(length * sample_rate)) / sample_rate
        f0, f1 = rng.uniform(300, nyquist * 0.9, 2)
        freq = f0 + (f1 - f0) * (t / length) ** rng.uniform(0.3, 3)
        call = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.hanning(t.size)
        if rng.random() < 0.3:  # a trill or pulse train
            call *= np.sin(2 * np.pi * rng.uniform(5, 80) * t) > 0
        if rng.random() < 0.3:  # harmonics
            call += 0.5 * np.sin(2 * np.pi * 2 * np.cumsum(np.minimum(freq, nyquist / 2.01)) / sample_rate) * np.hanning(t.size)
        begin = int(rng.integers(0, samples - t.size))
        snr_db = rng.uniform(6, 40)
        wave[begin:begin + t.size] += (call * noise_rms * 10 ** (snr_db / 20) * np.sqrt(2)).astype(np.float32)
    return np.clip(wave, -1, 1).astype(np.float32)


def phase_randomised(wave: np.ndarray, valid: int, rng: np.random.Generator) -> np.ndarray:
    """The same long-term spectrum with every event smeared out in time: the hardest call-free example.

    Only the real audio is randomised; the zero padding of a short recording stays where it was, so
    "padding" never tells calls from call-free windows.
    """
    spectrum = np.fft.rfft(wave[:valid])
    phases = np.exp(1j * rng.uniform(0, 2 * np.pi, spectrum.shape))
    out = np.zeros_like(wave, dtype=np.float32)
    out[:valid] = np.fft.irfft(np.abs(spectrum) * phases, valid)
    return out


def with_noise(wave: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A call window under extra background noise (10-30 dB below it) and a random gain."""
    rms = float(np.sqrt(np.mean(wave**2))) + 1e-9
    noise = synthetic_noise(rng, wave.shape[0], sample_rate)
    noise *= rms * 10 ** (-rng.uniform(10, 30) / 20) / (float(np.sqrt(np.mean(noise**2))) + 1e-12)
    return np.clip((wave + noise) * 10 ** (rng.uniform(-20, 6) / 20), -1, 1).astype(np.float32)


def faint_call(wave: np.ndarray, valid: int, rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, int]:
    """The loudest short stretch of a call window, alone in background, barely above it; and its valid length.

    Focal recordings are close and loud; in the field most calls are short, distant and a few dB over the
    background (a flight call in a night of wind). This is the labelled call as the field delivers it, in a
    full window or, a third of the time, in a 1-4 s clip as triggered recorders write them.
    """
    hop = sample_rate // 20
    frames = wave[: valid - valid % hop].reshape(-1, hop) if valid >= hop else wave[None, :hop]
    loudest = int(np.argmax((frames**2).mean(axis=1))) * hop
    length = int(rng.uniform(0.1, 1.0) * sample_rate)
    start = max(0, min(loudest - length // 2, valid - length))
    call = wave[start:start + length].astype(np.float64)
    out = synthetic_noise(rng, wave.shape[0], sample_rate).astype(np.float64)
    noise_rms = float(np.sqrt(np.mean(out**2))) or 10 ** (rng.uniform(-70, -40) / 20)
    call *= noise_rms * 10 ** (rng.uniform(3, 20) / 20) / (float(np.sqrt(np.mean(call**2))) + 1e-12)
    # a triggered clip never outlasts the window (a 3 s BirdNET window holds at most 3 s of it)
    length_out = wave.shape[0] if rng.random() < 2 / 3 else min(wave.shape[0], int(rng.uniform(1.0, 4.0) * sample_rate))
    at = int(rng.integers(0, max(1, length_out - call.shape[0])))
    out[at:at + call.shape[0]] += call
    out[length_out:] = 0
    return np.clip(out, -1, 1).astype(np.float32), length_out


@dataclass
class DetectorData:
    features: np.ndarray  # (windows, frames, 128) normalised fbank
    labels: np.ndarray  # (windows,) 1 = call
    origin: list[str]  # where each window came from: "file", "file (how it was altered)" or "synthetic ..."
    skipped: list[str]


def build_data(recordings: list[LabelledRecording], spec: WindowSpec, config: DetectorConfig,
               progress: Callable[[str], None] | None = None, settings: FbankSettings = DEFAULT_SETTINGS) -> DetectorData:
    """Windows of the labelled recordings plus synthetic and phase-randomised call-free windows, with the fbank
    of the bundle's contract (``settings``: what the runtime will feed the detector)."""
    rng = np.random.default_rng(config.seed)
    features, labels, origin, skipped = [], [], [], []

    def add_features(feats: np.ndarray, label: int, where: str, valid: int) -> None:
        features.append(floor_padded(feats, valid, settings).astype(np.float32))
        labels.append(label)
        origin.append(where)

    def add(wave: np.ndarray, label: int, where: str, valid: int | None = None) -> None:
        add_features(fbank(wave, settings), label, where, valid or wave.shape[0])

    for i, rec in enumerate(recordings):
        if progress and i % 10 == 0:
            progress(f"detector data: {i}/{len(recordings)} recordings")
        try:
            for window, feats in window_features(rec.path, spec, rec.time_expansion, settings):
                call = rec.label_at(window.start)
                if call is None:
                    continue
                add_features(feats, int(call), str(rec.path), window.valid)
                if call:
                    add(phase_randomised(window.samples, window.valid, rng), 0, f"{rec.path} (phase-randomised)",
                        window.valid)
                    for _ in range(config.augment):
                        add(with_noise(window.samples, rng, spec.sample_rate), 1, f"{rec.path} (noisy)", window.valid)
                        faint, length = faint_call(window.samples, window.valid, rng, spec.sample_rate)
                        add(faint, 1, f"{rec.path} (faint)", length)
        except AudioError as err:
            skipped.append(str(err))
    for i in range(config.noise_windows):
        add(synthetic_noise(rng, spec.window, spec.sample_rate), 0, f"synthetic noise {i}")
    for i in range(config.call_windows):
        add(synthetic_calls(rng, spec.window, spec.sample_rate), 1, f"synthetic call {i}")
    label_array = np.asarray(labels, np.float32)
    if not features or label_array.min() == label_array.max():
        raise DetectorError("the detector needs windows with calls and windows without; the labelled audio "
                            f"gave {int(label_array.sum())} call and {int((1 - label_array).sum())} call-free windows.")
    return DetectorData(np.stack(features), label_array, origin, skipped)


def detector_net(channels: int = 16):  # noqa: ANN201 - torch.nn.Module
    """fbank (batch, frames, 128) -> (window score logit (batch,), segment logits (batch, frames / 8))."""
    import torch
    from torch import nn

    class DetectorNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = channels
            layers: list[nn.Module] = []
            for c_in, c_out, stride in ((1, c // 2, 2), (c // 2, c, 2), (c, c * 2, 2), (c * 2, c * 2, (1, 2))):
                # batch norm folds into the convolution at export: free on the device
                layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            self.convs = nn.Sequential(*layers)
            self.segment = nn.Conv1d(c * 2, 1, 3, padding=1)

        def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # subtract each mel bin's mean over the window: steady background (the floor) is not a call
            x = (features - features.mean(dim=1, keepdim=True)).unsqueeze(1)
            x = self.convs(x).amax(dim=3)  # a call anywhere in the band counts: max over frequency
            segments = self.segment(x).squeeze(1)
            window = torch.logsumexp(segments * POOL_SHARPNESS, dim=1) / POOL_SHARPNESS
            return window, segments

    return DetectorNet()


@dataclass
class TrainedDetector:
    net: object  # torch.nn.Module
    threshold: float
    validation: dict
    config: DetectorConfig


def train_detector(data: DetectorData, config: DetectorConfig,
                   progress: Callable[[str], None] | None = None) -> TrainedDetector:
    """Fit the detector on most recordings; hold back every fifth recording to set the threshold.

    Synthetic windows are held back too: their faint and very short calls are what real calls of taxa
    missing from the labels look like to the detector, and the threshold must keep them.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    sources = sorted({o.split(" (")[0] for o in data.origin})
    held = {s for i, s in enumerate(sources) if i % 5 == 2}
    is_val = np.array([o.split(" (")[0] in held for o in data.origin])
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if not data.labels[val_idx].any():  # too few recordings to hold any back: calibrate on the training set
        val_idx = train_idx
    net = detector_net(config.channels)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    x_all, y_all = torch.from_numpy(data.features), torch.from_numpy(data.labels)
    positives = max(1.0, float(data.labels[train_idx].sum()))
    pos_weight = torch.tensor((len(train_idx) - positives) / positives)
    rng = np.random.default_rng(config.seed)
    steps = config.epochs * math.ceil(len(train_idx) / config.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=steps)
    net.train()
    for epoch in range(config.epochs):
        order = rng.permutation(train_idx)
        total = 0.0
        for start in range(0, len(order), config.batch):
            batch = torch.from_numpy(order[start:start + config.batch])
            logits, _ = net(x_all[batch])
            loss = F.binary_cross_entropy_with_logits(logits, y_all[batch], pos_weight=pos_weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        if progress:
            progress(f"detector epoch {epoch + 1}/{config.epochs}: loss {total / len(order):.3f}")
    net.eval()
    scores = score_windows(net, data.features[val_idx])
    labels = data.labels[val_idx]
    kinds = np.array([call_kind(data.origin[i]) for i in val_idx])
    keeps_calls, refuses_noise = thresholds(scores, labels, kinds, config)
    threshold = min(keeps_calls, refuses_noise)
    per_kind = {kind: scores[(labels == 1) & (kinds == kind)] for kind in sorted(set(kinds[labels == 1]))}
    held_sources = np.array([data.origin[i].split(" (")[0] for i in val_idx])
    validation = {"windows": int(len(val_idx)), "calls": int(labels.sum()), "recordings_held_back": len(held),
                  "threshold_for_recall": keeps_calls, "threshold_for_skip": refuses_noise,
                  "recall": float((scores[labels == 1] >= threshold).mean()),
                  "recall_by_kind": {k: float((s >= threshold).mean()) for k, s in per_kind.items()},
                  "recall_unseen": unseen_recall(scores, labels, kinds, held_sources, config),
                  "call_free_skipped": float((scores[labels == 0] < threshold).mean()) if (labels == 0).any() else None}
    return TrainedDetector(net, threshold, validation, config)


def thresholds(scores: np.ndarray, labels: np.ndarray, kinds: np.ndarray, config: DetectorConfig) -> tuple[float, float]:
    """(highest threshold keeping the recall target of every kind of call, lowest refusing the skip target of
    call-free windows) on held-back windows; the detector's threshold is the smaller (recall wins)."""
    # the recall target must hold for every kind of held-back call (as recorded, under noise, faint and
    # short, synthetic), not on average: loud focal calls are easy and would set the bar for faint ones
    per_kind = [scores[(labels == 1) & (kinds == kind)] for kind in sorted(set(kinds[labels == 1]))]
    keeps_calls = min(float(np.quantile(s, 1 - config.recall, method="lower")) for s in per_kind)
    # held-back calls are easier than calls of taxa nobody labelled: go as low as the call-free windows allow
    free = scores[labels == 0]
    refuses_noise = float(np.nextafter(np.quantile(free, config.skip, method="higher"), np.inf)) if free.size else keeps_calls
    return keeps_calls, refuses_noise


def unseen_recall(scores: np.ndarray, labels: np.ndarray, kinds: np.ndarray, sources: np.ndarray,
                  config: DetectorConfig) -> dict:
    """Recall on call windows of recordings the threshold was not set on, with its count and 95 % interval.

    The threshold keeps the recall target on the windows it was set on by construction, so that figure proves
    nothing; this one sets it on half the held-back recordings, counts the other half's calls, and swaps.
    """
    from naturelm_edge.distill.agreement import share

    names = sorted(set(sources))
    half = np.isin(sources, names[::2])
    hits = count = 0
    for calibrate in (half, ~half):
        check = ~calibrate & (labels == 1)
        if not (labels[calibrate] == 1).any() or not check.any():
            continue
        threshold = min(thresholds(scores[calibrate], labels[calibrate], kinds[calibrate], config))
        hits += int((scores[check] >= threshold).sum())
        count += int(check.sum())
    return share(hits, count)


def call_kind(origin: str) -> str:
    """"recorded", "noisy", "faint" or "synthetic": how a training window was made (from its origin)."""
    if origin.startswith("synthetic"):
        return "synthetic"
    return origin.rsplit("(", 1)[1].rstrip(")") if origin.endswith(")") else "recorded"


def score_windows(net, features: np.ndarray) -> np.ndarray:  # noqa: ANN001 - torch.nn.Module
    """Window logits of a torch detector, in batches (for threshold setting and tests)."""
    import torch

    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(features[i:i + 32]))[0].numpy()
                               for i in range(0, len(features), 32)])


def check_targets(trained: TrainedDetector, labels_path: Path | str, consequence: str = "no bundle written") -> None:
    """Refuse a detector that would filter (almost) nothing, or lose calls: no call-free windows to set the
    threshold on, a threshold that keeps the recall target but misses the refusal target, or one that clearly
    misses the recall target on recordings it was not set on (the interval's top below it). The numbers, what
    follows (``consequence``), and what to do."""
    v, config = trained.validation, trained.config
    if v["call_free_skipped"] is None:
        raise DetectorError(f"{labels_path}: no call-free windows held back, so no threshold can be set; add "
                            "recordings of this site without calls (rows of kind 'background', or audio the teacher answers "
                            "'None' for).")
    if v["call_free_skipped"] < config.skip:
        raise DetectorError(
            f"{labels_path}: at the threshold that keeps {config.recall:.0%} of every kind of held-back call, the "
            f"detector refuses only {v['call_free_skipped']:.0%} of held-back call-free windows (target "
            f"{config.skip:.0%}); {consequence}. Add call-free recordings of the site (background rows), lower "
            f"the refusal target (--skip {max(0.01, np.floor(v['call_free_skipped'] * 100) / 100):.2f}) or the "
            "recall target (--recall).")
    unseen = v.get("recall_unseen") or {"count": 0}
    if unseen["count"] and unseen["ci95"][1] < config.recall:
        raise DetectorError(
            f"{labels_path}: set on half the held-back recordings, the threshold keeps only {unseen['share']:.0%} "
            f"(95 % interval {unseen['ci95'][0]:.0%}-{unseen['ci95'][1]:.0%}) of the other half's {unseen['count']} "
            f"call windows (target {config.recall:.0%}); {consequence}. Add labelled recordings of the calls "
            f"it misses, train longer (--epochs) or lower the recall target (--recall "
            f"{max(0.01, np.floor(unseen['share'] * 100) / 100):.2f}).")


def export_detector(trained: TrainedDetector, path: Path, spec: WindowSpec,
                    settings: FbankSettings = DEFAULT_SETTINGS) -> dict:
    """Write the detector as ONNX; return the manifest's ``detector`` section (threshold and how it was set)."""
    import torch

    from naturelm_edge.export.onnx_export import ExportSpec, export_module

    frames = settings.num_frames(spec.window)
    export_module(trained.net, ExportSpec(
        role=roles.DETECTOR.name, input_names=["fbank"], output_names=["score", "segments"],
        dynamic_axes={"fbank": {0: "batch"}, "score": {0: "batch"}, "segments": {0: "batch"}},
        example_inputs=lambda: (torch.zeros(1, frames, settings.num_mel_bins),)), path)
    return {"threshold": trained.threshold, "pool_sharpness": POOL_SHARPNESS, "recall_target": trained.config.recall,
            "skip_target": trained.config.skip,
            "validation": trained.validation, "config": asdict(trained.config),
            "segment_s": spec.window_s / (trained.net(torch.zeros(1, frames, settings.num_mel_bins))[1].shape[1])}


def fit_detector(recordings: list[LabelledRecording], spec: WindowSpec, settings: FbankSettings, config: DetectorConfig,
                 progress: Callable[[str], None] | None = None) -> tuple[TrainedDetector, dict]:
    """A detector trained on ``recordings`` (windows and fbank of the bundle's contract), and what it learned
    from (the manifest's ``detector.training`` counts): `edge detector train` and `edge build` alike."""
    data = build_data(recordings, spec, config, progress, settings)
    trained = train_detector(data, config, progress)
    return trained, {"recordings": len(recordings), "windows": int(len(data.labels)),
                     "call_windows": int(data.labels.sum()), "skipped": data.skipped}


def add_detector(bundle_path: Path, audio_root: Path, out: Path, config: DetectorConfig,
                 labels_file: Path | None = None, exclude: tuple[str, ...] = (), sign_key: Path | None = None,
                 progress: Callable[[str], None] | None = None, teacher_answers: Path | None = None) -> dict:
    """Train a detector on ``audio_root``'s recordings and write ``bundle_path`` plus it to ``out``.

    Window labels come from ``teacher_answers`` (a teacher cache: the detection task's answers, or a scores
    teacher's verdicts) when given, else from ``labels_file`` (default ``audio_root/LABELS.csv``).
    ``exclude``: folder prefixes (relative to ``audio_root``) kept out of training, e.g. held-out species the
    detector will be judged on.
    """
    import tempfile

    from naturelm_edge.bundle.open import extend_bundle, load_bundle

    bundle = load_bundle(bundle_path)
    if teacher_answers is not None:
        source = str(teacher_answers)
        recordings = recordings_from_teacher(teacher_answers, audio_root, bundle.audio.spec, exclude)
    else:
        source = str(labels_file or audio_root / "LABELS.csv")
        recordings = recordings_from_labels(audio_root, read_label_rows(Path(source), exclude))
    trained, training = fit_detector(recordings, bundle.audio.spec, bundle.audio.fbank, config, progress)
    check_targets(trained, source)
    with tempfile.TemporaryDirectory(prefix="nle-detector-") as tmp:
        onnx_path = Path(tmp) / "detector.onnx"
        section = export_detector(trained, onnx_path, bundle.audio.spec, bundle.audio.fbank)
        section["training"] = {"labels": source, "labels_from": "teacher" if teacher_answers else "labels",
                               **training, "excluded": list(exclude)}
        written = extend_bundle(bundle, out, {onnx_path: (roles.DETECTOR.file, roles.DETECTOR, "fp32")},
                                detector=section)
    if sign_key is not None:
        from naturelm_edge.bundle.signing import sign_bundle

        sign_bundle(written, sign_key)
    return {"bundle": str(written), "bundle_id": load_bundle(written).id, **section}
