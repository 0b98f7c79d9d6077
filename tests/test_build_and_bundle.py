"""`edge build` end to end, every quantization mode, the report recomputed, bundles verified and signed."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from naturelm_edge.audio import WindowSpec, fbank, load, prepare, window_features
from naturelm_edge.bundle import roles
from naturelm_edge.bundle.manifest import BundleError, sha256_file
from naturelm_edge.bundle.open import load_bundle
from naturelm_edge.bundle.signing import generate_keypair, sign_bundle
from naturelm_edge.cli import app
from naturelm_edge.edge_runtime.decoder import OnnxDecoder
from naturelm_edge.quantization.calibration import ArrayReader, CalibrationError, calibration_set, encoder_inputs
from naturelm_edge.quantization.quantize import QuantSpec, quantize
from naturelm_edge.quantization.report import token_cosines

runner = CliRunner()


@pytest.fixture(scope="module")
def subset(subset_audio):
    return subset_audio


@pytest.fixture(scope="module")
def built(built_bundle):
    return built_bundle


def test_build_end_to_end_and_skips_unchanged_stages(built):
    work, _, first, again = built
    bundle = load_bundle(work / "bundle")
    present = {e["role"] for e in bundle.manifest["files"]}
    assert {r.name for r in roles.REQUIRED} == {"encoder", "decoder", "decoder-tables", "tokenizer", "decoder-config"}
    assert {r.name for r in roles.REQUIRED} <= present
    assert bundle.entry(roles.ENCODER)["precision"] == "int8-static-x86-minmax"
    assert bundle.entry(roles.DECODER)["precision"] == "int8-dynamic"
    assert bundle.manifest["target_profile"] == "x86-cpu" and bundle.manifest["audio"]["window_s"] == 10.0
    assert bundle.manifest["labels"] and bundle.manifest["species_split"]["held_out"]
    assert [i["name"] for i in bundle.entry(roles.ENCODER)["inputs"]] == ["fbank"]
    assert "teacher answers (" in first and "teacher answers: inputs unchanged, skipped" in again
    assert "distillation: inputs unchanged" in again and "quantization: inputs unchanged" in again
    # the build's output is captured (not a terminal): each step announces itself, and the long ones say how far
    assert "> distillation ..." in first and re.search(r"distilling.*: (\d+)/\1 \(100%\), done", first), first


def test_bundle_hashes_are_the_files(built):
    work, *_ = built
    manifest = json.loads((work / "bundle" / "manifest.json").read_text())
    for entry in manifest["files"]:
        path = work / "bundle" / entry["path"]
        assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size


def test_report_numbers_recomputed_independently(built, subset):
    work, *_ = built
    report = json.loads((work / "bundle" / "reports" / "quantization.json").read_text())
    held = report["sets"]["held_out"]
    files = [p for p in report["calibration"]["evaluation_files"]]
    features = []
    for f in files:  # the report's windows: round-robin over the evaluation files, up to 24
        features.append([feats for _, feats in window_features(f, WindowSpec())])
    windows = []
    depth = 0
    while len(windows) < 24 and any(depth < len(w) for w in features):
        windows += [w[depth] for w in features if depth < len(w)][: 24 - len(windows)]
        depth += 1
    assert len(windows) == held["windows"]
    x = np.stack(windows)
    fp32 = ort.InferenceSession(str(work / "bundle.work" / "encoder" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(work / "bundle" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    a = np.concatenate([fp32.run(None, {"fbank": w[None]})[0] for w in x])
    b = np.concatenate([q.run(None, {"fbank": w[None]})[0] for w in x])
    cos = token_cosines(a, b)
    assert abs(cos.mean() - held["encoder_cosine"]["mean"]) < 1e-6
    assert abs(cos.min() - held["encoder_cosine"]["min"]) < 1e-6
    enc = report["encoder"]
    assert enc["size_ratio"] == pytest.approx((work / "bundle" / "encoder.onnx").stat().st_size
                                              / (work / "bundle.work" / "encoder" / "encoder.onnx").stat().st_size)
    question = json.loads((work / "bundle" / "decoder.json").read_text())["tasks"][0]["question"]
    ref = OnnxDecoder(work / "bundle.work" / "decoder")
    quant = OnnxDecoder(work / "bundle.work" / "decoder", model_file=work / "bundle" / "decoder.onnx")
    agree = np.mean([quant.generate(t, question).text == ref.generate(t, question).text for t in a])
    assert agree == pytest.approx(held["decoder_agreement"])
    # the taught tiny teacher reads clip differences of ~2 % in its random Q-Former's output through a
    # whitening projection, so int8 noise costs it far more than a trained encoder; answers still hold
    assert held["decoder_agreement"] >= 0.95 and held["encoder_cosine"]["mean"] >= 0.9



def test_batched_answers_equal_answers_one_window_at_a_time(built_bundle):
    """Reports judge a float decoder's answers in batches per question (``generate_many``); the device answers one
    window at a time. (A dynamically quantized graph takes its int8 scale over the batch: judged unbatched.)"""
    from naturelm_edge.edge_runtime.decoder import OnnxDecoder

    work, *_ = built_bundle
    decoder = OnnxDecoder(work / "bundle.work" / "decoder")
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((6, 29, decoder.audio_proj_weight.shape[1])).astype(np.float32)
    for task in json.loads((work / "bundle" / "decoder.json").read_text())["tasks"][:2]:
        batched = decoder.generate_many(tokens, task["question"])
        alone = [decoder.generate(t, task["question"]) for t in tokens]
        assert [a.student_ids for a in batched] == [a.student_ids for a in alone]
        assert [a.stopped for a in batched] == [a.stopped for a in alone]
        for got, want in zip(batched, alone):
            assert np.allclose(got.token_probs, want.token_probs, atol=1e-4)


def test_an_answer_stops_at_its_tasks_limit_not_the_longest_tasks(built_bundle, tmp_path):
    """A bundle's decoder.json holds every task's own limit (a call type in 8 tokens, a caption in 300) and its
    longest as a fallback: each question is answered within its own task's."""
    from naturelm_edge.edge_runtime.decoder import OnnxDecoder

    work, *_ = built_bundle
    folder = tmp_path / "decoder"
    shutil.copytree(work / "bundle.work" / "decoder", folder)
    meta = json.loads((folder / "decoder.json").read_text())
    question = meta["tasks"][0]["question"]
    meta["tasks"][0]["max_new_tokens"], meta["max_new_tokens"] = 2, 24
    (folder / "decoder.json").write_text(json.dumps(meta))
    decoder = OnnxDecoder(folder)
    tokens = np.random.default_rng(1).standard_normal((8, 29, decoder.audio_proj_weight.shape[1])).astype(np.float32)
    assert decoder.limit(question) == 2 and decoder.limit("a question of no task") == 24
    assert all(len(a.token_probs) <= 2 for a in decoder.generate_many(tokens, question))
    assert max(len(a.token_probs) for a in decoder.generate_many(tokens, question, max_new_tokens=24)) > 2

BOUNDS = {  # (mode, target): minimum mean token cosine (encoder) / answer agreement (decoder)
    ("fp32", "x86"): 0.999999, ("fp16", "x86"): 0.9999, ("int8-dynamic", "x86"): 0.9,
    ("int8-static", "x86"): 0.9, ("int8-static", "arm"): 0.9, ("int8-static", "tensorrt"): 0.9,
}


@pytest.mark.parametrize("mode, target", list(BOUNDS))
def test_each_encoder_mode_loads_and_meets_its_bound(built, subset, tmp_path, mode, target):
    work, *_ = built
    fp32 = work / "bundle.work" / "encoder" / "encoder.onnx"
    files = sorted(subset.rglob("*.mp3"))[:4]
    calib = calibration_set(files, WindowSpec(), 8)
    out = tmp_path / f"{mode}.onnx"
    info = quantize(fp32, out, QuantSpec(mode, target), ArrayReader(encoder_inputs(calib)), work / "bundle.work" / "calibration-ranges", calib.digest())
    x = calib.features
    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"fbank": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"fbank": x})[0]
    cosine = token_cosines(a, b).mean()
    print(f"{mode}/{target}: mean token cosine {cosine:.5f}")
    assert cosine >= BOUNDS[(mode, target)]
    if mode == "int8-static":
        assert info["calibration_cache"] and info["activation_type"] == ("uint8" if target == "x86" else "int8")
        assert info["symmetric_activations"] == (target == "tensorrt")
        assert info["kept_float"] > 0  # attention's activation-by-activation MatMuls stay in float


def test_calibration_ranges_are_reused(built, subset, tmp_path):
    work, *_ = built
    fp32 = work / "bundle.work" / "encoder" / "encoder.onnx"
    calib = calibration_set(sorted(subset.rglob("*.mp3"))[:2], WindowSpec(), 4, 1)
    cache = tmp_path / "ranges"
    first = quantize(fp32, tmp_path / "a.onnx", QuantSpec("int8-static", "x86"), ArrayReader(encoder_inputs(calib)), cache, calib.digest())
    second = quantize(fp32, tmp_path / "b.onnx", QuantSpec("int8-static", "tensorrt"), None, cache, calib.digest())
    assert not first["calibration_cache_hit"] and second["calibration_cache_hit"]


@pytest.mark.parametrize("mode", ["fp16", "int8-dynamic", "int8-static", "int4"])
def test_each_decoder_mode_agrees_with_fp32(built, tmp_path, mode):
    from naturelm_edge.quantization.calibration import decoder_inputs

    work, *_ = built
    decoder_dir = work / "bundle.work" / "decoder"
    ref = OnnxDecoder(decoder_dir)
    question = ref.meta["tasks"][0]["question"]
    tokens = [np.load(p) for p in sorted((work / "bundle.work" / "teacher-cache" / "audio").glob("*.npy"))[:20]]
    reader = ArrayReader(decoder_inputs(ref, np.stack(tokens[:4]), [question]))
    quantize(decoder_dir / "decoder.onnx", tmp_path / "decoder.onnx", QuantSpec(mode), reader)
    quant = OnnxDecoder(decoder_dir, model_file=tmp_path / "decoder.onnx")
    agree = np.mean([quant.generate(t, question).text == ref.generate(t, question).text for t in tokens])
    assert agree >= 0.9, agree


def test_calibration_reader_equals_runtime_front_end(subset):
    path = subset / "opensoundscape" / "great_plains_toad.wav"
    calib = calibration_set([path], WindowSpec(10.0, 5.0), 3, 1)
    whole = load(path, 16000)
    for i in range(3):  # windows computed independently from the whole decoded file
        want = fbank(prepare(whole[i * 80000 : i * 80000 + 160000], 160000))
        assert np.abs(calib.features[i] - want).max() < 1e-4


def test_calibration_without_held_out_audio(tmp_path):
    with pytest.raises(CalibrationError, match="no recordings of the held-out species"):
        calibration_set([], WindowSpec())
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF")
    with pytest.raises(CalibrationError, match="only 0 usable windows"):
        calibration_set([bad], WindowSpec())


def test_min_agreement_failure_keeps_previous_bundle(built):
    work, args, *_ = built
    before = (work / "bundle" / "manifest.json").read_bytes()
    result = runner.invoke(app, [*args, "--min-agreement", "1.01"])
    assert result.exit_code != 0 and "--min-agreement" in result.output
    assert (work / "bundle" / "manifest.json").read_bytes() == before
    assert load_bundle(work / "bundle")


@pytest.fixture()
def bundle_copy(built, tmp_path):
    work, *_ = built
    return shutil.copytree(work / "bundle", tmp_path / "bundle")


def test_tampered_or_truncated_files_are_caught(bundle_copy):
    decoder = bundle_copy / "decoder.onnx"
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2] ^= 0xFF
    decoder.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decoder\.onnx: sha256 differs"):
        load_bundle(bundle_copy)
    decoder.write_bytes(bytes(data[: len(data) // 2]))
    result = runner.invoke(app, ["bundle", "verify", str(bundle_copy)])
    assert result.exit_code != 0 and "cut short or altered" in result.output


def test_future_schema_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version 99 is newer"):
        load_bundle(bundle_copy)


def test_signatures_accepted_and_refused(bundle_copy, tmp_path, monkeypatch):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    key, pub = generate_keypair(tmp_path / "fleet")
    shutil.copy(pub, trusted / "fleet.pub")
    other_key, _ = generate_keypair(tmp_path / "intruder")
    with pytest.raises(BundleError, match="unsigned"):
        load_bundle(bundle_copy, trusted)
    assert runner.invoke(app, ["bundle", "verify", str(bundle_copy)]).exit_code == 0  # no keys: no demand
    sign_bundle(bundle_copy, key)
    assert load_bundle(bundle_copy, trusted).manifest["signature"]["algorithm"] == "ed25519"
    monkeypatch.setenv("NATURELM_EDGE_TRUSTED_KEYS", str(trusted))  # a device configured with trusted keys
    ok = runner.invoke(app, ["bundle", "verify", str(bundle_copy)])
    assert ok.exit_code == 0 and "signed by" in ok.output
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["labels"].append("Unicorn")
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="altered after signing"):
        load_bundle(bundle_copy)
    manifest["labels"].pop()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    sign_bundle(bundle_copy, other_key)
    refused = runner.invoke(app, ["bundle", "verify", str(bundle_copy)])
    assert refused.exit_code != 0 and "does not trust" in refused.output


def test_tar_bundles_round_trip(bundle_copy, tmp_path):
    from naturelm_edge.bundle.manifest import pack

    tar = pack(bundle_copy, tmp_path / "bundle.tar")
    assert load_bundle(tar).id == load_bundle(bundle_copy).id


def test_corrupted_model_file_is_named(tmp_path, built):
    from naturelm_edge.quantization.quantize import QuantizationError

    work, *_ = built
    broken = tmp_path / "encoder.onnx"
    data = (work / "bundle.work" / "encoder" / "encoder.onnx").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(QuantizationError, match=r"encoder\.onnx: not a readable ONNX model"):
        quantize(broken, out, QuantSpec("int8-dynamic"))
    assert out.read_bytes() == b"previous"  # nothing already produced is lost
