"""``edge distill train``: fit a student to a teacher cache (cross-entropy + top-k KL), resumably.

Deterministic on CPU for a given seed: the data order of every epoch comes from the seed and the epoch
number, so a run resumed from its last checkpoint takes exactly the steps an uninterrupted one would.

Cost: teacher forcing is compute-bound (matrix products), so the time is the tokens a step computes. The
vocabulary's logits are computed only where an answer token is scored, and training stops once the held-out
species' loss has stopped improving (``TrainConfig.patience``), which the summary records as the reason.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from naturelm_edge.distill.cache import TeacherCache
from naturelm_edge.distill.reproducible import reproducible
from naturelm_edge.distill.species import SpeciesSplit, check_present, split_species
from naturelm_edge.distill.stopping import plateau_reason
from naturelm_edge.distill.student import (
    StudentConfig,
    build_student,
    build_vocabulary,
    save_student,
)
from naturelm_edge.errors import EdgeError
from naturelm_edge.prompt import prompt_parts

TRAIN_STATE = "train_state.pt"
SPLIT_FILE = "split.json"


def ffn_width(hidden: int) -> int:
    """The student's one FFN-width rule: Llama's SwiGLU 8/3 of the hidden size (the parameters of a 4x MLP)."""
    return hidden * 8 // 3


@dataclass
class TrainConfig:
    epochs: int = 6  # the learning rate falls to 0 over them (or over min_steps steps, when that is longer)
    # the fewest optimiser steps a schedule spans. On the small shared set (37 steps an epoch) 6 epochs reach a
    # held-out species' loss of 1.37 and 8 of 1.30, where 15 constant-rate epochs reached 1.40; a few minutes of
    # audio make 3 steps an epoch, and 8 epochs of them (24 steps) left the tests' student at 4.8 where 66 steps
    # reach 2.3. (0: epochs alone)
    min_steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    ce_weight: float = 1.0
    kl_weight: float = 1.0
    seed: int = 0
    save_every: int = 50
    layers: int = 4
    hidden: int = 384
    heads: int = 6
    kv_heads: int = 2
    intermediate: int | None = None  # the FFN width; None: Llama's rule, 8/3 of hidden (1024 at 384)
    held_out_fraction: float = 0.25
    # fp32 | bf16 | auto: bf16 where the CPU multiplies it natively (AVX512-BF16, AMX), else fp32. On the small
    # shared set bf16 took 0.51 s a step where fp32 took 0.74, and reached a held-out species' loss of 1.374 after
    # 6 epochs where fp32 reached 1.367
    precision: str = "auto"
    patience: int = 3  # epochs without min_improvement of the epoch's loss before stopping (0: run every epoch)
    min_improvement: float = 0.02  # relative to the best epoch loss so far

    def __post_init__(self) -> None:
        if self.intermediate is None:
            self.intermediate = ffn_width(self.hidden)


@dataclass
class Example:
    window: str
    task: str
    prefix_before: list[int]  # student ids
    prefix_after: list[int]
    answer: list[int]
    topk_ids: np.ndarray  # student ids, -1 where the student lacks the token
    topk_logprobs: np.ndarray


def teacher_tokenizer(cache_root: Path):  # noqa: ANN201 - tokenizers.Tokenizer
    from tokenizers import Tokenizer

    path = cache_root / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        raise EdgeError(f"{path}: the teacher cache has no tokenizer.")
    return Tokenizer.from_file(str(path))


def resolve_split(cache: TeacherCache, split_file: Path | None, config: TrainConfig) -> SpeciesSplit | None:
    labels = {r["label"] for r in cache.records() if r.get("label")}
    if split_file is not None:
        split = SpeciesSplit.read(split_file)
    elif labels:
        split = split_species(labels, config.held_out_fraction, config.seed, source=str(cache.root))
    else:
        return None  # no labels: every window trains
    check_present(split, labels, str(cache.root))
    return split


def prepare(cache: TeacherCache, split: SpeciesSplit | None,
            config: TrainConfig) -> tuple[StudentConfig, list[Example], list[Example]]:
    """Student vocabulary, training examples (distillation species) and judging examples (held-out species,
    never trained on: their loss says when training stops helping) from the cache."""
    tokenizer = teacher_tokenizer(cache.root)
    meta = cache.meta
    every = list(cache.records())
    records = [r for r in every if split is None or split.role(r.get("label")) != "held_out"]
    judged = [r for r in every if split is not None and split.role(r.get("label")) == "held_out"]
    if not records:
        raise EdgeError(f"{cache.root}: the cache holds no windows of distillation species to train on.")
    prompts = {}
    for task in meta.tasks:
        before, after = prompt_parts(meta.prompt_template, task["question"])
        prompts[task["id"]] = (tokenizer.encode(before, add_special_tokens=False).ids,
                               tokenizer.encode(after, add_special_tokens=False).ids)
    answer_ids = {i for r in records for i in r["token_ids"]}
    prompt_ids = {i for b, a in prompts.values() for i in b + a}
    vocab = build_vocabulary(answer_ids, prompt_ids, {meta.bos_id, *meta.stop_ids})
    student = StudentConfig(
        teacher_ids=vocab, bos_id=meta.bos_id, stop_ids=list(meta.stop_ids), audio_dim=meta.audio_dim,
        prompt_template=meta.prompt_template, tasks=meta.tasks, layers=config.layers, hidden=config.hidden,
        heads=config.heads, kv_heads=config.kv_heads, intermediate=config.intermediate,
        teacher=meta.teacher, tasks_sha256=meta.tasks_sha256, extra={"cache": str(cache.root.resolve())},
    )
    to_student = student.to_student()

    def mapped(ids: list[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        inside = ids < to_student.shape[0]
        return np.where(inside, to_student[np.minimum(ids, to_student.shape[0] - 1)], -1)

    def example(r: dict) -> Example:
        before, after = prompts[r["task"]]
        return Example(
            r["window"], r["task"], [int(x) for x in mapped([meta.bos_id] + before)], [int(x) for x in mapped(after)],
            [int(x) for x in mapped(r["token_ids"])], mapped(r["topk_ids"]), np.asarray(r["topk_logprobs"], np.float32),
        )

    return student, [example(r) for r in records], [example(r) for r in judged]


def train(cache_dir: Path, out: Path, config: TrainConfig, split_file: Path | None = None,
          progress=None, stop_after: int | None = None, init: Path | None = None) -> dict:  # noqa: ANN001
    """Train (or resume training) a student into ``out``; ``stop_after`` steps simulates an interruption.

    ``init``: a trained student to start from (fine-tuning it on another encoder's tokens of the same answers).
    """
    import torch

    cache = TeacherCache(cache_dir)
    split = resolve_split(cache, split_file, config)
    student_config, examples, judged = prepare(cache, split, config)
    out.mkdir(parents=True, exist_ok=True)
    if split is not None:
        split.write(out / SPLIT_FILE)
    reproducible(config.seed)
    model = build_student(student_config)
    if init is not None:
        from naturelm_edge.distill.student import load_student

        model.load_state_dict(load_student(init).state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lengths = np.array([sequence_length(e) for e in examples])
    steps_per_epoch = len(epoch_batches(lengths, config, 0))
    epochs = max(config.epochs, -(-config.min_steps // steps_per_epoch))
    total = steps_per_epoch * epochs
    step, epoch_losses, stopped = 0, [], "epochs done"
    state_path = out / TRAIN_STATE
    if state_path.is_file():
        state = torch.load(str(state_path), weights_only=True)
        if state["config"] != asdict(config) or state["vocab"] != student_config.teacher_ids:
            raise EdgeError(f"{state_path}: a training run with other settings or data is in this folder; use a new --out.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch_losses = state["step"], list(state.get("epoch_losses", []))
    audio = {e.window: torch.from_numpy(cache.audio(e.window)) for e in [*examples, *judged]}
    bar = progress.add_task("distilling", total=total, completed=step) if progress else None
    model.train()
    losses: list[tuple[float, float]] = []
    while step < total:
        epoch, index = divmod(step, steps_per_epoch)
        batch = [examples[i] for i in epoch_batches(lengths, config, epoch)[index]]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps_per_epoch, total, config)
        optimizer.zero_grad()
        ce, kl = batch_gradient(model, batch, audio, config)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append((float(ce), float(kl)))
        if progress:
            progress.update(bar, advance=1, description=f"distilling (ce {float(ce):.3f}, kl {float(kl):.3f})")
        plateau = None
        if step % steps_per_epoch == 0:  # the held-out species' loss when there are any, else the training loss
            epoch_losses.append(judged_loss(model, judged, audio, config) if judged else
                                float(np.mean([c + k for c, k in losses[-steps_per_epoch:]])))
            plateau = plateau_reason(epoch_losses, config, "held-out species' loss" if judged else "training loss")
        if step % config.save_every == 0 or step == total or step == stop_after or plateau:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "config": asdict(config), "vocab": student_config.teacher_ids, "epoch_losses": epoch_losses},
                       str(state_path))
        if stop_after is not None and step >= stop_after:
            return {"step": step, "stopped": True}
        if plateau:
            stopped = plateau
            if progress:
                progress.update(bar, advance=total - step)
            break
    model.eval()
    save_student(model, out)
    shutil.copytree(cache.root / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    summary = {"steps": step, "examples": len(examples), "vocab": student_config.vocab_size,
               "judged_on": "held-out species" if judged else "training windows", "judged_examples": len(judged),
               "epochs_scheduled": epochs, "precision": precision_used(config),
               "epochs": len(epoch_losses), "stopped_because": stopped, "epoch_losses": epoch_losses,
               "final_ce": float(np.mean([c for c, _ in losses[-steps_per_epoch:]])) if losses else None,
               "final_kl": float(np.mean([k for _, k in losses[-steps_per_epoch:]])) if losses else None}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def epoch_batches(lengths: np.ndarray, config: TrainConfig, epoch: int) -> list[np.ndarray]:
    """The epoch's batches (example indices), from the seed and the epoch alone. Batches drawn by length padded
    3x less, but the proof's student then memorised 72 % of its windows against 90 %: plain shuffled batches."""
    order = np.random.default_rng(config.seed + epoch).permutation(len(lengths))
    return [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]


def learning_rate(step: int, steps_per_epoch: int, total: int, config: TrainConfig) -> float:
    """The rate at ``step``, from the step alone (a resumed run takes the rates an uninterrupted one would):
    a linear warm-up over half an epoch, then a cosine to 0 at the last step."""
    warmup = max(1, steps_per_epoch // 2)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return float(config.lr * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup))))


def sequence_length(example: Example) -> int:
    return len(example.prefix_before) + len(example.prefix_after) + len(example.answer)


def answer_tokens(batch: list[Example]) -> int:
    return sum(len(ex.answer) for ex in batch)


def batch_gradient(model, batch: list[Example], audio: dict, config: TrainConfig) -> tuple[float, float]:  # noqa: ANN001
    """Accumulate the batch's gradient chunk by chunk (``length_chunks``); its cross-entropy and KL."""
    ce = kl = 0.0
    tokens = answer_tokens(batch)
    for chunk in length_chunks(batch):
        with mixed_precision(config):
            loss, chunk_ce, chunk_kl = batch_loss(model, chunk, audio, config, tokens)
        loss.backward()
        ce, kl = ce + float(chunk_ce), kl + float(chunk_kl)
    return ce, kl


def length_chunks(batch: list[Example], most: int = 4) -> list[list[Example]]:
    """The batch in at most ``most`` groups of similar length, each padded to its own longest sequence.

    Batches are drawn at random (see ``epoch_batches``), so one long answer (a random teacher's run to 300
    tokens; a real one's long caption) pads the whole batch: the student then multiplies mostly padding. Split
    by length, with the loss of every group averaged over the whole batch's answer tokens, the gradients add up
    to the batch's own: the same step, a fraction of the products. The grouping minimises the padded tokens.
    """
    ordered = sorted(batch, key=sequence_length)
    sizes = [sequence_length(e) for e in ordered]
    n = len(ordered)
    # best[k][i]: fewest padded tokens for the first i examples in k groups (each group padded to its last)
    best = [[0.0] + [float("inf")] * n for _ in range(most + 1)]
    cut = [[0] * (n + 1) for _ in range(most + 1)]
    for k in range(1, most + 1):
        for i in range(1, n + 1):
            for j in range(i):
                cost = best[k - 1][j] + (i - j) * sizes[i - 1]
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    k = min(range(1, most + 1), key=lambda g: (best[g][n], g))
    groups, end = [], n
    while end > 0:
        start = cut[k][end]
        groups.append(ordered[start:end])
        end, k = start, k - 1
    return groups[::-1]


def judged_loss(model, judged: list[Example], audio: dict, config: TrainConfig) -> float:  # noqa: ANN001
    """The loss on examples never trained on (held-out species), in batches, without gradients."""
    import torch

    lengths = np.array([sequence_length(e) for e in judged])
    order, total, tokens = np.argsort(lengths, kind="stable"), 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), config.batch_size):
            batch = [judged[i] for i in order[start:start + config.batch_size]]
            with mixed_precision(config):
                loss, _, _ = batch_loss(model, batch, audio, config)
            scored = sum(int((np.asarray(e.answer) >= 0).sum()) for e in batch)
            total, tokens = total + float(loss) * scored, tokens + scored
    model.train()
    return total / max(tokens, 1)


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): then mixed precision is 1.6x
    faster on the student's matrix products (measured here); elsewhere it would be emulated, and slower. Read
    once: every chunk of every training step asks."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def precision_used(config: TrainConfig) -> str:
    """"bf16" or "fp32": what ``config.precision`` means on this CPU (the summary records it: a build's student
    differs slightly between machines with and without native bf16)."""
    return "bf16" if config.precision == "bf16" or (config.precision == "auto" and native_bf16()) else "fp32"


def mixed_precision(config: TrainConfig):  # noqa: ANN201 - a context manager
    """bf16 autocast for the forward pass and the loss (weights and optimizer stay float32), as configured."""
    import contextlib

    import torch

    if precision_used(config) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batch_loss(model, batch: list[Example], audio: dict, config: TrainConfig,  # noqa: ANN001, ANN201
               tokens: int | None = None):
    """Cross-entropy on the teacher's answer tokens plus KL to its renormalised top-k distribution, averaged over
    ``tokens`` answer tokens (default: the batch's; a chunk of a larger batch is averaged over the whole's)."""
    import torch
    import torch.nn.functional as F

    sequences, targets = [], []
    for ex in batch:
        head = model.embed(torch.tensor(ex.prefix_before))
        body = model.audio_proj(audio[ex.window])
        # an answer token outside the student's vocabulary (-1, only in held-out species) is read as id 0
        tail = model.embed(torch.tensor(ex.prefix_after + ex.answer[:-1], dtype=torch.long).clamp(min=0))
        sequences.append(torch.cat([head, body, tail]))
        start = head.shape[0] + body.shape[0] + len(ex.prefix_after) - 1
        targets.append(start)
    length = max(s.shape[0] for s in sequences)
    embeds = torch.zeros(len(batch), length, sequences[0].shape[1])
    mask = torch.zeros(len(batch), length, dtype=torch.long)
    for i, seq in enumerate(sequences):
        embeds[i, : seq.shape[0]] = seq
        mask[i, : seq.shape[0]] = 1
    hidden = model.llama.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    # the vocabulary's logits only where an answer token is scored (the same values as all logits, sliced)
    scored = torch.cat([hidden[i, targets[i] : targets[i] + len(ex.answer)] for i, ex in enumerate(batch)])
    logits = model.llama.lm_head(scored)
    ce_terms, kl_terms, offset = [], [], 0
    for ex in batch:
        rows, offset = logits[offset : offset + len(ex.answer)], offset + len(ex.answer)
        logq = F.log_softmax(rows.float(), dim=-1)
        answer = torch.tensor(ex.answer)
        ce_terms.append(F.nll_loss(logq, answer, reduction="sum", ignore_index=-1))
        ids = torch.from_numpy(ex.topk_ids)
        known = ids >= 0
        teacher_logp = torch.from_numpy(ex.topk_logprobs).masked_fill(~known, float("-inf"))
        p = torch.softmax(teacher_logp, dim=-1)  # renormalised over the tokens the student has
        q = logq.gather(1, ids.clamp(min=0))
        kl_terms.append((p * (torch.log(p.clamp(min=1e-12)) - q)).masked_fill(~known, 0.0).sum())
    tokens = tokens or answer_tokens(batch)
    ce = torch.stack(ce_terms).sum() / tokens
    kl = torch.stack(kl_terms).sum() / tokens
    return config.ce_weight * ce + config.kl_weight * kl, ce.detach(), kl.detach()
