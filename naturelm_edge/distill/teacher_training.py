"""Teach a tiny NatureLM teacher real species names, so distillation can be shown to learn something.

The official teacher cannot run here, and a random tiny one answers noise. This fine-tunes the tiny
checkpoint's language side (audio projection, Llama with LoRA) on file-level labels of real recordings,
the audio encoder frozen, and writes a checkpoint in the official layout. Trained tensors are stored in
float32: the random Q-Former maps clips to vectors that differ by about 1 %, and bf16 rounding of the
projection would erase the differences the language model learnt to read. It exists for the
distillation proof (tests and ``benchmarks/distillation.py``), not for field use.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from naturelm_edge.audio import WindowSpec, window_features
from naturelm_edge.distill.species import labels_for
from naturelm_edge.errors import AudioError, EdgeError


def whiten_projection(proj, features, seed: int = 0) -> None:  # noqa: ANN001 - torch Linear, Tensor
    """Data-dependent init: make the projection see standardised features (LSUV-style).

    The random Q-Former's outputs share a large common vector and differ by about 1 %; starting from a
    projection that removes the mean and scales each feature by its spread lets training read them. Its
    draw has a generator of its own: how much randomness loading the model used must not change it.
    """
    import torch

    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = torch.randn(proj.out_features, proj.in_features, generator=generator) / proj.in_features**0.5 / std
        proj.weight.copy_(weight)
        proj.bias.copy_(-(weight @ mean))


def finetune_teacher(checkpoint: Path, audio_root: Path, out: Path, question: str, steps: int = 1500,
                     seed: int = 0, labels_file: Path | None = None, files: list[Path] | None = None,
                     lr: float = 2e-3, progress=None) -> Path:  # noqa: ANN001
    """Write a fine-tuned copy of the (tiny) ``checkpoint`` to ``out`` and return ``out``."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file

    from naturelm_edge.models import load
    from naturelm_edge.models.checkpoint import EMBED_ALIAS, EMBED_KEY

    torch.manual_seed(seed)
    loaded = load(checkpoint, with_llm=True)
    model, llm = loaded.model, loaded.llm
    labels = labels_for(audio_root, labels_file)
    if not labels:
        raise EdgeError(f"{audio_root}: no labels to teach the teacher with.")
    chosen = files if files is not None else [audio_root / p for p in sorted(labels)]
    spec = WindowSpec(10.0, 5.0, 16_000)
    features, answers = [], []
    for path in chosen:
        relative = str(Path(path).relative_to(audio_root))
        try:
            for _, window_fbank in window_features(path, spec):
                features.append(window_fbank)
                answers.append(labels[relative])
        except AudioError:
            continue
    with torch.no_grad():
        qformer = torch.cat([model.encode_audio_all(torch.from_numpy(np.stack(features[i : i + 16]))).qformer_out
                             for i in range(0, len(features), 16)])
    whiten_projection(model.audio_llama_proj, qformer.reshape(-1, qformer.shape[-1]), seed)
    end = llm.tokenizer.convert_tokens_to_ids(model.config.end_sym)
    targets = [llm.tokenizer(a, add_special_tokens=False).input_ids + [end] for a in answers]
    trainable = list(model.audio_llama_proj.parameters()) + list(llm.model.parameters())
    for p in llm.model.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    bar = progress.add_task("teaching the tiny teacher", total=steps) if progress else None
    llm.model.eval()  # no LoRA dropout: the point is to fit these clips, fast
    for _ in range(steps):
        batch = rng.choice(len(answers), size=min(16, len(answers)), replace=False)
        tokens = model.audio_llama_proj(qformer[batch])
        prefix = llm.prompt_embeds(tokens, question)
        answer_embeds = [llm.embed_tokens(torch.tensor(targets[i])) for i in batch]
        longest = max(len(targets[i]) for i in batch)
        embeds = torch.zeros(len(batch), prefix.shape[1] + longest, prefix.shape[2])
        mask = torch.zeros(embeds.shape[:2], dtype=torch.long)
        labels_t = torch.full(embeds.shape[:2], -100, dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(targets[i])
            embeds[row, : prefix.shape[1]] = prefix[row]
            embeds[row, prefix.shape[1] : prefix.shape[1] + n] = answer_embeds[row]
            mask[row, : prefix.shape[1] + n] = 1
            labels_t[row, prefix.shape[1] - 1 : prefix.shape[1] - 1 + n] = torch.tensor(targets[i])
        logits = llm.model(inputs_embeds=embeds, attention_mask=mask).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels_t.reshape(-1), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress:
            progress.update(bar, advance=1, description=f"teaching the tiny teacher (loss {loss.item():.3f})")
    llm.model.eval()

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(loaded.source.root / "config.json", out / "config.json")
    shutil.copytree(loaded.source.root / model.config.llama_path, out / model.config.llama_path, dirs_exist_ok=True)
    stored = load_file(str(loaded.source.weights))
    state = {**{k: v for k, v in model.state_dict().items()},
             **{f"llama_model.{k}": v for k, v in llm.model.state_dict().items()}}
    state[EMBED_KEY] = state.pop(EMBED_ALIAS)
    trained = {"audio_llama_proj.weight", "audio_llama_proj.bias"} | {k for k in stored if k.startswith("llama")}
    written = {k: state[k].detach().to(torch.float32 if k in trained else stored[k].dtype).contiguous() for k in stored}
    save_file(written, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
