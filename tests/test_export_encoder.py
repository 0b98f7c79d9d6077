"""``edge export encoder``: one ONNX graph with proven parity on real audio, and clear failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from naturelm_edge.cli import app
from naturelm_edge.export.encoder import verification_clips, verify
from naturelm_edge.models import load
from naturelm_edge.progress import Progress

runner = CliRunner()


@pytest.fixture(scope="module")
def fixture_export(fixtures_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fixture-encoder")
    result = runner.invoke(app, ["export", "encoder", str(fixtures_dir / "tiny_naturelm"), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_onnx_reproduces_reference_audio_tokens(fixture_export, reference_io):
    session = ort.InferenceSession(str(fixture_export / "encoder.onnx"), providers=["CPUExecutionProvider"])
    tokens = session.run(["audio_tokens"], {"fbank": reference_io["fbank"]})[0]
    assert tokens.shape == reference_io["audio_tokens"].shape
    assert np.abs(tokens - reference_io["audio_tokens"]).max() < 1e-4


def test_graph_shape_opset_and_folded_weight_norm(fixture_export):
    model = onnx.load(str(fixture_export / "encoder.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    fbank = model.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in fbank.type.tensor_type.shape.dim]
    assert dims == ["batch", 998, 128]
    names = {init.name for init in model.graph.initializer}
    assert not any("weight_g" in n or "weight_v" in n for n in names)
    assert not any("predictor" in n for n in names)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["naturelm_edge.audio_tokens"] == "29"


def test_report_on_real_clips(fixture_export, audio_dir):
    report = json.loads((fixture_export / "export_report.json").read_text())
    assert report["passed"] is True
    assert len(report["clips"]) >= 5
    assert all(str(audio_dir) in clip for clip in report["clips"])
    assert len({clip.split("/")[-2] for clip in report["clips"]}) >= 5  # several sources of recordings
    stats = report["parity"]["audio_tokens"]
    assert stats["min_cosine"] >= 0.9999
    assert stats["max_abs_error"] <= 1e-3 * stats["scale"]
    assert report["onnx_bytes"] == (fixture_export / "encoder.onnx").stat().st_size
    assert report["source"]["sha256"] and report["export_seconds"] > 0


def test_tampered_graph_fails_parity(fixture_export, fixtures_dir, tmp_path):
    model = onnx.load(str(fixture_export / "encoder.onnx"))
    largest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    values = numpy_helper.to_array(largest).copy()
    values.flat[: values.size // 50] *= 1.5
    largest.CopyFrom(numpy_helper.from_array(values, largest.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    loaded = load(fixtures_dir / "tiny_naturelm")
    loaded.model.beats.fold_weight_norm()
    clips = verification_clips(None, loaded.model, Progress(quiet=True))[:2]
    assert verify(fixture_export / "encoder.onnx", loaded.model, clips).passed
    assert not verify(tampered, loaded.model, clips).passed


def test_cli_on_own_tiny_checkpoint_with_given_audio(tiny_checkpoint, audio_dir, tmp_path):
    clip = audio_dir / "opensoundscape" / "great_plains_toad.wav"
    result = runner.invoke(
        app, ["export", "encoder", str(tiny_checkpoint), "--out", str(tmp_path), "--verify-audio", str(clip)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["clips"] == [str(clip)] and report["passed"]


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_cli_bad_verification_audio(tiny_checkpoint, tmp_path, content):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "naturelm_edge.cli", "export", "encoder", str(tiny_checkpoint), "--out",
         str(tmp_path / "out"), "--verify-audio", str(bad), "-q"],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.wav" in lines[0] and "Traceback" not in result.stderr


def test_cli_missing_checkpoint_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "naturelm_edge.cli", "export", "encoder", str(tmp_path / "nope"), "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "nope: no such checkpoint" in result.stderr and "Traceback" not in result.stderr
