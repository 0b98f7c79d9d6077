"""``edge export decoder``: the student decoder to ONNX with a KV cache, verified against PyTorch.

optimum-onnx's decoder configs take ``input_ids``; NatureLM's prompt carries the audio as embeddings in
the middle of the sequence, so the graph here takes ``inputs_embeds`` (token embeddings are a lookup in
``decoder_tables.npz``) and ``past_key_values.N.{key,value}``, and returns ``logits`` and
``present.N.{key,value}``. It is exported with ``torch.onnx.export`` around transformers' Llama with an
explicit 4-D causal mask (transformers' own mask builder uses vmap, which the exporter cannot trace).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from naturelm_edge.bundle import roles
from naturelm_edge.distill.cache import TeacherCache
from naturelm_edge.distill.student import StudentConfig, load_student
from naturelm_edge.edge_runtime.decoder import TASK_ANSWER_TOKENS, OnnxDecoder
from naturelm_edge.errors import EdgeError, ExportError
from naturelm_edge.export.onnx_export import ExportSpec, export_module
from naturelm_edge.export.parity import compare
from naturelm_edge.progress import Progress

REPORT_FILE = "decoder_report.json"
VERIFY_WINDOWS = 6


class KVDecoder(torch.nn.Module):
    """inputs_embeds + flat past key/values -> last logits + flat present key/values."""

    def __init__(self, llama: torch.nn.Module, layers: int) -> None:
        super().__init__()
        self.llama, self.layers = llama, layers

    def forward(self, inputs_embeds: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        new, old = inputs_embeds.shape[1], past[0].shape[2]
        query = torch.arange(new).unsqueeze(1) + old
        key = torch.arange(old + new).unsqueeze(0)
        mask = torch.where(key <= query, 0.0, torch.finfo(inputs_embeds.dtype).min)[None, None]
        positions = (torch.arange(new) + old).unsqueeze(0)
        out = self.llama(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers[: self.layers]:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def decoder_spec(config: StudentConfig) -> ExportSpec:
    head_dim = config.hidden // config.heads
    past = [f"past_key_values.{i}.{kind}" for i in range(config.layers) for kind in ("key", "value")]
    present = [name.replace("past_key_values", "present") for name in past]
    axes = {"inputs_embeds": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes.update({n: {0: "batch", 2: "past"} for n in past})
    axes.update({n: {0: "batch", 2: "total"} for n in present})
    return ExportSpec(
        role="decoder",
        input_names=["inputs_embeds", *past],
        output_names=["logits", *present],
        dynamic_axes=axes,
        example_inputs=lambda: (torch.zeros(1, 3, config.hidden),
                                *[torch.zeros(1, config.kv_heads, 2, head_dim) for _ in past]),
        metadata={"naturelm_edge.role": "decoder"},
    )


def torch_step_logits(model, audio_tokens: np.ndarray, before: list[int], after: list[int],
                      ids: list[int]) -> np.ndarray:  # noqa: ANN001 - StudentDecoder
    """Reference logits of every generation step, from one PyTorch pass over the prompt and ``ids`` without a
    cache (row ``i``: the logits that choose token ``i``), so it checks the ONNX graph's cache path.

    One causal pass gives what step-by-step recomputation gives (each position sees only what came before it),
    at one forward instead of one per token: verifying six windows' 300-token answers took 23 s that way."""
    with torch.no_grad():
        head = model.embed(torch.tensor(before))
        body = model.audio_proj(torch.from_numpy(audio_tokens))
        sequence = torch.cat([head, body, model.embed(torch.tensor([*after, *ids], dtype=torch.long))])
        logits = model.llama(inputs_embeds=sequence[None]).logits[0]
    first = head.shape[0] + body.shape[0] + len(after) - 1
    return logits[first:first + len(ids) + 1].numpy()


def greedy_agrees(reference: np.ndarray, ids: list[int], stop: set[int], limit: int) -> bool:
    """Whether greedy decoding on the reference logits picks ``ids`` and ends where they end: each step's most
    likely token is the next id, and a stop token after the last unless ``limit`` tokens were generated."""
    chosen = reference.argmax(axis=-1)
    if any(int(chosen[i]) != token for i, token in enumerate(ids)):
        return False
    return len(ids) >= limit or int(chosen[len(ids)]) in stop


def export_decoder(student_dir: Path, out: Path, cache_dir: Path | None = None,
                   progress: Progress | None = None) -> dict:
    """Export, verify greedy answers and logits on cached real windows, write the report."""
    progress = progress or Progress(quiet=True)
    config = StudentConfig.read(student_dir)
    model = load_student(student_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = decoder_spec(config)
    with progress.step("exporting decoder to ONNX"):
        seconds = export_module(KVDecoder(model.llama, config.layers), spec, out / roles.DECODER.file)
    np.savez(out / roles.DECODER_TABLES.file, embed_tokens=model.embed(torch.arange(config.vocab_size)).detach().numpy(),
             audio_proj_weight=model.audio_proj.weight.detach().numpy(),
             audio_proj_bias=model.audio_proj.bias.detach().numpy())
    shutil.copy2(Path(student_dir) / "tokenizer" / roles.TOKENIZER.file, out / roles.TOKENIZER.file)
    max_new = max(int(t.get("max_new_tokens", TASK_ANSWER_TOKENS)) for t in config.tasks)
    meta = {"teacher_ids": config.teacher_ids, "bos_id": config.bos_id, "stop_ids": config.stop_ids,
            "prompt_template": config.prompt_template, "tasks": config.tasks, "layers": config.layers,
            "kv_heads": config.kv_heads, "head_dim": config.hidden // config.heads, "hidden": config.hidden,
            "audio_dim": config.audio_dim, "max_new_tokens": max_new, "teacher": config.teacher,
            "input_names": spec.input_names, "output_names": spec.output_names}
    (out / roles.DECODER_CONFIG.file).write_text(json.dumps(meta, indent=1) + "\n")
    with progress.step("verifying decoder against PyTorch"):
        report = verify_decoder(model, config, out, cache_dir or _cache_of(config, student_dir))
    report.update({"onnx_bytes": (out / roles.DECODER.file).stat().st_size, "export_seconds": round(seconds, 3),
                   "opset": spec.opset, "student": str(student_dir)})
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        raise ExportError(f"{out / roles.DECODER.file}: ONNX generation differs from PyTorch; see {out / REPORT_FILE}.")
    return report


def _cache_of(config: StudentConfig, student_dir: Path) -> Path:
    cache = config.extra.get("cache")
    if not cache or not Path(cache).is_dir():
        raise EdgeError(f"{student_dir}: the teacher cache it was trained on is gone; pass --cache DIR to verify on.")
    return Path(cache)


def verify_decoder(model, config: StudentConfig, out: Path, cache_dir: Path) -> dict:  # noqa: ANN001
    cache = TeacherCache(cache_dir)
    decoder = OnnxDecoder(out)
    windows = sorted({r["window"] for r in cache.records()})
    picked = [windows[int(i)] for i in np.linspace(0, len(windows) - 1, min(VERIFY_WINDOWS, len(windows)))]
    stop = decoder.stop_student
    want_logits, got_logits, matches, rows = [], [], 0, []
    for window in picked:
        tokens = cache.audio(window)
        for task in config.tasks:
            limit = decoder.limit(task["question"])
            before, after = decoder.prompt_ids(task["question"])
            answer = decoder.generate(tokens, task["question"], limit)
            reference = torch_step_logits(model, tokens, list(before), list(after), answer.student_ids)
            same = greedy_agrees(reference, answer.student_ids, stop, limit)
            matches += same
            rows.append({"window": window, "task": task["id"], "same_ids": same, "text": answer.text})
            steps = min(len(answer.student_ids) + 1, limit)
            want_logits.append(reference[:steps])
            got_logits.append(_onnx_step_logits(decoder, tokens, task["question"], answer.student_ids, steps))
    logits = compare("logits", np.concatenate(want_logits), np.concatenate(got_logits))
    return {"parity": {"logits": logits.to_dict()}, "greedy_equal": matches, "greedy_total": len(rows),
            "answers": rows, "passed": logits.passed and matches == len(rows)}


def _onnx_step_logits(decoder: OnnxDecoder, tokens: np.ndarray, question: str, ids: list[int], steps: int) -> np.ndarray:
    """Logits the ONNX graph gives at each step when fed the reference tokens (teacher forcing)."""
    logits, past = decoder.step(decoder.prompt_embeds(tokens, question), decoder.empty_past(1))
    rows = [logits[0]]
    for token in ids[: steps - 1]:
        logits, past = decoder.step(decoder.embed_tokens[[token]][None], past)
        rows.append(logits[0])
    return np.stack(rows)
