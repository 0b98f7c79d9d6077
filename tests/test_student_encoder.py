"""`edge distill encoder`: a small CNN learns the teacher's audio tokens from unlabelled audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def unlabelled(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty bird recordings in a folder with no labels at all."""
    folder = tmp_path_factory.mktemp("unlabelled")
    for path in sorted((audio_dir / "phoebe").iterdir())[:20]:
        (folder / path.name).symlink_to(path)
    return folder


def test_the_student_outputs_what_the_encoder_outputs_and_resumes_to_the_same_weights(
        tiny_checkpoint: Path, unlabelled: Path, tmp_path: Path):
    """Same token count and width as the teacher's encoder (the decoder takes either), ONNX equal to torch,
    fidelity judged on held-back recordings only, and a run stopped after an epoch resumes to exactly the
    weights of an uninterrupted one, without asking the teacher again."""
    import onnxruntime as ort
    import torch

    from naturelm_edge.audio import WindowSpec, window_features
    from naturelm_edge.distill.encoder import (
        STATE_FILE,
        TOKENS_DIR,
        EncoderStudentConfig,
        every_fifth,
        prepare_views,
        stale_state,
        teacher_path,
        train_student_encoder,
    )
    from naturelm_edge.export.student_encoder import distill_encoder
    from naturelm_edge.models import load

    teacher, config = teacher_path(tiny_checkpoint), EncoderStudentConfig(epochs=2, views=2)
    report = distill_encoder(teacher, unlabelled, tmp_path / "whole", config)
    assert report["windows"] == 20 and report["views"] == 16 * 2 + 4  # held-back windows only as recorded
    assert report["fidelity_held_back"]["recordings"] == 4  # every fifth recording judges, none trains
    _, features = next(window_features(sorted(unlabelled.iterdir())[0], WindowSpec()))
    session = ort.InferenceSession(str(tmp_path / "whole" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    student_tokens = session.run(None, {"fbank": features[None]})[0]
    teacher_tokens = load(tiny_checkpoint).model.encode_audio(torch.from_numpy(features[None])).detach().numpy()
    assert student_tokens.shape == teacher_tokens.shape

    stopped = tmp_path / "stopped"
    views = prepare_views(unlabelled, stopped, teacher, config, every_fifth)
    train_student_encoder(views, stopped, teacher, config, stop_after=1)
    # `edge build` keeps a state of its own settings (to resume) and drops one of others (to train again)
    assert not stale_state(stopped / STATE_FILE, config, teacher)
    assert stale_state(stopped / STATE_FILE, EncoderStudentConfig(epochs=3, views=2), teacher)
    asked = {p: p.stat().st_mtime_ns for p in (stopped / TOKENS_DIR).glob("*.tokens.npy")}
    resumed = distill_encoder(teacher, unlabelled, stopped, config)
    assert {p: p.stat().st_mtime_ns for p in (stopped / TOKENS_DIR).glob("*.tokens.npy")} == asked
    a, b = (torch.load(str(d / STATE_FILE), weights_only=True)["model"] for d in (tmp_path / "whole", stopped))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["fidelity_held_back"] == report["fidelity_held_back"]
    onnx = ort.InferenceSession(str(stopped / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert np.allclose(onnx.run(None, {"fbank": features[None]})[0], student_tokens, atol=1e-5)



def test_training_stops_when_the_held_back_recordings_stop_improving_and_keeps_their_best_epoch(
        tiny_checkpoint: Path, unlabelled: Path, tmp_path: Path):
    """Asked for a 99 % better held-back loss every epoch, training stops one epoch after the learning rate's
    rise (epochs 1-2 of 8 do not count), says why, and the student it returns is the epoch the held-back
    recordings liked best (not the last one run)."""
    import torch

    from naturelm_edge.distill.encoder import (
        TOKENS_DIR,
        EncoderStudentConfig,
        every_fifth,
        held_back_loss,
        judged_keys,
        prepare_views,
        teacher_path,
        token_moments,
        train_student_encoder,
    )

    teacher = teacher_path(tiny_checkpoint)
    config = EncoderStudentConfig(epochs=8, views=1, patience=1, min_improvement=0.99)
    views = prepare_views(unlabelled, tmp_path, teacher, config, every_fifth)
    net, summary = train_student_encoder(views, tmp_path, teacher, config)
    assert summary["epochs"] == 4 and len(summary["epoch_losses"]) == 4
    assert summary["stopped_because"].startswith("held-back recordings' token loss stopped improving: after 4 epochs")
    judge = judged_keys(views)
    mean = torch.from_numpy(token_moments(tmp_path / TOKENS_DIR, [k for k, h in zip(views.keys, views.held) if not h])[0])
    assert held_back_loss(net, tmp_path / TOKENS_DIR, judge, mean) == pytest.approx(min(summary["epoch_losses"]),
                                                                                     rel=1e-3)

def test_bad_input_is_one_sentence_each(tiny_checkpoint: Path, unlabelled: Path, tmp_path: Path):
    """No readable audio, too few windows (with how many are needed), another teacher in the same folder."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    result = run_cli("distill", "encoder", str(tiny_checkpoint), "--audio", str(broken), "--out", str(tmp_path / "s1"))
    assert result.returncode != 0 and "no readable audio to learn from (1 files, 1 unreadable)" in result.stderr
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(unlabelled.iterdir())[:5]:
        (few / path.name).symlink_to(path.resolve())
    result = run_cli("distill", "encoder", str(tiny_checkpoint), "--audio", str(few), "--out", str(tmp_path / "s2"))
    assert result.returncode != 0 and "a student encoder needs at least 16" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_of_another_teacher_is_not_resumed(tiny_checkpoint: Path, unlabelled: Path, tmp_path: Path):
    from naturelm_edge.distill.encoder import EncoderStudentConfig, StudentEncoderError, teacher_path
    from naturelm_edge.export.student_encoder import distill_encoder

    teacher = teacher_path(tiny_checkpoint)
    config = EncoderStudentConfig(epochs=1, views=1)
    distill_encoder(teacher, unlabelled, tmp_path / "s", config)
    other = type(teacher)("sha256:another", teacher.tokens, teacher.projection_weight, teacher.projection_bias)
    with pytest.raises(StudentEncoderError, match="another teacher is in this folder; use a new --out"):
        distill_encoder(other, unlabelled, tmp_path / "s", EncoderStudentConfig(epochs=2, views=1))
    json.loads((tmp_path / "s" / "student_encoder.json").read_text())  # what was built is still there


def test_a_cpu_profile_builds_a_student_bundle_that_edge_run_uses_without_a_flag(student_bundle, bundle: Path,
                                                                                 subset_audio: Path, tmp_path: Path):
    """x86-cpu asks for the student: `edge build` reuses the full build's stages, adds the student encoder and
    the decoder tuned on its tokens and the full encoder's, records both in the manifest with fidelity figures, and edge-run answers
    with it; a profile that asks for the full encoder refuses it in one sentence."""
    import dataclasses

    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.device_profiles import get
    from naturelm_edge.distill.cache import TeacherCache
    from naturelm_edge.edge_runtime.engine import Engine
    from naturelm_edge.errors import EdgeError
    from naturelm_edge.export.student_encoder import TEACHER_COPY
    from tests.helpers import events, run_edge

    work, student, output = student_bundle
    assert "teacher answers: inputs unchanged, skipped" in output and "distillation: inputs unchanged, skipped" in output
    loaded, full = load_bundle(student), load_bundle(bundle)
    assert loaded.encoder_kind == "student" and full.encoder_kind == "full"
    section = loaded.manifest["encoder"]
    assert section["teacher"]["sha256"] == full.manifest["source_checkpoint"]["sha256"]
    against = section["fidelity"]["against_full_encoder"]
    assert set(against) == {"held_out", "distill"} and 0 <= against["held_out"]["agreement"] <= 1
    for found in against.values():  # every judged window found the teacher's own answers in its cache
        for pipeline in ("student_encoder", "full_encoder"):
            assert all(0 <= share <= 1 for share in found["against_teacher"][pipeline].values()), found
    assert section["fidelity"]["held_back_recordings"]["windows"] > 0
    trained = json.loads((student / "reports" / "student_encoder.json").read_text())["training"]
    assert section["stopped"] == trained["stopped_because"]  # why its training ended, as it ended
    assert loaded.encoder.stat().st_size < full.encoder.stat().st_size / 2
    assert (student / "reports" / "student_encoder.json").is_file()
    # the decoder was tuned on each answer once, half through the student encoder's tokens, half the full encoder's
    tuning, answered = (TeacherCache(work / "bundle.work" / name) for name in ("student-token-cache", "teacher-cache"))
    tuned = [(r["window"].removesuffix(TEACHER_COPY), r["task"], r["window"].endswith(TEACHER_COPY))
             for r in tuning.records()]
    assert sorted(w[:2] for w in tuned) == sorted((r["window"], r["task"]) for r in answered.records())
    through_full = sum(full for *_, full in tuned)
    assert 0.3 < through_full / len(tuned) < 0.7, (through_full, len(tuned))
    window = sorted(w for w, _, full in tuned if full)[0]
    assert np.array_equal(tuning.audio(window + TEACHER_COPY), answered.audio(window))
    assert not np.allclose(tuning.audio(window), answered.audio(window))

    out = tmp_path / "run"
    ran = run_edge("--bundle", str(student), "--profile", "x86-cpu", str(subset_audio), "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    assert [e for e in events(out) if e["answer"]]

    gpu = dataclasses.replace(get("x86-cpu"), name="gpu-box", models={"encoder": "full"})
    with pytest.raises(EdgeError, match=r"carries the distilled student encoder, and profile gpu-box asks for "
                                        r"NatureLM's full one .* `edge build --profile gpu-box`"):
        Engine(loaded, gpu)
    Engine(full, gpu)  # the full bundle on it is what it asks for


def test_the_loss_sees_through_the_teachers_common_token():
    """Teacher tokens that share a large common part: a student that outputs the mean token has a raw cosine
    near 1, yet the loss scores it as having learned nothing (centred cosine 0, error equal to the variance),
    and only the teacher's own tokens score 0."""
    import torch
    import torch.nn.functional as F

    from naturelm_edge.distill.encoder import token_loss

    generator = torch.Generator().manual_seed(0)
    common = 10 * torch.randn(29, 64, generator=generator)
    teacher = common + 0.3 * torch.randn(16, 29, 64, generator=generator)
    mean = teacher.mean(dim=0)
    lazy = mean.expand_as(teacher) + 1e-4 * torch.randn(16, 29, 64, generator=generator)
    assert float(F.cosine_similarity(lazy, teacher, dim=-1).mean()) > 0.99
    loss, cosine = token_loss(lazy, teacher, mean)
    assert abs(float(cosine.mean())) < 0.1 and float(loss) > 1.8
    perfect, cosine = token_loss(teacher, teacher, mean)
    assert float(perfect) < 1e-5 and float(cosine.mean()) > 0.999


def test_the_projection_reads_centred_tokens_so_int8_keeps_what_is_window_specific(tmp_path: Path):
    """Tokens with a large common part (as every teacher's have): a student whose centre holds it gives the same
    output as one whose head carries it, and in static int8 it keeps the window-specific part that the uncentred
    graph loses to the common part's range."""
    import torch

    from naturelm_edge.distill.encoder import TeacherPath, student_encoder_net
    from naturelm_edge.export.student_encoder import export_student_encoder
    from naturelm_edge.quantization.calibration import ArrayReader
    from naturelm_edge.quantization.quantize import QuantSpec, quantize
    from naturelm_edge.quantization.report import run_encoder, session

    rng = np.random.default_rng(0)
    projection = (rng.standard_normal((96, 64)).astype(np.float32) / 8, np.zeros(96, np.float32))
    teacher = TeacherPath("test", lambda f: f, *projection)
    torch.manual_seed(0)
    net = student_encoder_net("mobilenet-s", 29, 64, projection)
    features = (rng.standard_normal((12, 998, 128)) + 4 * rng.standard_normal((12, 1, 128))
                + 4 * rng.standard_normal((12, 998, 1))).astype(np.float32)  # windows of other spectra and loudness
    with torch.no_grad():  # batch-norm statistics of these windows, so each gives tokens of its own
        for _ in range(30):
            net.qformer(torch.from_numpy(features))
    common = torch.from_numpy(2 * rng.standard_normal(64).astype(np.float32))  # ~100x the windows' spread
    bias = net.head.bias.data.clone()
    net.eval()
    outputs = {}
    for name, centre, head_part in (("plain", torch.zeros(29, 64), common), ("centred", common.expand(29, 64), 0)):
        net.head.bias.data = bias + head_part
        net.set_centre(centre)
        export_student_encoder(net, tmp_path / f"{name}.onnx", teacher)
        quantize(tmp_path / f"{name}.onnx", tmp_path / f"{name}-int8.onnx", QuantSpec("int8-static", "x86", "minmax"),
                 ArrayReader([{"fbank": f[None]} for f in features[:6]]), None, name)
        outputs[name] = [run_encoder(session(tmp_path / f"{name}{s}.onnx"), features[6:])[0] for s in ("", "-int8")]
    assert np.allclose(outputs["plain"][0], outputs["centred"][0], atol=1e-3)  # fp32: the same tokens

    def centred_cosine(got: np.ndarray, fp32: np.ndarray) -> float:
        mean = fp32.mean(axis=0)
        a, b = got - mean, fp32 - mean
        return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).mean())

    plain, centred = (centred_cosine(outputs[n][1], outputs[n][0]) for n in ("plain", "centred"))
    assert centred > 0.95 and centred > plain + 0.1, (plain, centred)
