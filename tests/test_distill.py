"""Distillation mechanics: task files, resumable teacher cache, species split, student training, decoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from naturelm_edge.distill.cache import CacheError, TeacherCache
from naturelm_edge.distill.collect import collect
from naturelm_edge.distill.species import SpeciesError, SpeciesSplit, check_present, labels_from_csv, split_species
from naturelm_edge.distill.tasks import TaskFileError, load_tasks, tasks_digest
from naturelm_edge.distill.train import TrainConfig, train
from naturelm_edge.edge_runtime.decoder import DecoderError, OnnxDecoder
from naturelm_edge.edge_runtime.labels import snap
from naturelm_edge.export.decoder import export_decoder
from naturelm_edge.models.full import TeacherAnswer

NAMES = ["House Sparrow", "Black Phoebe", "Dark-eyed Junco", "None"]


class RuleTeacher:
    """A small deterministic teacher behind the Teacher interface: its answer depends on the audio."""

    audio_dim = 8
    prompt_template = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"

    def __init__(self, tokenizer_dir, fail_after: int | None = None, identity: str = "rule-teacher-v1") -> None:
        self.tokenizer_dir = tokenizer_dir
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.bos_id = self.tokenizer.token_to_id("<|begin_of_text|>")
        self.stop_ids = (self.tokenizer.token_to_id("<|end_of_text|>"), self.tokenizer.token_to_id("<|eot_id|>"))
        self.identity = identity
        self.fail_after = fail_after
        self.calls = 0

    def audio_tokens(self, fbank: np.ndarray) -> np.ndarray:
        bands = fbank.reshape(fbank.shape[0], -1, 8, 16).mean(axis=(1, 3))  # (batch, 8) band energies
        return np.repeat(bands[:, None, :], 29, axis=1).astype(np.float32)

    def answer(self, audio_tokens, question, generation, top_k):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        answers = []
        for tokens in audio_tokens:
            text = NAMES[int(np.argmax(tokens[0, :4]))] if question.endswith("?") else "call"
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids + [self.stop_ids[0]]
            topk = np.array([[i] + [(i + j) % 300 for j in range(1, top_k)] for i in ids], np.int32)
            logp = np.log(np.full(topk.shape, 0.1 / (top_k - 1), np.float32))
            logp[:, 0] = np.log(0.9)
            answers.append(TeacherAnswer(text, ids, True, logp[:, 0].copy(), topk, logp))
        return answers


@pytest.fixture(scope="module")
def clips(audio_dir):
    return sorted((audio_dir / "phoebe").glob("*.mp3"))[:6] + [audio_dir / "opensoundscape" / "great_plains_toad.wav"]


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()[:2]


def test_default_task_file_has_every_question_style():
    kinds = {t.kind for t in load_tasks()}
    assert kinds == {"common_name", "scientific_name", "detection", "call_type", "caption"}


def test_task_file_errors(tmp_path):
    bad = tmp_path / "tasks.toml"
    bad.write_text('[[task]]\nid = "x"\nkind = "poem"\nquestion = "?"\n')
    with pytest.raises(TaskFileError, match=r"tasks\.toml: task 'x' has kind 'poem'"):
        load_tasks(bad)
    yaml_file = tmp_path / "tasks.yaml"
    yaml_file.write_text("task:\n  - id: a\n    kind: caption\n    question: Caption the audio.\n")
    assert load_tasks(yaml_file)[0].question == "Caption the audio."


def _records(root):
    return [(r["key"], r["text"], r["token_ids"]) for r in TeacherCache(root).records()]


def test_collection_resumes_without_duplicates_or_gaps(tmp_path, tiny_checkpoint, audio_dir, clips, tasks):
    tok = tiny_checkpoint / "llama"
    full = collect(RuleTeacher(tok), audio_dir, tasks, tmp_path / "full", files=clips, batch_size=2)
    assert full.asked == full.windows * len(tasks) and not full.failed
    with pytest.raises(KeyboardInterrupt):
        collect(RuleTeacher(tok, fail_after=5), audio_dir, tasks, tmp_path / "resumed", files=clips, batch_size=2)
    # a crash in the middle of writing a record leaves half a line behind
    with (tmp_path / "resumed" / "records.jsonl").open("a") as handle:
        handle.write('{"key": "half a rec')
    written = len((tmp_path / "resumed" / "records.jsonl").read_text().splitlines()) - 1  # less the half line
    assert 0 < written < full.asked
    again = collect(RuleTeacher(tok), audio_dir, tasks, tmp_path / "resumed", files=clips)
    assert again.reused == written and again.asked == full.asked - written
    assert sorted(_records(tmp_path / "resumed")) == sorted(_records(tmp_path / "full"))
    keys = [k for k, _, _ in _records(tmp_path / "resumed")]
    assert len(keys) == len(set(keys))
    record = next(TeacherCache(tmp_path / "full").records())
    assert record["label"] and len(record["topk_ids"]) == len(record["token_ids"])
    assert TeacherCache(tmp_path / "full").audio(record["window"]).shape == (29, 8)


def test_cache_refuses_another_teacher_or_task_file(tmp_path, tiny_checkpoint, audio_dir, clips, tasks):
    tok = tiny_checkpoint / "llama"
    collect(RuleTeacher(tok), audio_dir, tasks, tmp_path / "cache", files=clips[:1])
    before = (tmp_path / "cache" / "records.jsonl").read_bytes()
    with pytest.raises(CacheError, match="another checkpoint"):
        collect(RuleTeacher(tok, identity="other"), audio_dir, tasks, tmp_path / "cache", files=clips[:1])
    with pytest.raises(CacheError, match="another task file"):
        collect(RuleTeacher(tok), audio_dir, tasks[:1], tmp_path / "cache", files=clips[:1])
    assert (tmp_path / "cache" / "records.jsonl").read_bytes() == before  # nothing cached is lost
    assert tasks_digest(tasks) != tasks_digest(tasks[:1])


def test_species_split(audio_dir, tmp_path):
    labels = labels_from_csv(audio_dir / "LABELS.csv")
    species = set(labels.values())
    a, b = split_species(species, 0.25, seed=3), split_species(species, 0.25, seed=3)
    assert a == b and not set(a.distill) & set(a.held_out)
    assert set(a.distill) | set(a.held_out) == species and len(a.held_out) == round(len(species) * 0.25)
    assert split_species(species, 0.25, seed=4).held_out != a.held_out
    a.write(tmp_path / "split.json")
    assert SpeciesSplit.read(tmp_path / "split.json") == a
    with pytest.raises(SpeciesError, match="no species"):
        split_species(set(), source="empty.csv")
    with pytest.raises(SpeciesError, match="only one species"):
        split_species({"House Sparrow"})
    with pytest.raises(SpeciesError, match="none of the held-out species"):
        check_present(a, set(a.distill), "cache")


@pytest.fixture(scope="module")
def rule_cache(tmp_path_factory, tiny_checkpoint, audio_dir, clips, tasks):
    root = tmp_path_factory.mktemp("rule") / "cache"
    collect(RuleTeacher(tiny_checkpoint / "llama"), audio_dir, tasks, root, files=clips)
    return root


SMALL = dict(layers=1, hidden=64, heads=2, kv_heads=1, intermediate=128, batch_size=4, save_every=3, min_steps=0)


def test_training_is_deterministic_and_resumable(tmp_path, rule_cache):
    from naturelm_edge.distill.train import native_bf16

    config = TrainConfig(epochs=3, **SMALL)
    summary = train(rule_cache, tmp_path / "straight", config)
    assert summary["precision"] == ("bf16" if native_bf16() else "fp32")  # what "auto" meant on this CPU
    partial = train(rule_cache, tmp_path / "resumed", config, stop_after=4)
    assert partial["stopped"] and (tmp_path / "resumed" / "train_state.pt").is_file()
    train(rule_cache, tmp_path / "resumed", config)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    student = json.loads((tmp_path / "straight" / "student.json").read_text())
    ids = student["teacher_ids"]
    assert ids == sorted(set(ids)) and len(ids) < 385  # trimmed vocabulary
    assert student["bos_id"] in ids and all(s in ids for s in student["stop_ids"])


def test_a_few_minutes_of_audio_still_get_min_steps_of_training(tmp_path, rule_cache):
    """Epochs of a small cache are a few steps each: the schedule spans at least ``min_steps`` steps."""
    from naturelm_edge.distill.train import learning_rate

    summary = train(rule_cache, tmp_path / "s", TrainConfig(epochs=1, patience=0, **{**SMALL, "min_steps": 10}))
    per_epoch = summary["steps"] // summary["epochs"]
    assert summary["epochs_scheduled"] == summary["epochs"] == -(-10 // per_epoch) > 1 and summary["steps"] >= 10
    config = TrainConfig(lr=1e-3)
    rates = [learning_rate(step, 10, 100, config) for step in range(100)]
    assert rates[0] == pytest.approx(2e-4) and max(rates) == pytest.approx(1e-3)  # half an epoch of warm-up
    assert rates[5] == pytest.approx(1e-3) and rates[-1] < 1e-6 and all(a >= b for a, b in zip(rates[5:], rates[6:]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, rule_cache):
    work = tmp_path_factory.mktemp("decoder")
    train(rule_cache, work / "student", TrainConfig(epochs=25, lr=3e-3, **{**SMALL, "save_every": 1000}))
    report = export_decoder(work / "student", work / "decoder")
    return work, report


def test_decoder_export_matches_pytorch(exported):
    work, report = exported
    assert report["passed"] and report["greedy_equal"] == report["greedy_total"] > 0
    assert report["parity"]["logits"]["min_cosine"] > 0.9999
    assert json.loads((work / "decoder" / "decoder_report.json").read_text())["passed"]


def test_decoder_verification_fails_on_a_graph_that_answers_otherwise(exported, rule_cache):
    """The one-pass PyTorch reference catches an ONNX graph whose answers differ: verified against a student whose
    output layer was changed, the report fails on greedy answers and logits."""
    from naturelm_edge.distill.student import StudentConfig, load_student
    from naturelm_edge.export.decoder import greedy_agrees, verify_decoder

    work, _ = exported
    model = load_student(work / "student")
    with torch.no_grad():
        model.llama.lm_head.weight.copy_(model.llama.lm_head.weight.flip(0))
    report = verify_decoder(model, StudentConfig.read(work / "student"), work / "decoder", rule_cache)
    assert not report["passed"] and report["greedy_equal"] < report["greedy_total"]
    logits = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # picks 1, then the stop token 2
    assert greedy_agrees(logits, [1], {2}, limit=5) and greedy_agrees(logits[:1], [1], {2}, limit=1)
    assert not greedy_agrees(logits, [0], {2}, limit=5) and not greedy_agrees(logits, [1], {0}, limit=5)


def test_student_learns_the_rule_teacher(exported, rule_cache):
    work, _ = exported
    decoder = OnnxDecoder(work / "decoder")
    cache = TeacherCache(rule_cache)
    records = list(cache.records())
    question = {t["id"]: t["question"] for t in cache.meta.tasks}
    agree = sum(decoder.generate(cache.audio(r["window"]), question[r["task"]]).text == r["text"] for r in records)
    assert agree / len(records) >= 0.9


def test_beam_search_is_consistent_with_pytorch(exported, rule_cache):
    from naturelm_edge.distill.student import load_student

    work, _ = exported
    decoder = OnnxDecoder(work / "decoder")
    model = load_student(work / "student")
    cache = TeacherCache(rule_cache)
    record = next(cache.records())
    tokens, question = cache.audio(record["window"]), cache.meta.tasks[0]["question"]
    greedy = decoder.generate(tokens, question)
    beam = decoder.generate(tokens, question, num_beams=2)
    assert beam.stopped and beam.score >= greedy.score - 1e-6
    # the beam's reported probabilities are what the PyTorch student gives that sequence
    before, after = decoder.prompt_ids(question)
    with torch.no_grad():
        seq = torch.cat([model.embed(torch.tensor(before)), model.audio_proj(torch.from_numpy(tokens)),
                         model.embed(torch.tensor(list(after) + beam.student_ids))])
        logp = torch.log_softmax(model.llama(inputs_embeds=seq[None]).logits[0], -1)
    start = len(before) + tokens.shape[0] + len(after) - 1
    stop = int(decoder.to_student[decoder.meta["stop_ids"][0]])
    chosen = beam.student_ids + [stop]
    want = [float(logp[start + i, t].exp()) for i, t in enumerate(chosen)]
    assert np.allclose(beam.token_probs, want, atol=1e-4)


def test_decoder_without_kv_inputs_is_refused(exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    work, _ = exported
    broken = shutil.copytree(work / "decoder", tmp_path / "broken")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["inputs_embeds"], ["logits"])], "no-cache",
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, [1, None, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, None, 64])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(broken / "decoder.onnx"))
    with pytest.raises(DecoderError, match="lacks its KV-cache inputs"):
        OnnxDecoder(broken)


def test_snap_to_label_list():
    labels = ["House Sparrow", "Black Phoebe", "Dark-eyed Junco"]
    assert snap("house sparow", labels).label == "House Sparrow"
    assert snap("Black Phoebe", labels).distance == 0.0
    assert snap("anything", []) is None


def test_cli_pipeline_on_tiny_checkpoint(tmp_path, tiny_checkpoint, audio_dir, clips):
    from typer.testing import CliRunner

    from naturelm_edge.cli import app

    runner = CliRunner()
    tasks = tmp_path / "tasks.toml"
    tasks.write_text('[[task]]\nid = "cn"\nkind = "common_name"\nquestion = "What is it?"\nmax_new_tokens = 6\n')
    clip_dir = tmp_path / "audio"
    for clip in clips[:3]:
        (clip_dir / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(clip, clip_dir / clip.parent.name / clip.name)
    labels = tmp_path / "LABELS.csv"
    rows = (audio_dir / "LABELS.csv").read_text().splitlines()
    labels.write_text("\n".join([rows[0]] + [r for r in rows if r.split(",")[0] in
                                             {f"{c.parent.name}/{c.name}" for c in clips[:3]}]) + "\n")
    (clip_dir / "broken.wav").write_bytes(b"RIFF")
    steps = [
        ["distill", "collect", str(tiny_checkpoint), "--audio", str(clip_dir), "--out", str(tmp_path / "cache"),
         "--tasks", str(tasks), "--labels", str(labels)],
        ["distill", "split", "--labels", str(labels), "--out", str(tmp_path / "split.json"), "--held-out", "0.4"],
        ["distill", "train", str(tmp_path / "cache"), "--out", str(tmp_path / "student"), "--epochs", "2",
         "--layers", "1", "--hidden", "64", "--heads", "2", "--split", str(tmp_path / "split.json")],
        ["export", "decoder", str(tmp_path / "student"), "--out", str(tmp_path / "decoder"), "-q"],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{args[:2]}: {result.output}"
    assert len(list(TeacherCache(tmp_path / "cache").records())) >= 3
    assert json.loads((tmp_path / "decoder" / "decoder_report.json").read_text())["passed"]
    bad = runner.invoke(app, ["distill", "train", str(tmp_path / "cache"), "--out", str(tmp_path / "s2"),
                              "--hidden", "64", "--heads", "6"])
    assert bad.exit_code != 0 and "multiple of --heads" in bad.output


def test_batches_cover_every_example_once_in_an_order_of_the_seed_and_epoch():
    from naturelm_edge.distill.train import epoch_batches

    lengths = np.tile([90, 90, 98, 74, 365], 60)
    config = TrainConfig(batch_size=16)
    batches = epoch_batches(lengths, config, epoch=2)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    assert [b.tolist() for b in epoch_batches(lengths, config, 2)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in epoch_batches(lengths, config, 3)] != [b.tolist() for b in batches]


def test_a_batch_split_by_length_gives_the_batch_gradient_for_fewer_padded_tokens():
    """One long answer no longer pads a whole batch: chunks of similar length, each averaged over the batch's
    answer tokens, add up to the batch's gradient."""
    from naturelm_edge.distill.student import StudentConfig, build_student
    from naturelm_edge.distill.train import Example, batch_gradient, batch_loss, length_chunks, sequence_length

    rng = np.random.default_rng(0)
    config = StudentConfig(teacher_ids=list(range(40)), bos_id=0, stop_ids=[1], audio_dim=8, prompt_template="",
                           tasks=[], layers=2, hidden=32, heads=4, kv_heads=2, intermediate=64)
    torch.manual_seed(0)
    model = build_student(config)
    lengths = [3, 4, 5, 60, 4, 6, 3, 25, 5, 4, 3, 4]  # answer tokens: one long answer among short ones
    batch = [Example(f"w{i}", "t", [0, 2], [3, 4], list(rng.integers(2, 40, n)), rng.integers(-1, 40, (n, 5)),
                     np.log(rng.dirichlet(np.ones(5), n))) for i, n in enumerate(lengths)]
    audio = {e.window: torch.from_numpy(rng.normal(size=(6, 8)).astype(np.float32)) for e in batch}
    train_config = TrainConfig(precision="fp32")  # the same arithmetic both ways (bf16 rounds each differently)
    model.zero_grad()
    loss, ce, kl = batch_loss(model, batch, audio, train_config)
    loss.backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunks = length_chunks(batch)
    chunked_ce, chunked_kl = batch_gradient(model, batch, audio, train_config)  # what each training step runs
    assert 1 < len(chunks) <= 4 and sorted(e.window for c in chunks for e in c) == sorted(e.window for e in batch)
    assert sum(len(c) * max(map(sequence_length, c)) for c in chunks) < 0.5 * len(batch) * max(map(sequence_length, batch))
    assert chunked_ce == pytest.approx(float(ce), rel=1e-5)
    assert chunked_kl == pytest.approx(float(kl), rel=1e-5)
    for a, b in zip(whole, (p.grad for p in model.parameters())):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_training_stops_when_the_loss_stops_improving_and_says_so():
    from naturelm_edge.distill.stopping import plateau_reason

    config = TrainConfig(patience=3, min_improvement=0.02)
    assert plateau_reason([5.0, 3.0, 2.0, 1.5], config) is None
    assert plateau_reason([5.0, 3.0, 2.0, 1.99, 1.98, 1.97], config, "loss") == (
        "loss stopped improving: after 6 epochs the last 3 did not improve its best 2.0000 by 2%")
    assert plateau_reason([5.0, 3.0, 2.0, 1.99, 1.98, 1.90], config) is None  # the last epoch improved enough
    assert plateau_reason([5.0, 5.0, 5.0, 5.0, 5.0], TrainConfig(patience=0)) is None  # 0: every epoch runs
    rising_then_falling = [9.0, 1.0, 5.0, 4.0, 3.0, 2.0]  # a lucky low while the rate still rose, then steady gains
    assert plateau_reason(rising_then_falling, config) is not None
    assert plateau_reason(rising_then_falling, config, start=2) is None  # the rising rate's epochs do not count
