"""Generate answers with the exported student decoder: numpy + onnxruntime + tokenizers, no torch.

The prompt is built exactly as NatureLM was trained: [bos] + text before + projected audio tokens + text
after, in the student's trimmed vocabulary; greedy decoding (or 2-beam search) runs on the KV cache and
stops on a stop token or the length limit. Confidence is the probability the model gave each chosen token
(mean and minimum, the stop token included: being sure where an answer ends is part of being sure of it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from naturelm_edge.bundle import roles
from naturelm_edge.bundle.contract import DecoderFiles
from naturelm_edge.errors import EdgeError
from naturelm_edge.prompt import prompt_parts

TASK_ANSWER_TOKENS = 24  # a task's answer length limit when its task file names none (`max_new_tokens`)


def decoder_files(folder: Path, model: Path | None = None) -> DecoderFiles:
    """The decoder's files in an export folder (or a bundle), named by their roles; ``model``: another graph."""
    folder = Path(folder)
    return DecoderFiles(Path(model) if model else folder / roles.DECODER.file, folder / roles.DECODER_TABLES.file,
                        folder / roles.DECODER_CONFIG.file, folder / roles.TOKENIZER.file)


class DecoderError(EdgeError):
    """An exported decoder that cannot be used (missing files, missing KV inputs)."""


@dataclass
class Answer:
    text: str
    token_ids: list[int]  # teacher (tokenizer) ids, stop token excluded
    student_ids: list[int]  # student ids, stop token excluded
    token_probs: list[float]  # one per generated token, stop token included when it stopped
    stopped: bool
    score: float  # sum of log-probabilities / generated length (the beam-search criterion)

    @property
    def confidence_mean(self) -> float:
        return float(np.mean(self.token_probs)) if self.token_probs else 0.0

    @property
    def confidence_min(self) -> float:
        return float(np.min(self.token_probs)) if self.token_probs else 0.0


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class OnnxDecoder:
    """One decoder session, created once with the given providers and threads.

    ``files``: the decoder's files by role (``Bundle.decoder``), or an export folder holding them under
    their role names; ``model_file`` swaps in another graph (a quantized one) beside the folder's tables.
    """

    def __init__(self, files: DecoderFiles | Path, providers: list | None = None, threads: int = 1,
                 session_options=None, model_file: Path | None = None) -> None:  # noqa: ANN001
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if not isinstance(files, DecoderFiles):
            files = decoder_files(Path(files), model_file)
        model_path = files.model
        for path in (files.model, files.config, files.tables, files.tokenizer):
            if not path.is_file():
                raise DecoderError(f"{path}: missing from the exported decoder.")
        self.meta = json.loads(files.config.read_text())
        tables = np.load(files.tables)
        self.embed_tokens = tables["embed_tokens"].astype(np.float32)
        self.audio_proj_weight = tables["audio_proj_weight"].astype(np.float32)
        self.audio_proj_bias = tables["audio_proj_bias"].astype(np.float32)
        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self.teacher_ids = np.asarray(self.meta["teacher_ids"], dtype=np.int64)
        self.to_student = np.full(int(self.teacher_ids.max()) + 1, -1, dtype=np.int64)
        self.to_student[self.teacher_ids] = np.arange(self.teacher_ids.shape[0])
        self.stop_student = {int(self.to_student[i]) for i in self.meta["stop_ids"] if i < self.to_student.shape[0]}
        options = session_options or ort.SessionOptions()
        if session_options is None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(model_path), options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DecoderError(f"{model_path}: onnxruntime cannot load it ({err}).") from err
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [f"past_key_values.{i}.{kind}" for i in range(self.meta["layers"]) for kind in ("key", "value")]
        missing = [n for n in ["inputs_embeds", *self.past_names] if n not in inputs]
        if missing:
            raise DecoderError(
                f"{model_path}: the decoder graph lacks its KV-cache inputs ({', '.join(missing[:3])}); "
                f"export it with `edge export decoder`."
            )
        self.kv_shape = (self.meta["kv_heads"], self.meta["head_dim"])
        self.task_limits = {t["question"]: int(t.get("max_new_tokens", TASK_ANSWER_TOKENS))
                            for t in self.meta.get("tasks", [])}

    def limit(self, question: str, max_new_tokens: int | None = None) -> int:
        """How many tokens an answer may take: as asked, else the question's task limit (a call type in 8
        tokens, a caption in 300), else the longest of the bundle's tasks."""
        return max_new_tokens or self.task_limits.get(question) or self.meta.get("max_new_tokens", TASK_ANSWER_TOKENS)

    @lru_cache(maxsize=64)  # noqa: B019 - one decoder per process; prompts repeat for every window
    def prompt_ids(self, question: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Student ids of [bos] + text before the audio, and of the text after it."""
        before, after = prompt_parts(self.meta["prompt_template"], question)
        ids = []
        for part, prefix in ((before, [self.meta["bos_id"]]), (after, [])):
            teacher = prefix + self.tokenizer.encode(part, add_special_tokens=False).ids
            student = [int(self.to_student[t]) if t < self.to_student.shape[0] else -1 for t in teacher]
            if -1 in student:
                raise DecoderError(f"the question {question!r} uses tokens this student never learned; use a task it was distilled on.")
            ids.append(tuple(student))
        return ids[0], ids[1]

    def prompt_embeds(self, audio_tokens: np.ndarray, question: str) -> np.ndarray:
        before, after = self.prompt_ids(question)
        audio = np.asarray(audio_tokens, np.float32) @ self.audio_proj_weight.T + self.audio_proj_bias
        return np.concatenate([self.embed_tokens[list(before)], audio, self.embed_tokens[list(after)]])[None]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {n: np.zeros((batch, *self.kv_shape[:1], 0, self.kv_shape[1]), np.float32) for n in self.past_names}

    def step(self, embeds: np.ndarray, past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the graph on new embeddings after ``past``; return last-position logits and the new cache."""
        outputs = self.session.run(None, {"inputs_embeds": embeds, **past})
        present = dict(zip(self.past_names, outputs[1:]))
        return outputs[0][:, -1], present

    def fits(self, audio_tokens: np.ndarray) -> bool:
        """Whether an encoder's tokens have the width this decoder projects (``edge bench --encoder``)."""
        return audio_tokens.shape[-1] == self.audio_proj_weight.shape[1]

    def generate(self, audio_tokens: np.ndarray, question: str, max_new_tokens: int | None = None,
                 num_beams: int = 1) -> Answer:
        if num_beams > 1:
            return beam_search(self, self.prompt_embeds(audio_tokens, question), self.limit(question, max_new_tokens),
                               num_beams)
        return self.generate_many(np.asarray(audio_tokens)[None], question, max_new_tokens)[0]

    def generate_many(self, audio_tokens: np.ndarray, question: str, max_new_tokens: int | None = None) -> list[Answer]:
        """Greedy answers to one question for a batch of windows (batch, tokens, width), one graph run per step.

        Every prompt of one question is the same length (its text around a fixed number of audio tokens), so the
        windows share a batch without a mask; a window that has stopped rides along until every window has (its
        later tokens are dropped). Reports judge hundreds of answers: batched, a step costs little more than one.
        A float graph answers as it does one window at a time; a dynamically quantized one does not quite (its
        activations' int8 scale is taken over the whole batch), so what the device answers is judged unbatched.
        """
        limit = self.limit(question, max_new_tokens)
        embeds = np.concatenate([self.prompt_embeds(window, question) for window in audio_tokens])
        logits, past = self.step(embeds, self.empty_past(len(embeds)))
        ids: list[list[int]] = [[] for _ in embeds]
        probs: list[list[float]] = [[] for _ in embeds]
        logps: list[list[float]] = [[] for _ in embeds]
        stopped = [False] * len(embeds)
        for position in range(limit):
            logp = _log_softmax(logits.astype(np.float64))
            tokens = logits.argmax(axis=-1)
            for row, token in enumerate(tokens.tolist()):
                if stopped[row]:
                    continue
                probs[row].append(float(np.exp(logp[row, token])))
                logps[row].append(float(logp[row, token]))
                if token in self.stop_student:
                    stopped[row] = True
                else:
                    ids[row].append(token)
            if all(stopped) or position == limit - 1:
                break
            logits, past = self.step(self.embed_tokens[tokens][:, None, :], past)
        return [self.answer_from(i, p, s, sum(lp) / max(1, len(lp))) for i, p, s, lp in zip(ids, probs, stopped, logps)]

    def answer_from(self, ids: list[int], probs: list[float], stopped: bool, score: float) -> Answer:
        teacher = [int(self.teacher_ids[i]) for i in ids]
        text = self.tokenizer.decode(teacher, skip_special_tokens=True).strip()
        return Answer(text, teacher, ids, probs, stopped, float(score))


def beam_search(decoder: OnnxDecoder, embeds: np.ndarray, limit: int, width: int) -> Answer:
    """``width``-beam search on the KV cache; a finished beam is scored by its mean log-probability."""
    logits, past = decoder.step(embeds, decoder.empty_past(1))
    logp = _log_softmax(logits[0].astype(np.float64))
    beams = [([], [], 0.0)]  # (ids, chosen log-probs, sum)
    finished: list[tuple[float, list[int], list[float], bool]] = []
    step_logp = logp[None]
    for position in range(limit):
        candidates = []
        for b, (_ids, _chosen, total) in enumerate(beams):
            for token in np.argsort(-step_logp[b])[: 2 * width]:
                candidates.append((total + step_logp[b, token], b, int(token), float(step_logp[b, token])))
        candidates.sort(key=lambda c: -c[0])
        next_beams, sources = [], []
        for total, b, token, lp in candidates:
            ids, chosen, _ = beams[b]
            if token in decoder.stop_student:
                finished.append((total / (len(ids) + 1), ids, chosen + [lp], True))
            else:
                next_beams.append((ids + [token], chosen + [lp], total))
                sources.append(b)
            if len(next_beams) == width:
                break
        best_done = max((f[0] for f in finished), default=-np.inf)
        if not next_beams or (len(finished) >= width and best_done >= max(t for *_, t in next_beams) / (position + 1)):
            break
        if position == limit - 1:
            finished.extend((t / len(i), i, c, False) for i, c, t in next_beams)
            break
        index = np.asarray(sources)
        past = {name: value[index] for name, value in past.items()}
        tokens = [ids[-1] for ids, _, _ in next_beams]
        logits, past = decoder.step(decoder.embed_tokens[tokens][:, None, :], past)
        step_logp = _log_softmax(logits.astype(np.float64))
        beams = next_beams
    score, ids, chosen, stopped = max(finished, key=lambda f: f[0])
    return decoder.answer_from(ids, [float(np.exp(c)) for c in chosen], stopped, score)
