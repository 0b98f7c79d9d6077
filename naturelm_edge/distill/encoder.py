"""``edge distill encoder``: a small CNN that reads the fbank and answers with the teacher's audio tokens.

The official audio path (BEATs, 90 M parameters, then the Q-Former) costs about half a CPU-second per 10 s
window in int8 on one core: more than BirdNET's whole budget. Profiles without a GPU carry a student
instead: depthwise-separable convolutions over the same normalised fbank (MobileNet's blocks, which
onnxruntime quantizes to int8 well: Conv, ReLU, MatMul, no attention, no GELU), pooled to the teacher's 29
token spans, a per-token head to the Q-Former's width that answers how a token differs from the teacher's mean
token (a fresh head starts at the teacher tokens' spread, so the first epochs fit the window and not the common
part), and the teacher's own LLM projection, frozen, on top. Its output is therefore the encoder's output (batch, 29, llm width): the student decoder and every
later stage take either encoder unchanged.

It learns from unlabelled audio only: each window of the folder is read as it is and in ``views - 1``
augmented copies (gain, another recording of the folder mixed in, a time shift, added noise), the teacher's
Q-Former tokens of every copy are computed once and kept on disk beside the copy's fbank (so an interrupted
run resumes without asking the teacher again), and the loss is per token, on the Q-Former's tokens and on
them through the frozen projection: 1 - cosine plus the squared error scaled by the teacher tokens'
variance, both centred on the teacher's mean token (see :func:`token_loss`). Recordings are split, not
windows: every fifth recording (or the held-out species of a split file) is only used to report fidelity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.atomic import atomic_path
from naturelm_edge.audio import WindowSpec, fbank, window_features
from naturelm_edge.audio.files import list_audio
from naturelm_edge.distill.cache import window_key
from naturelm_edge.distill.reproducible import reproducible
from naturelm_edge.distill.stopping import plateau_reason
from naturelm_edge.errors import AudioError, EdgeError

WARM_UP = 0.3  # the share of training whose learning rate rises (one cycle: up, then annealed to ~0)
MIN_WINDOWS = 16  # training windows below this cannot fit even the token head; the error says so
STATE_FILE = "train_state.pt"
TOKENS_DIR = "teacher-tokens"
REPORT_FILE = "student_encoder.json"
ONNX_FILE = "encoder.onnx"
LOSS = "centred+projected"  # the loss a train state was fitted with: a state of another loss is not resumed
GRAPH = "projected deviation from the mean token"  # how the exported graph computes its output (a new one re-exports)
BODY = "inverted residuals, the first unexpanded; a head of deviations"  # the layers a train state holds (another body trains again)
ARCHITECTURES = {"mobilenet-s": (16, (24, 32, 64, 96), 192), "mobilenet-m": (24, (32, 48, 96, 128), 256)}


class StudentEncoderError(EdgeError):
    """Audio, teacher or a resumed run that a student encoder cannot be trained from."""


@dataclass(frozen=True)
class EncoderStudentConfig:
    arch: str = "mobilenet-s"
    # at most. The head answers the teacher's mean token plus a deviation, started at the teacher's spread: on the
    # small shared set the held-back loss is best after 4-7 epochs (centred cosine 0.83 after 7 at 1e-3 where the
    # plain head needed 30 epochs at 3e-3 for 0.71, its first epochs' loss in the hundreds), none better by 12
    epochs: int = 12
    batch: int = 16
    lr: float = 1e-3
    views: int = 3  # each window as it is, and views - 1 augmented copies
    seed: int = 0
    patience: int = 3  # epochs without min_improvement of the held-back loss before stopping (0: every epoch)
    min_improvement: float = 0.02  # relative to the best held-back loss so far


@dataclass(frozen=True)
class TeacherPath:
    """What the student needs of the teacher: Q-Former tokens of fbank, and the frozen projection after them."""

    identity: str
    tokens: Callable[[np.ndarray], np.ndarray]  # (batch, frames, 128) -> (batch, 29, qformer width)
    projection_weight: np.ndarray  # (llm width, qformer width)
    projection_bias: np.ndarray  # (llm width,)


def teacher_path(checkpoint: str | Path) -> TeacherPath:
    """The checkpoint's audio path as the exported encoder runs it (float32), cut before the LLM projection."""
    from naturelm_edge.models import load

    loaded = load(checkpoint)
    return teacher_path_of(loaded.model, f"sha256:{loaded.source.sha256()}")


def teacher_path_of(model, identity: str) -> TeacherPath:  # noqa: ANN001 - models.NatureLM
    """A NatureLM model's audio path (benchmarks build the official-size one with random weights)."""
    import torch

    model = model.eval()

    def tokens(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.encode_audio_all(torch.from_numpy(features.astype(np.float32))).qformer_out.numpy()

    proj = model.audio_llama_proj
    return TeacherPath(identity, tokens, proj.weight.detach().numpy().copy(), proj.bias.detach().numpy().copy())


def conv_stack(arch: str, first_expansion: int = 1):  # noqa: ANN201 - torch.nn.Sequential
    """fbank (batch, 1, frames, 128) -> (batch, channels, frames / 16, 4): MobileNet's inverted residual blocks
    (1x1 expand, 3x3 depthwise, 1x1 project), the body every student shares.

    The token student's first block does not expand (MobileNetV2's first bottleneck): at the stem's resolution,
    four times its channels made it the costliest layer (batch norm and ReLU over 2 M values a window); without
    it a training step takes 2.4x less time on this CPU and the small set's held-back centred token cosine rose
    from 0.67 to 0.71. BirdNET's classifier student keeps ``first_expansion=4``: without it, its recall of the
    teacher's detections fell from 53 % to 43 % of 60 windows (benchmarks.real_teacher)."""
    from torch import nn

    stem, stages, _ = ARCHITECTURES[arch]

    def block(c_in: int, c_out: int, stride, expansion: int) -> nn.Module:  # noqa: ANN001 - int or (time, freq)
        wide = c_in * expansion
        expand = [nn.Conv2d(c_in, wide, 1), nn.BatchNorm2d(wide), nn.ReLU()] if expansion > 1 else []
        return nn.Sequential(*expand, nn.Conv2d(wide, wide, 3, stride, 1, groups=wide), nn.BatchNorm2d(wide), nn.ReLU(),
                             nn.Conv2d(wide, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU())

    layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, 2, 1), nn.BatchNorm2d(stem), nn.ReLU()]
    for n, (c_in, c_out, stride) in enumerate(zip((stem, *stages[:-1]), stages, (2, 2, 2, (1, 2)))):
        layers.append(block(c_in, c_out, stride, first_expansion if n == 0 else 4))
    return nn.Sequential(*layers)


def student_encoder_net(arch: str, tokens: int, width: int, projection: tuple[np.ndarray, np.ndarray]):  # noqa: ANN201
    """fbank (batch, frames, 128) -> audio tokens (batch, tokens, llm width); ``.qformer(x)`` stops before the
    frozen projection (what the loss compares)."""
    import torch
    from torch import nn

    _, stages, hidden = ARCHITECTURES[arch]

    class StudentEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = conv_stack(arch)
            self.squeeze = nn.Conv1d(stages[-1] * 4, hidden, 1)  # 128 mel bins / 32 = 4 left: frequency into channels
            self.context = nn.Conv1d(hidden, hidden, 5, padding=2)
            self.pool: torch.Tensor
            self.register_buffer("pool", torch.zeros(tokens, 1), persistent=False)
            self.head = nn.Linear(hidden * 2, width)
            self.projection = nn.Linear(projection[0].shape[1], projection[0].shape[0])
            self.projection.weight.data = torch.from_numpy(projection[0].astype(np.float32))
            self.projection.bias.data = torch.from_numpy(projection[1].astype(np.float32))
            self.projection.requires_grad_(False)
            self.centre: torch.Tensor  # the teacher's mean token (tokens, qformer width), and its projection
            self.centre_projected: torch.Tensor
            self.register_buffer("centre", torch.zeros(tokens, width), persistent=False)
            self.register_buffer("centre_projected", torch.zeros(tokens, projection[0].shape[0]), persistent=False)

        def set_centre(self, mean: torch.Tensor, spread: float | None = None) -> None:
            """The teacher's mean token, which the head's output is added to; ``spread`` (the teacher tokens'
            root-mean-square distance from it, per value) scales a fresh head to answer at about that size for
            inputs of unit size per value (batch-normalised features), rather than at PyTorch's default."""
            self.centre = mean.clone()
            self.centre_projected = mean @ self.projection.weight.detach().t()
            if spread is not None:
                with torch.no_grad():
                    self.head.weight.mul_(spread / float(self.head.weight.std() * np.sqrt(self.head.in_features)))
                    self.head.bias.zero_()

        def spans(self, steps: int) -> torch.Tensor:
            """(tokens, steps): the average over the time steps inside each token's span (the teacher's 29
            tokens cover the window in equal spans)."""
            if self.pool.shape[1] != steps:
                edges = np.linspace(0, steps, tokens + 1)
                matrix = np.zeros((tokens, steps), np.float32)
                for i in range(tokens):
                    lo, hi = int(np.floor(edges[i])), max(int(np.ceil(edges[i + 1])), int(np.floor(edges[i])) + 1)
                    matrix[i, lo:hi] = 1.0 / (hi - lo)
                self.pool = torch.from_numpy(matrix)
            return self.pool

        def qformer(self, features: torch.Tensor) -> torch.Tensor:
            return self.centre + self.deviation(features)

        def deviation(self, features: torch.Tensor) -> torch.Tensor:
            x = self.convs(features.unsqueeze(1))  # (batch, channels, time, 4)
            x = x.permute(0, 1, 3, 2).flatten(1, 2)  # (batch, channels * 4, time)
            x = torch.relu(self.squeeze(x))
            x = torch.relu(self.context(x)) + x
            local = torch.matmul(x, self.spans(x.shape[2]).t()).transpose(1, 2)  # (batch, tokens, hidden)
            overall = x.mean(dim=2, keepdim=True).transpose(1, 2).expand(-1, local.shape[1], -1)
            return self.head(torch.cat([local, overall], dim=2))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            """W d + b + W mean, which is W q + b for the tokens q = mean + d: the same tokens, but the activation
            that int8 quantizes before the projection is the window-specific part d. Uncentred, the tokens' common
            part takes most of its 256 levels (the taught student's answers fell from 79 % to 62 % of the full
            encoder's)."""
            return self.projection(self.deviation(features)) + self.centre_projected

    return StudentEncoder()


def augmented(wave: np.ndarray, valid: int, other: np.ndarray, rng: np.random.Generator,
              sample_rate: int = 16_000) -> np.ndarray:
    """One augmented copy of a window: a gain, another window of the folder mixed in, a shift (up to 2 s), noise."""
    out = wave.astype(np.float64).copy()
    rms = float(np.sqrt(np.mean(out[:valid] ** 2))) + 1e-6
    if rng.random() < 0.6:  # another place's sound under this one, 6-20 dB down
        mix = other.astype(np.float64)
        out += mix * rms * 10 ** (-rng.uniform(6, 20) / 20) / (float(np.sqrt(np.mean(mix**2))) + 1e-6)
    shift = int(rng.integers(-2 * sample_rate, 2 * sample_rate))
    out = np.roll(out, shift)
    if rng.random() < 0.5:
        out += rng.standard_normal(out.shape) * rms * 10 ** (-rng.uniform(15, 40) / 20)
    out *= 10 ** (rng.uniform(-12, 6) / 20)
    return np.clip(out, -1, 1).astype(np.float32)


@dataclass
class ViewSet:
    """The cached views: their keys (``<window>-<view>``), recordings, and which are held back."""

    keys: list[str]
    recordings: list[str]
    held: np.ndarray  # bool per key


def prepare_views(audio: Path, out: Path, teacher: TeacherPath, config: EncoderStudentConfig,
                  held_out: Callable[[str, int], bool], progress=None) -> ViewSet:  # noqa: ANN001 - rich Progress
    """Window every recording, augment, and cache each view's fbank and teacher tokens (resumable)."""
    files = list_audio(audio)
    spec, folder = WindowSpec(), out / TOKENS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    windows, skipped = [], []
    for index, path in enumerate(files):
        relative = str(path.relative_to(audio))
        try:
            windows += [(relative, index, w.start, w.samples, w.valid) for w, _ in window_features(path, spec)]
        except AudioError as err:
            skipped.append(str(err))
    if not windows:
        raise StudentEncoderError(f"{audio}: no readable audio to learn from ({len(files)} files, "
                                  f"{len(skipped)} unreadable).")
    keys, recordings, held = [], [], []
    total = sum(1 if held_out(w[0], w[1]) else config.views for w in windows)
    bar = progress.add_task("teacher tokens", total=total) if progress else None
    pending: list[tuple[str, np.ndarray]] = []
    for n, (relative, index, start, samples, valid) in enumerate(windows):
        rng, judged = np.random.default_rng([config.seed, index, start]), held_out(relative, index)
        for view in range(1 if judged else config.views):  # held-back windows only judge, as recorded
            key = f"{window_key(relative, start)}-{view}"
            keys.append(key), recordings.append(relative), held.append(judged)
            if (folder / f"{key}.tokens.npy").is_file():
                if progress:
                    progress.update(bar, advance=1)
                continue
            other = windows[int(rng.integers(len(windows)))][3]
            pending.append((key, fbank(samples if view == 0 else augmented(samples, valid, other, rng))))
        if len(pending) >= 16 or n == len(windows) - 1:
            _ask_teacher(pending, teacher, folder)
            if progress:
                progress.update(bar, advance=len(pending))
            pending = []
    return ViewSet(keys, recordings, np.asarray(held))


def _ask_teacher(pending: list[tuple[str, np.ndarray]], teacher: TeacherPath, folder: Path) -> None:
    """Teacher tokens of a batch of views, each written after its fbank (a tokens file means a complete view)."""
    if not pending:
        return
    tokens = teacher.tokens(np.stack([f for _, f in pending]))
    for (key, features), view_tokens in zip(pending, tokens):
        np.save(folder / f"{key}.fbank.npy", features.astype(np.float16))
        with atomic_path(folder / f"{key}.tokens.npy") as tmp:
            with tmp.open("wb") as handle:
                np.save(handle, view_tokens.astype(np.float32))


def token_loss(student, teacher, mean):  # noqa: ANN001, ANN201 - torch tensors (batch, tokens, width), mean (tokens, width)
    """Per token: 1 - cosine of both centred on the teacher's mean token, plus the squared error over the teacher
    tokens' variance; and that centred cosine.

    Teacher tokens share a large common part (a random or tiny teacher's are 0.999 alike), so a raw cosine or
    an error scaled by the tokens' power is nearly perfect for a student that outputs the mean token and learned
    nothing of the window: centred and scaled by the variance, that student scores 0 and 1.
    """
    import torch.nn.functional as F

    cosine = F.cosine_similarity(student - mean, teacher - mean, dim=-1)
    scaled = ((student - teacher) ** 2).sum(-1) / ((teacher - mean) ** 2).sum(-1).mean().clamp(min=1e-8)
    return (1 - cosine).mean() + scaled.mean(), cosine.detach()


def student_loss(net, features, tokens, mean):  # noqa: ANN001, ANN201 - module, torch tensors
    """The token loss on the Q-Former's tokens (the student's output contract) and on the same tokens through
    the frozen LLM projection (what the decoder reads: a projection that narrows, as a tiny teacher's does,
    weighs the directions the answers depend on); and the centred cosine of the projected tokens."""
    qformer = net.qformer(features)
    raw, _ = token_loss(qformer, tokens, mean)
    projected, cosine = token_loss(net.projection(qformer), net.projection(tokens), net.projection(mean))
    return raw + projected, cosine


def token_moments(folder: Path, keys: list[str]) -> tuple[np.ndarray, float]:
    """The teacher's mean token per position over these cached views (tokens, width), float32, and the tokens'
    root-mean-square distance from it per value: one pass over the files, one file at a time (float64 sums)."""
    total = squares = None
    for key in keys:
        tokens = np.load(folder / f"{key}.tokens.npy").astype(np.float64)
        total = tokens if total is None else total + tokens
        squares = tokens**2 if squares is None else squares + tokens**2
    mean = total / len(keys)
    return mean.astype(np.float32), float(np.sqrt(max(float((squares / len(keys) - mean**2).mean()), 0.0)))


def _batch(folder: Path, keys: list[str]):  # noqa: ANN202 - (features, tokens) torch tensors
    import torch

    features = np.stack([np.load(folder / f"{k}.fbank.npy").astype(np.float32) for k in keys])
    tokens = np.stack([np.load(folder / f"{k}.tokens.npy") for k in keys])
    return torch.from_numpy(features), torch.from_numpy(tokens)


def train_student_encoder(views: ViewSet, out: Path, teacher: TeacherPath, config: EncoderStudentConfig,
                          progress=None, stop_after: int | None = None):  # noqa: ANN001, ANN201 - torch module
    """Fit the student on the views not held back; resumes from ``out``'s state after every epoch. Returns the
    student (its best judged epoch) and a summary: epochs run, the best one, the loss per epoch, why it stopped.

    ``stop_after`` epochs simulates an interruption (tests).
    """
    import torch

    folder = out / TOKENS_DIR
    train_keys = [k for k, h in zip(views.keys, views.held) if not h]
    if len(train_keys) < MIN_WINDOWS * config.views:
        raise StudentEncoderError(f"{len(train_keys) // config.views} windows to train on; a student encoder needs at "
                                  f"least {MIN_WINDOWS} ({MIN_WINDOWS * 10 // 2 + 5} s of audio outside the held-back "
                                  "recordings), and a good one hours.")
    sample = np.load(folder / f"{train_keys[0]}.tokens.npy")
    if sample.shape[1] != teacher.projection_weight.shape[1]:
        raise StudentEncoderError(f"{folder}: the cached teacher tokens are {sample.shape[1]} wide and the teacher's "
                                  f"projection reads {teacher.projection_weight.shape[1]}; use a new --out.")
    reproducible(config.seed)
    net = student_encoder_net(config.arch, sample.shape[0], sample.shape[1],
                              (teacher.projection_weight, teacher.projection_bias))
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=config.lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(train_keys) // config.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=steps_per_epoch * config.epochs,
                                                   pct_start=WARM_UP)
    rising = int(WARM_UP * config.epochs)  # epochs of a rising rate: they neither stop training nor count as stalled
    epoch, judged, best = _resume(out / STATE_FILE, net, optimiser, schedule, config, teacher)
    teacher_mean, spread = token_moments(folder, train_keys)
    mean = torch.from_numpy(teacher_mean)
    net.set_centre(mean, None if epoch else spread)
    # channels-last convolutions: 1.76x faster per batch on this CPU (the same values; the layout only)
    net = net.to(memory_format=torch.channels_last)
    judge_keys = judged_keys(views)
    what = "held-back recordings' token loss" if judge_keys else "training loss"
    bar = progress.add_task("student encoder", total=config.epochs, completed=epoch) if progress else None
    stopped = plateau_reason(judged, config, what, rising) or "epochs done"
    while epoch < config.epochs and stopped == "epochs done":
        net.train()
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_keys))
        losses, cosines = [], []
        for start in range(0, len(order), config.batch):
            features, tokens = _batch(folder, [train_keys[i] for i in order[start:start + config.batch]])
            loss, cosine = student_loss(net, features, tokens.float(), mean)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            cosines.append(float(cosine.mean()))
        epoch += 1
        judged.append(held_back_loss(net, folder, judge_keys, mean) if judge_keys else float(np.mean(losses)))
        if judged[-1] <= min(judged):
            best = {name: value.clone() for name, value in net.state_dict().items()}
        stopped = plateau_reason(judged, config, what, rising) or "epochs done"
        torch.save({"model": net.state_dict(), "optimizer": optimiser.state_dict(), "schedule": schedule.state_dict(),
                    "epoch": epoch, "config": asdict(config), "teacher": teacher.identity, "loss": LOSS,
                    "body": BODY, "judged": judged, "best": best}, str(out / STATE_FILE))
        if progress:
            progress.update(bar, advance=1 if stopped == "epochs done" else config.epochs - epoch + 1,
                            description=f"student encoder (centred token cosine {np.mean(cosines):.3f})")
        if stop_after is not None and epoch >= stop_after:
            break
    if best is not None:  # the epoch the held-back recordings liked best, not the last one run
        net.load_state_dict(best)
    summary = {"epochs": epoch, "best_epoch": int(np.argmin(judged)) + 1 if judged else 0, "judged_on": what,
               "epoch_losses": [round(x, 5) for x in judged], "stopped_because": stopped}
    return net.to(memory_format=torch.contiguous_format).eval(), summary


def judged_keys(views: ViewSet) -> list[str]:
    """The held-back recordings' windows as recorded (view 0): what training is judged on, never trained on."""
    return [k for k, h in zip(views.keys, views.held) if h and k.endswith("-0")]


def held_back_loss(net, folder: Path, keys: list[str], mean) -> float:  # noqa: ANN001 - module, torch tensor
    """The training loss on the held-back recordings' windows as recorded (never trained on): when it stops
    falling, more epochs fit the training windows only."""
    import torch

    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(keys), 16):
            features, tokens = _batch(folder, keys[start:start + 16])
            total += float(student_loss(net, features, tokens.float(), mean)[0]) * len(features)
    net.train()
    return total / len(keys)


def same_run(state: dict, config: EncoderStudentConfig, teacher: TeacherPath) -> bool:
    """Whether a train state (as saved per epoch) is of these settings and this teacher: a run to resume."""
    return (state["config"] == asdict(config) and state["teacher"] == teacher.identity and state.get("loss") == LOSS
            and state.get("body") == BODY)


def stale_state(path: Path, config: EncoderStudentConfig, teacher: TeacherPath) -> bool:
    """Whether the train state at ``path`` exists and belongs to another run (other settings or teacher)."""
    import torch

    return path.is_file() and not same_run(torch.load(str(path), weights_only=True), config, teacher)


def drop_stale_state(out: Path, config: EncoderStudentConfig, teacher: TeacherPath) -> None:
    """Delete ``out``'s train state when it belongs to another run, so training starts again (the cached teacher
    tokens stay); a state of this run is kept, so a run cut off mid-training resumes. For callers that own the
    folder (``edge build``, benchmarks); ``edge distill encoder`` refuses another run's folder instead."""
    if stale_state(out / STATE_FILE, config, teacher):
        (out / STATE_FILE).unlink()


def _resume(path: Path, net, optimiser, schedule, config: EncoderStudentConfig,  # noqa: ANN001
            teacher: TeacherPath) -> tuple[int, list[float], dict | None]:
    """Where an earlier run of the same settings and teacher stopped: its epoch, its held-back loss per epoch and
    its best weights so far ((0, [], None) when none)."""
    import torch

    if not path.is_file():
        return 0, [], None
    state = torch.load(str(path), weights_only=True)
    if not same_run(state, config, teacher):
        raise StudentEncoderError(f"{path}: a run with other settings or another teacher is in this folder; use a "
                                  "new --out.")
    net.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(state["epoch"]), list(state.get("judged", [])), state.get("best")


def fidelity(net, views: ViewSet, folder: Path) -> dict:  # noqa: ANN001 - the student module
    """Token cosine of student against teacher on the held-back recordings' windows as recorded (view 0):
    raw, and centred on the teacher's mean token (a random teacher's tokens share a large common part that
    makes raw cosine look better than the student is)."""
    import torch

    keys = judged_keys(views)
    if not keys:
        return {"windows": 0}
    student, teacher = [], []
    with torch.no_grad():
        for start in range(0, len(keys), 16):
            features, tokens = _batch(folder, keys[start:start + 16])
            student.append(net.qformer(features).numpy())
            teacher.append(tokens.numpy())
    return {"windows": len(keys), "recordings": len({views.recordings[views.keys.index(k)] for k in keys}),
            **token_fidelity(np.concatenate(student), np.concatenate(teacher))}


def token_fidelity(student: np.ndarray, teacher: np.ndarray) -> dict:
    """Per-token cosine of (windows, tokens, width) arrays, raw and centred on the teacher's mean token."""
    mean = teacher.mean(axis=(0, 1))

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)).ravel()

    raw, centred = cos(student, teacher), cos(student - mean, teacher - mean)
    return {"token_cosine_mean": float(raw.mean()), "token_cosine_p5": float(np.quantile(raw, 0.05)),
            "centred_cosine_mean": float(centred.mean()), "centred_cosine_p5": float(np.quantile(centred, 0.05))}


def every_fifth(relative: str, index: int) -> bool:
    """The held-back rule without labels: every fifth recording of the folder (from the third) only judges."""
    return index % 5 == 2
