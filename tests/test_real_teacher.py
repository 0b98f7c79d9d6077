"""BirdNET v2.4 as a real teacher: its adapter, a scores build on real recordings, the 48 kHz bundle on the
device, and `edge serve --teacher birdnet-v2.4` answering that bundle's escalations.

The build here is small (a few recordings, two epochs): it proves the mechanics, not the quality; the
quality figures come from ``python -m benchmarks.real_teacher`` (benchmarks/results/real-teacher/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from naturelm_edge.audio.decode import stream
from naturelm_edge.prompt import NOTHING_HEARD
from testbed.serve import Server
from tests.helpers import events, run_cli, run_edge

ROBIN = "librosa-data/456440__inspectorj__bird-whistling-robin-single-13.ogg"
# a robin twice (two qualities), four phoebe clips, soundscapes, a toad chorus, and call-free background
PICKED = [ROBIN, ROBIN.replace(".ogg", ".hq.ogg"), "opensoundscape/great_plains_toad.wav", "opensoundscape/birds_10s.wav",
          "opensoundscape/1min.wav", "birdvoxdetect/BirdVox-scaper_example_background.wav"]


@pytest.fixture(scope="module")
def birdnet():
    from naturelm_edge.teachers.birdnet import BirdNET

    return BirdNET()


@pytest.fixture(scope="module")
def few_recordings(audio_dir: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("birdnet-audio")
    phoebe = sorted((audio_dir / "phoebe").iterdir())[:12:3]
    for relative in [*PICKED, *(str(p.relative_to(audio_dir)) for p in phoebe)]:
        assert (audio_dir / relative).is_file(), relative
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).symlink_to(audio_dir / relative)
    return root


@pytest.fixture(scope="module")
def scores_bundle(few_recordings: Path, tmp_path_factory) -> tuple[Path, Path, list]:
    work = tmp_path_factory.mktemp("birdnet-build")
    (work / "species.txt").write_text("# kept even if not heard\nTurdus merula\nAmerican Robin\n")
    args = ["build", "--teacher", "birdnet-v2.4", "--audio", str(few_recordings), "--out", str(work / "bundle"),
            "--work", str(work / "work"), "--profile", "x86-cpu", "--encoder-epochs", "2", "--views", "2",
            "--species", str(work / "species.txt")]
    runs = [run_cli(*args, timeout=900), run_cli(*args, timeout=900)]
    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
    return work / "bundle", work / "work", runs


def test_the_embedding_and_the_teachers_last_layer_give_its_logits(birdnet, audio_dir):
    from naturelm_edge.edge_runtime.scores import sigmoid
    from naturelm_edge.teachers.birdnet import pieces

    audio = np.concatenate(list(stream(audio_dir / ROBIN, 48_000)))
    weight, bias = birdnet.class_layer()
    logits, embedding = birdnet.run(next(pieces(audio)))
    assert embedding.shape == (1024,) and weight.shape == (len(birdnet.labels), 1024)
    np.testing.assert_allclose(embedding @ weight.T + bias, logits, atol=1e-3)
    best = int(np.argmax(np.where(birdnet.animal, logits, -np.inf)))
    assert birdnet.labels[best] == "European Robin" and sigmoid(logits[best]) > 0.9  # the teacher is real


def test_recordings_not_windows_are_split(tmp_path):
    from naturelm_edge.distill.scores import ROLES, recording_role

    names = [f"site{i % 7}/rec{i}.wav" for i in range(2000)]
    roles = [recording_role(n) for n in names]
    shares = {r: roles.count(r) / len(roles) for r in ROLES}
    assert abs(shares["train"] - 0.6) < 0.05 and abs(shares["evaluation"] - 0.25) < 0.05
    assert roles == [recording_role(n) for n in names]  # adding recordings never moves another one
    assert recording_role("a.wav", seed=0) != recording_role("a.wav", seed=1) or recording_role("b.wav", 0) != \
        recording_role("b.wav", 1)


def test_a_scores_build_writes_a_bundle_the_runtime_answers_with(scores_bundle, birdnet):
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.teachers.birdnet import model_path

    bundle_dir, work, runs = scores_bundle
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert bundle.answer_kind == "scores" and bundle.questions == ["species"]
    assert manifest["audio"]["sample_rate"] == 48_000 and manifest["audio"]["window_s"] == 3.0
    assert manifest["teacher"]["sha256"] == __import__("hashlib").sha256(model_path().read_bytes()).hexdigest()
    assert manifest["teacher"]["licence"] == "CC BY-NC-SA 4.0"
    # the labels: what the teacher heard in training recordings, plus the species file's (by either name)
    assert {"Eurasian Blackbird", "American Robin"} <= set(bundle.labels)
    assert len(manifest["answers"]["scientific"]) == len(bundle.labels)
    assert {e["role"] for e in manifest["files"]} >= {"encoder", "speech"}
    assert not any(e["role"] == "decoder" for e in manifest["files"])
    fidelity = manifest["encoder"]["fidelity"]["quantized"]
    assert fidelity["windows"] > 0 and fidelity["answer"]["ci95"] is not None
    assert set(manifest["build"]["steps"]) == {"teacher answers", "student classifier", "quantization", "detector"}
    assert manifest["build"]["seed"] == 0  # which split the bundle's own figures come from
    # the encoder's last column says whether the teacher would hear an animal at all (the "None" it is unsure of)
    assert bundle.presence and manifest["answers"]["presence"] is True
    import onnxruntime as ort

    output = ort.InferenceSession(str(bundle.encoder)).get_outputs()[0]
    assert output.shape[-1] == len(bundle.labels) + 2
    # and then how near the window lies to a training window the teacher named with the student's label
    support = manifest["answers"]["support"]
    assert support["precedents"] > 0 and (support["floor"] is None or -1.0 <= support["floor"] < 1.0)
    assert bundle.support == support
    # its own escalation threshold, chosen on held-back recordings
    escalation = manifest["escalation"]
    assert 0.0 < escalation["confidence_threshold"] < 1.0 and escalation["windows"] > 0
    assert escalation["calls_kept"] is None or escalation["calls_kept"] >= escalation["recall"] == 0.97
    assert bundle.escalation_threshold == escalation["confidence_threshold"]
    # the second run reuses every step
    assert runs[1].stderr.count("inputs unchanged, skipped") + runs[1].stdout.count("inputs unchanged, skipped") == 4


def test_the_escalation_threshold_keeps_the_teachers_calls_the_student_calls_silence():
    """Chosen at build on held-back windows: above the sureness of every call of the teacher's that the student
    calls silence but the 3 % it may lose, so those escalate instead of being lost; and at least at the least
    sure fifth of the windows."""
    from types import SimpleNamespace

    from naturelm_edge.build.scores import escalation_point

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p / (1.0 - p))

    silenced = np.array([0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])  # how sure of silence, on 10 calls
    student = np.zeros((100, 4))  # two labels, the presence logit, the support column
    student[:, :2] = -5.0  # names nothing ...
    student[:30, 0] = 1.0  # ... but 30 of the 40 calls, which it names (0.73 sure: the least sure fifth's edge)
    student[30:40, 2] = logit(1.0 - silenced)  # the other 10 it calls silence, this surely
    student[40:, 2] = -4.0  # the 60 quiet windows: silence, surely (0.98)
    teacher = np.full(100, -1)  # the teacher's answer: nothing ...
    teacher[:40] = 0  # ... but a call in the first 40
    state = SimpleNamespace(options=SimpleNamespace(threshold=0.5))
    found = escalation_point(state, (("validation",), student, teacher), {"floor": None})
    # 3 % of 40 calls is one: the surest silence (0.99) may be lost, the next (0.9) must escalate
    assert 0.9 < found["confidence_threshold"] <= 0.99 and found["calls"] == 40 and found["calls_kept"] == 0.975
    student[30:40, 2] = logit(np.full(10, 0.9))  # silence called unsurely (0.1) on every call: the fifth decides
    found = escalation_point(state, (("validation",), student, teacher), {"floor": None})
    assert found["calls_kept"] == 1.0 and abs(found["confidence_threshold"] - 0.731) < 1e-3


def test_the_detection_stage_learns_the_teachers_verdicts_on_recordings_never_judged(scores_bundle, few_recordings,
                                                                                    birdnet):
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.detection.labels import recordings_from_scores
    from naturelm_edge.distill.scores import read_split
    from naturelm_edge.teachers import BIRDNET

    bundle_dir, work, _ = scores_bundle
    bundle = load_bundle(bundle_dir)
    cache, audio = work / "teacher-birdnet-v2.4", few_recordings
    assert bundle.manifest["detector"]["training"]["labels"] == str(cache)
    split = read_split(cache)
    recordings = {str(r.path.relative_to(audio)): r for r in
                  recordings_from_scores(cache, audio, BIRDNET.spec, birdnet.animal, ("train", "validation", "calibration"))}
    assert recordings and not {split[r] for r in recordings} & {"evaluation"}  # the judged recordings stay unheard
    # BirdNET hears the robin at once (confidence > 0.9) and nothing in BirdVox's background recording
    assert recordings[ROBIN].windows[0] is True or split[ROBIN] == "evaluation"
    background = "birdvoxdetect/BirdVox-scaper_example_background.wav"
    assert background not in recordings or not any(recordings[background].windows.values())
    assert all(start % BIRDNET.spec.hop == 0 for r in recordings.values() for start in r.windows)
    section = bundle.manifest["detector"]
    assert section["training"]["labels_from"] == "birdnet-v2.4 verdicts"
    assert section["training"]["recordings"] == len(recordings) and bundle.detector.model.is_file()


def test_teacher_answers_resume_where_they_stopped(scores_bundle, few_recordings):
    from naturelm_edge.distill.scores import collect_scores, load_scores
    from naturelm_edge.teachers import BIRDNET

    class Counting:
        def __init__(self, teacher) -> None:  # noqa: ANN001
            self.teacher, self.identity, self.asked = teacher, teacher.identity, 0

        def run(self, samples):  # noqa: ANN001, ANN202
            self.asked += 1
            return self.teacher.run(samples)

    from naturelm_edge.teachers.birdnet import BirdNET

    cache = scores_bundle[1] / "teacher-birdnet-v2.4"
    before = load_scores(cache, "train", 2)
    lost = sorted(cache.glob("*-1.npz"))[0]
    lost.unlink()  # as if the run had stopped before this view was written
    teacher = Counting(BirdNET())
    counts = collect_scores(teacher, few_recordings, cache, BIRDNET.training_spec, BIRDNET.fbank, 2)
    after = load_scores(cache, "train", 2)
    assert counts["asked"] == teacher.asked > 0 and counts["views_reused"] > 0
    assert len(after) == len(before)
    np.testing.assert_array_equal(after.logits, before.logits)  # the same augmented view, asked again


def test_species_the_teacher_does_not_know_are_refused_by_name(few_recordings, tmp_path):
    (tmp_path / "species.txt").write_text("Turdus merula\nDodo bird\n")
    done = run_cli("build", "--teacher", "birdnet-v2.4", "--audio", str(few_recordings), "--out",
                   str(tmp_path / "b"), "--species", str(tmp_path / "species.txt"), "--encoder-epochs", "1")
    assert done.returncode != 0 and "species.txt" in done.stderr and "Dodo bird" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "b").exists()


def test_the_48khz_bundle_escalates_to_birdnet_and_the_run_waits_for_its_answers(scores_bundle, few_recordings,
                                                                                 tmp_path):
    bundle = scores_bundle[0]
    server = Server(None, tmp_path / "state", "--teacher", "birdnet-v2.4").start()
    try:
        info = json.loads(__import__("urllib.request").request.urlopen(server.url + "/v1/model").read())
        assert info["model_id"].startswith("birdnet-v2.4:")
        out = tmp_path / "run"
        # every answer below 0.999 escalates: the run must end with BirdNET's answers in the store
        done = run_edge("--bundle", str(bundle), "--input", str(few_recordings / "librosa-data"), "--out", str(out),
                        "--escalate", server.url, "--threshold", "0.999", "--profile", "x86-cpu")
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.stop()
    rows = events(out)
    escalated = [r for r in rows if r["escalation_status"] in ("confirmed", "revised")]
    assert escalated and not [r for r in rows if r["escalation_status"] == "queued"]
    assert "European Robin" in {r["escalation_answer"] for r in escalated}  # the teacher's answer, stored


def test_without_a_flag_the_run_escalates_below_the_bundles_own_threshold(scores_bundle, few_recordings, tmp_path):
    import shutil

    from naturelm_edge.bundle.open import load_bundle

    # the CI-sized student answers about alike everywhere: a copy whose threshold sits above its answers' confidence
    # shows that the bundle's threshold, not the profile's 0.5, decides what escalates
    built = load_bundle(scores_bundle[0])
    raised = shutil.copytree(scores_bundle[0], tmp_path / "raised")
    manifest = json.loads((raised / "manifest.json").read_text())
    manifest["escalation"]["confidence_threshold"] = 0.999
    (raised / "manifest.json").write_text(json.dumps(manifest))
    for bundle, threshold in ((scores_bundle[0], built.escalation_threshold), (raised, 0.999)):
        out = tmp_path / f"run-{threshold}"
        done = run_edge("--bundle", str(bundle), "--input", str(few_recordings / "librosa-data"), "--out", str(out),
                        "--escalate", "queue", "--profile", "x86-cpu")
        assert done.returncode == 0, done.stderr[-2000:]
        ran = json.loads((out / "run.json").read_text())
        assert ran["escalation"]["confidence_threshold"] == threshold
        assert ran["origin"]["confidence_threshold"] == "bundle"
        rows = events(out)
        unsure = [r for r in rows if r["confidence"] < threshold]
        sure = [r for r in rows if r["confidence"] >= threshold]
        assert all(r["escalation_status"] in ("queued", "over-budget") for r in unsure)
        assert sum(r["escalation_status"] == "queued" for r in sure) <= len(sure) // 10  # audits only
        if threshold == 0.999:
            assert rows and len(unsure) == len(rows)  # every window below it: every one escalates


def test_the_profiles_audio_threads_hold_numpys_blas_pool(scores_bundle):
    from dataclasses import replace

    from threadpoolctl import threadpool_info, threadpool_limits

    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.device_profiles import get
    from naturelm_edge.edge_runtime.engine import Engine

    threadpool_limits(limits=2, user_api="blas")  # what OpenBLAS starts with on a two-core machine
    profile = get("raspberry-pi-5")
    Engine(load_bundle(scores_bundle[0]), replace(profile, runtime={**profile.runtime, "audio_threads": 1}))
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert pools and {pool["num_threads"] for pool in pools} == {1}


def test_edge_bench_measures_a_scores_bundle(scores_bundle, few_recordings, tmp_path):
    done = run_cli("bench", str(scores_bundle[0]), "--profile", "raspberry-pi-5", "--quick", "--no-birdnet",
                   "--audio", str(few_recordings / "librosa-data"), "--out", str(tmp_path), "--name", "scores")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(next(tmp_path.rglob("scores.json")).read_text())
    stages = report["stages"]
    assert stages["window"]["calls"] > 0 and stages["encoder"]["calls"] > 0 and stages["fbank"]["calls"] > 0
    assert stages["decoder_prefill"]["calls"] == 0  # no decoder: the answer is read off the encoder's logits
    assert report["peak_rss_mb"] > 0 and report["profile"] == "raspberry-pi-5"


def test_a_run_over_files_waits_a_bounded_time_and_says_what_stays_queued(scores_bundle, few_recordings, tmp_path):
    from testbed.net import free_port

    started = time.perf_counter()
    done = run_edge("--bundle", str(scores_bundle[0]), "--input", str(few_recordings / "librosa-data"), "--out",
                    str(tmp_path / "run"), "--escalate", f"http://127.0.0.1:{free_port()}", "--threshold", "0.999",
                    "--drain", "3", "--profile", "x86-cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.perf_counter() - started < 120
    assert "stay queued" in done.stderr and "for the next run" in done.stderr
    assert any(r["escalation_status"] == "queued" for r in events(tmp_path / "run"))


def test_score_answers_name_a_label_from_the_threshold_and_say_how_sure():
    from naturelm_edge.edge_runtime.escalation import EscalationPolicy
    from naturelm_edge.edge_runtime.scores import ScoreAnswers

    head = ScoreAnswers(["Wren", "Robin"], 0.5)
    sure, unsure_call, unsure_silence = (head.generate(np.array(x)) for x in ([-9.0, 4.0], [-9.0, 0.2], [-9.0, -0.2]))
    assert sure.text == "Robin" and sure.confidence_mean > 0.98
    assert unsure_call.text == "Robin" and 0.5 < unsure_call.confidence_mean < 0.6
    assert unsure_silence.text == NOTHING_HEARD and 0.5 < unsure_silence.confidence_mean < 0.6
    scores, text = EscalationPolicy(0.8, unsure_silence=True), EscalationPolicy(0.8)
    assert scores.wanted(unsure_silence.confidence_mean, None, NOTHING_HEARD) == "unsure-silence"
    assert text.wanted(unsure_silence.confidence_mean, None, NOTHING_HEARD) is None
    assert scores.wanted(0.99, None, NOTHING_HEARD) is None
    # with a presence column (the last), a "None" is as sure as the chance that nothing is there
    present = ScoreAnswers(["Wren", "Robin"], 0.5, presence=True)
    assert present.fits(np.zeros(3)) and not present.fits(np.zeros(2))
    heard, empty, named = (present.generate(np.array(x)) for x in ([-9.0, -3.0, 3.0], [-9.0, -3.0, -5.0], [-9.0, 4.0, -5.0]))
    assert heard.text == NOTHING_HEARD and heard.confidence_mean < 0.06  # the teacher would hear something here
    assert scores.wanted(heard.confidence_mean, None, NOTHING_HEARD) == "unsure-silence"
    assert empty.text == NOTHING_HEARD and empty.confidence_mean > 0.99
    assert named.text == "Robin" and named.confidence_mean > 0.98  # a named label is as sure as its own score
    # with a support column (after the presence column), a name without precedent is as unsure as can be
    backed = ScoreAnswers(["Wren", "Robin"], 0.5, presence=True, support={"floor": 0.8})
    assert backed.fits(np.zeros(4)) and not backed.fits(np.zeros(3))
    near, far, quiet = (backed.generate(np.array(x)) for x in ([-9.0, 4.0, 3.0, 0.95], [-9.0, 4.0, 3.0, 0.6],
                                                                [-9.0, -5.0, -5.0, 0.1]))
    assert near.text == "Robin" and near.confidence_mean > 0.98
    assert far.text == "Robin" and far.confidence_mean == 0.0  # still its best guess, but it escalates
    assert EscalationPolicy(0.5).wanted(far.confidence_mean, None, far.text) is not None
    assert quiet.text == NOTHING_HEARD and quiet.confidence_mean > 0.99  # support only judges names
    unfloored = ScoreAnswers(["Wren", "Robin"], 0.5, presence=True, support={"floor": None})
    assert unfloored.generate(np.array([-9.0, 4.0, 3.0, 0.6])).confidence_mean > 0.98


def test_the_speech_filter_hears_the_same_speech_at_48khz(audio_dir):
    from scipy.signal import resample_poly

    from naturelm_edge.edge_runtime.speech import SpeechFilter
    from naturelm_edge.privacy.silero import silero_file

    speech = np.concatenate(list(stream(audio_dir.parent / "speech" / "jfk.flac", 16_000)))[: 16_000 * 8]
    at16 = SpeechFilter(silero_file()).stretches(speech)
    at48 = SpeechFilter(silero_file(), rate=48_000).stretches(resample_poly(speech, 3, 1).astype(np.float32))
    assert at16 and len(at16) == len(at48)
    for (a, b), (c, d) in zip(at16, at48):
        assert abs(c / 3 - a) <= 512 * 2 and abs(d / 3 - b) <= 512 * 2  # within two 32 ms frames


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_corrupt_or_missing_teacher_model_is_named_in_one_sentence(few_recordings, tmp_path, damage):
    import shutil

    from naturelm_edge.teachers.birdnet import DIR_ENV, MODEL_FILE, model_dir

    copy = tmp_path / "birdnet"
    shutil.copytree(model_dir(), copy)
    if damage == "corrupt":
        (copy / MODEL_FILE).write_bytes((copy / MODEL_FILE).read_bytes()[:4096])  # a download cut short
    else:
        (copy / MODEL_FILE).unlink()
    done = run_cli("build", "--teacher", "birdnet-v2.4", "--audio", str(few_recordings), "--out", str(tmp_path / "b"),
                   "--work", str(tmp_path / "w"), env={DIR_ENV: str(copy)})
    assert done.returncode != 0 and str(copy / MODEL_FILE) in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "b").exists()


def test_birdnets_range_model_expects_the_birds_of_a_place_and_season(birdnet):
    """--lat/--lon/--week add the species BirdNET's own range model expects there: an American Robin in Ithaca
    in May and not in Munich, a Eurasian Blackbird the other way round, and more species over a whole year."""
    from naturelm_edge.teachers.birdnet import range_species

    def names(*place: float) -> set[str]:
        return {birdnet.labels[i] for i in range_species(*place)}

    ithaca, munich, ithaca_year = names(42.44, -76.5, 20), names(48.1, 11.6, 20), names(42.44, -76.5, -1)
    assert "American Robin" in ithaca and "American Robin" not in munich
    assert "Eurasian Blackbird" in munich and "Eurasian Blackbird" not in ithaca
    assert ithaca < ithaca_year


@pytest.mark.parametrize(("flags", "said"), [
    (("--lat", "45"), "--lat and --lon go together"),
    (("--week", "12"), "--week 12 needs --lat and --lon"),
    (("--lat", "45", "--lon", "7", "--week", "49"), "week 1..48"),
])
def test_a_place_the_range_model_cannot_be_asked_about_is_refused_before_any_work(tmp_path, flags, said):
    (tmp_path / "audio").mkdir()
    done = run_cli("build", "--teacher", "birdnet-v2.4", "--audio", str(tmp_path / "audio"), "--out",
                   str(tmp_path / "b"), "--work", str(tmp_path / "w"), *flags)
    assert done.returncode != 0 and said in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "w").exists()  # refused before the teacher was asked anything


def test_the_naturelm_teacher_refuses_the_flags_that_choose_a_scores_teachers_labels(tmp_path):
    done = run_cli("build", str(tmp_path / "checkpoint"), "--audio", str(tmp_path), "--out", str(tmp_path / "b"),
                   "--lat", "45", "--lon", "7")
    assert done.returncode != 0 and "teacher naturelm answers in text" in done.stderr and "Traceback" not in done.stderr


def test_a_folder_of_unreadable_recordings_is_named_with_the_first_of_them(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "cut.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE")  # a recorder that lost power at once
    (audio / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    done = run_cli("build", "--teacher", "birdnet-v2.4", "--audio", str(audio), "--out", str(tmp_path / "b"),
                   "--work", str(tmp_path / "w"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{audio}: none of its 2 recordings gave the teacher a window" in done.stderr
    assert "skipped: " in done.stdout + done.stderr and not (tmp_path / "b").exists()


def test_edge_detector_train_learns_from_the_builds_teacher_cache(scores_bundle, few_recordings, tmp_path):
    from naturelm_edge.bundle.open import load_bundle

    bundle_dir, work, _ = scores_bundle
    done = run_cli("detector", "train", str(bundle_dir), "--audio", str(few_recordings), "--out", str(tmp_path / "b"),
                   "--teacher-answers", str(work / "teacher-birdnet-v2.4"), "--skip", "0.8", "--epochs", "4",
                   "--exclude", "phoebe/", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    training = load_bundle(tmp_path / "b").manifest["detector"]["training"]
    built = load_bundle(bundle_dir).manifest["detector"]["training"]
    assert training["labels_from"] == "teacher" and 0 < training["recordings"] < built["recordings"]  # phoebe/ left out


def test_labels_are_what_the_teacher_hears_in_recordings_as_they_are():
    """A species the teacher hears only in an augmented copy (noise, a mix, a gain) is not kept; one it hears
    in a recording as recorded is, and so is one asked for; a class that is not an animal never is."""
    from naturelm_edge.distill.classifier import kept_labels
    from naturelm_edge.distill.scores import ScoreSet

    logits = np.full((4, 8), -6.0, np.float16)
    logits[0, 2] = 3.0  # heard as recorded
    logits[1, 5] = 3.0  # heard only in an augmented view of the same window
    logits[2, 7] = 3.0  # heard as recorded, but not an animal (BirdNET's "Engine")
    views = np.array([0, 1, 0, 0])
    train = ScoreSet(np.zeros((4, 1, 1), np.float16), logits, np.zeros((4, 2), np.float16), ["a"] * 4,
                     np.zeros(4, int), views)
    animal = np.array([True] * 7 + [False])
    assert kept_labels(train, animal, asked=[]) == [2]
    assert kept_labels(train, animal, asked=[4]) == [2, 4]
    logits[0, 2] = -6.0
    with pytest.raises(Exception, match="heard no species"):
        kept_labels(train, animal, asked=[])

