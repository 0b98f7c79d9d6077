"""A classifier student of a scores teacher: the student encoder's convolutions, pooled to the teacher's
embedding width, with the teacher's own last layer (frozen, cut to the bundle's labels) on top.

With the teacher's classifier frozen, the student only has to reproduce the teacher's embedding, and every
label it keeps is scored exactly as the teacher scores it from that embedding. The loss says so: the squared
error of the embedding over the teacher embeddings' variance, plus knowledge distillation on the kept labels
(binary cross-entropy between the sigmoids of both logits at temperature ``T``, times ``T**2``, because the
teacher's labels are independent sigmoids, not a softmax). A presence head beside the classes learns the
teacher's most confident animal class over all its labels (binary cross-entropy against its sigmoid): the
runtime's "None" is as sure as that head says, so a window where the teacher would hear a species the bundle
does not carry, or one the student's labels miss, escalates instead of passing as silence. Training stops when
the validation recordings' loss has not improved by ``min_improvement`` for ``patience`` epochs, and says so.

The labels: every animal class the teacher heard (sigmoid >= ``heard``) in a training window as recorded, plus
those the user asks for (a species file, or the range model's for a place and week), in the teacher's order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from naturelm_edge.distill.encoder import ARCHITECTURES, conv_stack
from naturelm_edge.distill.scores import ScoreSet
from naturelm_edge.edge_runtime.scores import sigmoid
from naturelm_edge.errors import EdgeError
from naturelm_edge.progress import Progress

HEARD = 0.5  # a label is kept when the teacher gives it this confidence in a training window


FIRST_EXPANSION = 4  # this student's first block keeps its expansion (see distill.encoder.conv_stack)
# precedents kept per label for the support column: training windows the teacher named with it, as recorded
# (the graph carries them: 32 x 1,024 floats, 128 KB a label in fp32)
PRECEDENTS = 32


@dataclass(frozen=True)
class ClassifierConfig:
    arch: str = "mobilenet-s"
    epochs: int = 30  # at most
    batch: int = 32
    lr: float = 3e-3
    temperature: float = 2.0
    patience: int = 4
    min_improvement: float = 0.01
    presence_weight: float = 1.0  # of the presence head's loss, beside the embedding's and the labels'
    seed: int = 0


def kept_labels(train: ScoreSet, animal: np.ndarray, asked: list[int], heard: float = HEARD) -> list[int]:
    """The teacher's classes the student keeps: heard in training recordings as they are (an augmented copy
    makes the teacher hear species that are not there: 36 on the shared recordings' training windows, 66 with
    five noisy copies each), or asked for."""
    found = set(asked)
    recorded = train.views == 0
    if recorded.any():
        confident = sigmoid(train.logits[recorded].astype(np.float32)).max(axis=0) >= heard
        found |= {int(i) for i in np.flatnonzero(confident & animal)}
    if not found:
        raise EdgeError("the teacher heard no species in the training recordings (confidence >= "
                        f"{heard}); give the species to keep with --species FILE or --lat/--lon/--week.")
    return sorted(found)


def classifier_net(arch: str, weight: np.ndarray, bias: np.ndarray):  # noqa: ANN201 - torch.nn.Module
    """fbank (batch, frames, mel bins) -> logits (batch, labels + 1: the last is the presence logit); ``.embed``
    stops at the teacher's embedding."""
    import torch
    from torch import nn

    _, stages, hidden = ARCHITECTURES[arch]

    class StudentClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = conv_stack(arch, first_expansion=FIRST_EXPANSION)
            self.squeeze = nn.Conv1d(stages[-1] * 4, hidden, 1)  # 128 mel bins / 32 = 4 left
            self.context = nn.Conv1d(hidden, hidden, 5, padding=2)
            self.head = nn.Linear(hidden * 2, weight.shape[1])
            self.classes = nn.Linear(weight.shape[1], weight.shape[0])
            self.classes.weight.data = torch.from_numpy(weight.astype(np.float32))
            self.classes.bias.data = torch.from_numpy(bias.astype(np.float32))
            self.classes.requires_grad_(False)
            self.presence = nn.Linear(weight.shape[1], 1)

        def embed(self, features: torch.Tensor) -> torch.Tensor:
            x = self.convs(features.unsqueeze(1))  # (batch, channels, time, 4)
            x = torch.relu(self.squeeze(x.permute(0, 1, 3, 2).flatten(1, 2)))
            x = torch.relu(self.context(x)) + x
            pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
            return torch.relu(self.head(pooled))  # the teacher's embedding is an average of ReLUs: >= 0

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            embedding = self.embed(features)
            return torch.cat([self.classes(embedding), self.presence(embedding)], dim=1)

    return StudentClassifier()


def loss_of(net, features, logits, embedding, heard, config: ClassifierConfig, scale: float):  # noqa: ANN001, ANN201
    """Embedding error over the teacher's variance, temperature-scaled sigmoid distillation on kept labels, and
    the presence head against the teacher's best animal logit (``heard``)."""
    import torch
    import torch.nn.functional as F

    student, temperature = net.embed(features), config.temperature
    matched = ((student - embedding) ** 2).mean() / scale
    soft = F.binary_cross_entropy_with_logits(net.classes(student) / temperature, torch.sigmoid(logits / temperature))
    presence = F.binary_cross_entropy_with_logits(net.presence(student)[:, 0], torch.sigmoid(heard))
    return matched + soft * temperature**2 + presence * config.presence_weight


def _tensors(data: ScoreSet, classes: list[int], animal: np.ndarray):  # noqa: ANN202
    """fbank, kept labels' logits, embedding, and the best animal logit over all the teacher's labels."""
    import torch

    return (torch.from_numpy(data.features), torch.from_numpy(data.logits[:, classes].astype(np.float32)),
            torch.from_numpy(data.embedding.astype(np.float32)),
            torch.from_numpy(data.logits[:, animal].max(axis=1).astype(np.float32)))


def _judge(net, data, config: ClassifierConfig, scale: float) -> float:  # noqa: ANN001
    import torch

    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, data[0].shape[0], 64):
            part = [t[start:start + 64] for t in data]
            total += float(loss_of(net, part[0].float(), *part[1:], config, scale)) * part[0].shape[0]
    return total / max(1, data[0].shape[0])


def train_classifier(train: ScoreSet, validation: ScoreSet, classes: list[int], layer: tuple[np.ndarray, np.ndarray],
                     animal: np.ndarray, config: ClassifierConfig,
                     progress: Progress | None = None):  # noqa: ANN201 - (module, summary)
    """The student fitted to ``train``, judged on ``validation`` every epoch; the best epoch's weights.
    ``animal``: the teacher's labels that are animals (what the presence head learns to hear)."""
    import torch

    if len(train) < config.batch:
        raise EdgeError(f"only {len(train)} training windows: a student needs at least {config.batch}; "
                        "give the build more recordings.")
    torch.manual_seed(config.seed)
    net = classifier_net(config.arch, layer[0][classes], layer[1][classes]).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=config.lr, weight_decay=1e-4)
    data = _tensors(train, classes, animal)
    judged = _tensors(validation, classes, animal) if len(validation) else None
    scale = float(data[2].var()) + 1e-8
    rng, steps = np.random.default_rng(config.seed), -(-len(train) // config.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=config.epochs * steps)
    progress = progress or Progress(quiet=True)
    task = progress.add_task("student classifier", total=config.epochs * steps)
    best, best_state, waited, losses, stopped = float("inf"), None, 0, [], "epochs done"
    started = time.perf_counter()
    for _ in range(config.epochs):
        net.train()
        for batch in np.array_split(rng.permutation(len(train)), steps):
            index = torch.from_numpy(batch)
            loss = loss_of(net, data[0][index].float(), *(t[index] for t in data[1:]), config, scale)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            progress.update(task, advance=1)
        held = _judge(net, judged, config, scale) if judged else _judge(net, data, config, scale)
        losses.append(round(held, 5))
        if held < best * (1 - config.min_improvement):
            best, waited = held, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= config.patience:
                stopped = f"validation loss did not improve by {config.min_improvement:.0%} for {config.patience} epochs"
                break
    net.load_state_dict(best_state)
    net.eval()
    return net, {"epochs": len(losses), "stopped": stopped, "validation_losses": losses, "best_loss": round(best, 5),
                 "train_windows": len(train), "validation_windows": len(validation),
                 "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
                 "seconds": round(time.perf_counter() - started, 1)}


def precedents(net, train: ScoreSet, classes: list[int], animal: np.ndarray, heard: float = HEARD,  # noqa: ANN001
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings of training windows as recorded that the teacher names with a kept label (at most
    :data:`PRECEDENTS` a label, a seeded choice), and the index into ``classes`` of each one's label."""
    import torch

    from naturelm_edge.distill.agreement import named

    kept = np.asarray(classes)
    said = named(train.logits.astype(np.float32), heard, animal)
    rng, rows, owners = np.random.default_rng(seed), [], []
    for column, label in enumerate(kept):
        found = np.flatnonzero((said == label) & (train.views == 0))
        chosen = np.sort(rng.permutation(found)[:PRECEDENTS])
        rows += chosen.tolist()
        owners += [column] * len(chosen)
    with torch.no_grad():
        embedded = [net.embed(torch.from_numpy(train.features[rows[i:i + 64]].astype(np.float32))).numpy()
                    for i in range(0, len(rows), 64)]
    found = np.concatenate(embedded) if embedded else np.zeros((0, net.classes.in_features), np.float32)
    return found / (np.linalg.norm(found, axis=1, keepdims=True) + 1e-6), np.asarray(owners, np.int64)


def with_support(net, examples: np.ndarray, owners: np.ndarray):  # noqa: ANN001, ANN201 - torch modules
    """The student as the bundle's encoder: its labels' logits, its presence logit, and the support of its best
    label (the highest cosine similarity between the window's embedding and that label's precedents; -1 when the
    label has none)."""
    import torch
    from torch import nn

    if not len(examples):  # no precedent at all: one that belongs to no label, so every name lacks support
        examples, owners = np.zeros((1, net.classes.in_features), np.float32), np.array([-1], np.int64)

    class Supported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("examples", torch.from_numpy(examples.astype(np.float32)))
            self.register_buffer("owners", torch.from_numpy(owners))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            embedding = self.net.embed(features)
            labels = self.net.classes(embedding)
            unit = embedding / (torch.linalg.vector_norm(embedding, dim=1, keepdim=True) + 1e-6)
            similar = unit @ self.examples.T
            mine = self.owners[None, :] == labels.argmax(dim=1, keepdim=True)
            support = torch.where(mine, similar, torch.full_like(similar, -1.0)).amax(dim=1, keepdim=True)
            return torch.cat([labels, self.net.presence(embedding), support], dim=1)

    return Supported().eval()
